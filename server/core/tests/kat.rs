//! Known-answer tests: every signing, verifying and AEAD path, on every
//! compiled backend, against values produced by the OpenSSL CLI and Python
//! `cryptography` (`tests/fixtures/generate.sh`).

mod common;

use common::{fixture, fixture_text, kat};
use std::sync::Arc;
use wxpay_combine_core::apiv3::backend::{all_backends, CryptoBackend};
use wxpay_combine_core::apiv3::*;

fn private_key(file: &str, backend: &'static dyn CryptoBackend) -> PrivateKey {
    PrivateKey::from_pem_with(&fixture_text(file), backend).unwrap()
}

fn public_key(file: &str, backend: &'static dyn CryptoBackend) -> PublicKey {
    PublicKey::from_pem_with(&fixture_text(file), backend).unwrap()
}

/// The DER inside a one-block PEM fixture (decoded here, not by the crate).
fn pem_der(file: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = fixture_text(file)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn certificate(file: &str, backend: &'static dyn CryptoBackend) -> Certificate {
    Certificate::from_der_with(&pem_der(file), backend).unwrap()
}

fn headers(v: &common::ResponseVector) -> SignatureHeaders {
    SignatureHeaders {
        timestamp: v.timestamp.clone(),
        nonce: v.nonce.clone(),
        signature: v.signature.clone(),
        serial: v.serial.clone(),
        signature_type: Some(SIGNATURE_TYPE.into()),
    }
}

#[test]
fn backends_are_all_compiled_in_for_this_test_run() {
    // `cargo xtask test` runs with `--features pure-rust` on top of the
    // default: both backends must then be exercised, not just one.
    let names: Vec<_> = all_backends().iter().map(|b| b.name()).collect();
    assert!(!names.is_empty());
    #[cfg(feature = "aws-lc")]
    assert!(names.contains(&"aws-lc-rs"), "{names:?}");
    #[cfg(feature = "pure-rust")]
    assert!(names.contains(&"pure-rust"), "{names:?}");
}

#[test]
fn request_messages_and_signatures_match_openssl() {
    let k = kat();
    assert!(k
        .requests
        .iter()
        .any(|v| v.method == "GET" && v.url.contains('?') && v.body.is_empty()));
    assert!(k
        .requests
        .iter()
        .any(|v| v.method == "POST" && v.body.starts_with('{')));
    for backend in all_backends() {
        for file in ["merchant_key.pem", "merchant_key_pkcs1.pem"] {
            let key = private_key(file, backend);
            let signer =
                RequestSigner::new(k.mchid.clone(), k.merchant_serial.clone(), key.clone());
            for v in &k.requests {
                let ctx = format!("{} / {file} / {}", backend.name(), v.name);
                let message =
                    request_message(&v.method, &v.url, v.timestamp, &v.nonce, v.body.as_bytes());
                assert_eq!(
                    String::from_utf8(message.clone()).unwrap(),
                    v.message,
                    "{ctx}"
                );
                // The method is upper-cased for the caller.
                let lower = request_message(
                    &v.method.to_lowercase(),
                    &v.url,
                    v.timestamp,
                    &v.nonce,
                    v.body.as_bytes(),
                );
                assert_eq!(lower, message, "{ctx}");
                assert_eq!(key.sign_base64(&message).unwrap(), v.signature, "{ctx}");
                let header = signer
                    .authorization_at(&v.method, &v.url, v.timestamp, &v.nonce, v.body.as_bytes())
                    .unwrap();
                assert_eq!(header, v.authorization, "{ctx}");
            }
        }
    }
}

#[test]
fn authorization_headers_from_openssl_parse_and_verify() {
    let k = kat();
    for backend in all_backends() {
        let merchant_pub = public_key("merchant_pub.pem", backend);
        for v in &k.requests {
            let auth = Authorization::parse(&v.authorization).unwrap();
            assert_eq!(auth.mchid, k.mchid);
            assert_eq!(auth.serial_no, k.merchant_serial);
            assert_eq!(auth.nonce_str, v.nonce);
            assert_eq!(auth.timestamp, v.timestamp.to_string());
            assert_eq!(auth.signature, v.signature);
            let message =
                request_message(&v.method, &v.url, v.timestamp, &v.nonce, v.body.as_bytes());
            assert!(
                merchant_pub.verify_base64(&message, &auth.signature),
                "{} {}",
                backend.name(),
                v.name
            );
        }
    }
}

#[test]
fn pkcs1_and_pkcs8_forms_of_one_key_sign_identically() {
    let k = kat();
    for backend in all_backends() {
        let pkcs8 = private_key("merchant_key.pem", backend);
        let pkcs1 = private_key("merchant_key_pkcs1.pem", backend);
        assert_eq!(pkcs8.public_key(), pkcs1.public_key());
        assert_eq!(pkcs8.public_key(), &public_key("merchant_pub.pem", backend));
        for v in &k.requests {
            let m = v.message.as_bytes();
            assert_eq!(
                pkcs8.sign_base64(m).unwrap(),
                pkcs1.sign_base64(m).unwrap(),
                "{}",
                backend.name()
            );
        }
    }
}

#[test]
fn paysign_matches_openssl_with_exact_keys() {
    let k = kat();
    for backend in all_backends() {
        let key = private_key("merchant_key.pem", backend);
        let merchant_pub = public_key("merchant_pub.pem", backend);
        for v in &k.paysign {
            let ctx = format!("{} / {}", backend.name(), v.name);
            let params =
                JsapiPayParams::sign(&key, &v.app_id, &v.prepay_id, v.timestamp, &v.nonce).unwrap();
            let json = serde_json::to_value(&params).unwrap();
            assert_eq!(json, v.expected, "{ctx}");
            let text = serde_json::to_string(&params).unwrap();
            let order: Vec<usize> = [
                "\"appId\"",
                "\"timeStamp\"",
                "\"nonceStr\"",
                "\"package\"",
                "\"signType\"",
                "\"paySign\"",
            ]
            .iter()
            .map(|key| text.find(key).unwrap())
            .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{ctx}: {text}");
            assert!(json["timeStamp"].is_string(), "{ctx}");
            assert_eq!(
                JsapiPayParams::message(
                    &params.app_id,
                    &params.time_stamp,
                    &params.nonce_str,
                    &params.package
                ),
                v.message
            );
            assert!(params.verify(&merchant_pub), "{ctx}");
            assert_eq!(params.prepay_id(), Some(v.prepay_id.as_str()));
            // The expected object (from OpenSSL) deserializes and verifies too.
            let theirs: JsapiPayParams = serde_json::from_value(v.expected.clone()).unwrap();
            assert!(theirs.verify(&merchant_pub), "{ctx}");
        }
    }
}

#[test]
fn response_and_notification_signatures_from_openssl_verify() {
    let k = kat();
    assert!(k.responses.iter().any(|v| v.body.is_empty()));
    for backend in all_backends() {
        for v in &k.responses {
            let ctx = format!("{} / {}", backend.name(), v.name);
            let message = response_message(&v.timestamp, &v.nonce, v.body.as_bytes());
            assert_eq!(
                String::from_utf8(message.clone()).unwrap(),
                v.message,
                "{ctx}"
            );
            if v.body.is_empty() {
                assert!(v.message.ends_with("\n\n"), "{ctx}");
            }
            let key = public_key(&v.public_key_file, backend);
            assert!(key.verify_base64(&message, &v.signature), "{ctx}");

            let clock = Arc::new(ManualClock::new(v.timestamp_secs()));
            let verifier = if v.serial == k.public_key_id {
                Verifier::new(clock).with_public_key(k.public_key_id.clone(), key)
            } else {
                Verifier::new(clock).with_certificates([certificate("platform_cert.pem", backend)])
            };
            assert_eq!(
                verifier.verify(&headers(v), v.body.as_bytes()),
                Ok(()),
                "{ctx}"
            );

            // The simulator signs responses with the same primitive: it must
            // reproduce OpenSSL's signature exactly.
            let signer = private_key(&v.signer_key_file, backend);
            assert_eq!(signer.sign_base64(&message).unwrap(), v.signature, "{ctx}");
        }
    }
}

#[test]
fn signature_headers_are_collected_case_insensitively() {
    let v = kat().response("notification_public_key");
    let raw = [
        ("wechatpay-timestamp", v.timestamp.as_str()),
        ("WECHATPAY-NONCE", v.nonce.as_str()),
        ("Wechatpay-Signature", v.signature.as_str()),
        ("Wechatpay-Serial", v.serial.as_str()),
    ];
    let h = SignatureHeaders::from_lookup(|name| {
        raw.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    })
    .unwrap();
    assert_eq!(h.signature_type, None);
    let verifier = Verifier::new(Arc::new(ManualClock::new(v.timestamp_secs()))).with_public_key(
        kat().public_key_id.clone(),
        PublicKey::from_pem(&fixture_text("wechatpay_pub.pem")).unwrap(),
    );
    assert_eq!(verifier.verify(&h, v.body.as_bytes()), Ok(()));
    assert_eq!(
        SignatureHeaders::from_lookup(|name| raw.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)),
        Err(VerifyError::MissingHeader("Wechatpay-Timestamp"))
    );
}

#[test]
fn aead_matches_python_cryptography() {
    let k = kat();
    let key = ApiV3Key::from_file(fixture(&k.apiv3_key_file)).unwrap();
    let names: Vec<_> = k
        .aead
        .iter()
        .map(|v| (v.name.as_str(), v.associated_data.as_str()))
        .collect();
    assert!(names.iter().any(|(_, aad)| aad.is_empty()), "{names:?}");
    assert!(
        names.iter().any(|(_, aad)| *aad == "certificate"),
        "{names:?}"
    );
    for backend in all_backends() {
        for v in &k.aead {
            let ctx = format!("{} / {}", backend.name(), v.name);
            let plain =
                aead::decrypt_with(backend, &key, &v.nonce, &v.associated_data, &v.ciphertext)
                    .unwrap();
            assert_eq!(plain, v.plaintext.as_bytes(), "{ctx}");
            let sealed = aead::encrypt_with(
                backend,
                &key,
                &v.nonce,
                &v.associated_data,
                v.plaintext.as_bytes(),
            )
            .unwrap();
            assert_eq!(sealed, v.ciphertext, "{ctx}");
        }
    }
    // The resource form, as notifications carry it.
    for v in &k.aead {
        let resource = EncryptedResource {
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: v.ciphertext.clone(),
            associated_data: v.associated_data.clone(),
            nonce: v.nonce.clone(),
            original_type: Some("transaction".into()),
        };
        assert_eq!(
            resource.open(&key).unwrap(),
            v.plaintext.as_bytes(),
            "{}",
            v.name
        );
    }
}

#[test]
fn decrypted_certificate_is_the_platform_certificate() {
    let k = kat();
    let key = ApiV3Key::from_file(fixture(&k.apiv3_key_file)).unwrap();
    let v = k.aead("certificate");
    let pem = aead::decrypt(&key, &v.nonce, &v.associated_data, &v.ciphertext).unwrap();
    let cert = Certificate::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
    assert_eq!(cert.serial_no, k.certificate("platform_cert.pem").serial_no);
}

#[test]
fn signed_notification_verifies_then_decrypts() {
    let k = kat();
    let v = k.response("notification_platform_certificate");
    let verifier = Verifier::new(Arc::new(ManualClock::new(v.timestamp_secs() + 5)))
        .with_certificates([Certificate::from_pem(&fixture_text("platform_cert.pem")).unwrap()]);
    verifier.verify(&headers(v), v.body.as_bytes()).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&v.body).unwrap();
    let resource: EncryptedResource = serde_json::from_value(envelope["resource"].clone()).unwrap();
    assert_eq!(resource.original_type.as_deref(), Some("transaction"));
    let key = ApiV3Key::from_file(fixture(&k.apiv3_key_file)).unwrap();
    let plain = resource.open(&key).unwrap();
    assert_eq!(
        plain,
        k.aead("notification_transaction").plaintext.as_bytes()
    );
    let tx: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(tx["combine_mchid"], k.mchid.as_str());
}

#[test]
fn certificates_are_read_correctly() {
    let k = kat();
    for backend in all_backends() {
        for c in &k.certificates {
            let cert = certificate(&c.file, backend);
            assert_eq!(cert.serial_no, c.serial_no, "{}", c.file);
            assert_eq!(cert.serial_no.len(), 40, "{}", c.file);
            assert_eq!(cert.not_before, c.not_before, "{}", c.file);
            assert_eq!(cert.not_after, c.not_after, "{}", c.file);
            assert_eq!(
                cert.public_key,
                public_key(&c.public_key_file, backend),
                "{}",
                c.file
            );
            // `PublicKey::from_pem` also accepts a certificate.
            assert_eq!(public_key(&c.file, backend), cert.public_key, "{}", c.file);
        }
    }
    let platform = k.certificate("platform_cert.pem");
    assert!(
        platform.serial_no.starts_with('0'),
        "the leading zero nibble is kept"
    );
    let from_pem = Certificate::from_pem(&fixture_text("platform_cert.pem")).unwrap();
    assert_eq!(from_pem.serial_no, platform.serial_no);
    assert!(from_pem.is_valid_at(platform.not_before));
    assert!(from_pem.is_valid_at(platform.not_after));
    assert!(!from_pem.is_valid_at(platform.not_before - 1));
    assert!(!from_pem.is_valid_at(platform.not_after + 1));
}

#[test]
fn public_key_pem_round_trips() {
    for backend in all_backends() {
        for file in ["merchant_pub.pem", "platform_pub.pem", "wechatpay_pub.pem"] {
            let key = public_key(file, backend);
            assert_eq!(key.to_pem(), fixture_text(file), "{file}");
        }
    }
}

#[test]
fn private_key_pem_export_reloads_to_the_same_signatures() {
    let v = &kat().requests[0];
    for backend in all_backends() {
        let key = private_key("merchant_key_pkcs1.pem", backend);
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = PrivateKey::from_pem_with(&pem, backend).unwrap();
        assert_eq!(
            again.sign_base64(v.message.as_bytes()).unwrap(),
            v.signature
        );
    }
}

#[test]
fn live_signing_uses_the_clock_and_a_fresh_nonce() {
    let k = kat();
    let merchant_pub = PublicKey::from_pem(&fixture_text("merchant_pub.pem")).unwrap();
    for backend in all_backends() {
        let key = private_key("merchant_key.pem", backend);
        let signer = RequestSigner::new(k.mchid.clone(), k.merchant_serial.clone(), key);
        let clock = ManualClock::new(1_700_000_123);
        let v = k.request("post_jsapi_json");
        let header = signer
            .authorization(&clock, &v.method, &v.url, v.body.as_bytes())
            .unwrap();
        let auth = Authorization::parse(&header).unwrap();
        assert_eq!(auth.timestamp, "1700000123");
        assert_eq!(auth.nonce_str.len(), 32);
        assert_ne!(auth.nonce_str, v.nonce);
        let message = request_message(
            &v.method,
            &v.url,
            1_700_000_123,
            &auth.nonce_str,
            v.body.as_bytes(),
        );
        assert!(
            merchant_pub.verify_base64(&message, &auth.signature),
            "{}",
            backend.name()
        );
    }
}

#[test]
fn sealed_resources_open_with_the_fixture_key() {
    let key = ApiV3Key::from_file(fixture(&kat().apiv3_key_file)).unwrap();
    let plain = kat().aead("notification_transaction").plaintext.as_bytes();
    let sealed = EncryptedResource::seal(&key, "transaction", Some("transaction"), plain);
    assert_eq!(sealed.algorithm, "AEAD_AES_256_GCM");
    assert_eq!(sealed.nonce.len(), 12);
    assert_eq!(sealed.open(&key).unwrap(), plain);
    for backend in all_backends() {
        let opened = aead::decrypt_with(
            backend,
            &key,
            &sealed.nonce,
            &sealed.associated_data,
            &sealed.ciphertext,
        )
        .unwrap();
        assert_eq!(opened, plain, "{}", backend.name());
    }
}
