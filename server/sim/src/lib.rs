//! The WeChat Pay APIv3 simulator (`wxpay-combine sim`): the combined-order
//! JSAPI APIs, the payer's cashier, notifications, bills and OAuth, offline.
//!
//! Run standalone with `wxpay-combine sim`, or embedded:
//!
//! ```no_run
//! # async fn demo() -> Result<(), wxpay_combine_sim::SimError> {
//! use wxpay_combine_sim::{SimOptions, Simulator};
//! let sim = Simulator::start(SimOptions::new("/tmp/wxsim")).await?;
//! println!("WeChat Pay at {}", sim.base_url());
//! let merchant = sim.merchant();
//! # let _ = merchant;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/simulator.md` for the HTTP surface, faults and differences from
//! the real service.

mod api;
mod auth;
mod bill;
mod cashier;
mod cli;
mod clock;
mod config;
mod control;
mod credentials;
mod error;
mod faults;
mod ids;
mod notify;
mod oauth;
mod order;
mod platform;
mod refund;
mod reply;
mod state;
mod validate;

pub use cashier::{CashierAction, CashierOutcome};
pub use cli::{run, SimArgs};
pub use config::{KeyMode, MerchantConfig, SimConfig};
pub use control::{ControlState, NotificationLog, NotificationSummary, ScopedFaults, SimStats};
pub use credentials::{MerchantCredentials, MerchantEntry};
pub use error::SimError;
pub use faults::{EndpointFault, FaultCode, FaultScope, Faults, FAULT_FIELDS};
pub use notify::RETRY_SCHEDULE_SECS;
pub use state::{ApiCallRecord, NotificationAttempt};

use axum::routing::{any, get, post};
use axum::Router;
use credentials::Merchant;
use faults::FaultBook;
use state::Db;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use wxpay_combine_core::apiv3::{generate_nonce, Clock, JsapiPayParams};

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The data directory (credentials, platform keys, `sim.db`).
    pub data_dir: PathBuf,
    /// Multiplies the notification retry schedule (0.01 turns 15 s into 150 ms).
    pub time_scale: f64,
    /// A TOML file declaring merchants.
    pub config: Option<PathBuf>,
    /// Global faults in force from the start (the global scope is reset to
    /// these at every start; merchant and order scopes persist).
    pub faults: Faults,
    /// Authorised OAuth domains; overrides the config file. Default
    /// `127.0.0.1` and `localhost`.
    pub oauth_domains: Option<Vec<String>>,
    /// Serve a day's trade bill at once instead of `STATEMENT_CREATING`
    /// until 10:00 the next day (the demo turns it on). `false` keeps what
    /// `/sim/control` stored.
    pub bills_ready_immediately: bool,
}

impl SimOptions {
    /// Loopback, a free port, real time, one generated merchant.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            time_scale: 1.0,
            config: None,
            faults: Faults::default(),
            oauth_domains: None,
            bills_ready_immediately: false,
        }
    }
}

/// Shared state of a running simulator.
#[derive(Debug)]
pub(crate) struct SimState {
    pub db: Db,
    /// The configured merchants (combined-order initiators), primary first.
    pub merchants: Vec<Arc<Merchant>>,
    /// Every merchant with credentials: the initiators, then the
    /// sub-merchants (each signs its own refunds and bill requests).
    pub accounts: Vec<Arc<Merchant>>,
    pub faults: FaultBook,
    pub clock: clock::SimClock,
    pub time_scale: f64,
    pub base_url: String,
    pub oauth_domains: Vec<String>,
    /// Wakes the delivery worker when a notification is due sooner.
    pub wake: Notify,
    /// Serialises read-modify-write sequences on the database.
    pub write_lock: Mutex<()>,
    pub http: reqwest::Client,
    /// Trade bills without the wait for 10:00 the next day.
    pub bills_ready_immediately: AtomicBool,
    /// Coupon (fen) the cashier applies to the next payments; 0: none.
    pub coupon_fen: AtomicI64,
}

impl SimState {
    pub fn merchant(&self, mchid: &str) -> Option<&Arc<Merchant>> {
        self.merchants.iter().find(|m| m.creds.mchid == mchid)
    }

    /// Any merchant with credentials, initiator or sub-merchant.
    pub fn account(&self, mchid: &str) -> Option<&Arc<Merchant>> {
        self.accounts.iter().find(|m| m.creds.mchid == mchid)
    }

    pub fn merchant_by_appid(&self, appid: &str) -> Option<&Arc<Merchant>> {
        self.merchants.iter().find(|m| m.creds.appid == appid)
    }

    pub fn primary(&self) -> &Arc<Merchant> {
        &self.merchants[0]
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Opens (or initialises) the data directory, binds, and serves until
    /// [`SimHandle::shutdown`].
    pub async fn start(opts: SimOptions) -> Result<SimHandle, SimError> {
        if !opts.time_scale.is_finite() || opts.time_scale < 0.0 {
            return Err(SimError::Config(format!(
                "time_scale must be >= 0, got {}",
                opts.time_scale
            )));
        }
        let dir = opts.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io(&dir, e))?;
        let config = match &opts.config {
            Some(p) => Some(SimConfig::load(p)?),
            None => None,
        };
        let db = Db::open(&dir.join("sim.db")).await?;
        let offset: i64 = db
            .meta("clock_offset_secs")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let sim_clock = clock::SimClock::with_offset(offset);
        let bills_ready = opts.bills_ready_immediately
            || db.meta("bills_ready_immediately").await?.as_deref() == Some("true");
        let coupon_fen: i64 = db
            .meta("coupon_fen")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let now = sim_clock.now();

        // RSA key generation is CPU-bound: keep it off the async workers.
        let cfg = config.clone();
        let load_dir = dir.clone();
        let (merchants, accounts) =
            tokio::task::spawn_blocking(move || load_merchants(&load_dir, cfg.as_ref(), now))
                .await
                .map_err(|e| SimError::Config(format!("merchant setup panicked: {e}")))??;

        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| SimError::Bind {
                addr: opts.addr.to_string(),
                detail: e.to_string(),
            })?;
        let mut local = listener.local_addr().map_err(|e| SimError::Bind {
            addr: opts.addr.to_string(),
            detail: e.to_string(),
        })?;
        if local.ip().is_unspecified() {
            local.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        let base_url = format!("http://{local}");

        let faults = FaultBook::default();
        for (key, json) in db.faults().await? {
            match (
                FaultScope::from_key(&key),
                serde_json::from_str::<Faults>(&json),
            ) {
                (Some(FaultScope::Global), _) => {}
                (Some(scope), Ok(f)) => faults.set(scope, f),
                _ => tracing::warn!(scope = %key, "ignoring unreadable stored faults"),
            }
        }
        let global = opts
            .faults
            .patch(&serde_json::Map::new())
            .map_err(SimError::Control)?;
        db.save_fault(
            &FaultScope::Global.key(),
            (!global.is_empty())
                .then(|| serde_json::to_string(&global).unwrap_or_default())
                .as_deref(),
        )
        .await?;
        faults.set(FaultScope::Global, global);

        let oauth_domains = opts
            .oauth_domains
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.oauth.domains.clone()))
            .unwrap_or_else(|| vec!["127.0.0.1".into(), "localhost".into()]);
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(notify::ANSWER_TIMEOUT)
            .build()
            .map_err(|e| SimError::Config(format!("HTTP client: {e}")))?;

        let st = Arc::new(SimState {
            db,
            merchants,
            accounts,
            faults,
            clock: sim_clock,
            time_scale: opts.time_scale,
            base_url: base_url.clone(),
            oauth_domains,
            wake: Notify::new(),
            write_lock: Mutex::new(()),
            http,
            bills_ready_immediately: AtomicBool::new(bills_ready),
            coupon_fen: AtomicI64::new(coupon_fen),
        });

        let (stop_tx, stop_rx) = watch::channel(false);
        let app = router(st.clone());
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_stop.wait_for(|s| *s).await;
            };
            // TCP_NODELAY, as a real front end would: no Nagle delay on
            // small answers.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        let worker = tokio::spawn(notify::run(st.clone(), stop_rx));
        tracing::info!(%base_url, data_dir = %dir.display(), "WeChat Pay simulator listening");
        Ok(SimHandle {
            addr: local,
            base_url,
            data_dir: dir,
            st,
            stop: stop_tx,
            server,
            worker,
        })
    }
}

/// The initiators and every merchant with credentials (initiators first,
/// then the sub-merchants they declare).
type Roster = (Vec<Arc<Merchant>>, Vec<Arc<Merchant>>);

fn load_merchants(dir: &Path, config: Option<&SimConfig>, now: i64) -> Result<Roster, SimError> {
    let mut initiators = load_initiators(dir, config, now)?;
    // Each sub-merchant gets credentials of its own under
    // `merchants/<mchid>/`, like a further initiator's, made once and
    // reloaded on every start.
    let platform_root = dir.join("platform");
    let mut subs: Vec<Merchant> = Vec::new();
    for mchid in initiators.iter().flat_map(|m| m.creds.sub_mchids.iter()) {
        if initiators.iter().any(|m| &m.creds.mchid == mchid)
            || subs.iter().any(|m| &m.creds.mchid == mchid)
        {
            continue;
        }
        let cfg = MerchantConfig {
            mchid: mchid.clone(),
            mode: Some(KeyMode::PublicKey),
            sub_mchids: Some(Vec::new()),
            ..Default::default()
        };
        let mut m = credentials::establish(
            &dir.join("merchants").join(mchid),
            &platform_root.join(mchid),
            Some(&cfg),
            now,
        )?;
        m.initiator = false;
        subs.push(m);
    }
    let roster: Vec<MerchantEntry> = initiators
        .iter()
        .chain(subs.iter())
        .map(|m| MerchantEntry::of(&m.creds, dir))
        .collect();
    initiators[0].creds.set_roster(roster)?;
    let initiators: Vec<Arc<Merchant>> = initiators.into_iter().map(Arc::new).collect();
    let accounts = initiators
        .iter()
        .cloned()
        .chain(subs.into_iter().map(Arc::new))
        .collect();
    Ok((initiators, accounts))
}

fn load_initiators(
    dir: &Path,
    config: Option<&SimConfig>,
    now: i64,
) -> Result<Vec<Merchant>, SimError> {
    let platform_root = dir.join("platform");
    let declared = config.map(|c| c.merchants.as_slice()).unwrap_or_default();
    if declared.is_empty() {
        // One generated merchant; its mchid names its platform-key directory.
        let fresh = match credentials::MerchantCredentials::load(dir) {
            Ok(_) => None,
            Err(_) if !dir.join(credentials::MERCHANT_JSON).exists() => Some(MerchantConfig {
                mchid: ids::mchid(),
                ..Default::default()
            }),
            Err(e) => return Err(e),
        };
        let mchid = match &fresh {
            Some(c) => c.mchid.clone(),
            None => credentials::MerchantCredentials::load(dir)?.mchid,
        };
        let m = credentials::establish(dir, &platform_root.join(&mchid), fresh.as_ref(), now)?;
        return Ok(vec![m]);
    }
    declared
        .iter()
        .enumerate()
        .map(|(i, mc)| {
            let mdir = if i == 0 {
                dir.to_path_buf()
            } else {
                dir.join("merchants").join(&mc.mchid)
            };
            credentials::establish(&mdir, &platform_root.join(&mc.mchid), Some(mc), now)
        })
        .collect()
}

fn router(st: Arc<SimState>) -> Router {
    let cors = tower_http::cors::CorsLayer::permissive();
    let sim = Router::new()
        .route("/sim/bridge.js", get(cashier::bridge_js))
        .route("/sim/cashier/order", get(cashier::order_preview))
        .route("/sim/cashier/confirm", post(cashier::confirm_http))
        .route(
            "/sim/control",
            post(control::control_http).get(control::control_get),
        )
        .route("/sim/notifications", get(control::notifications_http))
        .route("/sim/stats", get(control::stats_http))
        .route("/sim/api-calls", get(control::api_calls_http))
        .layer(cors);
    Router::new()
        .route("/", get(control::index))
        .route("/v3/{*rest}", any(api::v3_entry))
        .route("/connect/oauth2/authorize", get(oauth::authorize))
        .route("/sns/oauth2/access_token", get(oauth::access_token))
        .merge(sim)
        .layer(axum::middleware::map_response(api::ensure_request_id))
        .with_state(st)
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    data_dir: PathBuf,
    st: Arc<SimState>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` — use it where `https://api.mch.weixin.qq.com`,
    /// `https://open.weixin.qq.com` and `https://api.weixin.qq.com` go.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The primary merchant's credentials.
    pub fn merchant(&self) -> &MerchantCredentials {
        &self.st.primary().creds
    }

    /// Every initiator's credentials, primary first.
    pub fn merchants(&self) -> Vec<&MerchantCredentials> {
        self.st.merchants.iter().map(|m| &m.creds).collect()
    }

    /// Every merchant with credentials (initiators, then sub-merchants).
    pub fn accounts(&self) -> Vec<&MerchantCredentials> {
        self.st.accounts.iter().map(|m| &m.creds).collect()
    }

    /// The credentials of merchant `mchid` (initiator or sub-merchant).
    pub fn account(&self, mchid: &str) -> Option<&MerchantCredentials> {
        self.st.account(mchid).map(|m| &m.creds)
    }

    /// The openid of user `name` under `appid` (registered, so prepay
    /// accepts it), as `/connect/oauth2/authorize?…&user=NAME` would give.
    pub async fn openid(&self, appid: &str, name: &str) -> Result<String, SimError> {
        let openid = ids::openid(appid, name);
        self.st.db.remember_user(appid, &openid, name).await?;
        Ok(openid)
    }

    /// The same as `POST /sim/control` with this JSON body.
    pub async fn control(&self, body: serde_json::Value) -> Result<ControlState, SimError> {
        control::apply(&self.st, &body).await
    }

    /// Replaces one scope's faults.
    pub async fn set_faults(&self, scope: FaultScope, faults: Faults) -> Result<(), SimError> {
        let checked = faults
            .patch(&serde_json::Map::new())
            .map_err(SimError::Control)?;
        let _guard = self.st.write_lock.lock().await;
        control::set_faults_locked(&self.st, scope, checked).await
    }

    /// Registers a merchant's pay directories (支付授权目录); the cashier
    /// then refuses pages outside them with 当前页面的URL未注册. Empty: no
    /// check. Kept in memory (the configuration file's `pay_directories`
    /// are applied at every start).
    pub fn set_pay_directories(&self, mchid: &str, dirs: Vec<String>) -> Result<(), SimError> {
        control::set_pay_directories(&self.st, mchid, dirs)
    }

    /// Shifts the simulator's clock (expiries, signatures, timestamps).
    pub async fn set_clock_offset(&self, secs: i64) -> Result<(), SimError> {
        self.control(serde_json::json!({ "clock_offset_secs": secs }))
            .await
            .map(|_| ())
    }

    /// The simulator's current Unix time (with the offset).
    pub fn now(&self) -> i64 {
        self.st.clock.now()
    }

    /// Counters (`GET /sim/stats`).
    pub async fn stats(&self) -> Result<SimStats, SimError> {
        control::stats(&self.st).await
    }

    /// How many prepay requests named `combine_out_trade_no`, whatever their
    /// outcome.
    pub async fn prepay_calls(&self, combine_out_trade_no: &str) -> Result<i64, SimError> {
        Ok(self
            .st
            .db
            .count_calls("prepay", combine_out_trade_no)
            .await?)
    }

    /// Every logged APIv3 request.
    pub async fn api_calls(&self) -> Result<Vec<ApiCallRecord>, SimError> {
        Ok(self.st.db.calls().await?)
    }

    /// The notification delivery log (`GET /sim/notifications`).
    pub async fn notifications(
        &self,
        combine_out_trade_no: Option<&str>,
    ) -> Result<NotificationLog, SimError> {
        control::notification_log(&self.st, combine_out_trade_no).await
    }

    /// Confirms in the cashier exactly as `POST /sim/cashier/confirm` does.
    pub async fn confirm(&self, params: &JsapiPayParams, action: CashierAction) -> CashierOutcome {
        cashier::confirm(&self.st, params, action, None).await
    }

    /// Pays with the parameters a merchant built (`getBrandWCPayRequest`).
    pub async fn pay(&self, params: &JsapiPayParams) -> CashierOutcome {
        self.confirm(params, CashierAction::Pay).await
    }

    /// Signs `getBrandWCPayRequest` parameters for `prepay_id` with the
    /// owning merchant's key (when the simulator generated it) and pays.
    pub async fn pay_prepay_id(&self, prepay_id: &str) -> Result<CashierOutcome, SimError> {
        let params = self.pay_params(prepay_id).await?;
        Ok(self.pay(&params).await)
    }

    /// The `getBrandWCPayRequest` parameters for `prepay_id`, signed with the
    /// owning merchant's key.
    pub async fn pay_params(&self, prepay_id: &str) -> Result<JsapiPayParams, SimError> {
        let p = self
            .st
            .db
            .prepay(prepay_id)
            .await?
            .ok_or_else(|| SimError::Control(format!("unknown prepay_id {prepay_id}")))?;
        let m = self
            .st
            .merchant(&p.combine_mchid)
            .ok_or_else(|| SimError::Control("merchant gone".into()))?;
        let key = m.private_key.as_ref().ok_or_else(|| {
            SimError::Control(format!("merchant {} brought its own key", m.creds.mchid))
        })?;
        Ok(JsapiPayParams::sign(
            key,
            &m.creds.appid,
            prepay_id,
            self.now(),
            &generate_nonce(),
        )?)
    }

    /// Stops serving and delivering; pending deliveries stay in `sim.db`.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(3), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        let _ = self.worker.await;
        self.st.db.close().await;
    }
}
