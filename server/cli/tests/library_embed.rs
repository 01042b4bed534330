//! The library entry point: a merchant's own axum app mounts the kit's
//! router next to its routes, runs the kit's workers, and learns from an
//! in-process event handler that an order was paid (after the simulator's
//! notification was applied).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;
use wxpay_combine::apiv3::JsapiPayParams;
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine::events::{OrderEventHandler, OrderEventKind, OrderEventNotice};
use wxpay_combine::http::internal_settings::InternalApiConfig;
use wxpay_combine::kit::Kit;
use wxpay_combine::secrecy::SecretString;
use wxpay_combine_cli::app::{self, DemoOptions};

const TOKEN: &str = "embed-test-token-0123456789abcdefghij";

/// The merchant's handler: forwards every event to the test.
struct Forward(mpsc::UnboundedSender<OrderEventNotice>);

#[async_trait::async_trait]
impl OrderEventHandler for Forward {
    async fn on_event(&self, e: &OrderEventNotice) {
        let _ = self.0.send(e.clone());
    }
}

async fn body_json(resp: axum::response::Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_app_embeds_the_kit_and_hears_of_payments() {
    let dir = std::env::temp_dir().join(format!("wxpay-embed-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    let demo = app::prepare_demo(&opts).await.expect("demo prepares");
    let mut config = demo.config.clone();
    config.internal = Some(InternalApiConfig {
        token: SecretString::from(TOKEN),
        listen: None,
        on_public_listener: false,
        pay_link_ttl_secs: 3600,
    });

    let (tx, mut events) = mpsc::unbounded_channel();
    let (ctx, mut closure_events) = mpsc::unbounded_channel();
    let kit = Kit::builder(config)
        .on_event(Forward(tx))
        .on_event(move |e: &OrderEventNotice| {
            let _ = ctx.send(e.kind);
        })
        .build()
        .await
        .expect("kit builds");
    assert!(
        kit.workers.names().contains(&"reconcile"),
        "{:?}",
        kit.workers
    );
    assert_eq!(kit.events.handler_count(), 2);

    // The merchant's app: its own routes, ours merged at the root, and the
    // internal API under the merchant's own admin routes.
    let internal = kit
        .internal_router
        .clone()
        .expect("internal API configured");
    let merchant = Router::new()
        .route("/shop", get(|| async { "merchant home" }))
        .route("/shop/about", get(|| async { "about the shop" }))
        .merge(kit.router.clone())
        .merge(internal);

    let text = |r: axum::response::Response| async move {
        String::from_utf8(
            axum::body::to_bytes(r.into_body(), 1 << 16)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    };
    let r = merchant
        .clone()
        .oneshot(Request::get("/shop").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(text(r).await, "merchant home");
    let r = merchant
        .clone()
        .oneshot(Request::get("/shop/about").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(text(r).await, "about the shop");
    let r = merchant
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = merchant
        .clone()
        .oneshot(Request::get("/api/config").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body_json(r).await["app_id"],
        demo.config.wechatpay.appid.as_str()
    );
    let r = merchant
        .clone()
        .oneshot(Request::get("/api/session").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "our routes keep their session rule"
    );

    // Serve it where the simulator sends notifications, and run the workers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server = tokio::spawn(
        axum::serve(demo.listener, merchant.clone())
            .with_graceful_shutdown(stopped())
            .into_future(),
    );
    let workers = tokio::spawn(kit.workers.run_until(stopped()));

    // An order from the merchant's backend, paid in the simulator.
    let m = demo.sim.merchant().clone();
    let body = json!({
        "payer_openid": m.demo_openid,
        "sub_orders": [
            {"mchid": m.sub_mchids[0], "description": "Tea", "amount": 100},
            {"mchid": m.sub_mchids[1], "description": "Cups", "amount": 250},
        ],
    });
    let r = merchant
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/internal/combine-orders")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header("Idempotency-Key", "embed-1")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = body_json(r).await;
    let no = created["combine_out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let params: JsapiPayParams = serde_json::from_value(created["pay_params"].clone()).unwrap();
    assert!(
        events.try_recv().is_err(),
        "no event before anything happened"
    );
    let outcome = demo.sim.pay(&params).await;
    assert_eq!(outcome.err_msg, "get_brand_wcpay_request:ok", "{outcome:?}");

    // The notification is applied, then the handler hears of it (generous
    // bound: a correctness wait, not a speed assertion).
    let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("a paid event arrives")
        .expect("channel open");
    assert_eq!(e.kind, OrderEventKind::Paid);
    assert_eq!(e.combine_out_trade_no, no);
    assert_eq!(e.previous, TradeState::NotPay);
    assert!(
        matches!(e.source, EventSource::Notify | EventSource::Query),
        "{:?}",
        e.source
    );
    assert_eq!(e.order.state, TradeState::Success);
    assert!(e
        .order
        .sub_orders
        .iter()
        .all(|s| s.transaction_id.is_some()));
    assert_eq!(closure_events.recv().await, Some(OrderEventKind::Paid));
    // Committed before the handler ran.
    let stored = kit.store.get_order(&no).await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::Success);

    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(30), workers)
        .await
        .expect("workers stop")
        .unwrap();
    assert!(
        events.try_recv().is_err(),
        "exactly one event for one payment"
    );
    demo.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
