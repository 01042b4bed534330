//! What must be refused, on every compiled backend: tampering, wrong keys,
//! unknown serials, the replay window, signature probes, malformed
//! signatures, AEAD misuse, bad key lengths, expired certificates — and that
//! secrets never appear in `Debug` output.

mod common;

use common::{fixture, fixture_text, kat, ResponseVector};
use std::sync::Arc;
use wxpay_combine_core::apiv3::backend::{all_backends, CryptoBackend};
use wxpay_combine_core::apiv3::*;

fn public_key(file: &str, backend: &'static dyn CryptoBackend) -> PublicKey {
    PublicKey::from_pem_with(&fixture_text(file), backend).unwrap()
}

fn certificate(file: &str, backend: &'static dyn CryptoBackend) -> Certificate {
    use base64::Engine;
    let b64: String = fixture_text(file)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Certificate::from_der_with(&der, backend).unwrap()
}

fn headers(v: &ResponseVector) -> SignatureHeaders {
    SignatureHeaders {
        timestamp: v.timestamp.clone(),
        nonce: v.nonce.clone(),
        signature: v.signature.clone(),
        serial: v.serial.clone(),
        signature_type: None,
    }
}

/// A verifier in migration mode: WeChat Pay public key and the platform
/// certificates, with the clock at `now`.
fn migration_verifier(
    backend: &'static dyn CryptoBackend,
    now: i64,
) -> (Verifier, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now));
    let v = Verifier::new(clock.clone())
        .with_public_key(
            kat().public_key_id.clone(),
            public_key("wechatpay_pub.pem", backend),
        )
        .with_certificates([
            certificate("platform_cert.pem", backend),
            certificate("platform_cert_expired.pem", backend),
        ]);
    (v, clock)
}

#[test]
fn tampered_bodies_are_rejected() {
    for backend in all_backends() {
        for v in &kat().responses {
            let (verifier, _) = migration_verifier(backend, v.timestamp_secs());
            let mut tampered = v.body.clone().into_bytes();
            if tampered.is_empty() {
                tampered.push(b' ');
            } else {
                let i = tampered.len() / 2;
                tampered[i] ^= 0x01;
            }
            assert_eq!(
                verifier.verify(&headers(v), &tampered),
                Err(VerifyError::BadSignature),
                "{} / {}",
                backend.name(),
                v.name
            );
            // Whitespace added around a JSON body also breaks it: verification
            // is over the raw bytes.
            let padded = format!("{}\n", v.body);
            assert_eq!(
                verifier.verify(&headers(v), padded.as_bytes()),
                Err(VerifyError::BadSignature)
            );
            // Changing a signed header (nonce, timestamp) breaks it too.
            let mut h = headers(v);
            h.nonce.push('x');
            assert_eq!(
                verifier.verify(&h, v.body.as_bytes()),
                Err(VerifyError::BadSignature)
            );
            let mut h = headers(v);
            h.timestamp = (v.timestamp_secs() + 1).to_string();
            assert_eq!(
                verifier.verify(&h, v.body.as_bytes()),
                Err(VerifyError::BadSignature)
            );
        }
        // A tampered request message does not verify under the merchant key.
        let merchant = public_key("merchant_pub.pem", backend);
        for r in &kat().requests {
            let mut m = r.message.clone().into_bytes();
            m[0] ^= 0x20; // GET -> gET
            assert!(!merchant.verify_base64(&m, &r.signature));
        }
    }
}

#[test]
fn wrong_keys_are_rejected() {
    let k = kat();
    for backend in all_backends() {
        let v = k.response("response_public_key_json");
        // The public-key id configured with another key (the platform's).
        let verifier = Verifier::new(Arc::new(ManualClock::new(v.timestamp_secs())))
            .with_public_key(
                k.public_key_id.clone(),
                public_key("platform_pub.pem", backend),
            );
        assert_eq!(
            verifier.verify(&headers(v), v.body.as_bytes()),
            Err(VerifyError::BadSignature)
        );
        // The merchant's own key never verifies WeChat Pay's signatures.
        let merchant = public_key("merchant_pub.pem", backend);
        assert!(!merchant.verify_base64(v.message.as_bytes(), &v.signature));
        // And the merchant's request signatures do not verify as WeChat Pay's.
        let r = &k.requests[0];
        assert!(!public_key("wechatpay_pub.pem", backend)
            .verify_base64(r.message.as_bytes(), &r.signature));
    }
}

#[test]
fn unknown_serials_are_rejected() {
    let k = kat();
    for backend in all_backends() {
        let p = k.response("notification_platform_certificate");
        let w = k.response("notification_public_key");
        // Public key only: a certificate serial is unknown.
        let only_key = Verifier::new(Arc::new(ManualClock::new(p.timestamp_secs())))
            .with_public_key(
                k.public_key_id.clone(),
                public_key("wechatpay_pub.pem", backend),
            );
        assert_eq!(
            only_key.verify(&headers(p), p.body.as_bytes()),
            Err(VerifyError::UnknownSerial(p.serial.clone()))
        );
        // Certificates only: the public-key id is unknown.
        let only_certs = Verifier::new(Arc::new(ManualClock::new(w.timestamp_secs())))
            .with_certificates([certificate("platform_cert.pem", backend)]);
        assert_eq!(
            only_certs.verify(&headers(w), w.body.as_bytes()),
            Err(VerifyError::UnknownSerial(w.serial.clone()))
        );
        // A serial that differs only in case is a different serial.
        let mut h = headers(p);
        h.serial = p.serial.to_lowercase();
        let (both, _) = migration_verifier(backend, p.timestamp_secs());
        assert_eq!(
            both.verify(&h, p.body.as_bytes()),
            Err(VerifyError::UnknownSerial(h.serial.clone()))
        );
        // No keys at all.
        let empty = Verifier::new(Arc::new(ManualClock::new(p.timestamp_secs())));
        assert!(matches!(
            empty.verify(&headers(p), p.body.as_bytes()),
            Err(VerifyError::UnknownSerial(_))
        ));
    }
}

#[test]
fn timestamps_299_seconds_away_pass_and_300_or_301_fail_both_ways() {
    for backend in all_backends() {
        for v in &kat().responses {
            let ts = v.timestamp_secs();
            let (verifier, clock) = migration_verifier(backend, ts);
            assert_eq!(verifier.verify(&headers(v), v.body.as_bytes()), Ok(()));
            for (offset, ok) in [(299, true), (300, false), (301, false)] {
                for sign in [1, -1] {
                    // sign = 1: the message is from the past; -1: from the future.
                    let skew = sign * offset;
                    clock.set(ts + skew);
                    let got = verifier.verify(&headers(v), v.body.as_bytes());
                    let want = if ok {
                        Ok(())
                    } else {
                        Err(VerifyError::StaleTimestamp { skew_secs: skew })
                    };
                    assert_eq!(got, want, "{} / {} skew {skew}", backend.name(), v.name);
                }
            }
        }
    }
}

#[test]
fn malformed_and_millisecond_timestamps_are_rejected() {
    let v = kat().response("response_public_key_json");
    let (verifier, _) = migration_verifier(all_backends()[0], v.timestamp_secs());
    for bad in ["", "abc", "1700000042.0", "0x6553F100", "1e9"] {
        let mut h = headers(v);
        h.timestamp = bad.into();
        assert_eq!(
            verifier.verify(&h, v.body.as_bytes()),
            Err(VerifyError::BadTimestamp(bad.into()))
        );
    }
    let mut h = headers(v);
    h.timestamp = format!("{}000", v.timestamp);
    assert!(matches!(
        verifier.verify(&h, v.body.as_bytes()),
        Err(VerifyError::StaleTimestamp { .. })
    ));
}

#[test]
fn signtest_probes_are_bad_signatures_and_never_panic() {
    for backend in all_backends() {
        for v in &kat().responses {
            let (verifier, _) = migration_verifier(backend, v.timestamp_secs());
            for probe in [
                format!("WECHATPAY/SIGNTEST/{}", v.signature),
                "WECHATPAY/SIGNTEST/".to_string(),
                "WECHATPAY/SIGNTEST/YWJj".to_string(),
                format!(
                    "WECHATPAY/SIGNTEST/{}",
                    &v.signature[..v.signature.len() - 4]
                ),
            ] {
                let mut h = headers(v);
                h.signature = probe;
                assert_eq!(
                    verifier.verify(&h, v.body.as_bytes()),
                    Err(VerifyError::BadSignature),
                    "{} / {}",
                    backend.name(),
                    v.name
                );
            }
        }
    }
}

#[test]
fn malformed_signatures_are_bad_signatures() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for backend in all_backends() {
        let v = kat().response("notification_public_key");
        let (verifier, _) = migration_verifier(backend, v.timestamp_secs());
        let good = base64::engine::general_purpose::STANDARD
            .decode(&v.signature)
            .unwrap();
        let mut flipped = good.clone();
        flipped[100] ^= 0x80;
        let unpadded = v.signature.trim_end_matches('=').to_string();
        for bad in [
            "".to_string(),
            "!!!!".to_string(),
            "abc".to_string(),
            unpadded,
            v.signature.replace('+', "-").replace('/', "_") + "%",
            b64(&good[..255]),
            b64(&[good.as_slice(), &[0]].concat()),
            b64(&[0u8; 256]),
            b64(&[0xFFu8; 256]),
            b64(&[0u8; 512]),
            b64(&flipped),
        ] {
            let mut h = headers(v);
            h.signature = bad.clone();
            assert_eq!(
                verifier.verify(&h, v.body.as_bytes()),
                Err(VerifyError::BadSignature),
                "{} / {bad:?}",
                backend.name()
            );
        }
    }
}

#[test]
fn other_signature_types_are_refused() {
    let v = kat().response("notification_public_key");
    let (verifier, _) = migration_verifier(all_backends()[0], v.timestamp_secs());
    let mut h = headers(v);
    h.signature_type = Some("WECHATPAY2-SHA256-RSA2048".into());
    assert_eq!(verifier.verify(&h, v.body.as_bytes()), Ok(()));
    h.signature_type = Some("WECHATPAY2-SM2-WITH-SM3".into());
    assert_eq!(
        verifier.verify(&h, v.body.as_bytes()),
        Err(VerifyError::UnsupportedSignatureType(
            "WECHATPAY2-SM2-WITH-SM3".into()
        ))
    );
}

#[test]
fn migration_mode_accepts_either_serial_and_keeps_keys_apart() {
    let k = kat();
    for backend in all_backends() {
        let p = k.response("notification_platform_certificate");
        let w = k.response("notification_public_key");
        assert_eq!(p.body, w.body, "the same notification, signed both ways");
        let (verifier, clock) = migration_verifier(backend, p.timestamp_secs());
        assert_eq!(verifier.verify(&headers(p), p.body.as_bytes()), Ok(()));
        clock.set(w.timestamp_secs());
        assert_eq!(verifier.verify(&headers(w), w.body.as_bytes()), Ok(()));
        // A certificate-signed message presented under the public-key id (and
        // the reverse) must fail: the serial picks the key.
        let mut h = headers(p);
        h.serial = w.serial.clone();
        assert_eq!(
            verifier.verify(&h, p.body.as_bytes()),
            Err(VerifyError::BadSignature)
        );
        let mut h = headers(w);
        h.serial = p.serial.clone();
        assert_eq!(
            verifier.verify(&h, w.body.as_bytes()),
            Err(VerifyError::BadSignature)
        );
        // Requests name the public-key id while one is configured.
        assert_eq!(verifier.preferred_serial(), Some(k.public_key_id.clone()));
        let serials = verifier.serials();
        assert_eq!(serials[0], k.public_key_id);
        assert!(serials.contains(&p.serial));
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let k = kat();
    let expired = k.certificate("platform_cert_expired.pem");
    let valid = k.certificate("platform_cert.pem");
    for backend in all_backends() {
        let p = k.response("notification_platform_certificate");
        let (verifier, _) = migration_verifier(backend, p.timestamp_secs());
        // Signed by the platform key, but named by the expired certificate.
        let mut h = headers(p);
        h.serial = expired.serial_no.clone();
        assert_eq!(
            verifier.verify(&h, p.body.as_bytes()),
            Err(VerifyError::CertificateNotValid {
                serial: expired.serial_no.clone(),
                at: p.timestamp_secs()
            })
        );
        // A certificate not yet valid at "now" is refused before its signature is checked.
        let early = valid.not_before - 100;
        let (verifier, _) = migration_verifier(backend, early);
        let mut h = headers(p);
        h.timestamp = early.to_string();
        assert_eq!(
            verifier.verify(&h, p.body.as_bytes()),
            Err(VerifyError::CertificateNotValid {
                serial: valid.serial_no.clone(),
                at: early
            })
        );
        // Only expired certificates: no preferred serial for requests.
        let only_expired = Verifier::new(Arc::new(ManualClock::new(p.timestamp_secs())))
            .with_certificates([certificate("platform_cert_expired.pem", backend)]);
        assert_eq!(only_expired.preferred_serial(), None);
    }
}

#[test]
fn replacing_certificates_drops_the_old_ones() {
    let p = kat().response("notification_platform_certificate");
    let verifier = Verifier::new(Arc::new(ManualClock::new(p.timestamp_secs())))
        .with_certificates([Certificate::from_pem(&fixture_text("platform_cert.pem")).unwrap()]);
    assert_eq!(verifier.verify(&headers(p), p.body.as_bytes()), Ok(()));
    verifier
        .replace_certificates([
            Certificate::from_pem(&fixture_text("platform_cert_expired.pem")).unwrap(),
        ]);
    assert_eq!(
        verifier.verify(&headers(p), p.body.as_bytes()),
        Err(VerifyError::UnknownSerial(p.serial.clone()))
    );
}

fn apiv3_key() -> ApiV3Key {
    ApiV3Key::from_file(fixture(&kat().apiv3_key_file)).unwrap()
}

#[test]
fn aead_tampering_and_misuse_are_rejected() {
    use base64::Engine;
    let std_b64 = base64::engine::general_purpose::STANDARD;
    let key = apiv3_key();
    let other_key = ApiV3Key::new(&[b'k'; 32]).unwrap();
    for backend in all_backends() {
        for v in &kat().aead {
            let ctx = format!("{} / {}", backend.name(), v.name);
            let open = |key: &ApiV3Key, nonce: &str, aad: &str, ct: &str| {
                aead::decrypt_with(backend, key, nonce, aad, ct)
            };
            let raw = std_b64.decode(&v.ciphertext).unwrap();
            // Truncated tag: one byte short, and shorter than a whole tag.
            let short = std_b64.encode(&raw[..raw.len() - 1]);
            let want = if raw.len() > 16 {
                AeadError::Authentication
            } else {
                AeadError::Truncated
            };
            assert_eq!(
                open(&key, &v.nonce, &v.associated_data, &short),
                Err(want),
                "{ctx}"
            );
            let tiny = std_b64.encode(&raw[..15.min(raw.len())]);
            assert_eq!(
                open(&key, &v.nonce, &v.associated_data, &tiny),
                Err(AeadError::Truncated),
                "{ctx}"
            );
            // A flipped bit in the ciphertext or in the tag.
            for i in [0, raw.len() - 1] {
                let mut t = raw.clone();
                t[i] ^= 0x01;
                assert_eq!(
                    open(&key, &v.nonce, &v.associated_data, &std_b64.encode(&t)),
                    Err(AeadError::Authentication),
                    "{ctx}"
                );
            }
            // Wrong associated data (including dropping or adding it).
            let wrong_aad = if v.associated_data.is_empty() {
                "transaction"
            } else {
                ""
            };
            assert_eq!(
                open(&key, &v.nonce, wrong_aad, &v.ciphertext),
                Err(AeadError::Authentication),
                "{ctx}"
            );
            assert_eq!(
                open(
                    &key,
                    &v.nonce,
                    &format!("{} ", v.associated_data),
                    &v.ciphertext
                ),
                Err(AeadError::Authentication),
                "{ctx}"
            );
            // Wrong key.
            assert_eq!(
                open(&other_key, &v.nonce, &v.associated_data, &v.ciphertext),
                Err(AeadError::Authentication),
                "{ctx}"
            );
            // Wrong nonce (right length) and nonces of the wrong length.
            let mut nonce = v.nonce.clone().into_bytes();
            nonce[0] ^= 0x01;
            let nonce = String::from_utf8(nonce).unwrap();
            assert_eq!(
                open(&key, &nonce, &v.associated_data, &v.ciphertext),
                Err(AeadError::Authentication),
                "{ctx}"
            );
            for bad in [
                &v.nonce[..11],
                &format!("{}x", v.nonce),
                "",
                "0123456789abcdef",
            ] {
                assert_eq!(
                    open(&key, bad, &v.associated_data, &v.ciphertext),
                    Err(AeadError::NonceLength(bad.len())),
                    "{ctx}"
                );
                assert_eq!(
                    aead::encrypt_with(backend, &key, bad, &v.associated_data, b"x"),
                    Err(AeadError::NonceLength(bad.len()))
                );
            }
            // Not base64.
            assert_eq!(
                open(&key, &v.nonce, &v.associated_data, "not base64!"),
                Err(AeadError::Base64),
                "{ctx}"
            );
        }
    }
    let v = kat().aead("notification_transaction");
    let resource = EncryptedResource {
        algorithm: "AEAD_AES_128_GCM".into(),
        ciphertext: v.ciphertext.clone(),
        associated_data: v.associated_data.clone(),
        nonce: v.nonce.clone(),
        original_type: Some("transaction".into()),
    };
    assert_eq!(
        resource.open(&key),
        Err(AeadError::UnsupportedAlgorithm("AEAD_AES_128_GCM".into()))
    );
}

#[test]
fn apiv3_keys_of_31_or_33_bytes_are_refused() {
    let text = fixture_text(&kat().apiv3_key_file);
    let key = text.trim();
    assert_eq!(key.len(), 32);
    assert!(ApiV3Key::from_text(key).is_ok());
    assert_eq!(
        ApiV3Key::from_text(&key[..31]),
        Err(KeyError::ApiV3KeyLength(31))
    );
    assert_eq!(
        ApiV3Key::from_text(&format!("{key}x")),
        Err(KeyError::ApiV3KeyLength(33))
    );
    assert_eq!(ApiV3Key::new(&[1u8; 31]), Err(KeyError::ApiV3KeyLength(31)));
    assert_eq!(ApiV3Key::new(&[1u8; 33]), Err(KeyError::ApiV3KeyLength(33)));
    assert_eq!(ApiV3Key::new(&[]), Err(KeyError::ApiV3KeyLength(0)));
    // Multi-byte characters count as bytes, not characters.
    let wide = format!("{}é", &key[..31]);
    assert_eq!(
        ApiV3Key::from_text(&wide),
        Err(KeyError::ApiV3KeyLength(33))
    );
    // From files, too.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rejections-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content, len) in [
        ("k31.txt", &key[..31], 31usize),
        ("k33.txt", &format!("{key}x\n")[..], 33),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        assert_eq!(
            ApiV3Key::from_file(&path),
            Err(KeyError::ApiV3KeyLength(len))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(
        ApiV3Key::from_file("/nonexistent/apiv3.txt"),
        Err(KeyError::Io { .. })
    ));
}

/// Every 12-character window of the base64 body of a PEM file.
fn secret_fragments(pem: &str) -> Vec<String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    body.as_bytes()
        .chunks(12)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

#[test]
fn debug_output_shows_no_secrets() {
    let pem = fixture_text("merchant_key.pem");
    let fragments = secret_fragments(&pem);
    for backend in all_backends() {
        let key = PrivateKey::from_pem_with(&pem, backend).unwrap();
        let signer = RequestSigner::new("1900007291", kat().merchant_serial.clone(), key.clone());
        for shown in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{signer:?}"),
            format!("{signer:#?}"),
        ] {
            assert!(shown.contains("redacted"), "{shown}");
            for f in &fragments {
                assert!(
                    !shown.contains(f.as_str()),
                    "Debug output contains key material: {shown}"
                );
            }
        }
    }
    let key_text = fixture_text(&kat().apiv3_key_file).trim().to_string();
    let apiv3 = ApiV3Key::from_text(&key_text).unwrap();
    for shown in [format!("{apiv3:?}"), format!("{apiv3:#?}")] {
        assert_eq!(shown, "ApiV3Key(redacted)");
        assert!(!shown.contains(&key_text[..8]));
    }
}

#[test]
fn key_loading_errors_name_the_problem_without_key_material() {
    let private_pem = fixture_text("merchant_key.pem");
    let fragments = secret_fragments(&private_pem);
    for backend in all_backends() {
        // A private key where a public key is expected, and the reverse.
        let err = PublicKey::from_pem_with(&private_pem, backend).unwrap_err();
        assert_eq!(
            err,
            KeyError::NoPemBlock {
                expected: "PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE",
                found: "PRIVATE KEY".into()
            }
        );
        let err =
            PrivateKey::from_pem_with(&fixture_text("platform_cert.pem"), backend).unwrap_err();
        assert!(matches!(err, KeyError::NoPemBlock { .. }), "{err}");
        // A corrupted private key body.
        let corrupt = private_pem.replacen("MII", "MIJ", 1);
        let err = PrivateKey::from_pem_with(&corrupt, backend).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        let shown = format!("{err} {err:?}");
        for f in &fragments {
            assert!(
                !shown.contains(f.as_str()),
                "error shows key material: {shown}"
            );
        }
        assert!(PrivateKey::from_pem_with("", backend).is_err());
    }
    assert!(matches!(
        PrivateKey::from_pem_file("/nonexistent/key.pem"),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn altered_paysign_objects_do_not_verify() {
    let v = &kat().paysign[0];
    for backend in all_backends() {
        let merchant = public_key("merchant_pub.pem", backend);
        let good: JsapiPayParams = serde_json::from_value(v.expected.clone()).unwrap();
        assert!(good.verify(&merchant));
        let mut alterations: Vec<JsapiPayParams> = Vec::new();
        for edit in 0..5 {
            let mut p = good.clone();
            match edit {
                0 => p.app_id.push('x'),
                1 => p.time_stamp = format!("{}000", p.time_stamp),
                2 => p.nonce_str.push('x'),
                3 => p.package = p.package.trim_start_matches("prepay_id=").to_string(),
                _ => p.sign_type = "MD5".into(),
            }
            alterations.push(p);
        }
        for p in alterations {
            assert!(!p.verify(&merchant), "{} {p:?}", backend.name());
        }
        // Signed by another key.
        assert!(!good.verify(&public_key("platform_pub.pem", backend)));
    }
    // Unknown keys are refused when reading the object.
    let mut extra = v.expected.clone();
    extra["total_fee"] = serde_json::json!(1);
    assert!(serde_json::from_value::<JsapiPayParams>(extra).is_err());
}
