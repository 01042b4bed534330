//! The forged and broken notification matrix (issue 8, item 4), one
//! table-driven test per backend: each case goes through the real HTTP
//! router (`notify::router` via `tower::ServiceExt::oneshot`) and must get
//! a 4xx/5xx with `{"code":"FAIL",…}`, the expected outcome, and leave every
//! table of the database (orders, sub-orders, events, notifications, outbox)
//! exactly as it was. Signatures use the committed test keys
//! (`tests/fixtures/`); the clock is injected.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use support::{
    backend_tests, body_for, envelope, oneshot_json, paid_txn, sealed, transition, Kind, TestDb,
    APPID, MCHID,
};
use wxpay_combine::apiv3::{
    aead, response_message, ApiV3Key, EncryptedResource, ManualClock, PrivateKey, Verifier,
};
use wxpay_combine::combine::wire::CombineTransaction;
use wxpay_combine::combine::{ApplyOutcome, EventSource, TradeState};
use wxpay_combine::notify::{self, NotifyConfig, NotifyHandler, NotifyOutcome};

const NOW: i64 = 1_714_000_000;
const PATH: &str = "/wxpay/notify";
/// The id of `tests/fixtures/wechatpay_key.pem` (see generate.sh).
const PUB_KEY_ID: &str = "PUB_KEY_ID_0112345678901234567890123456789012";
const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

fn wechatpay_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        PrivateKey::from_pem(include_str!("../../../tests/fixtures/wechatpay_key.pem")).unwrap()
    })
}

/// Another RSA key (the platform-certificate key): a wrong signer here.
fn other_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        PrivateKey::from_pem(include_str!("../../../tests/fixtures/platform_key.pem")).unwrap()
    })
}

fn apiv3_key() -> ApiV3Key {
    ApiV3Key::from_text(include_str!("../../../tests/fixtures/apiv3_key.txt").trim()).unwrap()
}

/// Log lines of this test binary (a global subscriber: the handler runs in
/// spawned tasks on other threads).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_containing(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A request signed by `key` at `timestamp`, naming `serial`.
fn signed_as(body: Vec<u8>, timestamp: i64, serial: &str, key: &PrivateKey) -> Request<Body> {
    let ts = timestamp.to_string();
    let signature = key
        .sign_base64(&response_message(&ts, NONCE, &body))
        .unwrap();
    with_signature(body, &ts, serial, &signature)
}

fn with_signature(body: Vec<u8>, ts: &str, serial: &str, signature: &str) -> Request<Body> {
    Request::post(PATH)
        .header("Content-Type", "application/json")
        .header("Content-Length", body.len())
        .header("Wechatpay-Timestamp", ts)
        .header("Wechatpay-Nonce", NONCE)
        .header("Wechatpay-Signature", signature)
        .header("Wechatpay-Serial", serial)
        .header("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
        .body(Body::from(body))
        .unwrap()
}

/// A genuinely signed request.
fn signed(body: Vec<u8>) -> Request<Body> {
    signed_as(body, NOW, PUB_KEY_ID, wechatpay_key())
}

/// Every row of every application table, as text, per table (sorted), on a
/// connection of its own: "changed nothing" means this is equal before and
/// after.
async fn dump(db: &TestDb) -> BTreeMap<String, Vec<String>> {
    use sqlx::{Connection, Row};
    let mut out = BTreeMap::new();
    match db.kind {
        Kind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                        .bind(&t)
                        .fetch_all(&mut c)
                        .await
                        .unwrap();
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM \"{t}\"")))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                let mut rows: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
                rows.sort();
                out.insert(t, rows);
            }
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                 AND table_name <> '_sqlx_migrations'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            for t in tables {
                let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM \"{t}\" t"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                rows.sort();
                out.insert(t, rows);
            }
        }
    }
    for required in [
        "combine_orders",
        "sub_orders",
        "order_events",
        "notifications",
    ] {
        assert!(out.contains_key(required), "table {required} not found");
    }
    out
}

/// One forged or broken notification and what it must get.
struct Case {
    name: &'static str,
    request: Request<Body>,
    expected: NotifyOutcome,
}

fn case(name: &'static str, request: Request<Body>, expected: NotifyOutcome) -> Case {
    Case {
        name,
        request,
        expected,
    }
}

async fn forged_and_broken_notifications_change_nothing(db: &TestDb) {
    logs();
    let prefix = match db.kind {
        Kind::Sqlite => "FGS",
        Kind::Postgres => "FGP",
    };
    let no = |n: &str| format!("{prefix}{n}");

    let clock = Arc::new(ManualClock::new(NOW));
    let verifier = Arc::new(
        Verifier::new(clock.clone())
            .with_public_key(PUB_KEY_ID, wechatpay_key().public_key().clone()),
    );
    let config = NotifyConfig::new(MCHID, APPID);
    let limit = config.max_body_bytes;
    let handler = Arc::new(NotifyHandler::new(
        db.store.clone(),
        verifier,
        apiv3_key(),
        config,
        clock.clone(),
    ));
    let app = notify::router(handler.clone(), PATH);

    // A: the NOTPAY order most cases aim at. B: another NOTPAY order.
    // P: paid by a genuine notification (for the replays). C: CLOSED.
    let a = db.create(&no("A"), NOW - 60).await;
    let b = db.create(&no("B"), NOW - 60).await;
    let p = db.create(&no("P"), NOW - 60).await;
    let c = db.create(&no("C"), NOW - 4000).await;
    let (status, reply) = oneshot_json(
        &app,
        signed(body_for(&apiv3_key(), "EV-FG-PAID", &paid_txn(&p))),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{reply:?}");
    let closed = transition(TradeState::Closed, EventSource::Expiry, "expired");
    assert!(matches!(
        db.store
            .apply_transition(&c.combine_out_trade_no, &closed, NOW - 10)
            .await
            .unwrap(),
        ApplyOutcome::Applied(_)
    ));

    let good = paid_txn(&a);
    let variant = |f: &dyn Fn(&mut CombineTransaction)| {
        let mut t = good.clone();
        f(&mut t);
        signed(body_for(&apiv3_key(), "EV-FG-1", &t))
    };
    let good_body = body_for(&apiv3_key(), "EV-FG-1", &good);
    let ciphertext_of = |ad: &str, plaintext: &[u8]| {
        aead::encrypt(&apiv3_key(), "fgnonce00001", ad, plaintext).unwrap()
    };
    let resource = |ciphertext: String, ad: &str| EncryptedResource {
        algorithm: "AEAD_AES_256_GCM".into(),
        ciphertext,
        associated_data: ad.into(),
        nonce: "fgnonce00001".into(),
        original_type: Some("transaction".into()),
    };
    let plaintext = serde_json::to_vec(&good).unwrap();
    let mut bad_tag = base64_decode(&ciphertext_of("transaction", &plaintext));
    *bad_tag.last_mut().unwrap() ^= 0x01;
    let mut tampered = good_body.clone();
    let brace = tampered.iter().rposition(|&b| b == b'}').unwrap();
    tampered.insert(brace, b' ');
    let oversized = {
        let mut v = good_body.clone();
        v.resize(limit + 1, b' ');
        v
    };
    let chunked_oversized = {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..=limit / 4096).map(|_| Ok(vec![b' '; 4096])).collect();
        let mut r = signed(Vec::new());
        *r.body_mut() = Body::from_stream(futures_util::stream::iter(chunks));
        r.headers_mut().remove("Content-Length");
        r
    };

    use NotifyOutcome as O;
    let cases = vec![
        case(
            "wrong signature (another key)",
            signed_as(good_body.clone(), NOW, PUB_KEY_ID, other_key()),
            O::BadSignature,
        ),
        case(
            "signature over another body (a byte added after signing)",
            {
                let mut r = signed(good_body.clone());
                *r.body_mut() = Body::from(tampered.clone());
                r.headers_mut()
                    .insert("Content-Length", tampered.len().into());
                r
            },
            O::BadSignature,
        ),
        case(
            "signature not base64",
            with_signature(good_body.clone(), &NOW.to_string(), PUB_KEY_ID, "%%%"),
            O::BadSignature,
        ),
        case(
            "SIGNTEST probe",
            with_signature(
                good_body.clone(),
                &NOW.to_string(),
                PUB_KEY_ID,
                "WECHATPAY/SIGNTEST/MEUCIQDxTQ2wS0v7dKzVhtp4SX1Sy",
            ),
            O::SignatureProbe,
        ),
        case(
            "timestamp 301 s old",
            signed_as(good_body.clone(), NOW - 301, PUB_KEY_ID, wechatpay_key()),
            O::Stale,
        ),
        case(
            "timestamp 301 s ahead",
            signed_as(good_body.clone(), NOW + 301, PUB_KEY_ID, wechatpay_key()),
            O::Stale,
        ),
        // The edge: 300 s or more away is stale (299 s is accepted: the
        // last step below).
        case(
            "timestamp exactly 300 s old",
            signed_as(good_body.clone(), NOW - 300, PUB_KEY_ID, wechatpay_key()),
            O::Stale,
        ),
        case(
            "timestamp exactly 300 s ahead",
            signed_as(good_body.clone(), NOW + 300, PUB_KEY_ID, wechatpay_key()),
            O::Stale,
        ),
        case(
            "unknown serial",
            signed_as(
                good_body.clone(),
                NOW,
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                wechatpay_key(),
            ),
            O::UnknownSerial,
        ),
        case(
            "missing Wechatpay-Nonce",
            {
                let mut r = signed(good_body.clone());
                r.headers_mut().remove("Wechatpay-Nonce");
                r
            },
            O::MissingHeaders,
        ),
        case(
            "decrypted amount differs",
            variant(&|t| t.sub_orders[1].amount.total_amount += 1),
            O::Mismatch,
        ),
        case(
            "decrypted combine_mchid differs",
            variant(&|t| t.combine_mchid = "1900000999".into()),
            O::Mismatch,
        ),
        case(
            "decrypted combine_appid differs",
            variant(&|t| t.combine_appid = "wx0000000000000000".into()),
            O::Mismatch,
        ),
        case(
            "decrypted combine_out_trade_no names another order",
            variant(&|t| t.combine_out_trade_no = b.combine_out_trade_no.clone()),
            O::Mismatch,
        ),
        case(
            "sub-order set: one missing",
            variant(&|t| {
                t.sub_orders.pop();
            }),
            O::Mismatch,
        ),
        case(
            "sub-order set: one extra",
            variant(&|t| {
                let mut extra = t.sub_orders[0].clone();
                extra.out_trade_no = format!("{}-S3", t.combine_out_trade_no);
                t.sub_orders.push(extra);
            }),
            O::Mismatch,
        ),
        case(
            "sub-order set: one replaced",
            variant(&|t| t.sub_orders[1].out_trade_no.push('X')),
            O::Mismatch,
        ),
        case(
            "sub-order set: one under another merchant",
            variant(&|t| t.sub_orders[1].mchid = MCHID.into()),
            O::Mismatch,
        ),
        case(
            "sub-order set: the same sub-order twice",
            variant(&|t| t.sub_orders[1] = t.sub_orders[0].clone()),
            O::Mismatch,
        ),
        case(
            "no combine_payer_info (the payer check cannot be skipped)",
            variant(&|t| t.combine_payer_info = None),
            O::Mismatch,
        ),
        case(
            "unknown order",
            variant(&|t| t.combine_out_trade_no = format!("{prefix}404")),
            O::UnknownOrder,
        ),
        case(
            "malformed JSON body",
            signed(b"{\"id\":\"EV-FG-1\",\"resource\":{".to_vec()),
            O::Malformed,
        ),
        case(
            "envelope without an id",
            signed(
                br#"{"resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"","nonce":"x"}}"#
                    .to_vec(),
            ),
            O::Malformed,
        ),
        case(
            "blank envelope id",
            signed(envelope("   ", &sealed(&apiv3_key(), &plaintext))),
            O::Malformed,
        ),
        case(
            "non-JSON plaintext",
            signed(envelope(
                "EV-FG-1",
                &sealed(&apiv3_key(), b"SUCCESS, trust me"),
            )),
            O::Malformed,
        ),
        case(
            "JSON plaintext that is not a transaction",
            signed(envelope(
                "EV-FG-1",
                &sealed(&apiv3_key(), br#"{"combine_out_trade_no":1}"#),
            )),
            O::Malformed,
        ),
        case(
            "wrong AEAD tag",
            signed(envelope(
                "EV-FG-1",
                &resource(base64_encode(&bad_tag), "transaction"),
            )),
            O::Undecryptable,
        ),
        case(
            "wrong associated data",
            signed(envelope(
                "EV-FG-1",
                &resource(ciphertext_of("certificate", &plaintext), "transaction"),
            )),
            O::Undecryptable,
        ),
        case(
            "sealed under another APIv3 key",
            signed(envelope(
                "EV-FG-1",
                &sealed(
                    &ApiV3Key::from_text("Another0ApiV3Key0000000000000000").unwrap(),
                    &plaintext,
                ),
            )),
            O::Undecryptable,
        ),
        case(
            "oversized body (Content-Length)",
            signed(oversized),
            O::TooLarge,
        ),
        case(
            "oversized body (streamed, no Content-Length)",
            chunked_oversized,
            O::TooLarge,
        ),
        case(
            "replayed id with a different transaction (same, paid order)",
            signed(body_for(&apiv3_key(), "EV-FG-PAID", &{
                let mut t = paid_txn(&p);
                t.sub_orders[0].transaction_id = Some("4200009992024042512345678".into());
                t
            })),
            O::Replayed,
        ),
        case(
            "a refund resource (original_type refund) on the pay endpoint",
            signed(envelope(
                "EV-FG-RT",
                &EncryptedResource::seal(&apiv3_key(), "refund", Some("refund"), &plaintext),
            )),
            O::WrongEvent,
        ),
        case(
            "a REFUND.SUCCESS event on the pay endpoint",
            signed({
                let mut v: serde_json::Value = serde_json::from_slice(&good_body).unwrap();
                v["event_type"] = "REFUND.SUCCESS".into();
                serde_json::to_vec(&v).unwrap()
            }),
            O::WrongEvent,
        ),
        case(
            "replayed id with a different body (another, unpaid order)",
            signed(body_for(&apiv3_key(), "EV-FG-PAID", &paid_txn(&a))),
            O::Replayed,
        ),
        case(
            "genuine notification for a CLOSED order",
            signed(body_for(&apiv3_key(), "EV-FG-CLOSED", &paid_txn(&c))),
            O::Rejected,
        ),
    ];

    let initial = dump(db).await;
    assert_eq!(initial["combine_orders"].len(), 4, "{initial:?}");
    assert_eq!(initial["sub_orders"].len(), 8, "{initial:?}");
    assert_eq!(initial["notifications"].len(), 1, "{initial:?}");

    let mut failures = Vec::new();
    for Case {
        name,
        request,
        expected,
    } in cases
    {
        let before = dump(db).await;
        let count = handler.counters().get(expected);
        let (status, reply) = oneshot_json(&app, request).await;
        let after = dump(db).await;
        let mut problems = Vec::new();
        if !(status.is_client_error() || status.is_server_error()) {
            problems.push(format!("status {status}"));
        }
        if status != expected.status() {
            problems.push(format!("status {status}, expected {}", expected.status()));
        }
        match &reply {
            Some(body)
                if body["code"] == "FAIL"
                    && body["message"].as_str().is_some_and(|m| !m.is_empty()) => {}
            other => problems.push(format!("reply {other:?}, expected {{\"code\":\"FAIL\",…}}")),
        }
        if handler.counters().get(expected) != count + 1 {
            problems.push(format!("outcome {expected:?} not counted"));
        }
        if after != before {
            problems.push("the database changed".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "cases failed:\n{}",
        failures.join("\n")
    );
    // The refusal names the field that does not fit.
    let (_, reply) = oneshot_json(
        &app,
        signed(envelope(
            "EV-FG-RT",
            &EncryptedResource::seal(&apiv3_key(), "transaction", Some("refund"), &plaintext),
        )),
    )
    .await;
    assert_eq!(
        reply.unwrap()["message"],
        "resource.original_type is not transaction"
    );

    // The CLOSED order: the incident was alerted, with the order number, and
    // the order is still CLOSED.
    let closed_no = c.combine_out_trade_no.clone();
    let alerts: Vec<String> = log_lines_containing(&closed_no)
        .into_iter()
        .filter(|l| l.contains("ALERT") && l.contains("ERROR"))
        .collect();
    assert!(
        !alerts.is_empty(),
        "no ALERT logged for the notification on CLOSED order {closed_no}"
    );
    let stored = db.store.get_order(&closed_no).await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::Closed);
    // The replay into the unpaid order A did not pay it.
    let a_now = db
        .store
        .get_order(&a.combine_out_trade_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_now.state, TradeState::NotPay);

    // Just inside the window: the genuine notification signed 299 s ago
    // pays A (the same bytes refused above at 300 s).
    let (status, reply) = oneshot_json(
        &app,
        signed_as(good_body.clone(), NOW - 299, PUB_KEY_ID, wechatpay_key()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "299 s old: {reply:?}");
    let a_now = db
        .store
        .get_order(&a.combine_out_trade_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_now.state, TradeState::Success);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

backend_tests!(forged_and_broken_notifications_change_nothing);
