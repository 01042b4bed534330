//! `GET /metrics` and request ids, on the real server (`Kit::builder` +
//! `wxpay_combine::kit::serve_with_metrics`) against the embedded simulator: not on the
//! public listener by default; on the metrics listener in the Prometheus
//! text format with the families moving after an order and a notification;
//! on the public listener only when configured.

mod ops_support;

use axum::body::Body;
use http::{Request, StatusCode};
use ops_support::{demo, order_no, pay_params, Browser, TempDir};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use wxpay_combine::apiv3::{Clock, SystemClock};

/// The value of one exact series line, e.g. `wxpay_orders_created_total`
/// or `wxpay_notifications_total{outcome="applied"}`; 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

async fn scrape(http: &reqwest::Client, url: &str) -> (String, String) {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    (ct, r.text().await.unwrap())
}

async fn get(router: &axum::Router, uri: &str, request_id: Option<&str>) -> http::Response<Body> {
    let mut req = Request::get(uri);
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_served_on_their_own_listener_and_not_publicly_by_default() {
    let dir = TempDir::new("wxops-metrics");
    let demo = demo(&dir, |_| {}).await;
    assert!(demo.config.metrics.listen.is_none());
    assert!(!demo.config.metrics.on_public_listener);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = wxpay_combine::kit::Kit::builder(demo.config.clone())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();

    // Not on the public router by default.
    let r = get(&server.router, "/metrics", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Request ids: a well-formed one is echoed, anything else replaced.
    let r = get(&server.router, "/healthz", Some("abc-123_X.y")).await;
    assert_eq!(r.headers()["x-request-id"], "abc-123_X.y");
    let r = get(&server.router, "/healthz", Some("bad id\twith spaces")).await;
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(generated, "bad id\twith spaces");
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let r = get(&server.router, "/healthz", Some(&"a".repeat(65))).await;
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    let r = get(&server.router, "/healthz", None).await;
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    // The notification endpoint is traced too.
    let notify = Request::post(demo.config.notify.notify_path.as_str())
        .header("x-request-id", "notify-1")
        .body(Body::from("{}"))
        .unwrap();
    let r = server.router.clone().oneshot(notify).await.unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(r.headers()["x-request-id"], "notify-1");

    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
    let base = demo.config.http.public_base_url.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wxpay_combine::kit::serve_with_metrics(
        server,
        demo.listener,
        Some(metrics_listener),
        async {
            let _ = rx.await;
        },
    ));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (_, before) = scrape(&http, &metrics_url).await;
    let public = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404);

    // An order, paid in the simulator; its notification applied.
    let alice = Browser::new(&base);
    alice.login("alice").await;
    let created = alice.create_order(2).await;
    let no = order_no(&created);
    let paid = demo.sim.pay(&pay_params(&created)).await;
    assert_eq!(paid.err_msg, "get_brand_wcpay_request:ok");
    alice
        .wait_state(&no, "SUCCESS", Duration::from_secs(30))
        .await;

    let (ct, after) = scrape(&http, &metrics_url).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let grew = |series: &str| {
        assert!(
            value(&after, series) >= value(&before, series) + 1.0,
            "{series} did not grow:\n{after}"
        )
    };
    grew("wxpay_orders_created_total");
    grew("wxpay_notifications_total{outcome=\"applied\"}");
    grew("wxpay_payments_confirmed_total{source=\"notify\"}");
    grew("wxpay_api_requests_total{endpoint=\"combine_prepay\",outcome=\"ok\"}");
    grew("wxpay_api_request_duration_seconds_count{endpoint=\"combine_prepay\",outcome=\"ok\"}");
    grew("wxpay_api_request_duration_seconds_bucket{endpoint=\"combine_prepay\",outcome=\"ok\",le=\"+Inf\"}");
    for family in [
        "wxpay_reconcile_runs_total",
        "wxpay_bill_results_total",
        "wxpay_webhook_pending",
        "wxpay_api_request_duration_seconds",
    ] {
        assert!(after.contains(&format!("# TYPE {family} ")), "{family}");
    }
    // No order numbers or openids in labels.
    assert!(!after.contains(&no));

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    // The metrics listener stopped with the server.
    assert!(http.get(&metrics_url).send().await.is_err());

    // When configured, also on the public listener.
    let mut config = demo.config.clone();
    config.metrics.on_public_listener = true;
    let server = wxpay_combine::kit::Kit::builder(config.clone())
        .clock(clock)
        .build()
        .await
        .unwrap();
    let r = get(&server.router, "/metrics", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(r.headers().contains_key("x-request-id"));
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(value(&text, "wxpay_orders_created_total") >= 1.0, "{text}");
    demo.sim.shutdown().await;
}
