//! A merchant's own axum service embedding the kit (see `docs/library.md`).
//!
//! It mounts the kit's routes (H5 API, OAuth, the pay directory, WeChat
//! Pay notifications) next to its own, serves the server-to-server API on a
//! loopback listener of its own when `internal_token_file` is configured,
//! runs the kit's background workers, and keeps a list of paid orders from
//! in-process order events.
//!
//! Against the simulator: start `cargo xtask demo` (it writes
//! `demo-data/wxpay.toml`), then in another terminal run the example with
//! the demo's configuration and its own public URLs (the configuration
//! names the demo's: payment notifications would go to the demo, and the
//! demo's origin would make this app's page a cross-origin caller):
//!
//! ```sh
//! export WXPAY_PUBLIC_BASE_URL=http://127.0.0.1:8081
//! export WXPAY_NOTIFY_URL=http://127.0.0.1:8081/wxpay/notify
//! export WXPAY_PAY_DIRECTORY_REGISTERED=http://127.0.0.1:8081/pay/
//! cargo run -p wxpay-combine --example embed -- --config demo-data/wxpay.toml --listen 127.0.0.1:8081
//! curl http://127.0.0.1:8081/shop
//! ```
//!
//! (`WXPAY_EMBED_CONFIG` / `WXPAY_EMBED_LISTEN` work instead of the flags.)
//! Orders created through this app (its page or its internal API) are
//! notified here and show up in `/shop/paid`; see `docs/library.md`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wxpay_combine::config::Config;
use wxpay_combine::events::{OrderEventHandler, OrderEventKind, OrderEventNotice};
use wxpay_combine::kit::Kit;

/// The merchant's own state: orders it heard were paid.
#[derive(Clone, Default)]
struct Shop {
    paid: Arc<Mutex<Vec<String>>>,
}

/// Order events arrive here once committed (at most once: the webhook
/// outbox is the at-least-once channel).
struct OnPaid(Shop);

#[async_trait::async_trait]
impl OrderEventHandler for OnPaid {
    async fn on_event(&self, e: &OrderEventNotice) {
        if e.kind == OrderEventKind::Paid {
            println!(
                "paid: {} ({} fen, {} sub-orders)",
                e.combine_out_trade_no,
                e.order.total_amount(),
                e.order.sub_orders.len()
            );
            self.0
                .paid
                .lock()
                .unwrap()
                .push(e.combine_out_trade_no.clone());
        }
    }
}

async fn home() -> &'static str {
    "my shop: the pay page is at /pay/, paid orders at /shop/paid\n"
}

async fn paid(State(shop): State<Shop>) -> Json<Vec<String>> {
    Json(shop.paid.lock().unwrap().clone())
}

fn arg(flag: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Your service's own logging; the library only emits `tracing` events.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Some(config_path) = arg("--config", "WXPAY_EMBED_CONFIG") else {
        eprintln!("usage: embed --config wxpay.toml [--listen 127.0.0.1:8081]");
        eprintln!("(start `cargo xtask demo` first to get demo-data/wxpay.toml)");
        std::process::exit(2);
    };
    let config = Config::load(&PathBuf::from(config_path))?;
    let listen: SocketAddr = match arg("--listen", "WXPAY_EMBED_LISTEN") {
        Some(a) => a.parse()?,
        None => config.http.listen,
    };

    let shop = Shop::default();
    let kit = Kit::builder(config)
        .on_event(OnPaid(shop.clone()))
        .build()
        .await?;

    // Our routes at the root (they are absolute URLs registered with
    // WeChat: OAuth redirect, notify_url, pay directory), the shop's next
    // to them.
    let app = Router::new()
        .route("/shop", get(home))
        .route("/shop/paid", get(paid))
        .with_state(shop)
        .merge(kit.router);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // The server-to-server API: the kit serves it itself on
    // `internal_listen` (a worker); without that, this app puts it on a
    // loopback port only its backend reaches.
    if let Some(addr) = kit.internal_addr {
        println!("internal API: http://{addr}/internal/");
    } else if let Some(internal) = kit.internal_router {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("internal API: http://{}/internal/", listener.local_addr()?);
        let stop = stopped();
        tokio::spawn(async move {
            let _ = axum::serve(listener, internal)
                .with_graceful_shutdown(stop)
                .await;
        });
    }

    let workers = tokio::spawn(kit.workers.run_until(stopped()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("shop: http://{}/shop", listener.local_addr()?);
    // The peer address feeds the kit's per-IP rate limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    let _ = stop_tx.send(true);
    workers.await?;
    Ok(())
}
