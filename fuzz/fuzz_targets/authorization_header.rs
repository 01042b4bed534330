//! Fuzzes the header parsers: the merchant `Authorization` header
//! (`Authorization::parse`, used by the simulator and the `verify` tool,
//! and the request timestamp check `apiv3::timestamp_skew`),
//! the `Wechatpay-*` headers (`SignatureHeaders::from_lookup`) and the
//! timestamp/serial checks of `Verifier::verify`, with the clock itself
//! taken from the input (extreme "now" values included).
//!
//! Input: 8 bytes of clock (little-endian i64), then either (first byte
//! even) an `Authorization` value or (odd) `Name: value` header lines.
//!
//! Contracts: a parsed `Authorization` writes back to a value that parses
//! to the same fields; parsed `Wechatpay-*` headers are trimmed and
//! non-empty; `verify` never accepts a forged signature, and a timestamp
//! 300 s or more from now is always refused as stale.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use wxpay_combine_core::apiv3::{
    timestamp_skew, Authorization, ManualClock, SignatureHeaders, Verifier, VerifyError,
    MAX_CLOCK_SKEW_SECS, MAX_REQUEST_SKEW_SECS,
};
use wxpay_combine_fuzz as fx;

fn verifier() -> &'static (Arc<ManualClock>, Verifier) {
    static V: OnceLock<(Arc<ManualClock>, Verifier)> = OnceLock::new();
    V.get_or_init(|| {
        let clock = Arc::new(ManualClock::new(fx::NOW));
        (clock.clone(), fx::verifier(clock))
    })
}

/// The request-timestamp check (WeChat Pay's, as the simulator runs it):
/// canonical decimal only, and a
/// distance from any `now` without overflow.
fn skew(now: i64, text: &str) {
    if let Some((ts, skew)) = timestamp_skew(now, text) {
        assert_eq!(ts.to_string(), text);
        assert_eq!(skew, now.saturating_sub(ts));
        let _ = skew.saturating_abs() > MAX_REQUEST_SKEW_SECS;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let now = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let (kind, rest) = (data[8], &data[9..]);

    if kind % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(auth) = Authorization::parse(&text) {
            for field in [
                &auth.mchid,
                &auth.nonce_str,
                &auth.timestamp,
                &auth.serial_no,
                &auth.signature,
            ] {
                assert!(!field.contains('"'), "a quoted value cannot hold a quote");
            }
            let again = Authorization::parse(&auth.to_header_value())
                .expect("a written Authorization parses");
            assert_eq!(again, auth);
            skew(now, &auth.timestamp);
        }
        skew(now, &text);
        return;
    }

    let block = fx::HeaderBlock::parse(rest);
    let Ok(headers) = SignatureHeaders::from_lookup(|name| block.get(name)) else {
        return;
    };
    for field in [
        &headers.timestamp,
        &headers.nonce,
        &headers.signature,
        &headers.serial,
    ] {
        assert!(!field.is_empty() && field.trim() == field.as_str());
    }

    let (clock, verifier) = verifier();
    clock.set(now);
    let body = b"{}";
    match verifier.verify(&headers, body) {
        Ok(()) => panic!("forged headers verified: {headers:?}"),
        Err(VerifyError::StaleTimestamp { skew_secs }) => {
            assert!(skew_secs.saturating_abs() >= MAX_CLOCK_SKEW_SECS);
        }
        Err(e) => {
            let _ = e.to_string();
            // Whatever else was wrong, a parsable timestamp outside the
            // window must have been refused as stale first.
            if headers
                .signature_type
                .as_deref()
                .is_none_or(|t| t == "WECHATPAY2-SHA256-RSA2048")
            {
                if let Ok(ts) = headers.timestamp.parse::<i64>() {
                    assert!(
                        now.saturating_sub(ts).saturating_abs() < MAX_CLOCK_SKEW_SECS,
                        "stale timestamp not reported as stale: {e}"
                    );
                }
            }
        }
    }
});
