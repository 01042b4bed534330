//! The Rust snippets of `docs/library.md` and `docs/simulator.md`, compiled.
//!
//! Each snippet sits between `// doc-snippet: NAME` and `// doc-snippet-end`
//! and is, less its indentation, exactly the document's block marked
//! `<!-- doc-test: NAME -->` (`tests/tests/docs.rs` compares them). Building
//! this example (`cargo test` and `cargo clippy --all-targets` do) checks
//! that the documents' code compiles against the current API. The functions
//! are not run: they need a real configuration or order numbers.

#![allow(dead_code, unused_variables)]

use std::path::Path;
use wxpay_combine::combine::CombineOrder;
use wxpay_combine::events::{
    OrderEventHandler, OrderEventKind, OrderEventNotice, RefundEventKind, RefundEventNotice,
};

type AnyError = Box<dyn std::error::Error>;

async fn my_home() -> &'static str {
    "my shop"
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// `docs/library.md`: the kit inside a merchant's axum service.
#[rustfmt::skip]
async fn library_embed(listener: tokio::net::TcpListener) -> Result<(), AnyError> {
    // doc-snippet: library-embed
    use wxpay_combine::config::Config;
    use wxpay_combine::events::{OrderEventKind, OrderEventNotice};
    use wxpay_combine::kit::Kit;

    let config = Config::load("wxpay.toml".as_ref())?;          // validated, secrets read
    let store = wxpay_combine::store::connect(&config.store.database_url).await?; // optional
    let kit = Kit::builder(config)
        .store(store)                                              // default: connect to database_url
        .on_event(|e: &OrderEventNotice| {
            if e.kind == OrderEventKind::Paid {
                println!("{} paid", e.combine_out_trade_no);
            }
        })
        .build()
        .await?;

    let app = axum::Router::new()
        .route("/shop", axum::routing::get(my_home))
        .merge(kit.router);                                         // at the root, see below
    let workers = tokio::spawn(kit.workers.run_until(shutdown_signal()));
    // With the peer address: the kit's per-IP rate limit needs it.
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    workers.await?;
    // doc-snippet-end
    Ok(())
}

/// A merchant's fulfilment, as the handler snippets of `docs/library.md`
/// use it.
pub struct Fulfilment;

impl Fulfilment {
    async fn ship(&self, order: &CombineOrder) {
        println!("ship {}", order.combine_out_trade_no);
    }

    async fn release_stock(&self, order: &CombineOrder) {
        println!("release the stock of {}", order.combine_out_trade_no);
    }

    async fn credit_back(&self, combine_out_trade_no: &str, out_trade_no: &str, amount: i64) {
        println!("credit {amount} fen of {combine_out_trade_no} ({out_trade_no})");
    }
}

#[rustfmt::skip]
mod order_events {
    use super::*;

    // doc-snippet: library-handler
    #[async_trait::async_trait]
    impl OrderEventHandler for Fulfilment {
        async fn on_event(&self, e: &OrderEventNotice) {
            match e.kind {
                OrderEventKind::Paid => self.ship(&e.order).await,
                OrderEventKind::Closed | OrderEventKind::PaymentError => self.release_stock(&e.order).await,
                _ => {}
            }
        }
    }
    // doc-snippet-end
}

#[rustfmt::skip]
mod refund_events {
    use super::*;

    /// The same fulfilment, with refund events too.
    pub struct Fulfilment(super::Fulfilment);

    impl std::ops::Deref for Fulfilment {
        type Target = super::Fulfilment;
        fn deref(&self) -> &super::Fulfilment {
            &self.0
        }
    }

    // doc-snippet: library-refund-handler
    #[async_trait::async_trait]
    impl OrderEventHandler for Fulfilment {
        async fn on_event(&self, e: &OrderEventNotice) { /* as above */ }

        async fn on_refund(&self, e: &RefundEventNotice) {
            if e.kind == RefundEventKind::Succeeded {
                self.credit_back(&e.combine_out_trade_no, &e.out_trade_no, e.amount).await;
            }
        }
    }
    // doc-snippet-end
}

/// `docs/simulator.md`: the simulator embedded in a test.
#[rustfmt::skip]
async fn simulator_embedded(data_dir: &Path, prepay_id: String) -> Result<(), AnyError> {
    // doc-snippet: sim-embedded
    use wxpay_combine_sim::{Faults, FaultScope, SimOptions, Simulator};

    let mut opts = SimOptions::new(data_dir);   // 127.0.0.1:0, time_scale 1.0
    opts.time_scale = 0.01;
    let sim = Simulator::start(opts).await?;
    let base = sim.base_url();           // "http://127.0.0.1:PORT"
    let creds = sim.merchant();          // MerchantCredentials (merchant.json + key paths)
    let signer = creds.signer()?;        // apiv3::RequestSigner
    // … drive your merchant server …
    sim.pay_prepay_id(&prepay_id).await?;            // pay without a browser (same path as the cashier)
    assert_eq!(sim.prepay_calls("C2024…").await?, 1); // what the simulator saw
    let log = sim.notifications(Some("C2024…")).await?;
    sim.set_faults(FaultScope::Global, Faults { signtest_probe: Some(true), ..Default::default() }).await?;
    sim.shutdown().await;
    // doc-snippet-end
    Ok(())
}

fn main() {
    println!(
        "The code of docs/library.md and docs/simulator.md, compiled; see \
         the embed example for one that runs."
    );
}
