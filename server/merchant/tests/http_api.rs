//! The H5 page's HTTP API, in process: `app()` driven with
//! `tower::ServiceExt::oneshot`, a fake WeChat Pay (`CombineApi`), a fake
//! OAuth exchange, a manual clock and a real SQLite store in a temp dir.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::Router;
use http::{header, Method, Request, StatusCode};
use secrecy::SecretSlice;
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use support::{oneshot, order_no, session_cookie, Reply};
use wxpay_combine::apiv3::{Clock, JsapiPayParams, ManualClock, PrivateKey, Verifier};
use wxpay_combine::catalog::{Catalog, ItemSpec, Merchant};
use wxpay_combine::combine::wire::{
    CloseRequest, CombineTransaction, PayerInfo, PrepayRequest, TransactionAmount,
    TransactionSubOrder,
};
use wxpay_combine::combine::{ApiError, CombineApi, EventSource, TradeState};
use wxpay_combine::http::session::CookieSigner;
use wxpay_combine::http::OrderPolicy;
use wxpay_combine::http::{
    app, AppState, HttpSettings, OAuthClient, OAuthExchangeError, OAuthIdentity,
};
use wxpay_combine::store::{self, Store};

const APPID: &str = "wxd678efh567hg6787";
const MCHID: &str = "1230000109";
const NOTIFY: &str = "https://shop.example/wxpay/notify";
const ALICE: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const BOB: &str = "oUpF8uMuAJO_M2pxb1Q9zNjBob00";
const T0: i64 = 1_714_536_000;

fn service_error(status: u16, code: &str) -> ApiError {
    ApiError::Service {
        status,
        code: code.into(),
        message: format!("{code} (fake)"),
        detail: None,
        request_id: Some("fake-req-1".into()),
    }
}

/// A scriptable WeChat Pay.
#[derive(Default)]
struct FakeApi {
    prepay_script: Mutex<VecDeque<Result<String, ApiError>>>,
    close_script: Mutex<VecDeque<Result<(), ApiError>>>,
    prepays: Mutex<Vec<PrepayRequest>>,
    closes: Mutex<Vec<(String, CloseRequest)>>,
    queries: Mutex<Vec<String>>,
    paid: Mutex<HashSet<String>>,
}

impl FakeApi {
    fn prepay_count(&self) -> usize {
        self.prepays.lock().unwrap().len()
    }
    fn query_count(&self) -> usize {
        self.queries.lock().unwrap().len()
    }
    fn mark_paid(&self, no: &str) {
        self.paid.lock().unwrap().insert(no.to_string());
    }
}

#[async_trait]
impl CombineApi for FakeApi {
    async fn prepay(&self, request: &PrepayRequest) -> Result<String, ApiError> {
        self.prepays.lock().unwrap().push(request.clone());
        self.prepay_script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(format!("wx{}", request.combine_out_trade_no)))
    }

    async fn query(&self, no: &str) -> Result<CombineTransaction, ApiError> {
        self.queries.lock().unwrap().push(no.to_string());
        let req = self
            .prepays
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r.combine_out_trade_no == no)
            .cloned()
            .ok_or_else(|| service_error(404, "ORDER_NOT_EXIST"))?;
        let paid = self.paid.lock().unwrap().contains(no);
        Ok(CombineTransaction {
            combine_appid: req.combine_appid,
            combine_mchid: req.combine_mchid,
            combine_out_trade_no: req.combine_out_trade_no,
            scene_info: None,
            sub_orders: req
                .sub_orders
                .iter()
                .enumerate()
                .map(|(i, s)| TransactionSubOrder {
                    mchid: s.mchid.clone(),
                    trade_type: Some("JSAPI".into()),
                    trade_state: if paid { "SUCCESS" } else { "NOTPAY" }.into(),
                    bank_type: paid.then(|| "OTHERS".into()),
                    attach: Some(s.attach.clone()),
                    success_time: paid.then(|| "2024-05-01T12:05:00+08:00".into()),
                    transaction_id: paid.then(|| format!("42000000002024050100000000{i:02}")),
                    out_trade_no: s.out_trade_no.clone(),
                    sub_mchid: None,
                    amount: TransactionAmount {
                        total_amount: s.amount.total_amount,
                        payer_amount: paid.then_some(s.amount.total_amount),
                        currency: Some("CNY".into()),
                        payer_currency: paid.then(|| "CNY".into()),
                        settlement_rate: None,
                    },
                    promotion_detail: None,
                })
                .collect(),
            combine_payer_info: Some(PayerInfo {
                openid: req.combine_payer_info.openid,
            }),
        })
    }

    async fn close(&self, no: &str, request: &CloseRequest) -> Result<(), ApiError> {
        self.closes
            .lock()
            .unwrap()
            .push((no.to_string(), request.clone()));
        self.close_script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(()))
    }
}

/// OAuth codes: `code-<openid>` gives that openid once; anything else 40029.
#[derive(Default)]
struct FakeOAuth {
    used: Mutex<HashSet<String>>,
}

#[async_trait]
impl OAuthClient for FakeOAuth {
    async fn exchange_code(&self, code: &str) -> Result<OAuthIdentity, OAuthExchangeError> {
        if code == "snapshot" {
            return Ok(OAuthIdentity {
                openid: "oSnapshotUser0000000000".into(),
                is_snapshot_user: true,
            });
        }
        match code.strip_prefix("code-") {
            Some(openid) if self.used.lock().unwrap().insert(code.to_string()) => {
                Ok(OAuthIdentity {
                    openid: openid.to_string(),
                    is_snapshot_user: false,
                })
            }
            _ => Err(OAuthExchangeError::Service {
                errcode: 40029,
                errmsg: "invalid code, rid: x".into(),
            }),
        }
    }
}

struct Harness {
    app: Router,
    state: AppState,
    clock: Arc<ManualClock>,
    api: Arc<FakeApi>,
    store: Arc<dyn Store>,
    key: PrivateKey,
    cookies: CookieSigner,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn catalog() -> Catalog {
    let m = |id: &str, name: &str| Merchant {
        mchid: id.into(),
        name: name.into(),
    };
    Catalog::new(
        vec![
            m("1900000101", "悦读书店"),
            m("1900000102", "山茶咖啡"),
            m("1900000103", "小满花店"),
        ],
        vec![
            ItemSpec::new("book", "《三体》", 2380, "1900000101"),
            ItemSpec::new("notebook", "笔记本", 1290, "1900000101"),
            ItemSpec::new("coffee", "冷萃咖啡", 1800, "1900000102"),
            ItemSpec::new("flowers", "向日葵花束", 9900, "1900000103"),
            ItemSpec::new("gold", "Gold bar", 600_000_000, "1900000103"),
        ],
    )
    .unwrap()
}

async fn harness(demo: bool) -> Harness {
    let dir = std::env::temp_dir().join(format!("wxpay-http-{}", uuid::Uuid::new_v4()));
    let www = dir.join("www");
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><title>pay</title>").unwrap();
    std::fs::write(www.join("app.js"), "console.log('page')").unwrap();
    std::fs::write(pkg.join("wxpay_wasm.js"), "export default 1").unwrap();
    std::fs::write(dir.join("secret.txt"), "outside the pay directory").unwrap();
    // A custom www_dir's hazards: dotfiles, a symlink out, a symlink in.
    std::fs::write(www.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(www.join(".git")).unwrap();
    std::fs::write(www.join(".git/config"), "[core]").unwrap();
    std::fs::create_dir_all(pkg.join("snippets")).unwrap();
    std::fs::write(pkg.join("snippets/index.html"), "snippet index").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("secret.txt"), www.join("passwd")).unwrap();
        std::os::unix::fs::symlink(&dir, www.join("up")).unwrap();
        std::os::unix::fs::symlink(www.join("app.js"), www.join("alias.js")).unwrap();
    }
    let store = store::connect(&format!("sqlite:{}", dir.join("orders.db").display()))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let key = PrivateKey::from_pem(&common::fixture_text("merchant_key.pem")).unwrap();
    let secret = SecretSlice::from(vec![42u8; 32]);
    let settings = HttpSettings {
        appid: APPID.into(),
        mchid: MCHID.into(),
        notify_url: NOTIFY.into(),
        pay_directory: "/pay/".into(),
        oauth_authorize_url: "https://open.weixin.qq.com/connect/oauth2/authorize"
            .parse()
            .unwrap(),
        oauth_redirect_uri: "https://shop.example/oauth/callback".into(),
        www_dir: www,
        wasm_pkg_dir: Some(pkg),
        demo,
        simulator_base_url: demo.then(|| "http://127.0.0.1:9999".to_string()),
        session_secret: secret.clone(),
        secure_cookies: !demo,
        session_ttl_secs: 7200,
        orders: OrderPolicy {
            expire_secs: 1800,
            query_after_secs: 30,
            close_min_age_secs: 300,
            prepay_reuse_margin_secs: 600,
        },
    };
    let api = Arc::new(FakeApi::default());
    let state = AppState::new(
        settings,
        store.clone(),
        api.clone(),
        Arc::new(FakeOAuth::default()),
        Arc::new(catalog()),
        key.clone(),
        clock.clone(),
    );
    Harness {
        app: app(state.clone()),
        state,
        clock,
        api,
        store,
        key,
        cookies: CookieSigner::new(secret, !demo),
        dir,
    }
}

impl Harness {
    fn session(&self, openid: &str) -> String {
        session_cookie(&self.cookies, openid, self.clock.now())
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        oneshot(&self.app, req).await
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    async fn create(&self, cookie: &str, items: Value) -> Reply {
        self.call(
            Method::POST,
            "/api/combine-orders",
            Some(cookie),
            Some(json!({ "items": items })),
        )
        .await
    }

    async fn create_ok(&self, cookie: &str) -> Value {
        let r = self
            .create(
                cookie,
                json!([{"sku":"book","qty":2},{"sku":"coffee","qty":1},{"sku":"flowers","qty":1},{"sku":"notebook","qty":1}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// `method /api/combine-orders/{no}{tail}` with `cookie`, no body.
    async fn on_order(&self, method: Method, no: &str, tail: &str, cookie: &str) -> Reply {
        let uri = format!("/api/combine-orders/{no}{tail}");
        self.call(method, &uri, Some(cookie), None).await
    }

    /// Creates the [`Self::create_ok`] order and returns its number.
    async fn create_no(&self, cookie: &str) -> String {
        order_no(&self.create_ok(cookie).await)
    }
}

#[tokio::test]
async fn catalog_lists_items_with_prices_and_merchants() {
    let h = harness(false).await;
    let r = h.call(Method::GET, "/api/catalog", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(
        items[0],
        json!({"sku":"book","name":"《三体》","price_fen":2380,"merchant":{"mchid":"1900000101","name":"悦读书店"}})
    );
}

#[tokio::test]
async fn config_tells_the_page_whether_it_is_a_demo() {
    let h = harness(false).await;
    let v = h.call(Method::GET, "/api/config", None, None).await.json();
    assert_eq!(v["demo"], json!(false));
    assert_eq!(v["app_id"], json!(APPID));
    assert!(v.get("simulator_bridge_url").is_none());
    let d = harness(true).await;
    let v = d.call(Method::GET, "/api/config", None, None).await.json();
    assert_eq!(v["demo"], json!(true));
    assert_eq!(
        v["simulator_bridge_url"],
        json!("http://127.0.0.1:9999/sim/bridge.js")
    );
}

#[tokio::test]
async fn api_calls_without_a_session_answer_401_with_a_login_url() {
    let h = harness(false).await;
    for (method, uri) in [
        (Method::POST, "/api/combine-orders"),
        (Method::GET, "/api/combine-orders/C1"),
        (Method::POST, "/api/combine-orders/C1/pay-params"),
        (Method::POST, "/api/combine-orders/C1/close"),
        (Method::GET, "/api/session"),
    ] {
        let r = h.call(method, uri, None, Some(json!({"items": []}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        let v = r.json();
        assert_eq!(v["code"], json!("NO_SESSION"));
        assert_eq!(v["login_url"], json!("/oauth/start?return=%2Fpay%2F"));
        assert!(v["message"].as_str().unwrap().len() > 10);
    }
    // A tampered or foreign-key cookie is no session either.
    let good = h.session(ALICE);
    let tampered = format!("{}x", good);
    let r = h
        .call(Method::GET, "/api/session", Some(&tampered), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h.call(Method::GET, "/api/session", Some(&good), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["openid_masked"], json!("oUpF***6o"));
    // Expired.
    h.clock.advance(3601);
    let r = h.call(Method::GET, "/api/session", Some(&good), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn create_prices_groups_stores_prepays_and_signs() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let v = h.create_ok(&alice).await;
    let no = order_no(&v);
    assert!(no.starts_with("C20240501120000") && no.len() == 27, "{no}");
    assert_eq!(v["state"], json!("NOTPAY"));
    assert_eq!(v["total_amount"], json!(2 * 2380 + 1290 + 1800 + 9900));
    let subs = v["sub_orders"].as_array().unwrap();
    assert_eq!(subs.len(), 3);
    assert_eq!(subs[0]["mchid"], json!("1900000101"));
    assert_eq!(subs[0]["merchant_name"], json!("悦读书店"));
    assert_eq!(subs[0]["amount"], json!(2 * 2380 + 1290));
    assert_eq!(subs[0]["out_trade_no"], json!(format!("{no}-1")));
    assert_eq!(subs[0]["description"], json!("《三体》 ×2；笔记本"));
    assert_eq!(subs[1]["amount"], json!(1800));
    assert_eq!(subs[2]["amount"], json!(9900));

    // The pay params verify with the merchant key and name the prepay_id.
    let params: JsapiPayParams = serde_json::from_value(v["pay_params"].clone()).unwrap();
    assert!(params.verify(h.key.public_key()));
    assert_eq!(params.app_id, APPID);
    assert_eq!(params.time_stamp, T0.to_string());
    assert_eq!(params.sign_type, "RSA");
    assert_eq!(params.prepay_id(), Some(format!("wx{no}").as_str()));

    // The prepay request: our appid/mchid, the session's openid, the stored amounts.
    let reqs = h.api.prepays.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.combine_appid.as_str(), r.combine_mchid.as_str()),
        (APPID, MCHID)
    );
    assert_eq!(r.combine_payer_info.openid, ALICE);
    assert_eq!(r.notify_url, NOTIFY);
    assert_eq!(r.time_expire.as_deref(), Some("2024-05-01T12:30:00+08:00"));
    assert!(r.scene_info.is_none());
    assert_eq!(
        r.sub_orders
            .iter()
            .map(|s| s.amount.total_amount)
            .collect::<Vec<_>>(),
        vec![6050, 1800, 9900]
    );
    assert!(r
        .sub_orders
        .iter()
        .all(|s| s.attach == no && s.amount.currency == "CNY"));

    // Stored: NOTPAY with the prepay_id valid 2 hours, one `create` event.
    let stored = h.store.get_order(&no).await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::NotPay);
    assert_eq!(stored.payer_openid, ALICE);
    assert_eq!(
        stored.prepay_id.as_deref(),
        Some(format!("wx{no}").as_str())
    );
    assert_eq!(stored.prepay_expires_at, Some(T0 + 7200));
    let events = h.store.events(&no).await.unwrap();
    assert_eq!(events[0].source, EventSource::Create);
}

#[tokio::test]
async fn create_refuses_bad_carts_and_changes_nothing() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"items":[{"sku":"book","qty":1,"price":1},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "price",
        ),
        (
            json!({"items":[{"sku":"book","qty":1}],"total_amount":1}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "total_amount",
        ),
        (
            json!({"items":[]}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "empty",
        ),
        (
            json!({"items":[{"sku":"nope","qty":1},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "UNKNOWN_SKU",
            "nope",
        ),
        (
            json!({"items":[{"sku":"book","qty":0},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_QUANTITY",
            "1–99",
        ),
        (
            json!({"items":[{"sku":"book","qty":-1},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "",
        ),
        (
            json!({"items":[{"sku":"book","qty":60},{"sku":"book","qty":60},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "INVALID_QUANTITY",
            "",
        ),
        (
            json!({"items":[{"sku":"book","qty":1},{"sku":"notebook","qty":3}]}),
            StatusCode::BAD_REQUEST,
            "NEED_TWO_MERCHANTS",
            "at least two sub-merchants",
        ),
        (
            json!({"items":[{"sku":"gold","qty":2},{"sku":"coffee","qty":1}]}),
            StatusCode::BAD_REQUEST,
            "AMOUNT_TOO_LARGE",
            "10,000,000",
        ),
        (
            json!({"items":"book"}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "",
        ),
        // The array form of a struct (serde's default) is not the API.
        (
            json!([[{"sku":"book","qty":1},{"sku":"coffee","qty":1}]]),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "expected a JSON object",
        ),
        (
            json!({"items":[["book",1],["coffee",1]]}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "expected a JSON object",
        ),
        (
            json!({"items":[{"sku":"book","qty":1},["coffee",1]]}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "expected a JSON object",
        ),
    ];
    for (body, status, code, needle) in cases {
        let r = h
            .call(
                Method::POST,
                "/api/combine-orders",
                Some(&alice),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["code"], json!(code), "{body}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {}",
            v["message"]
        );
    }
    // Not JSON at all, and the wrong media type.
    let req = Request::post("/api/combine-orders")
        .header(header::COOKIE, &alice)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    assert_eq!(h.send(req).await.json()["code"], json!("INVALID_REQUEST"));
    let req = Request::post("/api/combine-orders")
        .header(header::COOKIE, &alice)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(
            r#"{"items":[{"sku":"book","qty":1},{"sku":"coffee","qty":1}]}"#,
        ))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json()["code"], json!("UNSUPPORTED_MEDIA_TYPE"));
    assert_eq!(h.api.prepay_count(), 0, "nothing may reach WeChat Pay");
}

#[tokio::test]
async fn definitive_prepay_refusal_closes_the_order_for_good() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    h.api
        .prepay_script
        .lock()
        .unwrap()
        .push_back(Err(service_error(400, "PARAM_ERROR")));
    let r = h
        .create(
            &alice,
            json!([{"sku":"book","qty":1},{"sku":"coffee","qty":1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], json!("PREPAY_REFUSED"));
    assert!(v["message"].as_str().unwrap().contains("PARAM_ERROR"));
    let no = order_no(&v);
    let stored = h.store.get_order(&no).await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::Closed);
    // It can never be paid, nor re-prepaid.
    let r = h.on_order(Method::POST, &no, "/pay-params", &alice).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["code"], json!("ORDER_FINAL"));
    assert_eq!(h.api.prepay_count(), 1);
}

#[tokio::test]
async fn unclear_prepay_failure_keeps_the_order_and_retries_identically() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    h.api
        .prepay_script
        .lock()
        .unwrap()
        .push_back(Err(ApiError::Transport {
            endpoint: "combine prepay",
            detail: "timed out".into(),
        }));
    let r = h
        .create(
            &alice,
            json!([{"sku":"book","qty":1},{"sku":"coffee","qty":1}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let v = r.json();
    assert_eq!(v["code"], json!("PREPAY_PENDING"));
    let no = order_no(&v);
    let stored = h.store.get_order(&no).await.unwrap().unwrap();
    assert_eq!(stored.state, TradeState::NotPay);
    assert_eq!(stored.prepay_id, None);

    // Later (even after the clock moved) the same request is sent again.
    h.clock.advance(90);
    let r = h.on_order(Method::POST, &no, "/pay-params", &alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["combine_out_trade_no"], json!(no));
    let params: JsapiPayParams = serde_json::from_value(v["pay_params"].clone()).unwrap();
    assert!(params.verify(h.key.public_key()));
    let reqs = h.api.prepays.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        serde_json::to_vec(&reqs[0]).unwrap(),
        serde_json::to_vec(&reqs[1]).unwrap(),
        "a repeated prepay must be byte-identical"
    );
}

#[tokio::test]
async fn pay_params_reuse_the_prepay_id_until_it_nears_expiry() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}/pay-params");
    h.clock.advance(60);
    let r = h.call(Method::POST, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let p: JsapiPayParams = serde_json::from_value(r.json()["pay_params"].clone()).unwrap();
    assert_eq!(p.time_stamp, (T0 + 60).to_string(), "fresh timestamp");
    assert!(p.verify(h.key.public_key()));
    assert_eq!(
        h.api.prepay_count(),
        1,
        "valid prepay_id reused without calling WeChat Pay"
    );
    // Past time_expire (30 min) the order cannot be paid any more.
    h.clock.set(T0 + 1800);
    let r = h.call(Method::POST, &url, Some(&alice), None).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "past time_expire: {}",
        r.text()
    );
    assert_eq!(r.json()["code"], json!("ORDER_EXPIRED"));
    assert_eq!(h.api.prepay_count(), 1);
}

#[tokio::test]
async fn stale_prepay_id_is_renewed_with_the_stored_parameters() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    // Pretend the stored prepay_id is about to lapse.
    h.store.set_prepay(&no, "wx-old", T0 + 300).await.unwrap();
    let r = h.on_order(Method::POST, &no, "/pay-params", &alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let p: JsapiPayParams = serde_json::from_value(r.json()["pay_params"].clone()).unwrap();
    assert_eq!(p.prepay_id(), Some(format!("wx{no}").as_str()));
    let reqs = h.api.prepays.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        serde_json::to_vec(&reqs[0]).unwrap(),
        serde_json::to_vec(&reqs[1]).unwrap()
    );
    assert_eq!(
        h.store
            .get_order(&no)
            .await
            .unwrap()
            .unwrap()
            .prepay_id
            .as_deref(),
        Some(format!("wx{no}").as_str())
    );
}

#[tokio::test]
async fn only_the_payer_reads_an_order() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let bob = h.session(BOB);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}");
    let r = h.call(Method::GET, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["state"], json!("NOTPAY"));
    assert_eq!(v["created_at"], json!("2024-05-01T12:00:00+08:00"));
    assert!(
        v.get("payer_openid").is_none() && !r.text().contains(ALICE),
        "no openid in answers"
    );
    assert_eq!(v["sub_orders"][0]["trade_state"], json!("NOTPAY"));
    for (who, uri) in [
        (&bob, url.clone()),
        (&bob, format!("{url}/pay-params")),
        (&bob, format!("{url}/close")),
        (
            &alice,
            "/api/combine-orders/C000000000000000000000000X".to_string(),
        ),
        (&alice, "/api/combine-orders/has%20space".to_string()),
    ] {
        let m = if uri.ends_with("pay-params") || uri.ends_with("close") {
            Method::POST
        } else {
            Method::GET
        };
        let r = h.call(m, &uri, Some(who), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.json()["code"], json!("ORDER_NOT_FOUND"));
    }
    assert_eq!(h.api.close_script.lock().unwrap().len(), 0);
    assert!(h.api.closes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn query_on_read_after_the_delay_finds_a_lost_payment() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}");
    h.api.mark_paid(&no); // paid, but the notification never arrives
    h.clock.advance(10);
    let v = h.call(Method::GET, &url, Some(&alice), None).await.json();
    assert_eq!(
        v["state"],
        json!("NOTPAY"),
        "within the delay: stored state, no query"
    );
    assert_eq!(h.api.query_count(), 0);
    h.clock.advance(25);
    let v = h.call(Method::GET, &url, Some(&alice), None).await.json();
    assert_eq!(h.api.query_count(), 1);
    assert_eq!(v["state"], json!("SUCCESS"));
    let sub = &v["sub_orders"][1];
    assert_eq!(sub["trade_state"], json!("SUCCESS"));
    assert_eq!(sub["transaction_id"], json!("4200000000202405010000000001"));
    assert_eq!(sub["success_time"], json!("2024-05-01T12:05:00+08:00"));
    let events = h.store.events(&no).await.unwrap();
    assert_eq!(events.last().unwrap().source, EventSource::Query);
    // Final now: no more queries.
    h.clock.advance(100);
    h.call(Method::GET, &url, Some(&alice), None).await;
    assert_eq!(h.api.query_count(), 1);
}

#[tokio::test]
async fn query_on_read_is_throttled_per_order() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}");
    h.clock.advance(31);
    for _ in 0..5 {
        let v = h.call(Method::GET, &url, Some(&alice), None).await.json();
        assert_eq!(v["state"], json!("NOTPAY"));
    }
    assert_eq!(
        h.api.query_count(),
        1,
        "one query per delay, however often the page polls"
    );
    h.clock.advance(31);
    h.call(Method::GET, &url, Some(&alice), None).await;
    assert_eq!(h.api.query_count(), 2);
}

#[tokio::test]
async fn close_follows_the_five_minute_rule_and_records_closed() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}/close");
    h.clock.advance(120);
    let r = h.call(Method::POST, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let v = r.json();
    assert_eq!(v["code"], json!("TOO_EARLY_TO_CLOSE"));
    assert_eq!(v["retry_after_secs"], json!(180));
    assert_eq!(r.header("retry-after"), Some("180"));
    assert!(h.api.closes.lock().unwrap().is_empty());

    h.clock.advance(180);
    let r = h.call(Method::POST, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], json!("CLOSED"));
    let closes = h.api.closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].0, no);
    assert_eq!(closes[0].1.combine_appid, APPID);
    assert_eq!(closes[0].1.sub_orders.len(), 3, "every sub-order, exactly");
    let events = h.store.events(&no).await.unwrap();
    assert_eq!(events.last().unwrap().source, EventSource::Close);
    assert_eq!(events.last().unwrap().to_state, TradeState::Closed);
    // Re-entrant; and a closed order has no pay params.
    let r = h.call(Method::POST, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.api.closes.lock().unwrap().len(), 1);
    let r = h.on_order(Method::POST, &no, "/pay-params", &alice).await;
    assert_eq!(r.json()["code"], json!("ORDER_FINAL"));
}

#[tokio::test]
async fn paid_orders_are_never_closed() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    // Paid and known (query-on-read).
    let no = h.create_no(&alice).await;
    h.api.mark_paid(&no);
    h.clock.advance(400);
    assert_eq!(
        h.on_order(Method::GET, &no, "", &alice).await.json()["state"],
        json!("SUCCESS")
    );
    let r = h.on_order(Method::POST, &no, "/close", &alice).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["code"], json!("ORDER_PAID"));
    assert!(h.api.closes.lock().unwrap().is_empty());

    // Paid but not yet known: WeChat Pay refuses the close, the order is
    // refreshed and reported paid.
    let no2 = h.create_no(&alice).await;
    h.api.mark_paid(&no2);
    h.api
        .close_script
        .lock()
        .unwrap()
        .push_back(Err(service_error(400, "ORDER_PAID")));
    h.clock.advance(400);
    let r = h.on_order(Method::POST, &no2, "/close", &alice).await;
    assert_eq!(r.json()["code"], json!("ORDER_PAID"));
    assert_eq!(
        h.store.get_order(&no2).await.unwrap().unwrap().state,
        TradeState::Success
    );

    // The payer is paying right now.
    let no3 = h.create_no(&alice).await;
    h.api
        .close_script
        .lock()
        .unwrap()
        .push_back(Err(service_error(202, "USERPAYING")));
    h.clock.advance(400);
    let r = h.on_order(Method::POST, &no3, "/close", &alice).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["code"], json!("USER_PAYING"));
    assert_eq!(
        h.store.get_order(&no3).await.unwrap().unwrap().state,
        TradeState::NotPay
    );

    // Any other failure is reported and changes nothing.
    h.api
        .close_script
        .lock()
        .unwrap()
        .push_back(Err(service_error(500, "SYSTEM_ERROR")));
    let r = h.on_order(Method::POST, &no3, "/close", &alice).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["code"], json!("WECHATPAY_ERROR"));
    assert_eq!(
        h.store.get_order(&no3).await.unwrap().unwrap().state,
        TradeState::NotPay
    );
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn oauth_round_trip_sets_a_signed_session() {
    let h = harness(false).await;
    let r = h
        .call(
            Method::GET,
            "/oauth/start?return=%2Fpay%2F%3Forder%3D1",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = r.header("location").unwrap_or_default().to_string();
    let prefix = "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxd678efh567hg6787&redirect_uri=https%3A%2F%2Fshop.example%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=";
    assert!(location.starts_with(prefix), "{location}");
    assert!(location.ends_with("#wechat_redirect"));
    let state = &location[prefix.len()..location.len() - "#wechat_redirect".len()];
    assert_eq!(state.len(), 32);
    assert!(state.bytes().all(|b| b.is_ascii_alphanumeric()));
    let oauth_cookie = r.set_cookies()[0].clone();
    assert!(
        oauth_cookie.contains("HttpOnly")
            && oauth_cookie.contains("SameSite=Lax")
            && oauth_cookie.contains("Secure")
    );
    let oauth_cookie = cookie_pair(&oauth_cookie);

    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?code=code-{ALICE}&state={state}"),
            Some(&oauth_cookie),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location"), Some("/pay/?order=1"));
    let cookies = r.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-wxpay_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        !session.contains(ALICE),
        "the openid is not readable in the cookie"
    );
    let r = h
        .call(
            Method::GET,
            "/api/session",
            Some(&cookie_pair(session)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // The state is single-use: replaying the callback with its cookie,
    // whatever the code, is refused before any code exchange.
    for code in [format!("code-{ALICE}"), format!("code-{BOB}")] {
        let r = h
            .call(
                Method::GET,
                &format!("/oauth/callback?code={code}&state={state}"),
                Some(&oauth_cookie),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let v = r.json();
        assert_eq!(v["code"], json!("OAUTH_STATE_USED"), "{v}");
        assert!(r.set_cookies().is_empty(), "no session from a replay");
    }
    // code-BOB never reached the exchange: a fresh login with it works.
    let fresh = |r: &Reply| {
        let location = r.header("location").unwrap_or_default().to_string();
        let state = location[prefix.len()..location.len() - "#wechat_redirect".len()].to_string();
        (state, cookie_pair(&r.set_cookies()[0]))
    };
    let (state2, cookie2) = fresh(&h.call(Method::GET, "/oauth/start", None, None).await);
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?code=code-{BOB}&state={state2}"),
            Some(&cookie2),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());

    // The code is single-use too: a fresh login with a used code fails
    // with a clear 40029 message.
    let (state3, cookie3) = fresh(&h.call(Method::GET, "/oauth/start", None, None).await);
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?code=code-{ALICE}&state={state3}"),
            Some(&cookie3),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["code"], json!("OAUTH_CODE_INVALID"));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("start the login again"));
    assert_eq!(v["login_url"], json!("/oauth/start?return=%2Fpay%2F"));
}

#[tokio::test]
async fn oauth_state_and_return_are_checked() {
    let h = harness(true).await;
    for bad in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example%2Fpay%2F",
        "%2Fapi%2Fcatalog",
        "%2Fpay%2F..%2Fapi%2F",
    ] {
        let r = h
            .call(
                Method::GET,
                &format!("/oauth/start?return={bad}"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json()["code"], json!("OAUTH_BAD_RETURN"));
    }
    let r = h.call(Method::GET, "/oauth/start", None, None).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let cookie = r.set_cookies()[0].clone();
    assert!(
        !cookie.contains("Secure"),
        "demo cookies work over plain http"
    );
    let cookie = cookie_pair(&cookie);

    // No cookie, wrong state, refused authorization, snapshot user.
    let r = h
        .call(
            Method::GET,
            "/oauth/callback?code=code-x&state=abc",
            None,
            None,
        )
        .await;
    assert_eq!(r.json()["code"], json!("OAUTH_STATE_MISSING"));
    let r = h
        .call(
            Method::GET,
            "/oauth/callback?code=code-x&state=abc",
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["code"], json!("OAUTH_STATE_MISMATCH"));
    // Each attempt below consumes its state: a fresh login for each.
    let fresh = || async {
        let location = h.call(Method::GET, "/oauth/start", None, None).await;
        let state = location
            .header("location")
            .unwrap_or_default()
            .split("state=")
            .nth(1)
            .unwrap()
            .split('#')
            .next()
            .unwrap()
            .to_string();
        (state, cookie_pair(&location.set_cookies()[0]))
    };
    let (state, cookie) = fresh().await;
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?state={state}"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["code"], json!("OAUTH_DENIED"));
    let (state, cookie) = fresh().await;
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?state={state}&errcode=10003"),
            Some(&cookie),
            None,
        )
        .await;
    let v = r.json();
    assert_eq!(v["code"], json!("OAUTH_REDIRECT_DOMAIN"));
    assert!(v["message"].as_str().unwrap().contains("网页授权域名"));
    let (state, cookie) = fresh().await;
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?code=snapshot&state={state}"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.json()["code"], json!("OAUTH_SNAPSHOT_USER"));
    // An expired round trip.
    let (state, cookie) = fresh().await;
    h.clock.advance(601);
    let r = h
        .call(
            Method::GET,
            &format!("/oauth/callback?code=code-{ALICE}&state={state}"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(r.json()["code"], json!("OAUTH_STATE_MISSING"));
    // Browsers get a page, not JSON.
    let req = Request::get("/oauth/callback?code=x&state=y")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .body(Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(r.text().contains("OAUTH_STATE_MISSING"));
}

#[tokio::test]
async fn pay_directory_is_served_and_nothing_else() {
    let h = harness(true).await;
    let r = h.call(Method::GET, "/pay/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("<title>pay</title>"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // The page may not be framed, leaks no URL (order numbers, pay-link
    // tokens) to other sites, and runs only its own scripts and styles.
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    let csp = r.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval' http://127.0.0.1:9999;",
        "style-src 'self';",
        "connect-src 'self' http://127.0.0.1:9999;",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let r = h.call(Method::GET, "/pay/app.js", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .contains("javascript"));
    let r = h
        .call(Method::GET, "/pay/pkg/wxpay_wasm.js", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "export default 1");
    for (uri, location) in [("/pay", "/pay/"), ("/", "/pay/")] {
        let r = h.call(Method::GET, uri, None, None).await;
        assert_eq!(r.status, StatusCode::FOUND, "{uri}");
        assert_eq!(r.header("location"), Some(location));
    }
    // A directory redirects within the pay directory, never to `//host`.
    let r = h.call(Method::GET, "/pay/pkg/snippets", None, None).await;
    assert!(r.status.is_redirection(), "{}", r.status);
    assert_eq!(r.header("location"), Some("/pay/pkg/snippets/"));
    let r = h.call(Method::GET, "/pay/pkg/snippets/", None, None).await;
    assert_eq!(r.text(), "snippet index");
    for uri in [
        "/pay/pkg//snippets",
        "/pay//pkg/snippets",
        "/pay//evil.example",
    ] {
        let r = h.call(Method::GET, uri, None, None).await;
        let location = r.header("location").unwrap_or_default();
        assert!(!location.starts_with("//"), "{uri} → {location}");
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
    }
    // A symlink inside the directory is served.
    #[cfg(unix)]
    {
        let r = h.call(Method::GET, "/pay/alias.js", None, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "console.log('page')");
    }
    for uri in [
        "/pay/../secret.txt",
        "/pay/%2e%2e/secret.txt",
        "/pay/nope.html",
        "/secret.txt",
        // Dotfiles, however spelled.
        "/pay/.env",
        "/pay/%2eenv",
        "/pay/%2Eenv",
        "/pay/.git/config",
        "/pay/pkg/.env",
        // Symlinks out of the directory.
        "/pay/passwd",
        "/pay/up/secret.txt",
        "/pay/up/",
    ] {
        let r = h.call(Method::GET, uri, None, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
    }
    let r = h.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["code"], json!("NOT_FOUND"));
    assert_eq!(
        h.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_answers_are_not_cached_and_bodies_are_limited() {
    let h = harness(false).await;
    let r = h.call(Method::GET, "/api/catalog", None, None).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let alice = h.session(ALICE);
    let big = json!({"items": [{"sku": "x".repeat(100_000), "qty": 1}]});
    let r = h
        .call(Method::POST, "/api/combine-orders", Some(&alice), Some(big))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.json()["code"], json!("BODY_TOO_LARGE"));
    assert_eq!(h.api.prepay_count(), 0);
}

#[tokio::test]
async fn a_refused_repeat_prepay_leaves_the_order_open() {
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let no = h.create_no(&alice).await;
    // The stored prepay_id nears expiry; the repeat is refused (e.g. the
    // configuration changed and the parameters no longer match).
    h.store.set_prepay(&no, "wx-old", T0 + 300).await.unwrap();
    h.api
        .prepay_script
        .lock()
        .unwrap()
        .push_back(Err(service_error(400, "INVALID_REQUEST")));
    let r = h.on_order(Method::POST, &no, "/pay-params", &alice).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["code"], json!("WECHATPAY_ERROR"));
    // The first prepay may have created the order at WeChat Pay and the old
    // prepay_id may still pay: not closed locally (the worker closes it via the API).
    assert_eq!(
        h.store.get_order(&no).await.unwrap().unwrap().state,
        TradeState::NotPay
    );
}

#[tokio::test]
async fn readiness_requires_a_usable_wechatpay_key() {
    let h = harness(false).await;
    let ready = |verifier: Verifier| {
        let app = app(h.state.clone().with_readiness_verifier(Arc::new(verifier)));
        async move {
            oneshot(&app, Request::get("/readyz").body(Body::empty()).unwrap())
                .await
                .status
        }
    };
    let clock: Arc<dyn Clock> = h.clock.clone();
    assert_eq!(
        ready(Verifier::new(clock.clone())).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "certificate mode before any certificate was downloaded"
    );
    assert_eq!(
        ready(Verifier::new(clock).with_public_key("PUB_KEY_ID_01", h.key.public_key().clone()))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_order_view_lists_each_sub_orders_refunds_for_its_payer_only() {
    use wxpay_combine::store::{NewRefund, RefundCreated, RefundSource, RefundUpdate};
    use wxpay_combine_core::refund::RefundStatus;
    let h = harness(false).await;
    let alice = h.session(ALICE);
    let bob = h.session(BOB);
    let no = h.create_no(&alice).await;
    let url = format!("/api/combine-orders/{no}");
    h.api.mark_paid(&no);
    h.clock.advance(35); // query-on-read records the payment
    let v = h.call(Method::GET, &url, Some(&alice), None).await.json();
    assert_eq!(v["state"], json!("SUCCESS"));
    // No refunds: no `refunds` on any sub-order.
    for sub in v["sub_orders"].as_array().unwrap() {
        assert!(sub.get("refunds").is_none(), "{sub}");
    }

    // The second sub-order (冷萃咖啡, 1800 fen): one refund done, one pending.
    let sub = v["sub_orders"][1]["out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let now = h.clock.now();
    for (refund_no, amount) in [("RFPAGE1", 300), ("RFPAGE2", 200)] {
        let created = h
            .store
            .create_refund(
                &NewRefund {
                    out_refund_no: refund_no.into(),
                    combine_out_trade_no: no.clone(),
                    out_trade_no: sub.clone(),
                    amount,
                    reason: Some("退货".into()),
                    idempotency: None,
                },
                now,
            )
            .await
            .unwrap();
        assert!(matches!(created, RefundCreated::Created(_)));
    }
    h.store
        .update_refund(
            "RFPAGE1",
            &RefundUpdate {
                status: RefundStatus::Success,
                refund_id: Some("50000000382019052709732678859".into()),
                user_received_account: Some("支付用户零钱".into()),
                success_time: Some("2024-05-01T12:10:00+08:00".into()),
                source: RefundSource::Notify,
                notification_id: Some("N1".into()),
                detail: "test".into(),
            },
            now + 1,
        )
        .await
        .unwrap();

    let r = h.call(Method::GET, &url, Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(
        v["sub_orders"][1]["refunds"],
        json!([
            {"amount": 300, "status": "SUCCESS", "success_time": "2024-05-01T12:10:00+08:00"},
            {"amount": 200, "status": "PROCESSING"},
        ]),
        "only what the payer needs: no refund number, reason or account"
    );
    for i in [0, 2] {
        assert!(
            v["sub_orders"][i].get("refunds").is_none(),
            "{}",
            v["sub_orders"][i]
        );
    }
    assert_eq!(
        v["state"],
        json!("SUCCESS"),
        "a refund leaves the order paid"
    );
    assert!(!r.text().contains(ALICE) && !r.text().contains("RFPAGE"));
    // Another payer learns nothing of them.
    let r = h.call(Method::GET, &url, Some(&bob), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text().contains("refunds"));
}
