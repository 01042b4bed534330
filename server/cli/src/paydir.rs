//! `wxpay-combine check-pay-dir --registered URL --page URL`: would WeChat
//! accept `getBrandWCPayRequest` from this page for this 支付授权目录?

use clap::Args;
use std::process::ExitCode;
use wxpay_combine_core::paydir::{self, MismatchKind, PayDirMatch, IOS_NOTE};

/// `wxpay-combine check-pay-dir …`
#[derive(Debug, Args)]
pub struct CheckPayDirArgs {
    /// The 支付授权目录 registered in the merchant platform, e.g. `https://shop.example.com/pay/`
    #[arg(long)]
    pub registered: String,
    /// The URL of the page that invokes the payment (for a single-page app on
    /// iOS: the URL it was first opened with).
    #[arg(long)]
    pub page: String,
}

/// Runs the check: exit 0 on a match, 1 on a mismatch, 2 on unusable input.
pub fn run(args: CheckPayDirArgs) -> ExitCode {
    match paydir::check(&args.registered, &args.page) {
        Ok(kind) => {
            let how = match kind {
                PayDirMatch::TopLevelDomain => {
                    "the registered value is a top-level domain: any page on that host matches"
                }
                PayDirMatch::ExactDirectory => {
                    "the page's directory equals the registered directory"
                }
            };
            println!(
                "match: {} is covered by {} ({how}).",
                args.page, args.registered
            );
            println!("note: {IOS_NOTE}");
            ExitCode::SUCCESS
        }
        Err(m) => {
            println!("mismatch: {m}");
            if matches!(m.kind, MismatchKind::Invalid(_)) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
