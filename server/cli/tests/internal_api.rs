//! The server-to-server order API (`/internal/…`) on both backends, against
//! the simulator: bearer-token auth, field-named validation errors,
//! idempotency, get, close, one-time pay links, and which listener serves it.

#[path = "../../merchant/tests/support/mod.rs"]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{backend_tests, oneshot, order_no, session_cookie, TestDb};
use wxpay_combine::apiv3::{Clock, ManualClock};
use wxpay_combine::http::internal_settings::InternalApiConfig;
use wxpay_combine::http::orders::rfc3339_cst;
use wxpay_combine::http::session::CookieSigner;
use wxpay_combine::kit::Kit;
use wxpay_combine::secrecy::{ExposeSecret, SecretString};
use wxpay_combine::store::ClaimOutcome;
use wxpay_combine_cli::app::{self, DemoOptions};
use wxpay_combine_sim::SimHandle;

const TOKEN: &str = "test-internal-token-0123456789abcdef";

struct Harness {
    kit: Kit,
    config: wxpay_combine::config::Config,
    sim: SimHandle,
    cookies: CookieSigner,
    subs: Vec<String>,
    alice: String,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn harness(db: &TestDb, tweak: impl FnOnce(&mut InternalApiConfig)) -> Harness {
    harness_via(db, tweak, None, None, |_| {}).await
}

/// A proxy in front of the simulator that, while `forge` is set, answers
/// close with an unsigned 404 `ORDER_NOT_EXIST` (what a man in the middle
/// or a broken gateway could send).
struct ForgingProxy {
    sim_base: String,
    http: reqwest::Client,
    forge: std::sync::atomic::AtomicBool,
}

async fn forward(
    axum::extract::State(p): axum::extract::State<std::sync::Arc<ForgingProxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req
        .uri()
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    if req.uri().path().ends_with("/close") && p.forge.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": "ORDER_NOT_EXIST", "message": "订单不存在"})),
        )
            .into_response();
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut rb = p
        .http
        .request(method, format!("{}{path}", p.sim_base))
        .body(body);
    for (k, v) in &headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.unwrap();
    let mut out = axum::response::Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(resp.bytes().await.unwrap())).unwrap()
}

async fn harness_via(
    db: &TestDb,
    tweak: impl FnOnce(&mut InternalApiConfig),
    proxy: Option<std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<ForgingProxy>>>>>,
    clock: Option<std::sync::Arc<ManualClock>>,
    tweak_config: impl FnOnce(&mut wxpay_combine::config::Config),
) -> Harness {
    let dir =
        std::env::temp_dir().join(format!("wxpay-internal-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    opts.close_min_age_secs = 0;
    let demo = app::prepare_demo(&opts).await.expect("demo prepares");
    let mut config = demo.config.clone();
    let mut internal = InternalApiConfig {
        token: SecretString::from(TOKEN),
        listen: None,
        on_public_listener: false,
        pay_link_ttl_secs: 3600,
    };
    tweak(&mut internal);
    config.internal = Some(internal);
    if let Some(slot) = proxy {
        let p = std::sync::Arc::new(ForgingProxy {
            sim_base: demo.sim.base_url().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            forge: std::sync::atomic::AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new().fallback(forward).with_state(p.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        config.wechatpay.api.base_url = base.parse().unwrap();
        *slot.lock().unwrap() = Some(p);
    }
    tweak_config(&mut config);
    let cookies = CookieSigner::new(config.http.session_secret.clone(), false);
    let mut builder = Kit::builder(config.clone()).store(db.store.clone());
    if let Some(c) = clock {
        c.set(demo.sim.now());
        builder = builder.clock(c);
    }
    let kit = builder.build().await.expect("kit builds");
    let m = demo.sim.merchant().clone();
    Harness {
        kit,
        config,
        subs: m.sub_mchids.clone(),
        alice: m.demo_openid.clone(),
        sim: demo.sim,
        cookies,
        dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

/// The answer with its body as JSON (`null` when it is not).
async fn send(router: &Router, req: Request<Body>) -> Answer {
    let r = oneshot(router, req).await;
    Answer {
        status: r.status,
        body: r.json_or_null(),
        headers: r.headers,
    }
}

fn req(
    method: Method,
    uri: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    match body {
        Some(s) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(s.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// An order nobody created.
const UNKNOWN_ORDER: &str = "/internal/combine-orders/C1234567";

/// A `GET` of [`UNKNOWN_ORDER`] (a 404 once past the token check).
fn get_unknown(token: Option<&str>) -> Request<Body> {
    req(Method::GET, UNKNOWN_ORDER, token, None, None)
}

impl Harness {
    fn internal(&self) -> &Router {
        self.kit
            .internal_router
            .as_ref()
            .expect("internal API configured")
    }

    /// A call of the internal API with the token.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        send(self.internal(), req(method, path, Some(TOKEN), key, body)).await
    }

    async fn create(&self, key: &str, body: &Value) -> Answer {
        let body = body.to_string();
        let path = "/internal/combine-orders";
        self.call(Method::POST, path, Some(key), Some(&body)).await
    }

    async fn get(&self, no: &str) -> Answer {
        let path = format!("/internal/combine-orders/{no}");
        self.call(Method::GET, &path, None, None).await
    }

    async fn close(&self, no: &str) -> Answer {
        let path = format!("/internal/combine-orders/{no}/close");
        self.call(Method::POST, &path, None, None).await
    }

    fn order_body(&self, openid: Option<&str>, amounts: [i64; 2]) -> Value {
        let mut v = json!({
            "sub_orders": [
                {"mchid": self.subs[0], "description": "Tea", "amount": amounts[0], "attach": "cart-1"},
                {"mchid": self.subs[1], "description": "Cups", "amount": amounts[1]},
            ]
        });
        match openid {
            Some(o) => v["payer_openid"] = json!(o),
            None => v["pay_link"] = json!(true),
        }
        v
    }

    async fn claim(&self, openid: &str, token: &str) -> Answer {
        let cookie = session_cookie(&self.cookies, openid, self.sim.now());
        let r = Request::builder()
            .method(Method::POST)
            .uri("/api/pay-links/claim")
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({ "token": token }).to_string()))
            .unwrap();
        send(&self.kit.router, r).await
    }
}

fn link_token(answer: &Answer) -> String {
    let url = answer.body["pay_link"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no pay link in {}", answer.body));
    assert!(url.contains("/pay/order.html?claim="), "{url}");
    url.split("claim=").nth(1).unwrap().to_string()
}

async fn auth_is_required(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let r = h.internal();
    for (token, what) in [
        (None, "missing"),
        (Some("wrong-token"), "wrong"),
        (Some(&TOKEN[1..]), "truncated"),
    ] {
        for uri in [UNKNOWN_ORDER, "/internal/anything"] {
            let a = send(r, req(Method::GET, uri, token, None, None)).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what} token on {uri}");
            let challenge = a.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert_eq!(a.body["code"], "UNAUTHORIZED");
        }
    }
    // Another scheme with the right secret is not a bearer token.
    let basic = Request::builder()
        .uri(UNKNOWN_ORDER)
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(r, basic).await.status, StatusCode::UNAUTHORIZED);
    // The right token gets through (to a 404 for an unknown order).
    let a = send(r, get_unknown(Some(TOKEN))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.body["code"], "NOT_FOUND");
}

async fn validation_names_the_field(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let field = |a: &Answer| {
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_eq!(a.body["code"], "INVALID_REQUEST");
        a.body["field"].as_str().unwrap().to_string()
    };
    let good = h.order_body(Some(&h.alice), [100, 200]);
    let mut bad_amount = good.clone();
    bad_amount["sub_orders"][1]["amount"] = json!(0);
    assert_eq!(
        field(&h.create("k-amount", &bad_amount).await),
        "sub_orders[1].amount"
    );
    let mut bad_mchid = good.clone();
    bad_mchid["sub_orders"][0]["mchid"] = json!("not a mchid");
    assert_eq!(
        field(&h.create("k-mchid", &bad_mchid).await),
        "sub_orders[0].mchid"
    );
    let mut no_payer = good.clone();
    no_payer.as_object_mut().unwrap().remove("payer_openid");
    assert_eq!(field(&h.create("k-payer", &no_payer).await), "payer_openid");
    let mut one_sub = good.clone();
    one_sub["sub_orders"].as_array_mut().unwrap().pop();
    assert_eq!(field(&h.create("k-subs", &one_sub).await), "sub_orders");
    let a = send(
        h.internal(),
        req(
            Method::POST,
            "/internal/combine-orders",
            Some(TOKEN),
            None,
            Some(&good.to_string()),
        ),
    )
    .await;
    assert_eq!(field(&a), "Idempotency-Key");
    // The framework's own refusals answer in the same JSON shape, not text.
    let mut big = good.clone();
    big["sub_orders"][0]["description"] = json!("x".repeat(70 * 1024));
    let a = send(
        h.internal(),
        req(
            Method::POST,
            "/internal/combine-orders",
            Some(TOKEN),
            Some("k-big"),
            Some(&big.to_string()),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.body["code"], "BODY_TOO_LARGE", "{}", a.body);
    assert!(a.body["message"].as_str().unwrap().contains("65536"));
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    let a = send(
        h.internal(),
        req(Method::PUT, UNKNOWN_ORDER, Some(TOKEN), None, None),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.body["code"], "METHOD_NOT_ALLOWED", "{}", a.body);
    assert!(a.headers.contains_key(header::ALLOW));
    // Nothing was created by any of these.
    assert!(h.sim.stats().await.unwrap().prepay_calls.is_empty());
}

async fn same_key_same_body_is_one_order(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let body = h.order_body(Some(&h.alice), [100, 250]);
    let first = h.create("order-42", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let no = order_no(&first.body);
    assert_eq!(first.body["state"], "NOTPAY");
    assert_eq!(first.body["total_amount"], 350);
    assert_eq!(first.body["sub_orders"][0]["attach"], "cart-1");
    assert_eq!(
        first.body["sub_orders"][1]["out_trade_no"],
        format!("{no}-2")
    );
    assert!(
        first.body["pay_params"]["paySign"].is_string(),
        "{}",
        first.body
    );
    let prepay_id = first.body["prepay_id"].as_str().unwrap().to_string();

    // The same request again (keys reordered): the same order, no new prepay.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"sub_orders": {}, "payer_openid": "{}"}}"#,
        body["sub_orders"], h.alice
    ))
    .unwrap();
    let again = h.create("order-42", &reordered).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["combine_out_trade_no"], no.as_str());
    assert_eq!(again.body["prepay_id"], prepay_id.as_str());
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 1);

    // The same key with another body: refused, nothing created.
    let other = h.order_body(Some(&h.alice), [100, 251]);
    let conflict = h.create("order-42", &other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.body["code"], "IDEMPOTENCY_KEY_REUSED");

    // Another key: another order.
    let second = h.create("order-43", &body).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_ne!(second.body["combine_out_trade_no"], no.as_str());

    // A merchant order number taken by another request is refused.
    let mut explicit = h.order_body(Some(&h.alice), [300, 400]);
    explicit["combine_out_trade_no"] = json!("M20260101shop1");
    let a = h.create("order-44", &explicit).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["combine_out_trade_no"], "M20260101shop1");
    assert_eq!(a.body["sub_orders"][0]["out_trade_no"], "M20260101shop1-1");
    explicit["sub_orders"][0]["amount"] = json!(301);
    let taken = h.create("order-45", &explicit).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.body["code"], "ORDER_NUMBER_USED");
    // A new key with the identical body naming that number: refused too,
    // and the key is not bound to the order (a retry is refused alike).
    explicit["sub_orders"][0]["amount"] = json!(300);
    for _ in 0..2 {
        let again = h.create("order-46", &explicit).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        assert_eq!(again.body["code"], "ORDER_NUMBER_USED");
    }
    // The key that created it still answers it.
    assert_eq!(h.create("order-44", &explicit).await.status, StatusCode::OK);
}

async fn get_and_close(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let created = h
        .create("k1", &h.order_body(Some(&h.alice), [100, 200]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let no = order_no(&created.body);
    let got = h.get(&no).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["state"], "NOTPAY");
    assert_eq!(got.body["payer_openid"], h.alice.as_str());
    assert_eq!(got.body["sub_orders"][0]["amount"], 100);
    // The stored prepay, without pay parameters (creation's answer has them).
    assert_eq!(got.body["prepay_id"], created.body["prepay_id"]);
    assert_eq!(
        got.body["prepay_expires_at"],
        created.body["prepay_expires_at"]
    );
    assert!(got.body.get("pay_params").is_none(), "{}", got.body);
    let closed = h.close(&no).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["state"], "CLOSED");
    assert_eq!(h.get(&no).await.body["state"], "CLOSED");
    // Closing is re-entrant.
    assert_eq!(h.close(&no).await.body["state"], "CLOSED");
    assert_eq!(
        h.get("C0000000000000000000000000").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.close("C0000000000000000000000000").await.status,
        StatusCode::NOT_FOUND
    );
}

/// An unsigned error answer changes nothing: a forged `ORDER_NOT_EXIST` to
/// close leaves the order open (and a later genuine close still works).
async fn unsigned_close_refusal_changes_nothing(db: &TestDb) {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let h = harness_via(db, |_| {}, Some(slot.clone()), None, |_| {}).await;
    let proxy = slot.lock().unwrap().clone().expect("proxy started");
    let created = h
        .create("k1", &h.order_body(Some(&h.alice), [100, 200]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let no = order_no(&created.body);
    proxy.forge.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = h.close(&no).await;
    assert_ne!(refused.status, StatusCode::OK, "{}", refused.body);
    assert_eq!(h.get(&no).await.body["state"], "NOTPAY");
    proxy
        .forge
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let closed = h.close(&no).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["state"], "CLOSED");
}

/// A repeated prepay answers the same prepay_id while it lives, and its two
/// hours run from when it was first issued: a one-day order never hands out
/// a dead prepay_id, and the answer reports the renewed expiry.
async fn repeated_prepay_keeps_the_first_expiry(db: &TestDb) {
    let clock = std::sync::Arc::new(ManualClock::new(0));
    let h = harness_via(
        db,
        |_| {},
        None,
        Some(clock.clone()),
        |c| {
            c.http.orders.expire_secs = 86_400;
            c.http.orders.prepay_reuse_margin_secs = 600;
        },
    )
    .await;
    let body = h.order_body(Some(&h.alice), [100, 200]);
    let first = h.create("one-day", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let no = order_no(&first.body);
    let t0 = clock.now();
    let p1 = first.body["prepay_id"].as_str().unwrap().to_string();
    assert_eq!(first.body["prepay_expires_at"], rfc3339_cst(t0 + 7200));
    let at = |offset: i64| {
        let (sim, clock) = (&h.sim, clock.clone());
        async move {
            sim.set_clock_offset(offset).await.unwrap();
            clock.set(sim.now());
        }
    };
    // Within the reuse margin the kit asks again: the same id comes back,
    // and it still dies two hours after it was first issued.
    at(7200 - 300).await;
    let again = h.create("one-day", &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 2);
    assert_eq!(again.body["prepay_id"], p1.as_str());
    assert_eq!(again.body["prepay_expires_at"], rfc3339_cst(t0 + 7200));
    // Past those two hours: a new id, with a new lifetime, reported as such.
    at(7200 + 300).await;
    let later = h.create("one-day", &body).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 3);
    assert_ne!(later.body["prepay_id"], p1.as_str(), "{}", later.body);
    assert_eq!(
        later.body["prepay_expires_at"],
        rfc3339_cst(clock.now() + 7200)
    );
}

/// Default sub-order numbers are `{combine_out_trade_no}-{i+1}`: a number
/// too long for them is refused at request time, naming the field.
async fn long_numbers_need_sub_order_numbers(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let with_no = |no: &str, sub_numbers: bool| {
        let mut b = h.order_body(Some(&h.alice), [100, 200]);
        b["combine_out_trade_no"] = json!(no);
        if sub_numbers {
            b["sub_orders"][0]["out_trade_no"] = json!(format!("{}A", &no[..no.len() - 1]));
            b["sub_orders"][1]["out_trade_no"] = json!(format!("{}B", &no[..no.len() - 1]));
        }
        b
    };
    for len in [31, 32] {
        let no = format!("L{}", "x".repeat(len - 1));
        let a = h.create(&format!("long-{len}"), &with_no(&no, false)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{len}: {}", a.body);
        assert_eq!(a.body["field"], "combine_out_trade_no", "{}", a.body);
        assert!(h.kit.store.get_order(&no).await.unwrap().is_none());
        // With its own sub-order numbers it is fine.
        let a = h
            .create(&format!("long-{len}-own"), &with_no(&no, true))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{len}: {}", a.body);
    }
    // 30 characters + "-2" fit.
    let no = format!("M{}", "y".repeat(29));
    let a = h.create("long-30", &with_no(&no, false)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["sub_orders"][1]["out_trade_no"], format!("{no}-2"));
}

/// Pay-link tokens have a key of their own: a new API token leaves open
/// links as they were.
async fn pay_links_survive_a_token_rotation(db: &TestDb) {
    const NEW_TOKEN: &str = "rotated-internal-token-0123456789abcdef";
    let h = harness(db, |_| {}).await;
    let created = h.create("link-rot", &h.order_body(None, [100, 200])).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let no = order_no(&created.body);
    let mut config = h.config.clone();
    config.internal.as_mut().unwrap().token = SecretString::from(NEW_TOKEN);
    let kit = Kit::builder(config)
        .store(db.store.clone())
        .build()
        .await
        .expect("kit builds");
    let path = format!("/internal/combine-orders/{no}");
    let got = send(
        kit.internal_router.as_ref().unwrap(),
        req(Method::GET, &path, Some(NEW_TOKEN), None, None),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    assert_eq!(got.body["pay_link"]["url"], created.body["pay_link"]["url"]);
    // And it claims.
    let claimed = h.claim(&h.alice, &link_token(&got)).await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
}

/// A claimed link whose order was never stored (its creation failed) is
/// awaiting its order, not closed; closing it stops a later claim.
async fn claimed_link_without_an_order(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let created = h.create("link-ao", &h.order_body(None, [100, 200])).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let no = order_no(&created.body);
    let token = link_token(&created);
    let sha = hex::encode(Sha256::digest(token.as_bytes()));
    // The claim committed, then the order's creation failed.
    assert!(matches!(
        db.store
            .claim_pay_link(&sha, &h.alice, h.sim.now())
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let got = h.get(&no).await;
    assert_eq!(got.body["state"], "AWAITING_ORDER", "{}", got.body);
    assert_eq!(got.body["pay_link"]["status"], "claimed");
    let closed = h.close(&no).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["state"], "CLOSED", "{}", closed.body);
    // The payer's next visit does not create the order.
    let again = h.claim(&h.alice, &token).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    assert_eq!(again.body["code"], "PAY_LINK_CLOSED");
    assert!(db.store.get_order(&no).await.unwrap().is_none());
    assert_eq!(h.get(&no).await.body["state"], "CLOSED");
}

async fn pay_link_is_claimed_once(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let body = h.order_body(None, [120, 80]);
    let created = h.create("link-1", &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["state"], "AWAITING_PAYER");
    assert!(created.body.get("payer_openid").is_none());
    let no = order_no(&created.body);
    let token = link_token(&created);
    // A repeat gets the same link.
    let again = h.create("link-1", &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(link_token(&again), token);
    assert_eq!(h.get(&no).await.body["state"], "AWAITING_PAYER");
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 0);

    // The payer claims it after OAuth: the order is created for them and prepaid.
    let claimed = h.claim(&h.alice, &token).await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
    assert_eq!(claimed.body["combine_out_trade_no"], no.as_str());
    assert_eq!(claimed.body["order"]["state"], "NOTPAY");
    let got = h.get(&no).await;
    assert_eq!(got.body["state"], "NOTPAY");
    assert_eq!(got.body["payer_openid"], h.alice.as_str());
    assert_eq!(got.body["pay_link"]["status"], "claimed");
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 1);

    // The same payer again (a reload): the same order. Anyone else: refused.
    let reload = h.claim(&h.alice, &token).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    assert_eq!(reload.body["combine_out_trade_no"], no.as_str());
    let bob = h
        .sim
        .openid(&h.kit.config.wechatpay.appid, "bob")
        .await
        .unwrap();
    let stolen = h.claim(&bob, &token).await;
    assert_eq!(stolen.status, StatusCode::CONFLICT, "{}", stolen.body);
    assert_eq!(stolen.body["code"], "PAY_LINK_USED");
    assert_eq!(h.sim.prepay_calls(&no).await.unwrap(), 1);
    let unknown = h
        .claim(&bob, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["code"], "PAY_LINK_NOT_FOUND");

    // A link closed before anyone claims it cannot be claimed.
    let second = h.create("link-2", &h.order_body(None, [10, 20])).await;
    let no2 = order_no(&second.body);
    let token2 = link_token(&second);
    let closed = h.close(&no2).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["state"], "CLOSED");
    let late = h.claim(&h.alice, &token2).await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);
    assert_eq!(late.body["code"], "PAY_LINK_CLOSED");

    // Only the token's hash is stored, and an expired link is refused.
    let third = h.create("link-3", &h.order_body(None, [11, 22])).await;
    let sha = hex::encode(Sha256::digest(link_token(&third).as_bytes()));
    let far = h.sim.now() + 2 * 3600;
    assert_eq!(
        h.kit
            .store
            .claim_pay_link(&sha, &h.alice, far)
            .await
            .unwrap(),
        ClaimOutcome::Expired
    );
    let raw = h
        .kit
        .store
        .claim_pay_link(&link_token(&third), &h.alice, h.sim.now())
        .await
        .unwrap();
    assert_eq!(
        raw,
        ClaimOutcome::Unknown,
        "the plain token is not a stored key"
    );
}

async fn listeners(db: &TestDb) {
    // Default: the public router does not serve /internal.
    let h = harness(db, |_| {}).await;
    let a = send(&h.kit.router, get_unknown(Some(TOKEN))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_ne!(
        a.body["code"], "NOT_FOUND",
        "the public 404 is not the internal API's"
    );
    drop(h);

    // Opt-in: mounted on the public listener, still behind the token.
    let h = harness(db, |c| c.on_public_listener = true).await;
    let a = send(&h.kit.router, get_unknown(Some(TOKEN))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["code"], "NOT_FOUND");
    let anon = send(&h.kit.router, get_unknown(None)).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    drop(h);

    // Its own listener, run by the kit's workers.
    let mut h = harness(db, |c| c.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let addr = h.kit.internal_addr.expect("internal listener bound");
    assert!(h.kit.workers.names().contains(&"internal-listener"));
    let workers = std::mem::take(&mut h.kit.workers);
    let running = workers.start();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{UNKNOWN_ORDER}");
    let anon = client.get(&url).send().await.unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    let authed = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(authed.status().as_u16(), 404);
    running.stop(std::time::Duration::from_secs(10)).await;
    assert!(
        client.get(&url).send().await.is_err(),
        "the listener stopped with the workers"
    );
    drop(h);
}

/// Refunds through the API: one sub-order, by its own merchant; the same
/// key answers the same refund; rules answer 422 with their code and store
/// nothing; the refund is readable alone and under its sub-order.
async fn refunds_through_the_api(db: &TestDb) {
    use wxpay_combine::apiv3::JsapiPayParams;
    use wxpay_combine::combine::{CombineApi, EventSource};
    let h = harness(db, |_| {}).await;
    let created = h
        .create("refund-order", &h.order_body(Some(&h.alice), [1000, 2000]))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let no = order_no(&created.body);
    let refunds = format!("/internal/combine-orders/{no}/refunds");
    let sub = created.body["sub_orders"][1]["out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"out_trade_no": sub, "amount": 1200, "reason": "退货"}).to_string();

    // Not paid yet: refused with the rule's code, nothing stored.
    let unpaid = h
        .call(Method::POST, &refunds, Some("rk-0"), Some(&body))
        .await;
    assert_eq!(
        unpaid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unpaid.body
    );
    assert_eq!(unpaid.body["code"], "SUB_ORDER_NOT_PAID");

    let params: JsapiPayParams =
        serde_json::from_value(created.body["pay_params"].clone()).unwrap();
    let paid = h.sim.pay(&params).await;
    assert_eq!(paid.err_msg, "get_brand_wcpay_request:ok", "{paid:?}");
    // No server listens for the notification here: take the query's word.
    let txn = h.kit.client.query(&no).await.unwrap();
    wxpay_combine::payment::apply_transaction(
        &*h.kit.store,
        &txn,
        EventSource::Query,
        None,
        h.sim.now(),
    )
    .await
    .unwrap();

    let missing_key = h.call(Method::POST, &refunds, None, Some(&body)).await;
    assert_eq!(
        missing_key.status,
        StatusCode::BAD_REQUEST,
        "{}",
        missing_key.body
    );
    let typo = json!({"out_trade_no": sub, "amount": 1, "reson": "x"}).to_string();
    let typo = h
        .call(Method::POST, &refunds, Some("rk-typo"), Some(&typo))
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST, "{}", typo.body);

    let first = h
        .call(Method::POST, &refunds, Some("rk-1"), Some(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let out_refund_no = first.body["out_refund_no"].as_str().unwrap().to_string();
    assert_eq!(first.body["amount"], 1200);
    assert_eq!(first.body["out_trade_no"], json!(sub));
    assert_eq!(first.body["mchid"], json!(h.subs[1]));
    assert_eq!(first.body["status"], "PROCESSING");

    let again = h
        .call(Method::POST, &refunds, Some("rk-1"), Some(&body))
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body["out_refund_no"], json!(out_refund_no));
    let other = json!({"out_trade_no": sub, "amount": 1100}).to_string();
    let reused = h
        .call(Method::POST, &refunds, Some("rk-1"), Some(&other))
        .await;
    assert_eq!(reused.status, StatusCode::CONFLICT, "{}", reused.body);
    assert_eq!(reused.body["code"], "IDEMPOTENCY_KEY_REUSED");
    let over = h
        .call(Method::POST, &refunds, Some("rk-2"), Some(&body))
        .await;
    assert_eq!(
        over.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        over.body
    );
    assert_eq!(over.body["code"], "REFUND_EXCEEDS_AMOUNT");
    let unknown = json!({"out_trade_no": "NOPE123456", "amount": 1}).to_string();
    let unknown = h
        .call(Method::POST, &refunds, Some("rk-3"), Some(&unknown))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);

    let read = h
        .call(
            Method::GET,
            &format!("/internal/refunds/{out_refund_no}"),
            None,
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["out_refund_no"], json!(out_refund_no));
    let order = h.get(&no).await;
    assert_eq!(
        order.body["sub_orders"][1]["refunds"][0]["out_refund_no"],
        json!(out_refund_no)
    );
    assert!(
        order.body["sub_orders"][0].get("refunds").is_none(),
        "{}",
        order.body
    );
    assert_eq!(h.kit.store.refunds_of_order(&no).await.unwrap().len(), 1);
    let nothing = h
        .call(Method::GET, "/internal/refunds/RF0000", None, None)
        .await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
}

/// WeChat Pay allows several sub-orders of one merchant, and the initiator
/// as a participant: so does the API, and the simulator accepts the order.
async fn one_merchant_twice_and_the_initiator(db: &TestDb) {
    let h = harness(db, |_| {}).await;
    let initiator = h.sim.merchant().mchid.clone();
    let body = json!({
        "payer_openid": h.alice,
        "sub_orders": [
            {"mchid": h.subs[0], "description": "Tea", "amount": 100},
            {"mchid": h.subs[0], "description": "Cups", "amount": 200},
            {"mchid": initiator, "description": "Delivery", "amount": 300},
        ]
    });
    let created = h.create("same-merchant", &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(
        created.body["pay_params"]["paySign"].is_string(),
        "{}",
        created.body
    );
    let mchids: Vec<&str> = created.body["sub_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mchid"].as_str().unwrap())
        .collect();
    assert_eq!(
        mchids,
        [h.subs[0].as_str(), h.subs[0].as_str(), initiator.as_str()]
    );
}

backend_tests!(
    one_merchant_twice_and_the_initiator,
    refunds_through_the_api,
    auth_is_required,
    validation_names_the_field,
    same_key_same_body_is_one_order,
    get_and_close,
    pay_link_is_claimed_once,
    listeners,
    unsigned_close_refusal_changes_nothing,
    repeated_prepay_keeps_the_first_expiry,
    long_numbers_need_sub_order_numbers,
    pay_links_survive_a_token_rotation,
    claimed_link_without_an_order,
);

#[tokio::test]
async fn configuration_is_checked() {
    let dir = std::env::temp_dir().join(format!(
        "wxpay-internal-cfg-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut opts = DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    let demo = app::prepare_demo(&opts).await.expect("demo prepares");
    let token_file = dir.join("internal.token");
    // The demo turns the internal API on; start from its file without it.
    let text = std::fs::read_to_string(&demo.config_path).unwrap();
    let mut raw = wxpay_combine::config::RawConfig::parse(&text, "demo", &|_| None).unwrap();
    raw.internal_token_file = None;
    raw.internal_listen = None;
    let base = dir.join("wxpay-no-internal.toml");
    std::fs::write(&base, raw.to_toml()).unwrap();
    let load = |vars: &[(&str, String)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        wxpay_combine::config::Config::load_with_env(&base, &move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    };
    // Off by default.
    assert!(load(&[]).unwrap().internal.is_none());
    // A listener without a token is refused, naming the key.
    let e = load(&[("WXPAY_INTERNAL_LISTEN", "127.0.0.1:0".into())]).unwrap_err();
    assert!(
        e.0.iter().any(|e| e.key() == Some("internal_token_file")),
        "{e}"
    );
    // A short token is refused.
    std::fs::write(&token_file, "short").unwrap();
    let file = token_file.display().to_string();
    let e = load(&[("WXPAY_INTERNAL_TOKEN_FILE", file.clone())]).unwrap_err();
    assert!(
        e.0.iter().any(|e| e.key() == Some("internal_token_file")),
        "{e}"
    );
    // A good one, trimmed; not on the public listener unless asked.
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let c = load(&[
        ("WXPAY_INTERNAL_TOKEN_FILE", file.clone()),
        ("WXPAY_INTERNAL_LISTEN", "127.0.0.1:0".into()),
    ])
    .unwrap();
    let i = c.internal.expect("internal API on");
    assert_eq!(i.token.expose_secret(), TOKEN);
    assert!(!i.on_public_listener);
    assert_eq!(i.pay_link_ttl_secs, 3600);
    let e = load(&[
        ("WXPAY_INTERNAL_TOKEN_FILE", file),
        ("WXPAY_PAY_LINK_TTL_SECS", "5".into()),
    ])
    .unwrap_err();
    assert!(
        e.0.iter().any(|e| e.key() == Some("pay_link_ttl_secs")),
        "{e}"
    );
    demo.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
