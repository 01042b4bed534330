//! Fuzzes the notification path the handler runs before the database:
//! `notify::verify_notification` (headers → signature and time window →
//! envelope JSON → AEAD → transaction JSON → merchant check), then
//! `payment::transition_for` against a stored order, exactly as
//! `NotifyHandler` calls them.
//!
//! The first input byte picks a mode (`% 4`); the rest is the payload:
//! - 0 `body`: the payload is a body whose signature has been checked:
//!   `notify::open_notification` (envelope, base64, AEAD, transaction);
//! - 1 `plaintext`: the payload is the decrypted resource, sealed here with
//!   the APIv3 key into a well-formed envelope (mutations reach the
//!   transaction parser, the merchant check and the order matching);
//! - 2 `raw`: the payload is `Name: value` header lines, a blank line and
//!   the body, all as received, through the whole `verify_notification` —
//!   nothing is signed here (forged headers, timestamps, serials,
//!   signatures);
//! - 3 `signed`: the payload is a body, signed here with the fixture WeChat
//!   Pay key, through the whole `verify_notification` (an RSA signature per
//!   input: slow, so the cheaper modes carry the volume).
//!
//! Contracts checked beyond "never panics": a refusal is never an
//! acknowledgement; an accepted notification has a trimmed 1..=128-byte id
//! and names our merchant and app; in `plaintext` mode the result agrees
//! with an independent parse of the plaintext; in `signed` mode the whole
//! path gives exactly what its post-signature half gives; an accepted match against the
//! order agrees with the stored sub-orders and amounts; `raw` mode accepts
//! nothing but the genuine signed seeds (their signatures cover the body).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use wxpay_combine_core::apiv3::{aead, response_message, ApiV3Key, ManualClock, PrivateKey, Verifier};
use wxpay_combine_core::combine::wire::CombineTransaction;
use wxpay_combine_core::combine::{CombineOrder, EventSource, NotificationRef};
use wxpay_combine_core::notify::{open_notification, verify_notification, NotifyOutcome, MAX_ID_LEN};
use wxpay_combine_core::payment;
use wxpay_combine_fuzz as fx;

struct Fixture {
    key: PrivateKey,
    apiv3: ApiV3Key,
    verifier: Verifier,
    order: CombineOrder,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        key: fx::wechatpay_key(),
        apiv3: fx::apiv3_key(),
        verifier: fx::verifier(Arc::new(ManualClock::new(fx::NOW))),
        order: fx::order(),
    })
}

/// Headers of a notification signed over `body` with the fixture key.
fn signed_headers(f: &Fixture, body: &[u8]) -> fx::HeaderBlock {
    let ts = fx::NOW.to_string();
    let signature = f
        .key
        .sign_base64(&response_message(&ts, fx::SIGN_NONCE, body))
        .expect("sign");
    fx::HeaderBlock(vec![
        ("Wechatpay-Timestamp".into(), ts),
        ("Wechatpay-Nonce".into(), fx::SIGN_NONCE.into()),
        ("Wechatpay-Signature".into(), signature),
        ("Wechatpay-Serial".into(), fx::PUB_KEY_ID.into()),
        (
            "Wechatpay-Signature-Type".into(),
            "WECHATPAY2-SHA256-RSA2048".into(),
        ),
    ])
}

/// A well-formed envelope around `plaintext`, sealed with the APIv3 key.
fn envelope(f: &Fixture, plaintext: &[u8]) -> Vec<u8> {
    let ciphertext =
        aead::encrypt(&f.apiv3, fx::AEAD_NONCE, "transaction", plaintext).expect("seal");
    serde_json::to_vec(&serde_json::json!({
        "id": "EV-2a1b3c4d-0000-5000-8000-000000000001",
        "create_time": "2024-04-25T07:06:41+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": "transaction",
            "original_type": "transaction",
            "nonce": fx::AEAD_NONCE,
        },
    }))
    .expect("envelope JSON")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let open = |body: &[u8]| open_notification(&f.apiv3, fx::MCHID, fx::APPID, body);
    let (result, body) = match mode % 4 {
        0 => (open(payload), payload.to_vec()),
        1 => {
            let body = envelope(f, payload);
            (open(&body), body)
        }
        2 => {
            let (head, body) = fx::split_head(payload);
            let headers = fx::HeaderBlock::parse(head);
            let r = verify_notification(
                &f.verifier,
                &f.apiv3,
                fx::MCHID,
                fx::APPID,
                |name| headers.get(name),
                body,
            );
            (r, body.to_vec())
        }
        _ => {
            let headers = signed_headers(f, payload);
            let r = verify_notification(
                &f.verifier,
                &f.apiv3,
                fx::MCHID,
                fx::APPID,
                |name| headers.get(name),
                payload,
            );
            assert_eq!(
                r,
                open(payload),
                "the signed path differs from its second half"
            );
            (r, payload.to_vec())
        }
    };

    if mode % 4 == 1 {
        // The envelope and signature are genuine: only the plaintext decides.
        match serde_json::from_slice::<CombineTransaction>(payload) {
            Ok(t) if t.combine_mchid == fx::MCHID && t.combine_appid == fx::APPID => {
                let v = result.as_ref().expect("a genuine notification is accepted");
                assert_eq!(v.transaction, t);
            }
            Ok(_) => assert_eq!(
                result.as_ref().unwrap_err().outcome,
                NotifyOutcome::Mismatch
            ),
            Err(_) => assert_eq!(
                result.as_ref().unwrap_err().outcome,
                NotifyOutcome::Malformed
            ),
        }
    }

    let verified = match result {
        Ok(v) => v,
        Err(refusal) => {
            assert!(
                !matches!(
                    refusal.outcome,
                    NotifyOutcome::Applied | NotifyOutcome::Duplicate
                ),
                "a refusal must not acknowledge"
            );
            assert!(refusal.outcome.status().as_u16() >= 400);
            return;
        }
    };
    assert!(!verified.id.is_empty() && verified.id.len() <= MAX_ID_LEN);
    assert_eq!(verified.id.trim(), verified.id);
    let txn = &verified.transaction;
    assert_eq!(txn.combine_mchid, fx::MCHID);
    assert_eq!(txn.combine_appid, fx::APPID);

    let notification = NotificationRef {
        id: verified.id.clone(),
        body_sha256: payment::body_sha256(&body),
    };
    if let Ok(t) = payment::transition_for(&f.order, txn, EventSource::Notify, Some(notification)) {
        assert_eq!(txn.combine_out_trade_no, f.order.combine_out_trade_no);
        assert_eq!(txn.sub_orders.len(), f.order.sub_orders.len());
        for s in &txn.sub_orders {
            let stored = f
                .order
                .sub_orders
                .iter()
                .find(|o| o.mchid == s.mchid && o.out_trade_no == s.out_trade_no)
                .expect("matched sub-order is stored");
            assert_eq!(stored.amount, s.amount.total_amount);
        }
        assert!(t.payments.len() <= f.order.sub_orders.len());
    }
});
