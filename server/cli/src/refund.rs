//! `wxpay-combine refund`: refund a sub-order (by its own merchant, with
//! that merchant's credentials from `[[merchants]]`), or look a refund up.
//! Prints the refund as one JSON object; a refusal exits non-zero with the
//! rule's code on stderr.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::config::Config;
use wxpay_combine::kit::{
    prepare_client, prepare_merchant_clients, redact_database_url, refund_service,
};
use wxpay_combine::refund::{RefundError, RefundOrder};
use wxpay_combine::store::RefundRecord;

const EXIT_HELP: &str = "Exit codes:
  0  the refund (accepted, PROCESSING or final) is printed as JSON
  1  refused: stderr starts with the rule's code (REFUND_EXCEEDS_AMOUNT, SUB_ORDER_NOT_PAID,
     TOO_MANY_REFUNDS, REFUND_WINDOW_EXPIRED, REFUND_AMOUNT_INVALID, MERCHANT_WITHOUT_CREDENTIALS,
     ORDER_NOT_FOUND, SUB_ORDER_NOT_FOUND, REFUND_NOT_FOUND, or WeChat Pay's own code)
  2  usage or configuration error
  8  local error (database)";

/// `wxpay-combine refund …`
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub struct RefundArgs {
    /// The configuration file; `WXPAY_*` variables override its keys.
    #[arg(long, short, env = "WXPAY_CONFIG", default_value = "wxpay.toml")]
    pub config: PathBuf,
    /// The combined order (combine_out_trade_no) of the sub-order to refund.
    #[arg(long, requires_all = ["sub_order", "amount"], conflicts_with = "query")]
    pub order: Option<String>,
    /// The sub-order (out_trade_no) to refund.
    #[arg(long, requires = "order")]
    pub sub_order: Option<String>,
    /// Fen to refund.
    #[arg(long, requires = "order")]
    pub amount: Option<i64>,
    /// Shown to the payer (at most 80 bytes).
    #[arg(long, requires = "order")]
    pub reason: Option<String>,
    /// Look up a refund by its out_refund_no (asks WeChat Pay while PROCESSING).
    #[arg(long, required_unless_present = "order")]
    pub query: Option<String>,
}

/// The printed refund.
fn json(r: &RefundRecord) -> serde_json::Value {
    serde_json::json!({
        "out_refund_no": r.out_refund_no,
        "status": r.status.as_str(),
        "amount": r.amount,
        "out_trade_no": r.out_trade_no,
        "mchid": r.mchid,
        "combine_out_trade_no": r.combine_out_trade_no,
        "refund_id": r.refund_id,
        "reason": r.reason,
        "user_received_account": r.user_received_account,
        "success_time": r.success_time,
    })
}

/// Runs `refund`.
pub fn run(args: RefundArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("wxpay-combine refund: {msg}");
        ExitCode::from(2)
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return usage(e.to_string()),
    };
    crate::app::init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return usage(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = match wxpay_combine::store::connect(&config.store.database_url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "wxpay-combine refund: database {}: {e}",
                    redact_database_url(&config.store.database_url)
                );
                return ExitCode::from(8);
            }
        };
        let clients = match prepare_client(&config, clock.clone()).await {
            Ok(initiator) => prepare_merchant_clients(&config, initiator, clock.clone()).await,
            Err(e) => Err(e),
        };
        let service = match clients {
            Ok(clients) => refund_service(&config, &clients, store, clock),
            Err(e) => return usage(e.to_string()),
        };
        let result = match (args.order, args.query) {
            (Some(order), _) => {
                service
                    .refund(RefundOrder {
                        combine_out_trade_no: order,
                        out_trade_no: args.sub_order.unwrap_or_default(),
                        amount: args.amount.unwrap_or_default(),
                        reason: args.reason,
                        idempotency: None,
                    })
                    .await
            }
            (None, Some(no)) => service.get(&no, true).await,
            (None, None) => return usage("give --order … or --query OUT_REFUND_NO".into()),
        };
        match result {
            Ok(r) => {
                println!("{}", json(&r));
                ExitCode::SUCCESS
            }
            Err(RefundError::Store(e)) => {
                eprintln!("wxpay-combine refund: database error: {e}");
                ExitCode::from(8)
            }
            Err(e) => {
                eprintln!("{}: {e}", e.code());
                ExitCode::from(1)
            }
        }
    })
}
