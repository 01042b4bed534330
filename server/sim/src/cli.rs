//! `wxpay-combine sim`: a thin wrapper that starts a [`Simulator`], prints
//! where it is, and runs until Ctrl-C.

use super::{Faults, SimOptions, Simulator};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// `wxpay-combine sim …`
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "WXSIM_ADDR", default_value = "127.0.0.1:7730")]
    pub addr: SocketAddr,
    /// Data directory: credentials, platform keys, state (created if missing).
    #[arg(long, env = "WXSIM_DATA_DIR", default_value = "wxsim-data")]
    pub data_dir: PathBuf,
    /// TOML file declaring merchants (see docs/simulator.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Multiplies the notification retry schedule (0.01: 15 s becomes 150 ms).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Authorised OAuth domain (repeatable; default 127.0.0.1 and localhost).
    #[arg(long = "oauth-domain")]
    pub oauth_domains: Vec<String>,
    /// Fault: never deliver notifications.
    #[arg(long)]
    pub drop_notifications: bool,
    /// Fault: deliver N extra copies of every notification concurrently.
    #[arg(long, value_name = "N")]
    pub duplicate_notifications: Option<u32>,
    /// Fault: wait this long after payment before the first delivery.
    #[arg(long, value_name = "MS")]
    pub notify_delay_ms: Option<u64>,
    /// Fault: send a WECHATPAY/SIGNTEST/ probe before the first delivery.
    #[arg(long)]
    pub signtest_probe: bool,
    /// Fault: share (0-1) of APIv3 calls answered 500 SYSTEM_ERROR unprocessed.
    #[arg(long, value_name = "SHARE")]
    pub api_error_share: Option<f64>,
    /// Fault: share (0-1) of APIv3 calls processed but answered late.
    #[arg(long, value_name = "SHARE")]
    pub api_timeout_share: Option<f64>,
    /// How long a "timed out" call is held, in milliseconds (default 30000).
    #[arg(long, value_name = "MS")]
    pub api_timeout_ms: Option<u64>,
    /// Fault: announce a wrong hash_value for trade bills.
    #[arg(long)]
    pub corrupt_bill_hash: bool,
    /// Fault: the cashier alters paySign before confirming.
    #[arg(long)]
    pub tamper_pay_sign: bool,
    /// Serve a day's trade bill at once instead of STATEMENT_CREATING
    /// until 10:00 the next day.
    #[arg(long)]
    pub bills_ready_immediately: bool,
}

impl SimArgs {
    /// The options these flags describe.
    pub fn options(&self) -> SimOptions {
        let flag = |b: bool| b.then_some(true);
        SimOptions {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            time_scale: self.time_scale,
            config: self.config.clone(),
            faults: Faults {
                drop_notifications: flag(self.drop_notifications),
                duplicate_notifications: self.duplicate_notifications,
                notify_delay_ms: self.notify_delay_ms,
                signtest_probe: flag(self.signtest_probe),
                api_error_share: self.api_error_share,
                api_timeout_share: self.api_timeout_share,
                api_timeout_ms: self.api_timeout_ms,
                corrupt_bill_hash: flag(self.corrupt_bill_hash),
                tamper_pay_sign: flag(self.tamper_pay_sign),
                notify_targets: None,
                notify_max_inflight: None,
                ..Default::default()
            },
            oauth_domains: (!self.oauth_domains.is_empty()).then(|| self.oauth_domains.clone()),
            bills_ready_immediately: self.bills_ready_immediately,
        }
    }
}

/// Runs `wxpay-combine sim` until Ctrl-C.
pub fn run(args: SimArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxpay-combine sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let sim = match Simulator::start(args.options()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("wxpay-combine sim: {e}");
                return ExitCode::FAILURE;
            }
        };
        let data_dir =
            std::fs::canonicalize(sim.data_dir()).unwrap_or_else(|_| sim.data_dir().to_path_buf());
        println!("WeChat Pay simulator");
        println!("  base URL : {}", sim.base_url());
        println!("  data dir : {}", data_dir.display());
        for m in sim.merchants() {
            println!(
                "  merchant : mchid {} appid {} ({:?} mode) -> {}",
                m.mchid,
                m.appid,
                m.key_mode,
                m.dir.join("merchant.json").display()
            );
        }
        println!("Press Ctrl-C to stop.");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
