//! Round trips through every compiled backend: what one signs the other verifies.

use std::sync::Arc;
use wxpay_combine_core::apiv3::backend::all_backends;
use wxpay_combine_core::apiv3::*;

#[test]
fn sign_verify_and_aead_round_trip_on_every_backend() {
    let key = PrivateKey::generate().unwrap();
    let pem = key.to_pkcs8_pem();
    let public_pem = key.public_key().to_pem();
    for backend in all_backends() {
        let k = PrivateKey::from_pem_with(&pem, backend).unwrap();
        let p = PublicKey::from_pem_with(&public_pem, backend).unwrap();
        let sig = k.sign_base64(b"hello").unwrap();
        for b2 in all_backends() {
            let p2 = PublicKey::from_pem_with(&public_pem, b2).unwrap();
            assert!(
                p2.verify_base64(b"hello", &sig),
                "{} -> {}",
                backend.name(),
                b2.name()
            );
        }
        assert!(!p.verify_base64(b"hellO", &sig));
        assert!(!p.verify_base64(b"hello", "WECHATPAY/SIGNTEST/abc"));

        let apikey = ApiV3Key::new(&[7u8; 32]).unwrap();
        let ct =
            aead::encrypt_with(backend, &apikey, "0123456789ab", "transaction", b"{}").unwrap();
        for b2 in all_backends() {
            assert_eq!(
                aead::decrypt_with(b2, &apikey, "0123456789ab", "transaction", &ct).unwrap(),
                b"{}"
            );
            assert_eq!(
                aead::decrypt_with(b2, &apikey, "0123456789ab", "other", &ct),
                Err(AeadError::Authentication)
            );
        }
    }
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let v = Verifier::new(clock.clone()).with_public_key("PUB_KEY_ID_1", key.public_key().clone());
    let ts = "1700000000";
    let body = br#"{"a":1}"#;
    let sig = key.sign_base64(&response_message(ts, "n", body)).unwrap();
    let h = SignatureHeaders {
        timestamp: ts.into(),
        nonce: "n".into(),
        signature: sig,
        serial: "PUB_KEY_ID_1".into(),
        signature_type: None,
    };
    assert_eq!(v.verify(&h, body), Ok(()));
    clock.advance(300);
    assert_eq!(
        v.verify(&h, body),
        Err(VerifyError::StaleTimestamp { skew_secs: 300 })
    );
}
