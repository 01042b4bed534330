//! Criterion benchmarks of the APIv3 crypto paths, per compiled backend.
//!
//! ```text
//! cargo bench -p wxpay-combine --bench crypto                       # AWS-LC
//! cargo bench -p wxpay-combine --bench crypto --features pure-rust  # both
//! ```
//!
//! For the comparison with `openssl speed` use `cargo xtask bench-crypto`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use wxpay_combine_core::apiv3::backend::all_backends;
use wxpay_combine_core::apiv3::{
    aead, request_message, ApiV3Key, EncryptedResource, ManualClock, PrivateKey, PublicKey,
    RequestSigner, SignatureHeaders, Verifier,
};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vector<'a>(kat: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    kat[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()
}

fn s(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap().to_string()
}

fn crypto(c: &mut Criterion) {
    let kat: serde_json::Value = serde_json::from_str(&fixture("kat.json")).unwrap();
    let req = vector(&kat, "requests", "post_jsapi_json");
    let resp = vector(&kat, "responses", "notification_public_key");
    let body = s(req, "body");
    let ts = req["timestamp"].as_i64().unwrap();
    let message = request_message(
        "POST",
        &s(req, "url"),
        ts,
        &s(req, "nonce"),
        body.as_bytes(),
    );
    let notification = s(resp, "body");
    let headers = SignatureHeaders {
        timestamp: s(resp, "timestamp"),
        nonce: s(resp, "nonce"),
        signature: s(resp, "signature"),
        serial: s(resp, "serial"),
        signature_type: None,
    };
    let resource: EncryptedResource = {
        let envelope: serde_json::Value = serde_json::from_str(&notification).unwrap();
        serde_json::from_value(envelope["resource"].clone()).unwrap()
    };
    let apiv3 = ApiV3Key::from_text(&fixture("apiv3_key.txt")).unwrap();

    for backend in all_backends() {
        let name = backend.name();
        let key = PrivateKey::from_pem_with(&fixture("merchant_key.pem"), backend).unwrap();
        let signer = RequestSigner::new(s(&kat, "mchid"), s(&kat, "merchant_serial"), key.clone());
        let pubkey = PublicKey::from_pem_with(&fixture("wechatpay_pub.pem"), backend).unwrap();
        let now: i64 = headers.timestamp.parse().unwrap();
        let verifier = Verifier::new(Arc::new(ManualClock::new(now)))
            .with_public_key(s(&kat, "public_key_id"), pubkey.clone());
        assert!(verifier.verify(&headers, notification.as_bytes()).is_ok());

        let mut g = c.benchmark_group(format!("rsa2048/{name}"));
        g.bench_function("sign_base64", |b| {
            b.iter(|| key.sign_base64(black_box(&message)).unwrap())
        });
        g.bench_function("authorization_header", |b| {
            b.iter(|| {
                signer
                    .authorization_at(
                        "POST",
                        black_box("/v3/combine-transactions/jsapi"),
                        ts,
                        "nonce",
                        body.as_bytes(),
                    )
                    .unwrap()
            })
        });
        let resp_message = s(resp, "message");
        let resp_sig = s(resp, "signature");
        g.bench_function("verify_base64", |b| {
            b.iter(|| {
                assert!(
                    pubkey.verify_base64(black_box(resp_message.as_bytes()), black_box(&resp_sig))
                )
            })
        });
        g.bench_function("verifier_verify_notification", |b| {
            b.iter(|| {
                verifier
                    .verify(black_box(&headers), black_box(notification.as_bytes()))
                    .unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("aead/{name}"));
        let plain_len = aead::decrypt_with(
            backend,
            &apiv3,
            &resource.nonce,
            &resource.associated_data,
            &resource.ciphertext,
        )
        .unwrap()
        .len();
        g.throughput(Throughput::Bytes(plain_len as u64));
        g.bench_function("decrypt_notification_resource", |b| {
            b.iter(|| {
                aead::decrypt_with(
                    backend,
                    &apiv3,
                    black_box(&resource.nonce),
                    &resource.associated_data,
                    black_box(&resource.ciphertext),
                )
                .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, crypto);
criterion_main!(benches);
