//! What `serve` and `demo` add around the library's [`Kit`]: logging set-up,
//! the shutdown signal, and the demo's preparation (an embedded simulator,
//! its keys and the configuration written into the data directory).

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::catalog::Catalog;
use wxpay_combine::config::{Config, LogFormat};
use wxpay_combine::kit::{bind, serve, Kit, StartError};
use wxpay_combine::notify;

/// Installs the global tracing subscriber (`RUST_LOG`/`WXPAY_LOG` filter,
/// default `info`). Does nothing when one is already installed.
pub fn init_tracing(format: LogFormat) {
    let filter = std::env::var("WXPAY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal, not for log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

/// `serve`: load, build, bind, serve until Ctrl-C/SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = Kit::builder(config.clone()).clock(clock).build().await?;
    let listener = bind(config.http.listen).await?;
    serve(server, listener, shutdown_signal()).await
}

/// Settings of a demo run (`wxpay-combine demo`, and the flow tests).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the merchant server listens (port 0: any free port).
    pub addr: SocketAddr,
    /// Where the internal API (`/internal/…`) listens; its bearer token is
    /// `DIR/secrets/internal_token.txt` (port 0: any free port).
    pub internal_addr: SocketAddr,
    /// Data directory: simulator state, secrets, SQLite file, `wxpay.toml`.
    pub data_dir: std::path::PathBuf,
    /// The page directory (default: `./www`, else the repository's `www/`).
    pub www_dir: Option<std::path::PathBuf>,
    /// The wasm package (default: `./wasm/pkg`, else the repository's).
    pub wasm_pkg_dir: Option<std::path::PathBuf>,
    /// Database URL instead of `sqlite:DIR/wxpay.db`.
    pub database_url: Option<String>,
    /// Minimum order age before close (product rule: 300 s).
    pub close_min_age_secs: u64,
    /// Query-on-read delay.
    pub query_after_secs: u64,
    /// Reconciliation: sweep interval and minimum order age.
    pub reconcile_interval_secs: u64,
    /// Reconciliation: open orders older than this are queried.
    pub reconcile_after_secs: u64,
    /// The simulator's notification retry time scale.
    pub time_scale: f64,
    /// A simulator configuration file (merchants, key modes).
    pub sim_config: Option<std::path::PathBuf>,
}

impl DemoOptions {
    /// Defaults: `127.0.0.1:8080`, `./demo-data`, the 5-minute close rule.
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // Loopback only, whatever `addr` is: it is the merchant's API.
            internal_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            www_dir: None,
            wasm_pkg_dir: None,
            database_url: None,
            close_min_age_secs: 300,
            query_after_secs: 5,
            reconcile_interval_secs: 5,
            reconcile_after_secs: 10,
            time_scale: 1.0,
            sim_config: None,
        }
    }
}

/// A prepared demo: the configuration it runs with (also written to
/// `DIR/wxpay.toml`), the running simulator and the bound listener.
#[derive(Debug)]
pub struct Demo {
    /// The validated configuration.
    pub config: Config,
    /// Where it was written.
    pub config_path: std::path::PathBuf,
    /// The embedded simulator.
    pub sim: wxpay_combine_sim::SimHandle,
    /// The merchant server's listener.
    pub listener: TcpListener,
    /// `http://127.0.0.1:PORT/pay/`.
    pub page_url: String,
    /// The internal API's bearer token file (owner-only).
    pub internal_token_file: std::path::PathBuf,
}

fn default_dir(
    given: Option<&std::path::Path>,
    local: &str,
    repo_relative: &str,
) -> std::path::PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    let here = std::path::PathBuf::from(local);
    if here.exists() {
        return std::fs::canonicalize(&here).unwrap_or(here);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(repo_relative)
}

/// Replaces `path` atomically with an owner-only (0600) file.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), StartError> {
    use wxpay_combine_core::atomicfile::{self, Access};
    atomicfile::write(path, bytes, Access::Private)
        .map_err(|e| StartError::Other(format!("cannot write {}: {e}", path.display())))
}

/// Makes a secret kept from an earlier run owner-only (0600), whatever mode
/// it was created or copied with.
fn keep_private(path: &std::path::Path) -> Result<(), StartError> {
    wxpay_combine_core::atomicfile::restrict_to_owner(path)
        .map_err(|e| StartError::Other(format!("cannot restrict {}: {e}", path.display())))
}

/// Every simulator merchant but the initiator as a `[[merchants]]` entry
/// with its own credentials (refunds and bills are per merchant), its
/// APIv3 key written to `secrets/apiv3_key_<mchid>.txt` (owner-only).
fn demo_merchants(
    m: &wxpay_combine_sim::MerchantCredentials,
    secrets: &std::path::Path,
) -> Result<Vec<wxpay_combine::combine::settings::MerchantEntry>, StartError> {
    let mut out = Vec::new();
    for e in m.merchants.iter().filter(|e| e.mchid != m.mchid) {
        let Some(key) = &e.private_key_file else {
            // A merchant that brought its own key: listed without API access.
            out.push(wxpay_combine::combine::settings::MerchantEntry {
                mchid: e.mchid.clone(),
                ..Default::default()
            });
            continue;
        };
        let apiv3_key_file = secrets.join(format!("apiv3_key_{}.txt", e.mchid));
        write_private(&apiv3_key_file, e.apiv3_key.as_bytes())?;
        let public_key_file = e.wechatpay_public_key_file.as_ref().map(|f| m.dir.join(f));
        out.push(wxpay_combine::combine::settings::MerchantEntry {
            mchid: e.mchid.clone(),
            merchant_serial_no: Some(e.serial_no.clone()),
            merchant_private_key_file: Some(m.dir.join(key)),
            apiv3_key_file: Some(apiv3_key_file),
            platform_certificates: Some(public_key_file.is_none()),
            wechatpay_public_key_id: e.wechatpay_public_key_id.clone(),
            wechatpay_public_key_file: public_key_file,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Starts the embedded simulator, writes the demo's secrets, catalog and
/// configuration into the data directory, and binds the merchant server's
/// listener. Keys are created on the first run and reused afterwards.
pub async fn prepare_demo(opts: &DemoOptions) -> Result<Demo, StartError> {
    use wxpay_combine::config::RawConfig;
    let io = |what: &str, p: &std::path::Path, e: std::io::Error| {
        StartError::Other(format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| io("create", &opts.data_dir, e))?;
    let dir = std::fs::canonicalize(&opts.data_dir).map_err(|e| io("open", &opts.data_dir, e))?;

    let mut sim_opts = wxpay_combine_sim::SimOptions::new(dir.join("simulator"));
    sim_opts.time_scale = opts.time_scale;
    sim_opts.config = opts.sim_config.clone();
    // A newcomer pays, then runs `bill` for today: no wait for 10:00 tomorrow.
    sim_opts.bills_ready_immediately = true;
    let sim = wxpay_combine_sim::Simulator::start(sim_opts)
        .await
        .map_err(|e| StartError::Other(format!("simulator: {e}")))?;
    let m = sim.merchant().clone();

    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(|e| io("create", &secrets, e))?;
    let apiv3_key_file = secrets.join("apiv3_key.txt");
    write_private(&apiv3_key_file, m.apiv3_key.as_bytes())?;
    let app_secret_file = secrets.join("app_secret.txt");
    write_private(&app_secret_file, m.app_secret.as_bytes())?;
    let session_secret_file = secrets.join("session_secret.txt");
    if !session_secret_file.exists() {
        let secret = format!(
            "{}{}",
            wxpay_combine::apiv3::generate_nonce(),
            wxpay_combine::apiv3::generate_nonce()
        );
        write_private(&session_secret_file, secret.as_bytes())?;
    } else {
        keep_private(&session_secret_file)?;
    }
    // The internal API's bearer token: kept across runs, like the session
    // secret, so a backend script keeps working after a restart.
    let internal_token_file = secrets.join("internal_token.txt");
    if !internal_token_file.exists() {
        let token = format!(
            "{}{}",
            wxpay_combine::apiv3::generate_nonce(),
            wxpay_combine::apiv3::generate_nonce()
        );
        write_private(&internal_token_file, token.as_bytes())?;
    } else {
        keep_private(&internal_token_file)?;
    }
    let private_key_file = m.private_key_path.clone().ok_or_else(|| {
        StartError::Other("the simulator's merchant has no generated private key".into())
    })?;

    let merchants = demo_merchants(&m, &secrets)?;

    let catalog = Catalog::demo(&m.sub_mchids)?;
    let catalog_file = dir.join("catalog.toml");
    std::fs::write(&catalog_file, catalog.to_toml()).map_err(|e| io("write", &catalog_file, e))?;

    let listener = bind(opts.addr).await?;
    let mut local = listener
        .local_addr()
        .map_err(|e| io("inspect the listener on", std::path::Path::new(""), e))?;
    if local.ip().is_unspecified() {
        local.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    let origin = format!("http://{local}");
    let sim_base = sim.base_url().trim_end_matches('/').to_string();
    // The demo page's directory, registered with the simulated WeChat Pay
    // as the merchant platform would have it: the cashier refuses pages
    // elsewhere (当前页面的URL未注册).
    let pay_directory_registered = format!("{origin}/pay/");
    sim.set_pay_directories(&m.mchid, vec![pay_directory_registered.clone()])
        .map_err(|e| StartError::Other(format!("simulator: {e}")))?;
    let path_str = |p: &std::path::Path| Some(p.to_path_buf());

    let raw = RawConfig {
        listen: Some(local.to_string()),
        public_base_url: Some(origin.clone()),
        pay_directory: Some("/pay/".into()),
        pay_directory_registered: Some(pay_directory_registered),
        www_dir: path_str(&default_dir(opts.www_dir.as_deref(), "www", "../../www")),
        wasm_pkg_dir: path_str(&default_dir(
            opts.wasm_pkg_dir.as_deref(),
            "wasm/pkg",
            "../../wasm/pkg",
        )),
        demo: Some(true),
        simulator_base_url: Some(sim_base.clone()),
        database_url: Some(
            opts.database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite:{}", dir.join("wxpay.db").display())),
        ),
        appid: Some(m.appid.clone()),
        mchid: Some(m.mchid.clone()),
        merchant_serial_no: Some(m.serial_no.clone()),
        merchant_private_key_file: Some(private_key_file),
        apiv3_key_file: Some(apiv3_key_file),
        app_secret_file: Some(app_secret_file),
        session_secret_file: Some(session_secret_file),
        wechatpay_public_key_id: m.wechatpay_public_key_id.clone(),
        wechatpay_public_key_file: m.wechatpay_public_key_path.clone(),
        platform_certificates: Some(m.key_mode.has_certificates()),
        api_base_url: Some(sim_base.clone()),
        api_backup_url: Some(String::new()),
        notify_url: Some(format!("{origin}{}", notify::DEFAULT_PATH)),
        oauth_authorize_url: Some(format!("{sim_base}/connect/oauth2/authorize")),
        oauth_api_base_url: Some(sim_base.clone()),
        catalog_file: Some(catalog_file),
        query_after_secs: Some(opts.query_after_secs),
        close_min_age_secs: Some(opts.close_min_age_secs),
        reconcile_interval_secs: Some(opts.reconcile_interval_secs),
        reconcile_after_secs: Some(opts.reconcile_after_secs),
        merchants,
        internal_token_file: Some(internal_token_file.clone()),
        internal_listen: Some(opts.internal_addr.to_string()),
        ..RawConfig::default()
    };
    let config_path = dir.join("wxpay.toml");
    let header = format!(
        "# Written by `wxpay-combine demo`; rewritten on every demo start.\n\
         # While the demo runs, other commands can use the same simulator and database:\n\
         #   WXPAY_LISTEN=127.0.0.1:8081 WXPAY_PUBLIC_BASE_URL=http://127.0.0.1:8081 \\\n\
         #     wxpay-combine serve --config {path}\n\
         #   wxpay-combine bill --config {path} …\n\
         # (notify_url still points at the demo server, which shares the database.)\n\n",
        path = config_path.display()
    );
    write_private(
        &config_path,
        format!("{header}{}", raw.to_toml()).as_bytes(),
    )?;
    let mut config = raw.validate(&dir)?;
    config.source = Some(config_path.clone());
    Ok(Demo {
        page_url: config.page_url(),
        config,
        config_path,
        sim,
        listener,
        internal_token_file,
    })
}
