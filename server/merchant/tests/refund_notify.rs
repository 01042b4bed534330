//! The refund-notification endpoint against forged and broken notifications
//! (through the real router, `tower::ServiceExt::oneshot`), per backend.
//! Two merchants with keys of their own: the sub-merchant (WeChat Pay key
//! `wechatpay_key.pem`, APIv3 key of the fixtures) and the initiator (WeChat
//! Pay key `platform_key.pem`, another APIv3 key). Every forged case must be
//! refused with the expected status and outcome and leave the refunds and
//! their log exactly as they were; the genuine notification then applies
//! once and its repeat is acknowledged without writing.

mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::{Arc, OnceLock};
use support::{backend_tests, oneshot_json, order, TestDb, MCHID, SUB_MCHID};
use wxpay_combine::apiv3::{
    response_message, ApiV3Key, Clock, EncryptedResource, ManualClock, PrivateKey, Verifier,
};
use wxpay_combine::combine::EventSource;
use wxpay_combine::notify::refund::{router, RefundMerchantKeys, RefundNotifyHandler};
use wxpay_combine::refund::{RefundApi, RefundCallError, RefundService};
use wxpay_combine::store::{NewRefund, RefundSource, RefundUpdate, Store};
use wxpay_combine_core::refund::wire::{Refund, RefundRequest};
use wxpay_combine_core::refund::RefundStatus;

// 2024-04-25T10:00:00+08:00 (the support payments' success time) + 1 h.
const NOW: i64 = 1_714_014_000;
const PATH: &str = "/wxpay/refund-notify";
const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
/// The id of `tests/fixtures/wechatpay_key.pem` (the sub-merchant's key).
const SUB_KEY_ID: &str = "PUB_KEY_ID_0112345678901234567890123456789012";
/// The initiator's WeChat Pay key id (its key is `platform_key.pem`).
const MAIN_KEY_ID: &str = "PUB_KEY_ID_0119000001092024042500000000000000";

fn sub_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        PrivateKey::from_pem(include_str!("../../../tests/fixtures/wechatpay_key.pem")).unwrap()
    })
}

fn main_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        PrivateKey::from_pem(include_str!("../../../tests/fixtures/platform_key.pem")).unwrap()
    })
}

fn sub_apiv3() -> ApiV3Key {
    ApiV3Key::from_text(include_str!("../../../tests/fixtures/apiv3_key.txt").trim()).unwrap()
}

fn main_apiv3() -> ApiV3Key {
    ApiV3Key::from_text("abcdefghijklmnopqrstuvwxyz012345").unwrap()
}

/// The notification path never calls WeChat Pay.
struct NoCalls;

#[async_trait]
impl RefundApi for NoCalls {
    fn can_refund(&self, _: &str) -> bool {
        true
    }
    async fn create(&self, _: &str, _: &RefundRequest) -> Result<Refund, RefundCallError> {
        panic!("the notification path must not call WeChat Pay")
    }
    async fn query(&self, _: &str, _: &str) -> Result<Refund, RefundCallError> {
        panic!("the notification path must not call WeChat Pay")
    }
}

fn app(store: Arc<dyn Store>) -> axum::Router {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
    let verifier = |id: &str, key: &PrivateKey| {
        Arc::new(Verifier::new(clock.clone()).with_public_key(id, key.public_key().clone()))
    };
    let merchants = vec![
        RefundMerchantKeys {
            mchid: SUB_MCHID.into(),
            verifier: verifier(SUB_KEY_ID, sub_key()),
            apiv3_key: sub_apiv3(),
        },
        RefundMerchantKeys {
            mchid: MCHID.into(),
            verifier: verifier(MAIN_KEY_ID, main_key()),
            apiv3_key: main_apiv3(),
        },
    ];
    let service = Arc::new(RefundService::new(
        store,
        Arc::new(NoCalls),
        "https://shop.example.com/wxpay/refund-notify".into(),
        clock.clone(),
        60,
    ));
    router(
        Arc::new(RefundNotifyHandler::new(
            merchants,
            service,
            64 * 1024,
            std::time::Duration::from_secs(4),
        )),
        PATH,
    )
}

/// A refund notice as WeChat Pay's direct-mode notification carries it.
fn notice(
    mchid: &str,
    out_trade_no: &str,
    txn: &str,
    out_refund_no: &str,
    refund: i64,
    total: i64,
) -> serde_json::Value {
    serde_json::json!({
        "mchid": mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": txn,
        "out_refund_no": out_refund_no,
        "refund_id": "50300000001",
        "refund_status": "SUCCESS",
        "success_time": "2024-04-25T11:00:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": total, "refund": refund, "payer_total": total, "payer_refund": refund}
    })
}

fn body(
    event_type: &str,
    original_type: &str,
    key: &ApiV3Key,
    plaintext: &serde_json::Value,
) -> Vec<u8> {
    let resource = EncryptedResource::seal(
        key,
        original_type,
        Some(original_type),
        &serde_json::to_vec(plaintext).unwrap(),
    );
    serde_json::to_vec(&serde_json::json!({
        "id": "EV-2024042511223320873",
        "create_time": "2024-04-25T11:00:01+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款成功",
        "resource": resource,
    }))
    .unwrap()
}

fn signed(body: Vec<u8>, timestamp: i64, serial: &str, key: &PrivateKey) -> Request<Body> {
    let ts = timestamp.to_string();
    let signature = key
        .sign_base64(&response_message(&ts, NONCE, &body))
        .unwrap();
    Request::post(PATH)
        .header("Content-Type", "application/json")
        .header("Wechatpay-Timestamp", ts)
        .header("Wechatpay-Nonce", NONCE)
        .header("Wechatpay-Signature", signature)
        .header("Wechatpay-Serial", serial)
        .body(Body::from(body))
        .unwrap()
}

async fn snapshot(store: &dyn Store) -> String {
    let refunds = store.refunds_of_order("RN001").await.unwrap();
    let mut out = format!("{refunds:?}");
    for r in &refunds {
        out.push_str(&format!(
            "{:?}",
            store.refund_events(&r.out_refund_no).await.unwrap()
        ));
    }
    out
}

async fn forged_refund_notifications_change_nothing(db: &TestDb) {
    let store = db.store.clone();
    store
        .create_order(&order("RN001", NOW - 7200))
        .await
        .unwrap();
    let paid = support::paid("RN001", EventSource::Query, |i| format!("420000000{i}"));
    store
        .apply_transition("RN001", &paid, NOW - 3600)
        .await
        .unwrap();
    // RA: 100 fen of the sub-merchant's sub-order (transaction 4200000001,
    // 250 fen); RB: 50 fen of the initiator's (transaction 4200000000, 100).
    for (no, sub, amount) in [("RA", "RN001-S2", 100), ("RB", "RN001-S1", 50)] {
        let new = NewRefund {
            out_refund_no: no.into(),
            combine_out_trade_no: "RN001".into(),
            out_trade_no: sub.into(),
            amount,
            reason: None,
            idempotency: None,
        };
        store.create_refund(&new, NOW - 60).await.unwrap();
    }
    let accepted = RefundUpdate {
        status: RefundStatus::Processing,
        refund_id: Some("50300000001".into()),
        user_received_account: None,
        success_time: None,
        source: RefundSource::Api,
        notification_id: None,
        detail: "accepted".into(),
    };
    store
        .update_refund("RA", &accepted, NOW - 59)
        .await
        .unwrap();
    let app = app(store.clone());
    let before = snapshot(&*store).await;

    let genuine = notice(SUB_MCHID, "RN001-S2", "4200000001", "RA", 100, 250);
    let sub_body = |n: &serde_json::Value| body("REFUND.SUCCESS", "refund", &sub_apiv3(), n);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut n = genuine.clone();
        f(&mut n);
        n
    };
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "signed with the other merchant's WeChat Pay key",
            signed(sub_body(&genuine), NOW, SUB_KEY_ID, main_key()),
            StatusCode::UNAUTHORIZED,
            "signature verification failed",
        ),
        (
            "encrypted with the other merchant's APIv3 key",
            signed(
                body("REFUND.SUCCESS", "refund", &main_apiv3(), &genuine),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::BAD_REQUEST,
            "resource decryption failed",
        ),
        (
            "the other merchant's refund, from the initiator",
            signed(
                body(
                    "REFUND.SUCCESS",
                    "refund",
                    &main_apiv3(),
                    &with(&|n| n["mchid"] = MCHID.into()),
                ),
                NOW,
                MAIN_KEY_ID,
                main_key(),
            ),
            StatusCode::CONFLICT,
            "notification does not match the refund",
        ),
        (
            "a merchant naming another merchant inside",
            signed(
                sub_body(&with(&|n| n["mchid"] = MCHID.into())),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::CONFLICT,
            "notification does not match the refund",
        ),
        (
            "amount differs",
            signed(
                sub_body(&with(&|n| n["amount"]["refund"] = 99.into())),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::CONFLICT,
            "notification does not match the refund",
        ),
        (
            "another transaction",
            signed(
                sub_body(&with(&|n| n["transaction_id"] = "4200000009".into())),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::CONFLICT,
            "notification does not match the refund",
        ),
        (
            "unknown out_refund_no",
            signed(
                sub_body(&with(&|n| n["out_refund_no"] = "RZ".into())),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::NOT_FOUND,
            "unknown refund",
        ),
        (
            "a pay event sent to the refund endpoint",
            signed(
                body("TRANSACTION.SUCCESS", "transaction", &sub_apiv3(), &genuine),
                NOW,
                SUB_KEY_ID,
                sub_key(),
            ),
            StatusCode::BAD_REQUEST,
            "event_type is not REFUND.* (payment events go to the pay notification URL)",
        ),
        (
            "stale by 300 s",
            signed(sub_body(&genuine), NOW - 300, SUB_KEY_ID, sub_key()),
            StatusCode::UNAUTHORIZED,
            "signature verification failed",
        ),
        (
            "a serial no merchant has",
            signed(
                sub_body(&genuine),
                NOW,
                "PUB_KEY_ID_0100000000000000000000000000000000",
                sub_key(),
            ),
            StatusCode::UNAUTHORIZED,
            "signature verification failed",
        ),
    ];
    for (name, req, status, message) in cases {
        let (got, json) = oneshot_json(&app, req).await;
        assert_eq!(got, status, "{name}: {json:?}");
        let json = json.unwrap_or_else(|| panic!("{name}: a FAIL body"));
        assert_eq!(json["code"], "FAIL", "{name}");
        assert_eq!(json["message"], message, "{name}");
        assert_eq!(
            snapshot(&*store).await,
            before,
            "{name} changed the refunds"
        );
    }

    // The genuine notification applies once; its repeat is acknowledged.
    for _ in 0..2 {
        let (got, json) =
            oneshot_json(&app, signed(sub_body(&genuine), NOW, SUB_KEY_ID, sub_key())).await;
        assert_eq!(got, StatusCode::NO_CONTENT, "{json:?}");
    }
    let ra = store.get_refund("RA").await.unwrap().unwrap();
    assert_eq!(ra.status, RefundStatus::Success);
    assert_eq!(
        ra.success_time.as_deref(),
        Some("2024-04-25T11:00:00+08:00")
    );
    let events = store.refund_events("RA").await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.source == "notify").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        store.get_refund("RB").await.unwrap().unwrap().status,
        RefundStatus::Processing,
        "the other refund is untouched"
    );
    // CLOSED after SUCCESS is refused (a final status), nothing written.
    let closed = with(&|n| n["refund_status"] = "CLOSED".into());
    let (got, _) = oneshot_json(
        &app,
        signed(
            body("REFUND.CLOSED", "refund", &sub_apiv3(), &closed),
            NOW,
            SUB_KEY_ID,
            sub_key(),
        ),
    )
    .await;
    assert_eq!(got, StatusCode::CONFLICT);
    assert_eq!(
        store.get_refund("RA").await.unwrap().unwrap().status,
        RefundStatus::Success
    );
}

backend_tests!(forged_refund_notifications_change_nothing);
