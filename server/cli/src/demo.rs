//! `wxpay-combine demo`: the whole flow on one machine — the embedded
//! WeChat Pay simulator, the merchant server on SQLite, and the demo page.

use crate::app::{self, DemoOptions};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::config::LogFormat;

/// `wxpay-combine demo …`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the merchant server (and the page) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where the internal API listens (port 0: a free port, printed at start);
    /// its bearer token is DATA_DIR/secrets/internal_token.txt.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub internal_addr: SocketAddr,
    /// Data directory: simulator keys and state, secrets, SQLite database, wxpay.toml.
    #[arg(long, default_value = "demo-data")]
    pub data_dir: PathBuf,
    /// The page's directory (default: ./www, else the repository's www/).
    #[arg(long)]
    pub www: Option<PathBuf>,
    /// The built wasm package (default: ./wasm/pkg, else the repository's).
    #[arg(long)]
    pub wasm_pkg: Option<PathBuf>,
    /// Minimum order age in seconds before it may be closed (product rule: 300).
    #[arg(long, default_value_t = 300)]
    pub close_min_age_secs: u64,
    /// Scale of the simulator's notification retry schedule (0.01: 15 s → 150 ms).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
}

/// Runs `demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    app::init_tracing(LogFormat::Text);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wxpay-combine demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Paths are printed under the data directory as given (`demo-data/…`).
    let shown_dir = args.data_dir.clone();
    let mut opts = DemoOptions::new(args.data_dir);
    opts.addr = args.addr;
    opts.internal_addr = args.internal_addr;
    opts.www_dir = args.www;
    opts.wasm_pkg_dir = args.wasm_pkg;
    opts.close_min_age_secs = args.close_min_age_secs;
    opts.time_scale = args.time_scale;
    let result = runtime.block_on(async move {
        let demo = app::prepare_demo(&opts).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = match wxpay_combine::kit::Kit::builder(demo.config.clone()).clock(clock).build().await {
            Ok(s) => s,
            Err(e) => {
                demo.sim.shutdown().await;
                return Err(e);
            }
        };
        if !demo.config.http.www_dir.join("index.html").exists() {
            tracing::warn!(dir = %demo.config.http.www_dir.display(), "no index.html in the page directory; /pay/ will answer 404");
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "page: {}", demo.page_url);
        let _ = writeln!(out, "simulator: {}", demo.sim.base_url());
        let _ = writeln!(out, "config: {}", shown_dir.join("wxpay.toml").display());
        if let Some(addr) = server.internal_addr {
            // The token's file, never the token.
            let _ = writeln!(
                out,
                "internal API: http://{addr}/internal/ (Authorization: Bearer <the contents of {}>)",
                shown_dir.join("secrets/internal_token.txt").display()
            );
        }
        let _ = writeln!(
            out,
            "Open the page in a browser; the simulator plays WeChat (login, cashier, notifications). Ctrl-C stops."
        );
        let _ = out.flush();
        drop(out);
        let served = wxpay_combine::kit::serve(server, demo.listener, app::shutdown_signal()).await;
        demo.sim.shutdown().await;
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxpay-combine demo: {e}");
            ExitCode::FAILURE
        }
    }
}
