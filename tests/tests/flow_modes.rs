//! Flows that exercise the wiring: platform-certificate and migration
//! (public key + certificates) merchants, a second `serve` instance started
//! from the demo's written `wxpay.toml`, and graceful shutdown with a
//! request in flight.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine::apiv3::{Clock, SystemClock};
use wxpay_combine::combine::{EventSource, TradeState};
use wxpay_combine::config::Config;
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::flow::{transitions_to, Flow};
use wxpay_combine_tests::payer::{order_no, pay_params, Browser};

const OK: &str = "get_brand_wcpay_request:ok";

fn sim_config(dir: &std::path::Path, mode: &str) -> std::path::PathBuf {
    let path = dir.join(format!("sim-{mode}.toml"));
    std::fs::write(
        &path,
        format!(
            "[[merchant]]\nmchid = \"1900000109\"\nname = \"Demo Shop\"\nmode = \"{mode}\"\n\
             sub_mchids = [\"1900000110\", \"1900000111\", \"1900000112\"]\n"
        ),
    )
    .unwrap();
    path
}

async fn pay_with_key_mode(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), mode);
    let f = Flow::start(Db::Sqlite, |o| o.sim_config = Some(cfg))
        .await
        .unwrap();
    assert!(
        f.config
            .wechatpay
            .merchant
            .verification
            .platform_certificates
    );
    assert_eq!(
        f.config
            .wechatpay
            .merchant
            .verification
            .public_key
            .is_some(),
        mode == "both"
    );
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    assert_eq!(f.sim.pay(&pay_params(&created)).await.err_msg, OK);
    f.wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    assert_eq!(
        transitions_to(&f.events(&no).await, TradeState::Success),
        vec![EventSource::Notify]
    );
    // Queries verify too (certificate-signed answers).
    f.sim
        .control(json!({"drop_notifications": true}))
        .await
        .unwrap();
    let second = alice.create_order(2).await;
    let no2 = order_no(&second);
    assert_eq!(f.sim.pay(&pay_params(&second)).await.err_msg, OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v = alice.get(&format!("/api/combine-orders/{no2}")).await.body;
    assert_eq!(v["state"], json!("SUCCESS"), "{v}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_mode_merchant_pays_and_queries() {
    pay_with_key_mode("certificate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_mode_merchant_pays_and_queries() {
    pay_with_key_mode("both").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_runs_from_the_demo_config_against_the_same_simulator() {
    let f = Flow::start(Db::Sqlite, |_| {}).await.unwrap();
    let path = f.config.source.clone().expect("the demo wrote its config");
    assert!(path.ends_with("wxpay.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("demo = true") && text.contains(f.sim.base_url()),
        "{text}"
    );

    // `serve --config DIR/wxpay.toml` on another port (listen and public URL overridden).
    let listener = wxpay_combine::kit::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let second = format!("http://{addr}");
    let env = [
        ("WXPAY_LISTEN", addr.to_string()),
        ("WXPAY_PUBLIC_BASE_URL", second.clone()),
    ];
    let config = Config::load_with_env(&path, &|k| {
        env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.wechatpay.api.base_url.as_str().trim_end_matches('/'),
        f.sim.base_url()
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = wxpay_combine::kit::Kit::builder(config.clone())
        .clock(clock)
        .build()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wxpay_combine::kit::serve(server, listener, async {
        let _ = rx.await;
    }));

    // A session from one instance is valid on the other (same secret).
    let alice = f.login("alice").await;
    let created = alice.create_order(3).await;
    let no = order_no(&created);
    assert_eq!(f.sim.pay(&pay_params(&created)).await.err_msg, OK);
    f.wait_state(&no, TradeState::Success, Duration::from_secs(10))
        .await;
    let other = Browser::new(&second);
    other.login("alice").await;
    let v = other.get(&format!("/api/combine-orders/{no}")).await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(
        v.body["state"],
        json!("SUCCESS"),
        "both instances share the database"
    );

    let _ = tx.send(());
    task.await.unwrap().unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_request_in_flight_then_refuses_new_ones() {
    let mut f = Flow::start(Db::Sqlite, |_| {}).await.unwrap();
    let alice = Arc::new(f.login("alice").await);
    // WeChat Pay answers prepay only after 1.5 s.
    f.sim
        .control(json!({"api_timeout_share": 1.0, "api_timeout_ms": 1500}))
        .await
        .unwrap();
    let inflight = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.create_order(2).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let base = f.base.clone();
    let started = std::time::Instant::now();
    f.stop_server().await;
    let created = inflight.await.expect("the in-flight request completed");
    assert_eq!(created["state"], json!("NOTPAY"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "shutdown waited for the request"
    );
    let refused = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "no longer accepting connections");
    f.stop().await;
}
