//! The library entry point: everything the merchant server is made of,
//! built once from a [`Config`], for `wxpay-combine serve`/`demo` and for a
//! merchant's own axum service alike.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wxpay_combine::config::Config;
//! use wxpay_combine::events::{OrderEventNotice, RefundEventNotice};
//! use wxpay_combine::kit::Kit;
//!
//! # async fn demo(config: Config) -> Result<(), Box<dyn std::error::Error>> {
//! let store = wxpay_combine::store::connect(&config.store.database_url).await?;
//! let kit = Kit::builder(config)
//!     .store(store)
//!     .on_event(|e: &OrderEventNotice| println!("{} {}", e.kind.as_str(), e.combine_out_trade_no))
//!     .on_refund_event(|e: &RefundEventNotice| println!("{} {}", e.kind.as_str(), e.out_refund_no))
//!     .build()
//!     .await?;
//! // Our routes (H5 API, OAuth, pay directory, notifications) next to yours:
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "my shop" }))
//!     .merge(kit.router);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
//! let workers = tokio::spawn(kit.workers.run_until(async move {
//!     let mut rx = stop_rx;
//!     let _ = rx.wait_for(|s| *s).await;
//! }));
//! // The peer address feeds the per-IP rate limit.
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .with_graceful_shutdown(shutdown)
//!     .await?;
//! let _ = stop_tx.send(true);
//! workers.await?;
//! # Ok(())
//! # }
//! ```
//!
//! The routes must be merged at the root of the host (not nested under a
//! prefix): the OAuth redirect URI, the notification path and the pay
//! directory are absolute URLs registered with WeChat. See
//! `docs/library.md`.

mod serve;
mod start;
mod workers;

pub use serve::{serve, serve_with_metrics};
pub use start::{
    bill_fetchers, bind, build_client, build_merchant_client, check, merchants_without_credentials,
    prepare_client, prepare_merchant_client, prepare_merchant_clients, redact_database_url,
    refund_service, MerchantClientList, StartError,
};
pub use workers::{RunningWorkers, Workers, WORKER_STOP_GRACE};

use crate::apiv3::{Clock, SystemClock};
use crate::catalog::Catalog;
use crate::combine::client::WechatPayClient;
use crate::combine::CombineApi;
use crate::config::Config;
use crate::events::{EventHub, OrderEventHandler, RefundEventNotice, RefundHandlerFn};
use crate::http::{self, AppState, HttpOAuthClient, HttpSettings};
use crate::notify::refund::{RefundMerchantKeys, RefundNotifyHandler};
use crate::notify::{self, NotifyConfig, NotifyHandler};
use crate::reconcile::{Worker, WorkerConfig};
use crate::refund::RefundService;
use crate::store::{self, Store};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

/// How often platform certificates are refreshed in certificate mode
/// (new certificates are listed 24 h before use; < 12 h is recommended).
pub const CERTIFICATE_REFRESH_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Everything a running merchant server is made of: the router to serve and
/// the background workers to run, plus the parts (for tools and tests).
pub struct Kit {
    /// The public router: H5 API, OAuth, the pay directory, notifications,
    /// health. Merge it at the root of your app.
    pub router: Router,
    /// The server-to-server order API (`/internal/…`, behind the bearer
    /// token), when `internal_token_file` is configured. Already merged into
    /// [`Kit::router`] with `internal_on_public_listener`, and served by a
    /// worker on `internal_listen` when set; otherwise mount it yourself on
    /// a listener only your backend reaches.
    pub internal_router: Option<Router>,
    /// Where the internal API listens (`internal_listen`, bound by
    /// [`KitBuilder::build`]; port 0 picks a free port).
    pub internal_addr: Option<std::net::SocketAddr>,
    /// The background tasks; run them with [`Workers::run_until`] or
    /// [`Workers::start`].
    pub workers: Workers,
    /// The handler state of the public routes.
    pub state: AppState,
    /// The order database.
    pub store: Arc<dyn Store>,
    /// The WeChat Pay client.
    pub client: Arc<WechatPayClient>,
    /// The notification handler.
    pub notify: Arc<NotifyHandler>,
    /// Refunds per sub-order, each by its own merchant.
    pub refunds: Arc<RefundService>,
    /// The in-process order events of [`Kit::store`].
    pub events: EventHub,
    /// The validated configuration the kit was built from.
    pub config: Arc<Config>,
}

impl std::fmt::Debug for Kit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kit")
            .field("client", &self.client)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Kit {
    /// Starts building a kit from a validated configuration.
    pub fn builder(config: Config) -> KitBuilder {
        KitBuilder {
            config,
            clock: Arc::new(SystemClock),
            store: None,
            catalog: None,
            handlers: Vec::new(),
        }
    }
}

/// Options of [`Kit::builder`].
pub struct KitBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn Store>>,
    catalog: Option<Arc<Catalog>>,
    handlers: Vec<Arc<dyn OrderEventHandler>>,
}

impl std::fmt::Debug for KitBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitBuilder")
            .field("store", &self.store)
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl KitBuilder {
    /// Uses `store` instead of connecting to `config.store.database_url`.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Uses `catalog` instead of loading `config.catalog_file` (the catalog
    /// prices the H5 page's carts).
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(Arc::new(catalog));
        self
    }

    /// The time source (tests use a fixed clock). Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Registers an in-process order event handler (at most once per event;
    /// see [`crate::events`]). Closures `Fn(&OrderEventNotice)` work too
    /// (they see order events; a handler implementing
    /// [`OrderEventHandler::on_refund`] sees refund events too).
    pub fn on_event(mut self, handler: impl OrderEventHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Registers a closure for in-process refund events (`refund.succeeded`,
    /// `refund.closed`, `refund.abnormal`; at most once per change).
    pub fn on_refund_event(
        self,
        handler: impl Fn(&RefundEventNotice) + Send + Sync + 'static,
    ) -> Self {
        self.on_event(RefundHandlerFn(handler))
    }

    /// Connects to the database (unless a store was given), prepares the
    /// WeChat Pay client (certificate mode: the first download), and wires
    /// the notification handler, the reconciliation worker and the router.
    pub async fn build(self) -> Result<Kit, StartError> {
        let KitBuilder {
            config,
            clock,
            store,
            catalog,
            handlers,
        } = self;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let catalog = match (catalog, config.catalog_file.as_deref()) {
            (Some(c), _) => c,
            (None, Some(path)) => Arc::new(Catalog::load(path)?),
            (None, None) => return Err(StartError::Other("catalog_file is not set".into())),
        };
        let store = match store {
            Some(s) => s,
            None => store::connect(&config.store.database_url)
                .await
                .map_err(|source| StartError::Store {
                    url: redact_database_url(&config.store.database_url),
                    source,
                })?,
        };
        let events = store.event_hub().cloned().unwrap_or_default();
        for h in handlers {
            events.add_handler(h);
        }
        let client = prepare_client(&config, clock.clone()).await?;
        let api: Arc<dyn CombineApi> = client.clone();

        // Each merchant with credentials, with its own client: refunds and
        // bills are made by the sub-order's own merchant.
        let merchant_clients =
            prepare_merchant_clients(&config, client.clone(), clock.clone()).await?;
        let refunds = refund_service(&config, &merchant_clients, store.clone(), clock.clone());
        let refund_notify = Arc::new(RefundNotifyHandler::new(
            merchant_clients
                .iter()
                .map(|(c, client)| RefundMerchantKeys {
                    mchid: c.mchid.clone(),
                    verifier: client.verifier().clone(),
                    apiv3_key: c.apiv3_key.clone(),
                })
                .collect(),
            refunds.clone(),
            notify::DEFAULT_MAX_BODY_BYTES,
            notify::DEFAULT_TIMEOUT,
        ));

        let mut notify = NotifyHandler::new(
            store.clone(),
            client.verifier().clone(),
            config.wechatpay.merchant.apiv3_key.clone(),
            NotifyConfig::new(
                config.wechatpay.merchant.mchid.clone(),
                config.wechatpay.appid.clone(),
            ),
            clock.clone(),
        );
        if client.certificate_mode() {
            // A notification signed with a platform certificate we do not hold
            // yet: refresh in the background (at most once a minute); WeChat
            // Pay's retry then verifies.
            let refresher = client.clone();
            notify = notify.with_unknown_serial_hook(move || {
                let client = refresher.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.refresh_certificates(false).await {
                        tracing::warn!(error = %e, "certificate refresh after an unknown notification serial failed");
                    }
                });
            });
        }
        let notify = Arc::new(notify);

        let worker = Worker::new(
            store.clone(),
            api.clone(),
            WorkerConfig {
                interval: Duration::from_secs(config.reconcile.interval_secs),
                query_after: Duration::from_secs(config.reconcile.after_secs.max(0) as u64),
                min_close_age: Duration::from_secs(
                    config.http.orders.close_min_age_secs.max(0) as u64
                ),
                ..WorkerConfig::default()
            },
            clock.clone(),
        );

        // Webhooks: the outbox is delivered only when webhook_url is set.
        let webhook = match config.webhook.clone() {
            Some(settings) => Some(
                crate::webhook::WebhookWorker::new(store.clone(), settings, clock.clone())
                    .map_err(StartError::Other)?,
            ),
            None => None,
        };

        let oauth = HttpOAuthClient::new(
            config.http.oauth.api_base_url.clone(),
            config.wechatpay.appid.clone(),
            config.http.oauth.app_secret.clone(),
            config.wechatpay.api.request_timeout,
        )
        .map_err(StartError::Other)?;
        let state = AppState::new(
            HttpSettings::from_settings(
                &config.http,
                &config.wechatpay,
                &config.notify,
                config.demo,
            ),
            store.clone(),
            api,
            Arc::new(oauth),
            catalog,
            config.wechatpay.merchant.private_key.clone(),
            clock,
        )
        .with_readiness_verifier(client.verifier().clone())
        .with_limits(config.http.limits.clone());
        let mut router = http::app(state.clone())
            .merge(http::traced(notify::router(
                notify.clone(),
                &config.notify.notify_path,
            )))
            .merge(http::traced(notify::refund::router(
                refund_notify,
                &config.notify.refund_notify_path,
            )));
        if config.metrics.on_public_listener {
            router = router.merge(http::traced(crate::metrics::router()));
        }
        // Intake: the server-to-server API, on its own listener by default.
        let internal_router = config.internal.as_ref().map(|ic| {
            http::internal::router(
                http::internal::InternalApi::new(
                    state.clone(),
                    ic,
                    secrecy::ExposeSecret::expose_secret(&config.http.session_secret),
                    config.page_url(),
                )
                .with_refunds(refunds.clone()),
            )
        });
        if let (Some(r), Some(ic)) = (&internal_router, &config.internal) {
            if ic.on_public_listener {
                tracing::warn!("the internal API is mounted on the public listener (internal_on_public_listener)");
                router = router.merge(r.clone());
            }
        }
        let internal_listener = match (
            &internal_router,
            config.internal.as_ref().and_then(|i| i.listen),
        ) {
            (Some(_), Some(addr)) => Some(bind(addr).await?),
            _ => None,
        };
        let internal_addr = internal_listener.as_ref().and_then(|l| l.local_addr().ok());

        // Background tasks. Helpers adding one: `workers.add("name", |stop| async move { … })`
        // here, returning soon after `stop` is cancelled.
        let mut workers = Workers::new();
        workers.add("reconcile", move |stop| async move {
            worker.run(stop.cancelled_owned()).await
        });
        // Refunds still PROCESSING past the query delay: re-sent (never
        // accepted) or queried, on the reconciliation interval.
        {
            let refunds = refunds.clone();
            let every = Duration::from_secs(config.reconcile.interval_secs.max(1));
            workers.add("refund-sweep", move |stop| async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.cancelled() => return,
                    }
                    if let Err(e) = refunds.sweep(100).await {
                        tracing::warn!(error = %e, "refund sweep failed");
                    }
                }
            });
        }
        if let Some(webhook) = webhook {
            workers.add("webhook", move |stop| async move {
                webhook.run(stop.cancelled_owned()).await
            });
        }
        if client.certificate_mode() {
            let client = client.clone();
            workers.add("certificate-refresh", move |stop| async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(CERTIFICATE_REFRESH_EVERY) => {}
                        _ = stop.cancelled() => return,
                    }
                    if let Err(e) = client.refresh_certificates(true).await {
                        tracing::warn!(error = %e, "periodic platform certificate refresh failed");
                    }
                }
            });
        }
        // Intake: the internal API's listener stops accepting at shutdown and
        // finishes its in-flight requests.
        if let (Some(listener), Some(r)) = (internal_listener, internal_router.clone()) {
            let connections = config.http.connections;
            workers.add("internal-listener", move |stop| async move {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "internal API listening");
                }
                // The same connection limits as the public listener.
                crate::http::listener::serve(listener, r, connections, "internal", stop).await;
            });
        }
        // Bills: the daily trade-bill run (bill_schedule = true).
        if config.bill_schedule.enabled {
            let clock = client.verifier().clock().clone();
            let fetchers = bill_fetchers(&config, &merchant_clients, store.clone())?;
            let scheduler = crate::bill::schedule::BillScheduler::new(
                fetchers,
                store.clone(),
                start::merchants_without_credentials(&config),
                config.bill_schedule.clone(),
                clock,
            );
            workers.add("bill-schedule", move |stop| async move {
                scheduler.run(stop.cancelled_owned()).await
            });
        }

        Ok(Kit {
            router,
            internal_router,
            internal_addr,
            workers,
            state,
            store,
            client,
            notify,
            refunds,
            events,
            config: Arc::new(config),
        })
    }
}
