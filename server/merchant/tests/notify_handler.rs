//! The notification endpoint, in-process (`tower::ServiceExt::oneshot`),
//! against SQLite and PostgreSQL: real signatures by a generated platform key,
//! real AEAD with the APIv3 key, and the forged/odd cases, each proving the
//! order is unchanged and the reply is a 4xx/5xx `{"code":"FAIL",…}`.

mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::{
    backend_tests, body_for, create, envelope, oneshot, oneshot_json, paid_txn, sealed, transition,
    HookedStore, StoreHooks, TestDb, APPID, MCHID, OPENID,
};
use wxpay_combine::apiv3::{
    generate_nonce, response_message, ApiV3Key, ManualClock, PrivateKey, Verifier,
};
use wxpay_combine::combine::wire::{CombineTransaction, PayerInfo, TransactionSubOrder};
use wxpay_combine::combine::{
    ApplyOutcome, CombineOrder, EventSource, OrderEvent, TradeState, Transition,
};
use wxpay_combine::notify::{self, NotifyConfig, NotifyHandler, NotifyOutcome};
use wxpay_combine::store::Store;

const NOW: i64 = 1_714_000_000;
const PUB_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const APIV3_KEY: &str = "0123456789abcdefABCDEF0123456789";
const PATH: &str = "/wxpay/notify";

fn platform_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().expect("generate platform key"))
}

fn other_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().expect("generate key"))
}

fn apiv3_key() -> ApiV3Key {
    ApiV3Key::from_text(APIV3_KEY).unwrap()
}

struct Harness {
    clock: Arc<ManualClock>,
    handler: Arc<NotifyHandler>,
    app: Router,
    store: Arc<dyn Store>,
}

fn harness_with(store: Arc<dyn Store>, timeout: Duration) -> Harness {
    let clock = Arc::new(ManualClock::new(NOW));
    let verifier = Arc::new(
        Verifier::new(clock.clone())
            .with_public_key(PUB_KEY_ID, platform_key().public_key().clone()),
    );
    let mut config = NotifyConfig::new(MCHID, APPID);
    config.timeout = timeout;
    let handler = Arc::new(NotifyHandler::new(
        store.clone(),
        verifier,
        apiv3_key(),
        config,
        clock.clone(),
    ));
    let app = notify::router(handler.clone(), PATH);
    Harness {
        clock,
        handler,
        app,
        store,
    }
}

fn harness(db: &TestDb) -> Harness {
    harness_with(db.store.clone(), notify::DEFAULT_TIMEOUT)
}

/// How to sign a request.
#[derive(Clone)]
struct Sig {
    timestamp: i64,
    serial: String,
    signature: Option<String>,
    key: &'static PrivateKey,
}

impl Sig {
    fn good() -> Self {
        Sig {
            timestamp: NOW,
            serial: PUB_KEY_ID.into(),
            signature: None,
            key: platform_key(),
        }
    }
}

fn request(body: Vec<u8>, sig: &Sig) -> Request<Body> {
    let ts = sig.timestamp.to_string();
    let nonce = generate_nonce();
    let signature = sig.signature.clone().unwrap_or_else(|| {
        sig.key
            .sign_base64(&response_message(&ts, &nonce, &body))
            .unwrap()
    });
    Request::post(PATH)
        .header("Content-Type", "application/json")
        .header("Content-Length", body.len())
        .header("Wechatpay-Timestamp", ts)
        .header("Wechatpay-Nonce", nonce)
        .header("Wechatpay-Signature", signature)
        .header("Wechatpay-Serial", &sig.serial)
        .header("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
        .body(Body::from(body))
        .unwrap()
}

/// Asserts a refusal: 4xx/5xx, `{"code":"FAIL","message":…}`.
fn assert_fail(status: StatusCode, body: &Option<serde_json::Value>, what: &str) {
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{what}: status {status}"
    );
    let body = body
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: FAIL body expected"));
    assert_eq!(body["code"], "FAIL", "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

async fn snapshot(store: &Arc<dyn Store>, no: &str) -> (CombineOrder, Vec<OrderEvent>) {
    (
        store.get_order(no).await.unwrap().unwrap(),
        store.events(no).await.unwrap(),
    )
}

async fn valid_notification_is_applied_once(db: &TestDb) {
    let h = harness(db);
    let o = create(&*h.store, "NT001", NOW - 60).await;
    let body = body_for(&apiv3_key(), "EV-0001", &paid_txn(&o));

    let (status, reply) = oneshot_json(&h.app, request(body.clone(), &Sig::good())).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(reply.is_none());
    let (stored, events) = snapshot(&h.store, "NT001").await;
    assert_eq!(stored.state, TradeState::Success);
    assert_eq!(stored.notified_at, Some(NOW));
    assert_eq!(
        stored.sub_orders[0].transaction_id.as_deref(),
        Some("4200002002024042512345678")
    );
    assert_eq!(
        stored.sub_orders[1].transaction_id.as_deref(),
        Some("4200002012024042512345678")
    );
    assert_eq!(stored.sub_orders[1].payer_amount, Some(250));
    assert_eq!(stored.sub_orders[1].bank_type.as_deref(), Some("OTHERS"));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].source, EventSource::Notify);
    assert!(events[1].detail.contains("EV-0001"));
    assert!(
        !events[1].detail.contains(OPENID),
        "no openid in the event log"
    );

    // WeChat Pay resends the same notification (later, newly signed).
    h.clock.advance(15);
    let (status, _) = oneshot_json(
        &h.app,
        request(
            body.clone(),
            &Sig {
                timestamp: NOW + 15,
                ..Sig::good()
            },
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        snapshot(&h.store, "NT001").await,
        (stored.clone(), events.clone()),
        "no side effects"
    );
    assert_eq!(h.handler.counters().get(NotifyOutcome::Applied), 1);
    assert_eq!(h.handler.counters().get(NotifyOutcome::Duplicate), 1);

    // Concurrent duplicates of a fresh order: one transition.
    let o2 = create(&*h.store, "NT002", NOW - 60).await;
    let body2 = body_for(&apiv3_key(), "EV-0002", &paid_txn(&o2));
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let (app, req) = (
                h.app.clone(),
                request(
                    body2.clone(),
                    &Sig {
                        timestamp: NOW + 15,
                        ..Sig::good()
                    },
                ),
            );
            tokio::spawn(async move { oneshot_json(&app, req).await.0 })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap(), StatusCode::NO_CONTENT);
    }
    let (stored2, events2) = snapshot(&h.store, "NT002").await;
    assert_eq!(stored2.state, TradeState::Success);
    assert_eq!(
        events2
            .iter()
            .filter(|e| e.source == EventSource::Notify)
            .count(),
        1
    );
    assert_eq!(h.handler.counters().get(NotifyOutcome::Applied), 2);
    assert_eq!(h.handler.counters().get(NotifyOutcome::Duplicate), 20);
}

/// Sends `req` for the stored NOTPAY order `no` and proves it is refused
/// with `expected` and changes nothing.
async fn refused(h: &Harness, no: &str, req: Request<Body>, expected: NotifyOutcome, what: &str) {
    let before = snapshot(&h.store, no).await;
    let count = h.handler.counters().get(expected);
    let (status, reply) = oneshot_json(&h.app, req).await;
    assert_fail(status, &reply, what);
    assert_eq!(status, expected.status(), "{what}");
    assert_eq!(
        h.handler.counters().get(expected),
        count + 1,
        "{what}: outcome {expected:?}"
    );
    assert_eq!(
        snapshot(&h.store, no).await,
        before,
        "{what}: order or events changed"
    );
}

async fn forged_and_stale_notifications_are_refused(db: &TestDb) {
    let h = harness(db);
    let o = create(&*h.store, "NF001", NOW - 60).await;
    let body = body_for(&apiv3_key(), "EV-F1", &paid_txn(&o));
    use NotifyOutcome as N;

    refused(
        &h,
        "NF001",
        request(
            body.clone(),
            &Sig {
                key: other_key(),
                ..Sig::good()
            },
        ),
        N::BadSignature,
        "wrong signing key",
    )
    .await;
    let mut tampered = body.clone();
    let pos = tampered.iter().position(|b| *b == b'E').unwrap();
    tampered[pos] = b'F';
    let good_sig_other_body = {
        let ts = NOW.to_string();
        let nonce = generate_nonce();
        let sig = platform_key()
            .sign_base64(&response_message(&ts, &nonce, &body))
            .unwrap();
        Request::post(PATH)
            .header("Wechatpay-Timestamp", ts)
            .header("Wechatpay-Nonce", nonce)
            .header("Wechatpay-Signature", sig)
            .header("Wechatpay-Serial", PUB_KEY_ID)
            .body(Body::from(tampered))
            .unwrap()
    };
    refused(
        &h,
        "NF001",
        good_sig_other_body,
        N::BadSignature,
        "body changed after signing",
    )
    .await;
    refused(
        &h,
        "NF001",
        request(
            body.clone(),
            &Sig {
                signature: Some("WECHATPAY/SIGNTEST/Zm9vYmFy".into()),
                ..Sig::good()
            },
        ),
        N::SignatureProbe,
        "SIGNTEST probe",
    )
    .await;
    refused(
        &h,
        "NF001",
        request(
            body.clone(),
            &Sig {
                timestamp: NOW - 301,
                ..Sig::good()
            },
        ),
        N::Stale,
        "301 s old",
    )
    .await;
    refused(
        &h,
        "NF001",
        request(
            body.clone(),
            &Sig {
                timestamp: NOW + 301,
                ..Sig::good()
            },
        ),
        N::Stale,
        "301 s ahead",
    )
    .await;
    refused(
        &h,
        "NF001",
        request(
            body.clone(),
            &Sig {
                serial: "PUB_KEY_ID_0000000000000000000000000000".into(),
                ..Sig::good()
            },
        ),
        N::UnknownSerial,
        "unknown serial",
    )
    .await;
    let mut no_headers = request(body.clone(), &Sig::good());
    no_headers.headers_mut().remove("Wechatpay-Signature");
    refused(
        &h,
        "NF001",
        no_headers,
        N::MissingHeaders,
        "no signature header",
    )
    .await;

    // The window edges: 299 s either way is accepted (GO's `>= 300` rule).
    h.clock.set(NOW + 299);
    let (status, _) = oneshot_json(&h.app, request(body.clone(), &Sig::good())).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "299 s old is inside the window"
    );
}

async fn undecodable_notifications_are_refused(db: &TestDb) {
    let h = harness(db);
    let o = create(&*h.store, "NU001", NOW - 60).await;
    let txn = paid_txn(&o);
    use NotifyOutcome as N;

    refused(
        &h,
        "NU001",
        request(b"{\"id\":\"EV-1\",".to_vec(), &Sig::good()),
        N::Malformed,
        "malformed envelope JSON",
    )
    .await;
    refused(
        &h,
        "NU001",
        request(b"[]".to_vec(), &Sig::good()),
        N::Malformed,
        "envelope of the wrong shape",
    )
    .await;
    refused(
        &h,
        "NU001",
        request(
            envelope("EV-2", &sealed(&apiv3_key(), b"not json at all")),
            &Sig::good(),
        ),
        N::Malformed,
        "non-JSON plaintext",
    )
    .await;
    refused(
        &h,
        "NU001",
        request(
            envelope("EV-3", &sealed(&apiv3_key(), b"{\"combine_appid\":1}")),
            &Sig::good(),
        ),
        N::Malformed,
        "JSON plaintext of the wrong shape",
    )
    .await;

    let mut bad_tag = sealed(&apiv3_key(), &serde_json::to_vec(&txn).unwrap());
    {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(&bad_tag.ciphertext).unwrap();
        *ct.last_mut().unwrap() ^= 0x01;
        bad_tag.ciphertext = b64.encode(ct);
    }
    refused(
        &h,
        "NU001",
        request(envelope("EV-4", &bad_tag), &Sig::good()),
        N::Undecryptable,
        "wrong AEAD tag",
    )
    .await;

    let mut bad_ad = sealed(&apiv3_key(), &serde_json::to_vec(&txn).unwrap());
    bad_ad.associated_data = "certificate".into();
    refused(
        &h,
        "NU001",
        request(envelope("EV-5", &bad_ad), &Sig::good()),
        N::Undecryptable,
        "wrong associated data",
    )
    .await;

    let other_key = sealed(
        &ApiV3Key::from_text("ffffffffffffffffffffffffffffffff").unwrap(),
        &serde_json::to_vec(&txn).unwrap(),
    );
    refused(
        &h,
        "NU001",
        request(envelope("EV-6", &other_key), &Sig::good()),
        N::Undecryptable,
        "other APIv3 key",
    )
    .await;

    let mut bad_alg = sealed(&apiv3_key(), &serde_json::to_vec(&txn).unwrap());
    bad_alg.algorithm = "AEAD_AES_128_GCM".into();
    refused(
        &h,
        "NU001",
        request(envelope("EV-7", &bad_alg), &Sig::good()),
        N::Undecryptable,
        "other algorithm",
    )
    .await;

    // Oversized: declared, and streamed without a length.
    let big = vec![b' '; notify::DEFAULT_MAX_BODY_BYTES + 1];
    refused(
        &h,
        "NU001",
        request(big.clone(), &Sig::good()),
        N::TooLarge,
        "oversized body",
    )
    .await;
    let mut streamed = request(Vec::new(), &Sig::good());
    streamed.headers_mut().remove("Content-Length");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    *streamed.body_mut() = Body::from_stream(futures_util::stream::iter(chunks));
    refused(
        &h,
        "NU001",
        streamed,
        N::TooLarge,
        "oversized streamed body",
    )
    .await;

    // After all that, the genuine notification still works.
    let (status, _) = oneshot_json(
        &h.app,
        request(body_for(&apiv3_key(), "EV-8", &txn), &Sig::good()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn notifications_not_matching_the_order_are_refused(db: &TestDb) {
    let h = harness(db);
    let o = create(&*h.store, "NM001", NOW - 60).await;
    create(&*h.store, "NM002", NOW - 60).await;
    use NotifyOutcome as N;

    type Edit = Box<dyn Fn(&mut CombineTransaction)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "amount",
            Box::new(|t| t.sub_orders[1].amount.total_amount = 1),
        ),
        (
            "sub-order mchid",
            Box::new(|t| t.sub_orders[1].mchid = "1900000999".into()),
        ),
        (
            "sub-order number",
            Box::new(|t| t.sub_orders[0].out_trade_no = "NM001-S9".into()),
        ),
        (
            "sub-order missing",
            Box::new(|t| {
                t.sub_orders.pop();
            }),
        ),
        (
            "sub-order added",
            Box::new(|t| {
                let extra = TransactionSubOrder {
                    out_trade_no: "NM001-S3".into(),
                    ..t.sub_orders[0].clone()
                };
                t.sub_orders.push(extra);
            }),
        ),
        (
            "sub-order repeated",
            Box::new(|t| t.sub_orders[1] = t.sub_orders[0].clone()),
        ),
        (
            "combine_mchid",
            Box::new(|t| t.combine_mchid = "1900000111".into()),
        ),
        (
            "combine_appid",
            Box::new(|t| t.combine_appid = "wx0000000000000000".into()),
        ),
        (
            "payer",
            Box::new(|t| {
                t.combine_payer_info = Some(PayerInfo {
                    openid: "oAnotherPayer0000000000000".into(),
                })
            }),
        ),
        (
            "mixed states",
            Box::new(|t| t.sub_orders[0].trade_state = "NOTPAY".into()),
        ),
    ];
    for (i, (what, f)) in cases.iter().enumerate() {
        let mut t = paid_txn(&o);
        f(&mut t);
        let req = request(
            body_for(&apiv3_key(), &format!("EV-M{i}"), &t),
            &Sig::good(),
        );
        refused(&h, "NM001", req, N::Mismatch, what).await;
    }
    // combine_out_trade_no naming another stored order (with this order's
    // sub-orders): a mismatch for that order, and neither changes.
    let before_other = snapshot(&h.store, "NM002").await;
    let mut t = paid_txn(&o);
    t.combine_out_trade_no = "NM002".into();
    refused(
        &h,
        "NM001",
        request(body_for(&apiv3_key(), "EV-MX", &t), &Sig::good()),
        N::Mismatch,
        "combine_out_trade_no",
    )
    .await;
    assert_eq!(snapshot(&h.store, "NM002").await, before_other);

    // Unknown order.
    let mut t = paid_txn(&o);
    t.combine_out_trade_no = "NM404".into();
    refused(
        &h,
        "NM001",
        request(body_for(&apiv3_key(), "EV-MU", &t), &Sig::good()),
        N::UnknownOrder,
        "unknown order",
    )
    .await;
    assert_eq!(h.store.get_order("NM404").await.unwrap(), None);
}

async fn replays_and_closed_orders_are_refused(db: &TestDb) {
    let h = harness(db);
    let o = create(&*h.store, "NR001", NOW - 60).await;
    let (status, _) = oneshot_json(
        &h.app,
        request(body_for(&apiv3_key(), "EV-R1", &paid_txn(&o)), &Sig::good()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Same id, another body (freshly encrypted: another nonce and
    // ciphertext) saying what is stored: WeChat Pay re-encrypting a retry
    // after a lost 204. Acknowledged, nothing written.
    let before = snapshot(&h.store, "NR001").await;
    let (status, reply) = oneshot_json(
        &h.app,
        request(body_for(&apiv3_key(), "EV-R1", &paid_txn(&o)), &Sig::good()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{reply:?}");
    assert_eq!(snapshot(&h.store, "NR001").await, before, "no side effects");
    assert_eq!(h.handler.counters().get(NotifyOutcome::Duplicate), 1);

    // Same id, a body saying something else: a real conflict.
    let mut other = paid_txn(&o);
    other.sub_orders[1].success_time = Some("2024-04-25T08:00:00+08:00".into());
    refused(
        &h,
        "NR001",
        request(body_for(&apiv3_key(), "EV-R1", &other), &Sig::good()),
        NotifyOutcome::Replayed,
        "replayed id, other transaction",
    )
    .await;

    // A genuine notification for an order already CLOSED: money taken for a
    // closed order — refused, alerted, unchanged.
    let c = create(&*h.store, "NR002", NOW - 4000).await;
    let closed = transition(TradeState::Closed, EventSource::Expiry, "expired");
    assert!(matches!(
        h.store
            .apply_transition("NR002", &closed, NOW - 10)
            .await
            .unwrap(),
        ApplyOutcome::Applied(_)
    ));
    refused(
        &h,
        "NR002",
        request(body_for(&apiv3_key(), "EV-R2", &paid_txn(&c)), &Sig::good()),
        NotifyOutcome::Rejected,
        "notification for a CLOSED order",
    )
    .await;
    // WeChat Pay retries: refused again the same way.
    refused(
        &h,
        "NR002",
        request(body_for(&apiv3_key(), "EV-R2", &paid_txn(&c)), &Sig::good()),
        NotifyOutcome::Rejected,
        "retry for a CLOSED order",
    )
    .await;
    assert_eq!(
        h.store.get_order("NR002").await.unwrap().unwrap().state,
        TradeState::Closed
    );
}

/// Hooks that make every state change take this long (a stuck database).
struct Delay(Duration);

#[async_trait]
impl StoreHooks for Delay {
    async fn before_apply(&self, _no: &str, _transition: &Transition) {
        tokio::time::sleep(self.0).await;
    }
}

async fn slow_processing_answers_fail_in_time(db: &TestDb) {
    let slow: Arc<dyn Store> = Arc::new(HookedStore {
        inner: db.store.clone(),
        hooks: Delay(Duration::from_millis(1500)),
    });
    let h = harness_with(slow, Duration::from_millis(300));
    let o = create(&*h.store, "NS001", NOW - 60).await;
    let body = body_for(&apiv3_key(), "EV-S1", &paid_txn(&o));
    let started = std::time::Instant::now();
    let (status, reply) = oneshot_json(&h.app, request(body.clone(), &Sig::good())).await;
    let took = started.elapsed();
    assert_fail(status, &reply, "timeout");
    assert!(status.is_server_error());
    assert!(
        took < Duration::from_millis(1200),
        "answered after {took:?}"
    );
    assert_eq!(h.handler.counters().get(NotifyOutcome::Timeout), 1);

    // The commit under way was not cut off: once it lands, WeChat Pay's
    // retry is acknowledged as a duplicate.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        db.store.get_order("NS001").await.unwrap().unwrap().state,
        TradeState::Success
    );
    let fast = harness(db);
    let (status, _) = oneshot_json(&fast.app, request(body, &Sig::good())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(fast.handler.counters().get(NotifyOutcome::Duplicate), 1);
}

async fn other_methods_and_paths_are_not_served(db: &TestDb) {
    let h = harness(db);
    let resp = oneshot(&h.app, Request::get(PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);
    let custom = notify::router(h.handler.clone(), "/pay/callback");
    let resp = oneshot(
        &custom,
        Request::post("/pay/callback").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "configurable path, unsigned → FAIL"
    );
}

async fn unknown_serial_calls_the_refresh_hook(db: &TestDb) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = Arc::new(ManualClock::new(NOW));
    let verifier = Arc::new(
        Verifier::new(clock.clone())
            .with_public_key(PUB_KEY_ID, platform_key().public_key().clone()),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handler = Arc::new(
        NotifyHandler::new(
            db.store.clone(),
            verifier,
            apiv3_key(),
            NotifyConfig::new(MCHID, APPID),
            clock.clone(),
        )
        .with_unknown_serial_hook(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let app = notify::router(handler.clone(), PATH);
    let o = db.create("NF-HOOK1", NOW - 60).await;
    let body = body_for(&apiv3_key(), "EV-HOOK1", &paid_txn(&o));

    let unknown = Sig {
        serial: "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC".into(),
        ..Sig::good()
    };
    let (status, reply) = oneshot_json(&app, request(body.clone(), &unknown)).await;
    assert_fail(status, &reply, "unknown serial");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "hook called once");

    let wrong_key = Sig {
        key: other_key(),
        ..Sig::good()
    };
    let (status, reply) = oneshot_json(&app, request(body.clone(), &wrong_key)).await;
    assert_fail(status, &reply, "bad signature");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a bad signature is no reason to refresh"
    );

    let (status, _) = oneshot_json(&app, request(body, &Sig::good())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

backend_tests!(
    valid_notification_is_applied_once,
    forged_and_stale_notifications_are_refused,
    undecodable_notifications_are_refused,
    notifications_not_matching_the_order_are_refused,
    replays_and_closed_orders_are_refused,
    slow_processing_answers_fail_in_time,
    other_methods_and_paths_are_not_served,
    unknown_serial_calls_the_refresh_hook,
);
