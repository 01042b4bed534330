//! The simulator tests' helpers (`sim_*.rs`): start a simulator in a temp
//! dir, sign requests as a merchant, verify answers, and receive
//! notifications. Everything talks HTTP to the running simulator.

use crate::payer::loopback_client;
use crate::wait::eventually;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::{
    generate_nonce, Clock, JsapiPayParams, ManualClock, PrivateKey, RequestSigner,
    SignatureHeaders, SystemClock, Verifier, VerifyError,
};
use wxpay_combine_sim::{MerchantCredentials, SimHandle, SimOptions, Simulator};

/// A simulator with its own data directory.
pub struct TestSim {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
}

impl TestSim {
    /// Loopback, port 0, time scale 0.01.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut SimOptions)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut o = SimOptions::new(dir.path());
        o.time_scale = 0.01;
        f(&mut o);
        let sim = Simulator::start(o).await.expect("simulator starts");
        Self { sim, dir }
    }

    pub fn base(&self) -> &str {
        self.sim.base_url()
    }

    pub fn creds(&self) -> &MerchantCredentials {
        self.sim.merchant()
    }

    /// A client for the primary merchant.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.sim.base_url(), self.sim.merchant())
    }
}

/// An HTTP answer with its raw bytes.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn signature_headers(&self) -> Result<SignatureHeaders, VerifyError> {
        SignatureHeaders::from_lookup(|n| self.header(n))
    }

    /// Checks the `Wechatpay-*` signature over the raw body.
    pub fn verify(&self, v: &Verifier) -> Result<(), VerifyError> {
        v.verify(&self.signature_headers()?, &self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP client (no proxy, no redirects).
pub fn http() -> reqwest::Client {
    loopback_client()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn into_reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A raw request, for tests that break one thing at a time.
#[derive(Debug, Clone)]
pub struct Raw {
    pub method: &'static str,
    pub path: String,
    pub body: Vec<u8>,
    pub authorization: Option<String>,
    pub accept: bool,
    pub user_agent: bool,
    pub serial: Option<String>,
}

/// Signs requests as one merchant.
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
    pub creds: MerchantCredentials,
    pub signer: RequestSigner,
    pub clock: Arc<dyn Clock>,
    /// Sent as `Wechatpay-Serial` when set.
    pub serial: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, creds: &MerchantCredentials) -> Self {
        Self::with_signer(base, creds, creds.signer().expect("merchant key"))
    }

    /// A client for a merchant whose private key the simulator never saw.
    pub fn new_with_key(base: &str, creds: &MerchantCredentials, key: PrivateKey) -> Self {
        let signer = RequestSigner::new(&creds.mchid, &creds.serial_no, key);
        Self::with_signer(base, creds, signer)
    }

    fn with_signer(base: &str, creds: &MerchantCredentials, signer: RequestSigner) -> Self {
        Self {
            http: http(),
            base: base.to_string(),
            creds: creds.clone(),
            signer,
            clock: Arc::new(SystemClock),
            serial: creds.wechatpay_public_key_id.clone(),
        }
    }

    /// The same client with its clock shifted (matching a simulator offset).
    pub fn shifted(mut self, secs: i64) -> Self {
        self.clock = Arc::new(ManualClock::new(SystemClock.now() + secs));
        self
    }

    /// A verifier holding the WeChat Pay public key.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(self.clock.clone()).with_public_key(
            self.creds
                .wechatpay_public_key_id
                .clone()
                .expect("public-key mode"),
            self.creds.wechatpay_public_key().expect("public key"),
        )
    }

    pub fn authorization(&self, method: &str, path: &str, body: &[u8]) -> String {
        self.signer
            .authorization(self.clock.as_ref(), method, path, body)
            .expect("sign")
    }

    pub fn raw(&self, method: &'static str, path: &str, body: &[u8]) -> Raw {
        Raw {
            method,
            path: path.to_string(),
            body: body.to_vec(),
            authorization: Some(self.authorization(method, path, body)),
            accept: true,
            user_agent: true,
            serial: self.serial.clone(),
        }
    }

    pub async fn send(&self, raw: Raw) -> Reply {
        let url = format!("{}{}", self.base, raw.path);
        let method = reqwest::Method::from_bytes(raw.method.as_bytes()).unwrap();
        let mut rb = self.http.request(method, url);
        if let Some(a) = raw.authorization {
            rb = rb.header("Authorization", a);
        }
        if raw.accept {
            rb = rb.header("Accept", "application/json");
        }
        if raw.user_agent {
            rb = rb.header("User-Agent", "wxpay-combine-tests/1.0");
        }
        if let Some(s) = raw.serial {
            rb = rb.header("Wechatpay-Serial", s);
        }
        if !raw.body.is_empty() {
            rb = rb.header("Content-Type", "application/json").body(raw.body);
        }
        into_reply(rb.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.raw("GET", path, b"")).await
    }

    pub async fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.send(self.raw("POST", path, body)).await
    }

    pub async fn prepay(&self, body: &Value) -> Reply {
        self.post(
            "/v3/combine-transactions/jsapi",
            body.to_string().as_bytes(),
        )
        .await
    }

    pub async fn query(&self, no: &str) -> Reply {
        self.get(&format!("/v3/combine-transactions/out-trade-no/{no}"))
            .await
    }

    pub async fn close(&self, no: &str, body: &Value) -> Reply {
        self.post(
            &format!("/v3/combine-transactions/out-trade-no/{no}/close"),
            body.to_string().as_bytes(),
        )
        .await
    }

    /// The close body naming exactly the order's sub-orders.
    pub fn close_body(&self, prepay: &Value) -> Value {
        let subs: Vec<Value> = prepay["sub_orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| json!({"mchid": s["mchid"], "out_trade_no": s["out_trade_no"]}))
            .collect();
        json!({"combine_appid": self.creds.appid, "sub_orders": subs})
    }

    /// `getBrandWCPayRequest` parameters, signed like a merchant server.
    pub fn pay_params(&self, prepay_id: &str) -> JsapiPayParams {
        JsapiPayParams::sign(
            self.signer.private_key(),
            &self.creds.appid,
            prepay_id,
            self.clock.now(),
            &generate_nonce(),
        )
        .unwrap()
    }

    /// Confirms in the cashier over HTTP, as bridge.js does.
    pub async fn confirm(&self, params: &JsapiPayParams, action: &str) -> Value {
        let mut body = serde_json::to_value(params).unwrap();
        body["action"] = json!(action);
        let r = self
            .http
            .post(format!("{}/sim/cashier/confirm", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// Prepay → pay, returning the prepay_id.
    pub async fn create_and_pay(&self, body: &Value) -> String {
        let r = self.prepay(body).await;
        assert_eq!(r.status, 200, "prepay: {}", r.text());
        let prepay_id = r.json()["prepay_id"].as_str().unwrap().to_string();
        let out = self.confirm(&self.pay_params(&prepay_id), "pay").await;
        assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok", "{out}");
        prepay_id
    }
}

/// A fresh order number.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &generate_nonce()[..16])
}

/// A valid two-sub-order prepay body for the merchant's demo user.
pub fn prepay_body(creds: &MerchantCredentials, no: &str, notify_url: &str) -> Value {
    json!({
        "combine_appid": creds.appid,
        "combine_mchid": creds.mchid,
        "combine_out_trade_no": no,
        "scene_info": {"device_id": "POS1:1", "payer_client_ip": "127.0.0.1"},
        "sub_orders": [
            {"mchid": creds.sub_mchids[0], "attach": "shop-a", "amount": {"total_amount": 1234, "currency": "CNY"},
             "out_trade_no": format!("{no}A"), "description": "苹果 x2"},
            {"mchid": creds.sub_mchids[1], "attach": "shop-b", "amount": {"total_amount": 1, "currency": "CNY"},
             "out_trade_no": format!("{no}B"), "description": "梨"}
        ],
        "combine_payer_info": {"openid": creds.demo_openid},
        "notify_url": notify_url
    })
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn signature_headers(&self) -> SignatureHeaders {
        SignatureHeaders::from_lookup(|n| self.header(n)).expect("Wechatpay-* headers")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    hits: Vec<Hit>,
    script: VecDeque<u16>,
    default_status: u16,
    verifier: Option<Arc<Verifier>>,
    delay: Option<Duration>,
}

/// A merchant's notify endpoint: records every request and answers from a
/// script (then a default status). With a verifier, bad signatures get 401.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(default_status: u16) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            default_status,
            ..Default::default()
        }));
        let s2 = state.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = s2.clone();
                async move {
                    let (status, delay) = {
                        let mut st = state.lock().unwrap();
                        let headers_map: HashMap<String, String> = headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_string(),
                                    v.to_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect();
                        let mut status = st.script.pop_front().unwrap_or(st.default_status);
                        if let Some(v) = &st.verifier {
                            let ok = SignatureHeaders::from_lookup(|n| {
                                headers_map.get(&n.to_ascii_lowercase()).map(String::as_str)
                            })
                            .and_then(|h| v.verify(&h, &body))
                            .is_ok();
                            if !ok {
                                status = 401;
                            }
                        }
                        st.hits.push(Hit {
                            at: Instant::now(),
                            headers: headers_map,
                            body: body.to_vec(),
                            answered: status,
                        });
                        (status, st.delay)
                    };
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    let code = axum::http::StatusCode::from_u16(status).unwrap();
                    let body = if status == 200 {
                        String::new()
                    } else {
                        r#"{"code":"FAIL","message":"test receiver"}"#.to_string()
                    };
                    (code, body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/pay/notify"),
            state,
        }
    }

    pub fn script(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(statuses.iter().copied());
    }

    pub fn set_default(&self, status: u16) {
        self.state.lock().unwrap().default_status = status;
    }

    pub fn verify_with(&self, v: Verifier) {
        self.state.lock().unwrap().verifier = Some(Arc::new(v));
    }

    pub fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = Some(d);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        eventually(&format!("{n} notification(s)"), timeout, || {
            let hits = self.hits();
            async move { (hits.len() >= n).then_some(hits) }
        })
        .await
    }
}

/// Sends hand-written HTTP/1.1 (reqwest always adds `Accept: */*`); returns
/// the status and the body.
pub async fn raw_http(base: &str, request_head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request_head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
