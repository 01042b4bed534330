//! Credentials on disk and the three key modes: WeChat Pay public key,
//! platform certificates (with a rotation), and the migration between them.

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine::apiv3::{
    Certificate, Clock, EncryptedResource, PrivateKey, PublicKey, SystemClock, Verifier,
};
use wxpay_combine_sim::{KeyMode, MerchantCredentials, SimError, SimOptions, Simulator};
use wxpay_combine_tests::sim::{prepay_body, unique, ApiClient, Receiver, TestSim};

#[tokio::test]
async fn credentials_written_and_reused_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimOptions::new(dir.path())).await.unwrap();
    let creds = sim.merchant().clone();
    let key_pem = std::fs::read_to_string(dir.path().join("merchant_key.pem")).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    PrivateKey::from_pem(&key_pem).unwrap();
    let pub_pem = std::fs::read_to_string(dir.path().join("wechatpay_public_key.pem")).unwrap();
    assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"), "SPKI");
    PublicKey::from_pem(&pub_pem).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("merchant.json")).unwrap())
            .unwrap();
    for field in [
        "mchid",
        "appid",
        "app_secret",
        "serial_no",
        "apiv3_key",
        "wechatpay_public_key_id",
        "sub_mchids",
    ] {
        assert!(json.get(field).is_some(), "merchant.json has {field}");
    }
    assert!(json["sub_mchids"].as_array().unwrap().len() >= 3);
    assert_eq!(json["apiv3_key"].as_str().unwrap().len(), 32);
    assert_eq!(json["serial_no"].as_str().unwrap().len(), 40);
    assert!(json["wechatpay_public_key_id"]
        .as_str()
        .unwrap()
        .starts_with("PUB_KEY_ID_"));
    assert_eq!(creds.key_mode, KeyMode::PublicKey);
    assert_eq!(MerchantCredentials::load(dir.path()).unwrap(), creds);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["merchant_key.pem", "merchant.json"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is private");
        }
    }
    // The WeChat Pay private key is not among the merchant's files.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("wechatpay_private")),
        "{names:?}"
    );

    let c = ApiClient::new(sim.base_url(), &creds);
    let no = unique("K");
    assert_eq!(
        c.prepay(&prepay_body(&creds, &no, "http://127.0.0.1:9/n"))
            .await
            .status,
        200
    );
    sim.shutdown().await;

    let sim = Simulator::start(SimOptions::new(dir.path())).await.unwrap();
    assert_eq!(sim.merchant(), &creds, "same merchant after restart");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("merchant_key.pem")).unwrap(),
        key_pem
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("wechatpay_public_key.pem")).unwrap(),
        pub_pem
    );
    let c = ApiClient::new(sim.base_url(), &creds);
    let q = c.query(&no).await;
    assert_eq!(q.status, 200, "orders survive a restart: {}", q.text());
    q.verify(&c.verifier()).unwrap();
    sim.shutdown().await;

    // A configuration declaring another merchant for this directory is refused.
    let cfg = dir.path().join("other.toml");
    std::fs::write(&cfg, "[[merchant]]\nmchid = \"1234567890\"\n").unwrap();
    let mut o = SimOptions::new(dir.path());
    o.config = Some(cfg);
    assert!(matches!(
        Simulator::start(o).await,
        Err(SimError::Config(_))
    ));
}

/// The platform certificates from `/v3/certificates`, decrypted.
async fn download_certificates(
    c: &ApiClient,
) -> (wxpay_combine_tests::sim::Reply, Vec<Certificate>) {
    let r = c.get("/v3/certificates").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = c.creds.apiv3_key().unwrap();
    let certs = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let enc: EncryptedResource =
                serde_json::from_value(d["encrypt_certificate"].clone()).unwrap();
            assert_eq!(enc.associated_data, "certificate");
            assert_eq!(enc.algorithm, "AEAD_AES_256_GCM");
            let pem = String::from_utf8(enc.open(&key).unwrap()).unwrap();
            let cert = Certificate::from_pem(&pem).unwrap();
            assert_eq!(d["serial_no"], cert.serial_no.as_str());
            assert!(d["effective_time"].as_str().unwrap().ends_with("+08:00"));
            assert!(d["expire_time"].as_str().unwrap().ends_with("+08:00"));
            cert
        })
        .collect();
    (r, certs)
}

fn config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("sim.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test]
async fn certificate_mode_with_rotation() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(cfg_dir.path(), "[[merchant]]\nmchid = \"1900000401\"\nmode = \"certificate\"\ncertificate_rotation = true\n");
    let t = TestSim::start_with(|o| o.config = Some(cfg)).await;
    assert!(t.creds().wechatpay_public_key_id.is_none());
    assert!(!t.dir.path().join("wechatpay_public_key.pem").exists());
    let mut c = t.client();
    c.serial = None;
    let (r, certs) = download_certificates(&c).await;
    assert_eq!(certs.len(), 2, "two certificates valid at once");
    let now = SystemClock.now();
    assert!(certs.iter().all(|x| x.is_valid_at(now)));
    let (old, new) = if certs[0].not_after < certs[1].not_after {
        (&certs[0], &certs[1])
    } else {
        (&certs[1], &certs[0])
    };
    let verifier = Verifier::new(Arc::new(SystemClock)).with_certificates(certs.clone());
    r.verify(&verifier)
        .expect("the certificate list is signed by one of its certificates");

    // The key the request's Wechatpay-Serial names signs the answer; else the newest.
    for (serial, want) in [
        (Some(old.serial_no.clone()), &old.serial_no),
        (Some(new.serial_no.clone()), &new.serial_no),
        (None, &new.serial_no),
    ] {
        c.serial = serial;
        let r = c.query("NOSUCHORDER1").await;
        assert_eq!(r.header("wechatpay-serial"), Some(want.as_str()));
        r.verify(&verifier).unwrap();
        let only = Verifier::new(Arc::new(SystemClock)).with_certificates([certs
            .iter()
            .find(|x| &x.serial_no == want)
            .unwrap()
            .clone()]);
        r.verify(&only).unwrap();
    }

    // Notifications take turns between the two certificates.
    let rx = Receiver::start(200).await;
    c.serial = None;
    for _ in 0..2 {
        c.create_and_pay(&prepay_body(t.creds(), &unique("R"), &rx.url))
            .await;
    }
    let hits = rx.wait_for(2, Duration::from_secs(10)).await;
    let serials: std::collections::HashSet<String> = hits
        .iter()
        .map(|h| h.header("wechatpay-serial").unwrap().to_string())
        .collect();
    assert_eq!(serials.len(), 2, "both certificates sign notifications");
    for h in &hits {
        verifier.verify(&h.signature_headers(), &h.body).unwrap();
    }
    t.sim.shutdown().await;

    // After a restart the same certificates are served.
    let mut o = SimOptions::new(t.dir.path());
    o.config = Some(cfg_dir.path().join("sim.toml"));
    let sim = Simulator::start(o).await.unwrap();
    let mut c = ApiClient::new(sim.base_url(), sim.merchant());
    c.serial = None;
    let (_, again) = download_certificates(&c).await;
    let mut a: Vec<&str> = again.iter().map(|x| x.serial_no.as_str()).collect();
    let mut b: Vec<&str> = certs.iter().map(|x| x.serial_no.as_str()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    sim.shutdown().await;
}

#[tokio::test]
async fn migration_mode_signs_with_the_requested_key() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfg_dir.path(),
        "[[merchant]]\nmchid = \"1900000501\"\nmode = \"both\"\n",
    );
    let t = TestSim::start_with(|o| o.config = Some(cfg)).await;
    let pub_id = t
        .creds()
        .wechatpay_public_key_id
        .clone()
        .expect("public-key id in migration mode");
    let mut c = t.client();
    let (_, certs) = download_certificates(&c).await;
    assert_eq!(certs.len(), 1);
    let cert_serial = certs[0].serial_no.clone();
    let pk_only = c.verifier();
    let cert_only = Verifier::new(Arc::new(SystemClock)).with_certificates(certs.clone());
    let both = Verifier::new(Arc::new(SystemClock))
        .with_public_key(pub_id.clone(), t.creds().wechatpay_public_key().unwrap())
        .with_certificates(certs.clone());

    c.serial = Some(pub_id.clone());
    let r = c.query("NOSUCHORDER1").await;
    assert_eq!(r.header("wechatpay-serial"), Some(pub_id.as_str()));
    r.verify(&pk_only).unwrap();
    assert!(r.verify(&cert_only).is_err());

    for serial in [Some(cert_serial.clone()), None] {
        c.serial = serial;
        let r = c.query("NOSUCHORDER1").await;
        assert_eq!(r.header("wechatpay-serial"), Some(cert_serial.as_str()));
        r.verify(&cert_only).unwrap();
        r.verify(&both).unwrap();
    }

    // Notifications switch between the two keys; a merchant must accept both.
    let rx = Receiver::start(200).await;
    for _ in 0..2 {
        c.create_and_pay(&prepay_body(t.creds(), &unique("M"), &rx.url))
            .await;
    }
    let hits = rx.wait_for(2, Duration::from_secs(10)).await;
    let mut serials: Vec<String> = hits
        .iter()
        .map(|h| h.header("wechatpay-serial").unwrap().to_string())
        .collect();
    serials.sort();
    let mut want = vec![pub_id.clone(), cert_serial.clone()];
    want.sort();
    assert_eq!(serials, want);
    for h in &hits {
        both.verify(&h.signature_headers(), &h.body).unwrap();
    }
    t.sim.shutdown().await;
}

#[tokio::test]
async fn public_key_mode_has_no_certificates() {
    let t = TestSim::start().await;
    let r = t.client().get("/v3/certificates").await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    // The real service's message, word for word.
    assert_eq!(
        r.json()["message"],
        "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide.html"
    );
    r.verify(&t.client().verifier()).unwrap();
    t.sim.shutdown().await;
}
