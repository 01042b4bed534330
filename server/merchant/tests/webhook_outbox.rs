//! The webhook outbox on SQLite and PostgreSQL: rows commit with the state
//! change, delivery retries until 2xx (the receiver dedupes by event id and
//! checks the HMAC with an independent implementation — Python's `hmac`, or
//! `openssl dgst` without Python), events of one order go out in sequence,
//! claims exclude each other, pending listing and redelivery; a refund
//! event goes out after its order's payment event, signed the same way.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::{backend_tests, transition, TestDb, OPENID};
use wxpay_combine::apiv3::{Clock, ManualClock};
use wxpay_combine::combine::{EventSource, TradeState, Transition};
use wxpay_combine::webhook::{Delivery, WebhookSettings, WebhookWorker};

const T0: i64 = 1_714_000_000;
const SECRET: &str = "whsec_test_0123456789abcdef";

fn paid(no: &str) -> Transition {
    support::paid(no, EventSource::Query, |i| format!("42000000{i}"))
}

fn to(state: TradeState) -> Transition {
    transition(state, EventSource::Query, &format!("to {state}"))
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1:0 that answers 500 to its first
/// `fail_first` requests, then 204.
#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Received>>>,
    fail_left: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (url::Url, Receiver) {
        let r = Receiver {
            log: Arc::default(),
            fail_left: Arc::new(AtomicUsize::new(fail_first)),
        };
        async fn hook(State(r): State<Receiver>, h: HeaderMap, body: Bytes) -> StatusCode {
            let get = |k: &str| {
                h.get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            r.log.lock().unwrap().push(Received {
                id: get("wxpay-combine-event-id"),
                timestamp: get("wxpay-combine-timestamp"),
                signature: get("wxpay-combine-signature"),
                body: body.to_vec(),
            });
            let failing = r
                .fail_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NO_CONTENT
            }
        }
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(r.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}/hook").parse().unwrap(), r)
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

fn worker(db: &TestDb, url: url::Url, clock: Arc<ManualClock>) -> WebhookWorker {
    let mut s = WebhookSettings::new(url, SecretString::from(SECRET));
    s.initial_backoff_secs = 10;
    s.max_backoff_secs = 60;
    s.timeout = std::time::Duration::from_secs(5);
    WebhookWorker::new(db.store.clone(), s, clock as Arc<dyn Clock>).unwrap()
}

/// HMAC-SHA256 hex by an implementation other than ours.
fn independent_hmac(secret: &str, timestamp: &str, body: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let py = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            secret,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match py {
        Ok(c) => c,
        Err(_) => Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", secret])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("neither python3 nor openssl is available"),
    };
    child.stdin.take().unwrap().write_all(&message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // openssl prints "SHA2-256(stdin)= <hex>"; python the hex alone.
    text.trim().rsplit(' ').next().unwrap().to_string()
}

async fn outbox_row_commits_with_the_state_change(db: &TestDb) {
    let s = &db.store;
    db.create("OB001", T0).await;
    assert!(s.pending_outbox_events(10).await.unwrap().is_empty());
    s.apply_transition("OB001", &to(TradeState::UserPaying), T0 + 1)
        .await
        .unwrap();
    assert!(
        s.pending_outbox_events(10).await.unwrap().is_empty(),
        "USERPAYING is not an event"
    );
    s.apply_transition("OB001", &paid("OB001"), T0 + 2)
        .await
        .unwrap();
    // A repeat and a refused transition write nothing.
    s.apply_transition("OB001", &paid("OB001"), T0 + 3)
        .await
        .unwrap();
    s.apply_transition("OB001", &to(TradeState::Closed), T0 + 3)
        .await
        .unwrap();
    let pending = s.pending_outbox_events(10).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let e = &pending[0];
    assert!(e.id.starts_with("evt_"));
    assert_eq!(
        (e.kind.as_str(), e.seq, e.attempts, e.created_at),
        ("paid", 1, 0, T0 + 2)
    );
    assert!(!e.payload.contains(OPENID), "the openid is never sent");
    let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(v["id"], e.id.as_str());
    assert_eq!(v["type"], "order.paid");
    assert_eq!(v["order"]["combine_out_trade_no"], "OB001");
    assert_eq!(v["order"]["state"], "SUCCESS");
    assert_eq!(v["order"]["total_amount"], 350);
    assert_eq!(v["order"]["sub_orders"][1]["transaction_id"], "420000001");

    db.create("OB002", T0).await;
    s.apply_transition("OB002", &to(TradeState::Closed), T0 + 5)
        .await
        .unwrap();
    db.create("OB003", T0).await;
    s.apply_transition("OB003", &to(TradeState::PayError), T0 + 6)
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = s
        .pending_outbox_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.combine_out_trade_no, e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("OB001".to_string(), "paid".to_string()),
            ("OB002".into(), "closed".into()),
            ("OB003".into(), "payment_error".into())
        ]
    );
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.oldest_created_at), (3, Some(T0 + 2)));
}

async fn delivery_retries_until_2xx_with_one_effect(db: &TestDb) {
    let (url, receiver) = Receiver::start(2).await;
    let clock = Arc::new(ManualClock::new(T0 + 10));
    let w = worker(db, url, clock.clone());
    db.create("WH001", T0).await;
    db.store
        .apply_transition("WH001", &paid("WH001"), T0 + 10)
        .await
        .unwrap();

    assert_eq!(w.run_once().await.unwrap(), 1, "first attempt");
    let after_first = db.store.pending_outbox_events(10).await.unwrap();
    assert_eq!(after_first[0].attempts, 1);
    assert_eq!(after_first[0].last_error.as_deref(), Some("HTTP 500"));
    // Backoff 10 s × [0.5, 1]: nothing is due at once.
    assert_eq!(w.run_once().await.unwrap(), 0, "not due during the backoff");
    let due = after_first[0].next_attempt_at;
    assert!((T0 + 15..=T0 + 20).contains(&due), "{due}");
    clock.set(due);
    assert_eq!(w.run_once().await.unwrap(), 1, "second attempt");
    clock.advance(3600);
    assert_eq!(w.run_once().await.unwrap(), 1, "third attempt");
    clock.advance(3600);
    assert_eq!(w.run_once().await.unwrap(), 0, "delivered: nothing left");
    assert!(db.store.pending_outbox_events(10).await.unwrap().is_empty());
    assert_eq!(db.store.outbox_stats().await.unwrap().pending, 0);

    let got = receiver.received();
    assert_eq!(got.len(), 3, "two failures and one success");
    // The receiver's effect, deduplicated by event id: exactly one.
    let effects: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(effects.len(), 1);
    for r in &got {
        assert_eq!(r.body, got[0].body, "the same bytes on every attempt");
        let expected = independent_hmac(SECRET, &r.timestamp, &r.body);
        assert_eq!(r.signature, format!("v1={expected}"));
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!(wxpay_combine::webhook::sign::verify(
            SECRET.as_bytes(),
            ts,
            &r.body,
            &r.signature,
            ts,
            300
        ));
    }
    assert_ne!(got[0].timestamp, got[2].timestamp, "signed at send time");
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["id"], got[0].id.as_str());
    let e = db
        .store
        .get_outbox_event(&got[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((e.attempts, e.delivered_at), (3, Some(due + 3600)));
    assert_eq!(e.last_error, None);
}

async fn events_of_one_order_go_out_in_sequence(db: &TestDb) {
    let (url, receiver) = Receiver::start(1).await;
    let clock = Arc::new(ManualClock::new(T0 + 10));
    let w = worker(db, url, clock.clone());
    db.create("SQ001", T0).await;
    db.store
        .apply_transition("SQ001", &paid("SQ001"), T0 + 10)
        .await
        .unwrap();
    // A second event of the same order, due earlier than the first: it
    // must still wait for the first (today only a refund could follow a
    // payment; the rule does not depend on the kind).
    db.raw_execute(&format!(
        "INSERT INTO outbox_events (id, combine_out_trade_no, seq, kind, payload, created_at, \
         attempts, next_attempt_at) VALUES ('evt_second', 'SQ001', 2, 'closed', '{{}}', {c}, 0, {t})",
        c = T0 + 11,
        t = T0 + 1
    ))
    .await
    .unwrap();
    let first = db.store.pending_outbox_events(10).await.unwrap()[0]
        .id
        .clone();
    assert_ne!(first, "evt_second");

    assert_eq!(w.run_once().await.unwrap(), 1); // first fails
    assert_eq!(
        w.run_once().await.unwrap(),
        0,
        "the second waits for the first"
    );
    clock.advance(3600);
    assert_eq!(w.run_once().await.unwrap(), 1); // first delivered
    assert_eq!(w.run_once().await.unwrap(), 1); // then the second
    let ids: Vec<String> = receiver.received().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [first.clone(), first, "evt_second".to_string()]);
}

async fn claims_exclude_each_other(db: &TestDb) {
    let other = db.open_another().await;
    db.create("CL001", T0).await;
    db.create("CL002", T0).await;
    for no in ["CL001", "CL002"] {
        db.store
            .apply_transition(no, &paid(no), T0 + 10)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        db.store.claim_outbox_events(T0 + 20, T0 + 80, 10),
        other.claim_outbox_events(T0 + 20, T0 + 80, 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 2, "each event claimed once: {a:?} {b:?}");
    let ids: HashSet<String> = a.iter().chain(&b).map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(db
        .store
        .claim_outbox_events(T0 + 79, T0 + 140, 10)
        .await
        .unwrap()
        .is_empty());
    // A crashed claimer's lease lapses: the events are claimable again.
    assert_eq!(
        other
            .claim_outbox_events(T0 + 80, T0 + 140, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn pending_listing_and_redelivery(db: &TestDb) {
    // A receiver that is down: a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let clock = Arc::new(ManualClock::new(T0 + 10));
    let down = worker(
        db,
        format!("http://{closed}/hook").parse().unwrap(),
        clock.clone(),
    );
    db.create("RD001", T0).await;
    db.store
        .apply_transition("RD001", &paid("RD001"), T0 + 10)
        .await
        .unwrap();
    assert_eq!(down.run_once().await.unwrap(), 1);
    let pending = db.store.pending_outbox_events(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    let e = pending[0].clone();
    assert_eq!(e.attempts, 1);
    assert!(e.last_error.is_some(), "the connection error is kept");
    assert!(e.next_attempt_at > T0 + 10);

    // Rescheduling makes it due now.
    db.store
        .reschedule_outbox_event(&e.id, T0 + 10)
        .await
        .unwrap();
    assert!(matches!(
        db.store.reschedule_outbox_event("evt_nope", T0).await,
        Err(wxpay_combine::store::StoreError::NotFound(_))
    ));
    let (url, receiver) = Receiver::start(0).await;
    let up = worker(db, url, clock.clone());
    assert_eq!(up.run_once().await.unwrap(), 1);
    assert!(db.store.pending_outbox_events(10).await.unwrap().is_empty());

    // Redelivery of a delivered event sends the same id and body again.
    let stored = db.store.get_outbox_event(&e.id).await.unwrap().unwrap();
    assert!(stored.delivered_at.is_some());
    assert_eq!(up.deliver(&stored).await.unwrap(), Delivery::Delivered(204));
    // …and rescheduling one puts it back in the worker's queue.
    db.store
        .reschedule_outbox_event(&e.id, T0 + 10)
        .await
        .unwrap();
    assert_eq!(db.store.pending_outbox_events(10).await.unwrap().len(), 1);
    assert_eq!(up.run_once().await.unwrap(), 1);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|r| r.id == e.id && r.body == e.payload.as_bytes()));
}

/// A refund's `refund.succeeded` is delivered after the order's
/// `order.paid` (same order, next sequence), and verifies with the recipe
/// of docs/webhooks.md: hex HMAC-SHA256 over `timestamp "." body`.
async fn refund_event_is_delivered_signed_after_the_payment(db: &TestDb) {
    use wxpay_combine::store::{NewRefund, RefundSource, RefundUpdate};
    use wxpay_combine_core::refund::RefundStatus;
    // 2024-04-25T10:00:00+08:00 (the support payments' success time) + 1 h.
    let now = 1_714_010_400 + 3600;
    let (url, receiver) = Receiver::start(0).await;
    let clock = Arc::new(ManualClock::new(now + 10));
    let w = worker(db, url, clock.clone());
    db.create("RW001", T0).await;
    db.store
        .apply_transition("RW001", &paid("RW001"), now)
        .await
        .unwrap();
    let new = NewRefund {
        out_refund_no: "RFW1".into(),
        combine_out_trade_no: "RW001".into(),
        out_trade_no: "RW001-S2".into(),
        amount: 80,
        reason: None,
        idempotency: None,
    };
    db.store.create_refund(&new, now + 1).await.unwrap();
    let update = RefundUpdate {
        status: RefundStatus::Success,
        refund_id: Some("50300000000000000077".into()),
        user_received_account: Some("支付用户零钱".into()),
        success_time: Some("2024-04-25T11:00:05+08:00".into()),
        source: RefundSource::Notify,
        notification_id: Some("n-1".into()),
        detail: "notify reports SUCCESS".into(),
    };
    db.store
        .update_refund("RFW1", &update, now + 5)
        .await
        .unwrap();

    assert_eq!(w.run_once().await.unwrap(), 1, "the payment first");
    assert_eq!(w.run_once().await.unwrap(), 1, "then the refund");
    assert_eq!(w.run_once().await.unwrap(), 0);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let types: Vec<String> = got
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            format!("{} {}", v["sequence"], v["type"].as_str().unwrap())
        })
        .collect();
    assert_eq!(types, ["1 order.paid", "2 refund.succeeded"]);
    let r = &got[1];
    // The documented recipe, by an independent implementation.
    let expected = independent_hmac(SECRET, &r.timestamp, &r.body);
    assert_eq!(r.signature, format!("v1={expected}"));
    let ts: i64 = r.timestamp.parse().unwrap();
    assert!(wxpay_combine::webhook::sign::verify(
        SECRET.as_bytes(),
        ts,
        &r.body,
        &r.signature,
        ts,
        300
    ));
    assert!(!wxpay_combine::webhook::sign::verify(
        b"another secret",
        ts,
        &r.body,
        &r.signature,
        ts,
        300
    ));
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        body.starts_with(&format!(
            r#"{{"id":"{}","type":"refund.succeeded","created_at":"2024-04-25T03:00:05Z","sequence":2,"refund":{{"combine_out_trade_no":"RW001","out_trade_no":"RW001-S2","mchid":"1900000110","out_refund_no":"RFW1","refund_id":"50300000000000000077","amount":80,"status":"SUCCESS","#,
            r.id
        )),
        "{body}"
    );
    let e = db.store.get_outbox_event(&r.id).await.unwrap().unwrap();
    assert_eq!((e.kind.as_str(), e.seq), ("refund_succeeded", 2));
    assert!(e.delivered_at.is_some());
}

backend_tests!(
    outbox_row_commits_with_the_state_change,
    refund_event_is_delivered_signed_after_the_payment,
    delivery_retries_until_2xx_with_one_effect,
    events_of_one_order_go_out_in_sequence,
    claims_exclude_each_other,
    pending_listing_and_redelivery,
);
