//! The outbound WeChat Pay client against a scripted local server that
//! checks every request signature and signs (or mis-signs) its answers.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;
use wxpay_combine::apiv3::{
    request_message, response_message, ApiV3Key, Authorization, Certificate, Clock,
    EncryptedResource, PrivateKey, PublicKey, RequestSigner, SystemClock, Verifier, VerifyError,
};
use wxpay_combine::combine::client::{ClientOptions, RefreshOutcome, Repeat, WechatPayClient};
use wxpay_combine::combine::wire::{
    CloseRequest, CloseSubOrder, PayerInfo, PrepayRequest, PrepaySubOrder, RequestAmount,
};
use wxpay_combine::combine::{ApiError, CombineApi};

fn kat() -> serde_json::Value {
    serde_json::from_str(&common::fixture_text("kat.json")).unwrap()
}

/// How an answer is signed.
#[derive(Clone, Debug)]
enum Sign {
    /// With the WeChat Pay public key's private half, serial PUB_KEY_ID_….
    PublicKey,
    /// With the platform certificate's key, under `serial`.
    Platform(String),
    /// No Wechatpay-* headers.
    Unsigned,
    /// Headers present, signature over different bytes.
    Wrong,
    /// A WECHATPAY/SIGNTEST/ probe.
    Probe,
    /// Timestamp 10 minutes old.
    Stale,
}

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    body: String,
    sign: Sign,
    delay: Duration,
}

fn answer(status: u16, body: &str, sign: Sign) -> Answer {
    Answer {
        status,
        body: body.into(),
        sign,
        delay: Duration::ZERO,
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
    auth_ok: bool,
}

struct Fake {
    script: Mutex<VecDeque<Answer>>,
    certificates: Mutex<Option<Answer>>,
    seen: Mutex<Vec<Seen>>,
    merchant_pub: PublicKey,
    wechatpay_key: PrivateKey,
    platform_key: PrivateKey,
    pub_key_id: String,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(VecDeque::new()),
            certificates: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            merchant_pub: PublicKey::from_pem(&common::fixture_text("merchant_pub.pem")).unwrap(),
            wechatpay_key: PrivateKey::from_pem(&common::fixture_text("wechatpay_key.pem"))
                .unwrap(),
            platform_key: PrivateKey::from_pem(&common::fixture_text("platform_key.pem")).unwrap(),
            pub_key_id: kat()["public_key_id"].as_str().unwrap().to_string(),
        })
    }
    fn push(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self, path_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.starts_with(path_prefix))
            .count()
    }
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let auth_ok = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Authorization::parse(v).ok())
        .is_some_and(|a| {
            let msg = request_message(
                parts.method.as_str(),
                &target,
                a.timestamp.parse().unwrap(),
                &a.nonce_str,
                &body,
            );
            a.mchid == "1900007291" && fake.merchant_pub.verify_base64(&msg, &a.signature)
        });
    fake.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.to_vec(),
        auth_ok,
    });
    let a = if target == "/v3/certificates" {
        fake.certificates.lock().unwrap().clone()
    } else {
        fake.script.lock().unwrap().pop_front()
    };
    let Some(a) = a else {
        return (StatusCode::IM_A_TEAPOT, "no scripted answer").into_response();
    };
    if !a.delay.is_zero() {
        tokio::time::sleep(a.delay).await;
    }
    let now = SystemClock.now();
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let ts = match a.sign {
        Sign::Stale => now - 600,
        _ => now,
    };
    let message = response_message(&ts.to_string(), nonce, a.body.as_bytes());
    let (serial, signature) = match &a.sign {
        Sign::PublicKey | Sign::Stale => (
            fake.pub_key_id.clone(),
            fake.wechatpay_key.sign_base64(&message).unwrap(),
        ),
        Sign::Platform(serial) => (
            serial.clone(),
            fake.platform_key.sign_base64(&message).unwrap(),
        ),
        Sign::Wrong => (
            fake.pub_key_id.clone(),
            fake.wechatpay_key.sign_base64(b"something else").unwrap(),
        ),
        Sign::Probe => (fake.pub_key_id.clone(), "WECHATPAY/SIGNTEST/abc==".into()),
        Sign::Unsigned => (String::new(), String::new()),
    };
    let mut resp = (StatusCode::from_u16(a.status).unwrap(), a.body.clone()).into_response();
    let h = resp.headers_mut();
    h.insert("Request-ID", "08F0A1B2C3D4-268512771".parse().unwrap());
    h.insert("Content-Type", "application/json".parse().unwrap());
    if !matches!(a.sign, Sign::Unsigned) {
        h.insert("Wechatpay-Timestamp", ts.to_string().parse().unwrap());
        h.insert("Wechatpay-Nonce", nonce.parse().unwrap());
        h.insert("Wechatpay-Signature", signature.parse().unwrap());
        h.insert("Wechatpay-Serial", serial.parse().unwrap());
    }
    resp
}

async fn start(fake: Arc<Fake>) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new().fallback(handle).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn options(base: &str) -> ClientOptions {
    let mut o = ClientOptions::new(Url::parse(base).unwrap());
    o.backoff_base = Duration::from_millis(5);
    o.backoff_max = Duration::from_millis(20);
    o.connect_timeout = Duration::from_millis(500);
    o.request_timeout = Duration::from_secs(3);
    o
}

fn signer() -> RequestSigner {
    RequestSigner::new(
        "1900007291",
        kat()["merchant_serial"].as_str().unwrap(),
        PrivateKey::from_pem(&common::fixture_text("merchant_key.pem")).unwrap(),
    )
}

/// A public-key-mode client.
fn client(opts: ClientOptions) -> WechatPayClient {
    let verifier = Verifier::new(Arc::new(SystemClock)).with_public_key(
        kat()["public_key_id"].as_str().unwrap(),
        PublicKey::from_pem(&common::fixture_text("wechatpay_pub.pem")).unwrap(),
    );
    WechatPayClient::new(opts, signer(), Arc::new(verifier)).unwrap()
}

/// A certificate-mode client with no certificates yet.
fn cert_client(opts: ClientOptions) -> WechatPayClient {
    let verifier = Verifier::new(Arc::new(SystemClock));
    WechatPayClient::new(opts, signer(), Arc::new(verifier))
        .unwrap()
        .with_platform_certificates(apiv3_key())
}

fn apiv3_key() -> ApiV3Key {
    ApiV3Key::from_file(common::fixture("apiv3_key.txt")).unwrap()
}

fn transaction_json(no: &str) -> String {
    serde_json::json!({
        "combine_appid": "wxd678efh567hg6787",
        "combine_mchid": "1900007291",
        "combine_out_trade_no": no,
        "sub_orders": [
            {"mchid": "1900000101", "trade_state": "NOTPAY", "out_trade_no": format!("{no}-1"), "amount": {"total_amount": 100, "currency": "CNY"}},
            {"mchid": "1900000102", "trade_state": "NOTPAY", "out_trade_no": format!("{no}-2"), "amount": {"total_amount": 200, "currency": "CNY"}}
        ],
        "combine_payer_info": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    })
    .to_string()
}

fn prepay_request(no: &str) -> PrepayRequest {
    PrepayRequest {
        combine_appid: "wxd678efh567hg6787".into(),
        combine_mchid: "1900007291".into(),
        combine_out_trade_no: no.into(),
        scene_info: None,
        sub_orders: (1..=2)
            .map(|i| PrepaySubOrder {
                mchid: format!("190000010{i}"),
                attach: no.into(),
                amount: RequestAmount {
                    total_amount: 100 * i,
                    currency: "CNY".into(),
                },
                out_trade_no: format!("{no}-{i}"),
                description: "测试商品".into(),
                detail: None,
                goods_tag: None,
                settle_info: None,
            })
            .collect(),
        combine_payer_info: PayerInfo {
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        },
        time_start: None,
        time_expire: Some("2024-05-01T12:30:00+08:00".into()),
        notify_url: "https://shop.example/wxpay/notify".into(),
    }
}

#[tokio::test]
async fn query_signs_the_exact_encoded_url_and_verifies_the_answer() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    let no = "C1|2*x_y-z";
    fake.push(answer(200, &transaction_json(no), Sign::PublicKey));
    let tx = c.query(no).await.unwrap();
    assert_eq!(tx.combine_out_trade_no, no);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(
        s.target,
        "/v3/combine-transactions/out-trade-no/C1%7C2*x_y-z"
    );
    assert!(
        s.auth_ok,
        "the signature covers exactly the URL that was sent"
    );
    let h = |n: &str| s.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("accept").as_deref(), Some("application/json"));
    assert!(h("user-agent").unwrap().starts_with("wxpay-combine/"));
    assert_eq!(h("wechatpay-serial"), Some(fake.pub_key_id.clone()));
    assert_eq!(h("content-type"), None, "GET has no body");
}

#[tokio::test]
async fn prepay_posts_json_and_returns_the_prepay_id() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    fake.push(answer(
        200,
        r#"{"prepay_id":"wx201410272009395522657a690389285100"}"#,
        Sign::PublicKey,
    ));
    let req = prepay_request("C20240501120000ABCDEFGHIJKL");
    assert_eq!(
        c.prepay(&req).await.unwrap(),
        "wx201410272009395522657a690389285100"
    );
    let s = &fake.seen()[0];
    assert_eq!(
        (s.method.as_str(), s.target.as_str()),
        ("POST", "/v3/combine-transactions/jsapi")
    );
    assert!(s.auth_ok);
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(
        s.body,
        serde_json::to_vec(&req).unwrap(),
        "the signed bytes are the sent bytes"
    );
    let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert!(
        body.get("scene_info").is_none() && body.get("time_start").is_none(),
        "absent optionals are omitted, not null"
    );
}

#[tokio::test]
async fn a_2xx_without_a_valid_signature_is_an_error() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    let cases = [
        (Sign::Unsigned, "missing header"),
        (Sign::Wrong, "does not verify"),
        (Sign::Probe, "does not verify"),
        (Sign::Stale, "300 s window"),
        (
            Sign::Platform("5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into()),
            "unknown Wechatpay-Serial",
        ),
    ];
    for (sign, needle) in cases {
        fake.push(answer(200, &transaction_json("C1"), sign.clone()));
        match c.query("C1").await {
            Err(e @ ApiError::Verify(_)) => {
                assert!(e.to_string().contains(needle), "{sign:?}: {e}")
            }
            other => panic!("{sign:?}: expected a verification error, got {other:?}"),
        }
    }
    assert_eq!(
        fake.seen().len(),
        5,
        "verification failures are not retried"
    );
}

#[tokio::test]
async fn service_errors_are_typed_and_4xx_is_not_retried() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    fake.push(answer(
        404,
        r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#,
        Sign::PublicKey,
    ));
    match c.query("C404").await {
        Err(ApiError::Service {
            status,
            code,
            message,
            request_id,
            ..
        }) => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (404, "ORDER_NOT_EXIST", "订单不存在")
            );
            assert_eq!(request_id.as_deref(), Some("08F0A1B2C3D4-268512771"));
        }
        other => panic!("{other:?}"),
    }
    fake.push(answer(400, "not json", Sign::PublicKey));
    let e = c.query("C400").await.unwrap_err();
    assert_eq!(e.code(), Some("HTTP_400"));
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn unsigned_or_unverifiable_error_answers_carry_no_code() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    let body = r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#;
    for sign in [Sign::Unsigned, Sign::Wrong, Sign::Stale] {
        fake.push(answer(404, body, sign.clone()));
        match c.query("C404").await {
            Err(e @ ApiError::Unverified { .. }) => {
                assert_eq!(e.code(), None, "{sign:?}: the code is not trusted");
                assert!(e.to_string().contains("ORDER_NOT_EXIST"), "{e}");
            }
            other => panic!("{sign:?}: {other:?}"),
        }
    }
    // Unverified 5xx answers are still retried on their status.
    for _ in 0..3 {
        fake.push(answer(500, "{}", Sign::Unsigned));
    }
    let e = c.query("C500").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(fake.seen().len(), 6);
}

#[tokio::test]
async fn repeatable_calls_are_retried_with_the_identical_body() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    fake.push(answer(
        500,
        r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#,
        Sign::PublicKey,
    ));
    fake.push(answer(
        429,
        r#"{"code":"FREQUENCY_LIMITED","message":"频率超限"}"#,
        Sign::PublicKey,
    ));
    fake.push(answer(200, r#"{"prepay_id":"wx1"}"#, Sign::PublicKey));
    let req = prepay_request("C20240501120000RETRY0000000");
    assert_eq!(c.prepay(&req).await.unwrap(), "wx1");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == seen[0].body && s.auth_ok));
    let auth = |s: &Seen| s.headers["authorization"].to_str().unwrap().to_string();
    assert_ne!(
        auth(&seen[0]),
        auth(&seen[1]),
        "each attempt is signed afresh"
    );

    // Attempts are bounded.
    for _ in 0..3 {
        fake.push(answer(
            503,
            r#"{"code":"SERVICE_UNAVAILABLE","message":"x"}"#,
            Sign::PublicKey,
        ));
    }
    let e = c.query("C1").await.unwrap_err();
    assert_eq!(e.code(), Some("SERVICE_UNAVAILABLE"));
    assert_eq!(fake.seen().len(), 6);
}

#[tokio::test]
async fn once_calls_are_not_repeated_after_they_may_have_happened() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    fake.push(answer(
        500,
        r#"{"code":"SYSTEM_ERROR","message":"x"}"#,
        Sign::PublicKey,
    ));
    let e = c
        .post_json("test", "/v3/some/api", b"{}".to_vec(), Repeat::Once)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("SYSTEM_ERROR"));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn fails_over_to_the_backup_host() {
    let fake = Fake::new();
    let (backup, _t) = start(fake.clone()).await;
    // Primary refuses connections.
    let mut o = options(&dead_address().await);
    o.backup_url = Some(Url::parse(&backup).unwrap());
    let c = client(o);
    fake.push(answer(200, &transaction_json("C1"), Sign::PublicKey));
    assert!(c.query("C1").await.is_ok());
    // Even a call that must not repeat may move on when nothing was sent.
    fake.push(answer(200, "{}", Sign::PublicKey));
    assert!(c
        .post_json("test", "/v3/x", b"{}".to_vec(), Repeat::Once)
        .await
        .is_ok());

    // Primary answers 502: a repeatable call moves to the backup.
    let primary_fake = Fake::new();
    let (primary, _t2) = start(primary_fake.clone()).await;
    primary_fake.push(answer(
        502,
        r#"{"code":"SERVICE_UNAVAILABLE","message":"x"}"#,
        Sign::PublicKey,
    ));
    let mut o = options(&primary);
    o.backup_url = Some(Url::parse(&backup).unwrap());
    let c = client(o);
    fake.push(answer(200, &transaction_json("C2"), Sign::PublicKey));
    assert_eq!(c.query("C2").await.unwrap().combine_out_trade_no, "C2");
    assert_eq!(primary_fake.seen().len(), 1);
}

#[tokio::test]
async fn slow_answers_time_out_as_transport_errors() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let mut o = options(&base);
    o.request_timeout = Duration::from_millis(200);
    o.max_attempts = 1;
    let c = client(o);
    let mut slow = answer(200, &transaction_json("C1"), Sign::PublicKey);
    slow.delay = Duration::from_secs(2);
    fake.push(slow);
    match c.query("C1").await {
        Err(e @ ApiError::Transport { .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn close_accepts_204_and_reports_userpaying() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    let req = CloseRequest {
        combine_appid: "wxd678efh567hg6787".into(),
        sub_orders: vec![CloseSubOrder {
            mchid: "1900000101".into(),
            out_trade_no: "C1-1".into(),
        }],
    };
    fake.push(answer(204, "", Sign::PublicKey));
    c.close("C1", &req).await.unwrap();
    let s = &fake.seen()[0];
    assert_eq!(s.target, "/v3/combine-transactions/out-trade-no/C1/close");
    assert!(s.auth_ok);
    let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert!(
        body.get("combine_out_trade_no").is_none(),
        "the number is in the path only"
    );
    fake.push(answer(
        202,
        r#"{"code":"USERPAYING","message":"用户支付中"}"#,
        Sign::PublicKey,
    ));
    let e = c.close("C1", &req).await.unwrap_err();
    assert_eq!(e.code(), Some("USERPAYING"));
}

fn certificate_list(key: &ApiV3Key) -> (String, String) {
    let cert = Certificate::from_pem(&common::fixture_text("platform_cert.pem")).unwrap();
    let enc = EncryptedResource::seal(key, "certificate", None, cert.to_pem().as_bytes());
    let body = serde_json::json!({"data": [{
        "serial_no": cert.serial_no,
        "effective_time": "2021-01-01T00:00:00+08:00",
        "expire_time": "2036-01-01T00:00:00+08:00",
        "encrypt_certificate": enc,
    }]})
    .to_string();
    (cert.serial_no, body)
}

#[tokio::test]
async fn certificates_are_decrypted_and_verified_with_themselves() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = cert_client(options(&base));
    let (serial, list) = certificate_list(&apiv3_key());
    *fake.certificates.lock().unwrap() = Some(answer(200, &list, Sign::Platform(serial.clone())));
    assert_eq!(
        c.refresh_certificates(true).await.unwrap(),
        RefreshOutcome::Refreshed(vec![serial.clone()])
    );
    assert!(fake.seen()[0].auth_ok);
    assert_eq!(c.verifier().preferred_serial(), Some(serial.clone()));
    // Later requests name the certificate and its signatures verify.
    fake.push(answer(
        200,
        &transaction_json("C1"),
        Sign::Platform(serial.clone()),
    ));
    c.query("C1").await.unwrap();
    assert_eq!(fake.seen()[1].headers["wechatpay-serial"], serial.as_str());
}

#[tokio::test]
async fn unknown_serial_triggers_one_refresh_per_minute() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = cert_client(options(&base));
    let (serial, list) = certificate_list(&apiv3_key());
    *fake.certificates.lock().unwrap() = Some(answer(200, &list, Sign::Platform(serial.clone())));
    fake.push(answer(
        200,
        &transaction_json("C1"),
        Sign::Platform(serial.clone()),
    ));
    c.query("C1").await.unwrap();
    assert_eq!(fake.count("/v3/certificates"), 1);
    // A serial the list does not have: no second download within a minute.
    fake.push(answer(
        200,
        &transaction_json("C1"),
        Sign::Platform("0123456789ABCDEF".into()),
    ));
    match c.query("C1").await {
        Err(ApiError::Verify(VerifyError::UnknownSerial(_))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count("/v3/certificates"), 1);
    assert_eq!(
        c.refresh_certificates(false).await.unwrap(),
        RefreshOutcome::TooSoon
    );
}

#[tokio::test]
async fn forged_or_undecryptable_certificate_lists_are_refused() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = cert_client(options(&base));
    let (serial, list) = certificate_list(&apiv3_key());
    // Signed by someone else under the listed serial.
    *fake.certificates.lock().unwrap() = Some(answer(200, &list, Sign::Wrong));
    assert!(matches!(
        c.refresh_certificates(true).await,
        Err(ApiError::Verify(_))
    ));
    assert!(c.verifier().serials().is_empty(), "nothing installed");
    // Encrypted with another APIv3 key.
    let (_, other) =
        certificate_list(&ApiV3Key::from_text("ffffffffffffffffffffffffffffffff").unwrap());
    *fake.certificates.lock().unwrap() = Some(answer(200, &other, Sign::Platform(serial)));
    let e = c.refresh_certificates(true).await.unwrap_err();
    assert!(e.to_string().contains("apiv3_key_file"), "{e}");
    assert!(c.verifier().serials().is_empty());
}

#[tokio::test]
async fn downloads_are_signed_and_only_go_to_api_hosts() {
    let fake = Fake::new();
    let (base, _t) = start(fake.clone()).await;
    let c = client(options(&base));
    let e = c
        .download("http://127.0.0.2:9/v3/billdownload/file?token=x", 1 << 20)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a configured API host"), "{e}");
    assert!(fake.seen().is_empty());
    fake.push(answer(200, "交易时间,公众账号ID\n", Sign::Unsigned));
    let bytes = c
        .download(
            &format!("{base}/v3/billdownload/file?token=abc%7C1"),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(&bytes[..], "交易时间,公众账号ID\n".as_bytes());
    let s = &fake.seen()[0];
    assert_eq!(s.target, "/v3/billdownload/file?token=abc%7C1");
    assert!(s.auth_ok);
    // A size cap holds.
    fake.push(answer(200, &"x".repeat(2000), Sign::Unsigned));
    assert!(c
        .download(&format!("{base}/v3/billdownload/file?token=b"), 100)
        .await
        .is_err());
}

/// A client of the simulator's primary merchant (public-key mode), with a
/// measurable backoff.
async fn sim_client() -> (
    wxpay_combine_sim::SimHandle,
    WechatPayClient,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!(
        "wxpay-client-faults-{}-{}",
        std::process::id(),
        wxpay_combine::apiv3::generate_nonce()
    ));
    let sim = wxpay_combine_sim::Simulator::start(wxpay_combine_sim::SimOptions::new(&dir))
        .await
        .unwrap();
    let creds = sim.merchant().clone();
    let mut o = options(sim.base_url());
    o.backoff_base = Duration::from_millis(100);
    o.backoff_max = Duration::from_millis(400);
    let verifier = Verifier::new(Arc::new(SystemClock)).with_public_key(
        creds.wechatpay_public_key_id.clone().unwrap(),
        creds.wechatpay_public_key().unwrap(),
    );
    let c = WechatPayClient::new(o, creds.signer().unwrap(), Arc::new(verifier)).unwrap();
    (sim, c, dir)
}

/// Calls the simulator logged for one API, by its log label.
async fn sim_calls(sim: &wxpay_combine_sim::SimHandle, endpoint: &str) -> Vec<Option<String>> {
    sim.api_calls()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.endpoint == endpoint)
        .map(|c| c.code)
        .collect()
}

#[tokio::test]
async fn against_the_simulator_429_and_500_are_retried_with_backoff_only_when_safe() {
    let (sim, c, dir) = sim_client().await;

    // Safe (query): two 429s, then the real answer, after backing off.
    sim.control(
        serde_json::json!({"api_faults": {"query": {"code": "FREQUENCY_LIMITED", "calls": 2}}}),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let e = c.query("NOSUCHORDER429").await.unwrap_err();
    assert_eq!(e.code(), Some("ORDER_NOT_EXIST"), "{e}");
    // Jitter keeps each wait in [50 %, 100 %] of 100 ms, then 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "no backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sim_calls(&sim, "query").await,
        [
            Some("FREQUENCY_LIMITED".to_string()),
            Some("FREQUENCY_LIMITED".into()),
            Some("ORDER_NOT_EXIST".into())
        ]
    );

    // Safe (close): a 500 is retried too; attempts stay bounded (3).
    sim.control(serde_json::json!({"api_faults": {"close": "SYSTEM_ERROR"}}))
        .await
        .unwrap();
    let close = CloseRequest {
        combine_appid: sim.merchant().appid.clone(),
        sub_orders: vec![CloseSubOrder {
            mchid: sim.merchant().mchid.clone(),
            out_trade_no: "NOSUCHSUB1".into(),
        }],
    };
    let e = c.close("NOSUCHORDER500", &close).await.unwrap_err();
    assert_eq!(e.code(), Some("SYSTEM_ERROR"));
    assert_eq!(sim_calls(&sim, "close").await.len(), 3);

    // Once: neither a 429 nor a 500 is sent again.
    for code in ["FREQUENCY_LIMITED", "SYSTEM_ERROR"] {
        sim.control(serde_json::json!({"api_faults": {"prepay": code}}))
            .await
            .unwrap();
        let before = sim_calls(&sim, "prepay").await.len();
        let e = c
            .post_json(
                "test",
                "/v3/combine-transactions/jsapi",
                b"{}".to_vec(),
                Repeat::Once,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(code));
        assert_eq!(
            sim_calls(&sim, "prepay").await.len(),
            before + 1,
            "a Once call was re-sent after {code}"
        );
    }
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
