//! The webhook outbox survives `kill -9`: with the merchant's receiver down,
//! an order is paid (the event commits with the payment, delivery fails),
//! the server is killed with SIGKILL, `wxpay-combine events --pending`
//! lists the event, the receiver comes up and the server starts again →
//! the event arrives, signed (HMAC checked by Python's `hmac` or `openssl`),
//! once per id; `events --redeliver ID` sends it again with the same id.
//! On SQLite and on PostgreSQL, with the real binary and the simulator.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wxpay_combine::combine::TradeState;
use wxpay_combine_tests::binary::server_binary;
use wxpay_combine_tests::database::Db;
use wxpay_combine_tests::on_both_databases;
use wxpay_combine_tests::payer::{create_order, order_no, pay_params, three_shop_items};
use wxpay_combine_tests::reliability::{free_port, Cluster};
use wxpay_combine_tests::wait::wait_for;

const SECRET: &str = "whsec_crash_test_0123456789";

on_both_databases!(outbox_survives_kill9_between_commit_and_delivery);

/// (event id header, timestamp header, signature header, body)
type Hit = (String, String, String, Vec<u8>);

async fn start_receiver(port: u16) -> Arc<Mutex<Vec<Hit>>> {
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    async fn hook(
        State(hits): State<Arc<Mutex<Vec<Hit>>>>,
        h: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let get = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        hits.lock().unwrap().push((
            get("wxpay-combine-event-id"),
            get("wxpay-combine-timestamp"),
            get("wxpay-combine-signature"),
            body.to_vec(),
        ));
        StatusCode::NO_CONTENT
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(hits.clone());
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the reserved receiver port is free");
    tokio::spawn(async move { axum::serve(l, app).await });
    hits
}

/// HMAC-SHA256 hex of `timestamp "." body`, computed outside Rust.
fn independent_hmac(timestamp: &str, body: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            SECRET,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .or_else(|_| {
            Command::new("openssl")
                .args(["dgst", "-sha256", "-hmac", SECRET])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
        })
        .expect("python3 or openssl");
    child.stdin.take().unwrap().write_all(&message).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit(' ').next().unwrap().to_string()
}

/// Runs `wxpay-combine events --config FILE ARGS…` → (success, stdout+stderr).
fn events_cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(server_binary())
        .arg("events")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("WXPAY_LOG", "warn")
        .output()
        .expect("run the events command");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn outbox_survives_kill9_between_commit_and_delivery(db: Db) {
    let Some(c) = Cluster::start(db, 1, |_| {}).await else {
        return;
    };
    // Turn webhooks on (receiver port reserved, nobody listening yet) and
    // restart the server with them.
    let port = free_port();
    let dir = c.config_path.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("webhook.key"), SECRET).unwrap();
    let mut toml = std::fs::read_to_string(&c.config_path).unwrap();
    toml.push_str(&format!(
        "\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\n\
         webhook_secret_file = \"webhook.key\"\n\
         webhook_timeout_ms = 1000\n\
         webhook_initial_backoff_secs = 1\n\
         webhook_max_backoff_secs = 2\n"
    ));
    std::fs::write(&c.config_path, toml).unwrap();
    c.kill9(0);
    c.restart(0).await;

    // Pay while the receiver is down: the event commits with the payment,
    // and delivery attempts fail.
    let alice = c.login(0, "alice").await;
    let (status, body) = create_order(&alice, &three_shop_items()).await;
    assert_eq!(status, 201, "{body}");
    let no = order_no(&body);
    let outcome = c.sim.pay(&pay_params(&body)).await;
    assert_eq!(outcome.err_msg, "get_brand_wcpay_request:ok", "{outcome:?}");
    let event = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let pending = c.store.pending_outbox_events(10).await.unwrap();
            pending
                .into_iter()
                .find(|e| e.combine_out_trade_no == no && e.attempts >= 1)
        },
    )
    .await
    .unwrap_or_else(|| panic!("no failed delivery attempt recorded\n{}", c.logs(30)));
    assert_eq!(c.order(&no).await.state, TradeState::Success);
    assert_eq!(event.kind, "paid");
    assert!(event.delivered_at.is_none());

    c.kill9(0);
    // The outbox, seen from the command line while the server is down.
    let (ok, listing) = events_cli(&c.config_path, &["--pending"]);
    assert!(ok, "{listing}");
    let row = listing
        .lines()
        .find(|l| l.starts_with(&event.id))
        .unwrap_or_else(|| panic!("{} not listed:\n{listing}", event.id));
    assert!(row.contains(&no) && row.contains("paid"), "{row}");

    let hits = start_receiver(port).await;
    c.restart(0).await;
    let got = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let h = hits.lock().unwrap().clone();
            (!h.is_empty()).then_some(h)
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "the event was not delivered after the restart\n{}",
            c.logs(30)
        )
    });
    let (id, ts, sig, body) = &got[0];
    assert_eq!(id, &event.id);
    assert_eq!(body, event.payload.as_bytes());
    assert_eq!(sig, &format!("v1={}", independent_hmac(ts, body)));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["type"], "order.paid");
    assert_eq!(v["order"]["combine_out_trade_no"], no.as_str());
    assert_eq!(v["order"]["state"], "SUCCESS");
    // Delivered: recorded, not sent again.
    let delivered = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let e = c.store.get_outbox_event(&event.id).await.unwrap().unwrap();
            e.delivered_at.map(|_| e)
        },
    )
    .await
    .expect("delivery recorded");
    assert!(delivered.attempts >= 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hits.lock().unwrap().len(), 1, "delivered once");
    let (ok, listing) = events_cli(&c.config_path, &["--pending"]);
    assert!(ok && !listing.contains(&event.id), "{listing}");

    // Redelivery on request: the same id and body again.
    let (ok, out) = events_cli(&c.config_path, &["--redeliver", &event.id]);
    assert!(ok, "{out}");
    assert!(out.contains("delivered (HTTP 204)"), "{out}");
    let h = hits.lock().unwrap().clone();
    assert_eq!(h.len(), 2);
    assert_eq!(
        (&h[1].0, &h[1].3),
        (&event.id, &event.payload.as_bytes().to_vec())
    );
    let (ok, out) = events_cli(&c.config_path, &["--redeliver", "evt_missing"]);
    assert!(!ok && out.contains("no event"), "{out}");
    c.stop().await;
}
