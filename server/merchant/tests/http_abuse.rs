//! Abuse limits of the public routes, in process (`app()` driven with
//! `oneshot`, the peer address set as axum's `ConnectInfo`): rate limits per
//! IP and per session (429 + Retry-After), body size (413), CORS closed by
//! default and open to listed origins, cookie flags, and a cross-site form
//! POST that cannot create an order.

#[path = "../../core/tests/common/mod.rs"]
mod common;
mod support;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use base64::Engine as _;
use http::{header, Method, Request, StatusCode};
use secrecy::SecretSlice;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use support::{oneshot, order_no, session_cookie, Reply};
use wxpay_combine::apiv3::{Clock, ManualClock, PrivateKey};
use wxpay_combine::catalog::{Catalog, ItemSpec, Merchant};
use wxpay_combine::combine::wire::{CloseRequest, CombineTransaction, PrepayRequest};
use wxpay_combine::combine::{ApiError, CombineApi};
use wxpay_combine::http::limits::LimitSettings;
use wxpay_combine::http::session::{CookieSigner, SECURE_SESSION_COOKIE, SESSION_COOKIE};
use wxpay_combine::http::OrderPolicy;
use wxpay_combine::http::{
    app, AppState, HttpSettings, OAuthClient, OAuthExchangeError, OAuthIdentity,
};
use wxpay_combine::store;

const ALICE: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const BOB: &str = "oUpF8uMuAJO_M2pxb1Q9zNjBob00";
const OWN_ORIGIN: &str = "https://shop.example";
const EVIL: &str = "https://evil.example";
const T0: i64 = 1_714_536_000;
const CART: &str = r#"{"items":[{"sku":"book","qty":1},{"sku":"coffee","qty":1}]}"#;

/// Counts prepay calls (one per created order); nothing else is used.
#[derive(Default)]
struct FakeApi {
    prepays: Mutex<usize>,
    closes: Mutex<usize>,
}

#[async_trait]
impl CombineApi for FakeApi {
    async fn prepay(&self, r: &PrepayRequest) -> Result<String, ApiError> {
        *self.prepays.lock().unwrap() += 1;
        Ok(format!("wx{}", r.combine_out_trade_no))
    }
    async fn query(&self, _: &str) -> Result<CombineTransaction, ApiError> {
        Err(ApiError::Service {
            status: 404,
            code: "ORDER_NOT_EXIST".into(),
            message: "fake".into(),
            detail: None,
            request_id: None,
        })
    }
    async fn close(&self, _: &str, _: &CloseRequest) -> Result<(), ApiError> {
        *self.closes.lock().unwrap() += 1;
        Ok(())
    }
}

/// `code-<openid>` → that openid.
/// Counts its code exchanges (each one costs WeChat quota).
#[derive(Default)]
struct FakeOAuth(std::sync::atomic::AtomicUsize);

#[async_trait]
impl OAuthClient for FakeOAuth {
    async fn exchange_code(&self, code: &str) -> Result<OAuthIdentity, OAuthExchangeError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(OAuthIdentity {
            openid: code.trim_start_matches("code-").to_string(),
            is_snapshot_user: false,
        })
    }
}

struct Harness {
    app: Router,
    oauth: Arc<FakeOAuth>,
    clock: Arc<ManualClock>,
    api: Arc<FakeApi>,
    cookies: CookieSigner,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn harness(demo: bool, limits: LimitSettings) -> Harness {
    let dir = std::env::temp_dir().join(format!("wxpay-abuse-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let store = store::connect(&format!("sqlite:{}", dir.join("orders.db").display()))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let key = PrivateKey::from_pem(&common::fixture_text("merchant_key.pem")).unwrap();
    let secret = SecretSlice::from(vec![42u8; 32]);
    let settings = HttpSettings {
        appid: "wxd678efh567hg6787".into(),
        mchid: "1230000109".into(),
        notify_url: format!("{OWN_ORIGIN}/wxpay/notify"),
        pay_directory: "/pay/".into(),
        oauth_authorize_url: "https://open.weixin.qq.com/connect/oauth2/authorize"
            .parse()
            .unwrap(),
        oauth_redirect_uri: format!("{OWN_ORIGIN}/oauth/callback"),
        www_dir: dir.join("www"),
        wasm_pkg_dir: None,
        demo,
        simulator_base_url: None,
        session_secret: secret.clone(),
        secure_cookies: !demo,
        session_ttl_secs: 7200,
        orders: OrderPolicy::default(),
    };
    let catalog = Catalog::new(
        vec![
            Merchant {
                mchid: "1900000101".into(),
                name: "Books".into(),
            },
            Merchant {
                mchid: "1900000102".into(),
                name: "Coffee".into(),
            },
        ],
        vec![
            ItemSpec::new("book", "Book", 2380, "1900000101"),
            ItemSpec::new("coffee", "Coffee", 1800, "1900000102"),
        ],
    )
    .unwrap();
    let api = Arc::new(FakeApi::default());
    let oauth = Arc::new(FakeOAuth::default());
    let state = AppState::new(
        settings,
        store,
        api.clone(),
        oauth.clone(),
        Arc::new(catalog),
        key,
        clock.clone(),
    )
    .with_limits(limits);
    Harness {
        app: app(state),
        oauth,
        clock,
        api,
        cookies: CookieSigner::new(secret, !demo),
        dir,
    }
}

/// A request being built.
struct Req {
    builder: http::request::Builder,
    peer: SocketAddr,
}

impl Harness {
    fn session(&self, openid: &str) -> String {
        session_cookie(&self.cookies, openid, self.clock.now())
    }

    fn req(&self, method: Method, uri: &str, peer: &str) -> Req {
        Req {
            builder: Request::builder().method(method).uri(uri),
            peer: format!("{peer}:40000").parse().unwrap(),
        }
    }

    async fn send(&self, r: Req, body: impl Into<Body>) -> Reply {
        let mut req = r.builder.body(body.into()).unwrap();
        req.extensions_mut().insert(ConnectInfo(r.peer));
        oneshot(&self.app, req).await
    }

    /// `POST /api/combine-orders` as `openid` from `peer`, same-origin JSON.
    async fn create(&self, openid: &str, peer: &str) -> Reply {
        let r = self.req(Method::POST, "/api/combine-orders", peer);
        let r = Req {
            builder: r
                .builder
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ORIGIN, OWN_ORIGIN)
                .header(header::COOKIE, self.session(openid)),
            ..r
        };
        self.send(r, CART).await
    }

    fn prepays(&self) -> usize {
        *self.api.prepays.lock().unwrap()
    }
}

fn assert_rate_limited(r: &Reply) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.json()["code"], "RATE_LIMITED");
}

fn limits() -> LimitSettings {
    LimitSettings::default()
}

#[tokio::test]
async fn per_ip_rate_limit_on_order_creation() {
    let h = harness(
        false,
        LimitSettings {
            ip_per_minute: 3,
            ..limits()
        },
    )
    .await;
    // Three payers behind one address share its budget.
    for openid in [ALICE, BOB, ALICE] {
        let r = h.create(openid, "203.0.113.7").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    }
    assert_rate_limited(&h.create(BOB, "203.0.113.7").await);
    assert_eq!(h.prepays(), 3, "the refused request did no work");
    // Another address has its own budget.
    assert_eq!(
        h.create(BOB, "203.0.113.8").await.status,
        StatusCode::CREATED
    );
    // X-Forwarded-For from a peer that is not a trusted proxy is ignored.
    let r = h.req(Method::POST, "/api/combine-orders", "203.0.113.7");
    let r = Req {
        builder: r
            .builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::COOKIE, h.session(BOB))
            .header("x-forwarded-for", "198.51.100.1"),
        ..r
    };
    assert_rate_limited(&h.send(r, CART).await);
}

#[tokio::test]
async fn oauth_routes_are_rate_limited_per_ip() {
    let h = harness(
        false,
        LimitSettings {
            ip_per_minute: 3,
            ..limits()
        },
    )
    .await;
    // A real login (start + callback) and one bogus callback use the budget.
    login_cookies(&h).await;
    assert_eq!(h.oauth.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let bogus = |ip: &'static str| h.req(Method::GET, "/oauth/callback?code=c&state=s", ip);
    assert_eq!(
        h.send(bogus("203.0.113.1"), "").await.status,
        StatusCode::BAD_REQUEST
    );
    // Then everything under /oauth/ from that address is refused early.
    for _ in 0..20 {
        assert_rate_limited(&h.send(bogus("203.0.113.1"), "").await);
    }
    let start = h.req(Method::GET, "/oauth/start", "203.0.113.1");
    assert_rate_limited(&h.send(start, "").await);
    assert_eq!(
        h.oauth.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no refused request reached WeChat"
    );
    // Another address is not affected.
    assert_eq!(
        h.send(bogus("203.0.113.2"), "").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn forwarded_for_counts_behind_a_trusted_proxy() {
    let h = harness(
        false,
        LimitSettings {
            ip_per_minute: 1,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..limits()
        },
    )
    .await;
    let via_proxy = |client: &'static str| {
        let r = h.req(Method::POST, "/api/combine-orders", "10.1.2.3");
        Req {
            builder: r
                .builder
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::COOKIE, h.session(ALICE))
                .header("x-forwarded-for", client),
            ..r
        }
    };
    assert_eq!(
        h.send(via_proxy("198.51.100.1"), CART).await.status,
        StatusCode::CREATED
    );
    assert_rate_limited(&h.send(via_proxy("198.51.100.1"), CART).await);
    // Another client behind the same proxy is not affected.
    assert_eq!(
        h.send(via_proxy("198.51.100.2"), CART).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn per_session_rate_limit_covers_creation_and_pay_params() {
    let h = harness(
        false,
        LimitSettings {
            session_per_minute: 3,
            ..limits()
        },
    )
    .await;
    let created = h.create(ALICE, "203.0.113.1").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let no = order_no(&created.json());
    let pay_params = |peer: &'static str| {
        let r = h.req(
            Method::POST,
            &format!("/api/combine-orders/{no}/pay-params"),
            peer,
        );
        Req {
            builder: r
                .builder
                .header(header::ORIGIN, OWN_ORIGIN)
                .header(header::COOKIE, h.session(ALICE)),
            ..r
        }
    };
    // A new address does not reset the payer's budget.
    assert_eq!(
        h.send(pay_params("203.0.113.2"), "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.send(pay_params("203.0.113.3"), "").await.status,
        StatusCode::OK
    );
    assert_rate_limited(&h.send(pay_params("203.0.113.4"), "").await);
    assert_rate_limited(&h.create(ALICE, "203.0.113.5").await);
    // Another payer is not affected; reading the order is not limited.
    assert_eq!(
        h.create(BOB, "203.0.113.5").await.status,
        StatusCode::CREATED
    );
    let r = h.req(
        Method::GET,
        &format!("/api/combine-orders/{no}"),
        "203.0.113.1",
    );
    let r = Req {
        builder: r.builder.header(header::COOKIE, h.session(ALICE)),
        ..r
    };
    assert_eq!(h.send(r, "").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_payers_close_is_rate_limited() {
    let h = harness(
        false,
        LimitSettings {
            session_per_minute: 2,
            ..limits()
        },
    )
    .await;
    let created = h.create(ALICE, "203.0.113.1").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let no = order_no(&created.json());
    // Past the minimum age, so a close reaches WeChat Pay.
    h.clock.advance(600);
    let close = || {
        let r = h.req(
            Method::POST,
            &format!("/api/combine-orders/{no}/close"),
            "203.0.113.1",
        );
        Req {
            builder: r
                .builder
                .header(header::ORIGIN, OWN_ORIGIN)
                .header(header::COOKIE, h.session(ALICE)),
            ..r
        }
    };
    let first = h.send(close(), "").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(*h.api.closes.lock().unwrap(), 1);
    // The payer's budget (creation + close) is spent.
    assert_rate_limited(&h.send(close(), "").await);
    assert_eq!(*h.api.closes.lock().unwrap(), 1, "no call to WeChat Pay");
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_64() {
    let h = harness(
        false,
        LimitSettings {
            ip_per_minute: 1,
            ..limits()
        },
    )
    .await;
    assert_eq!(
        h.create(ALICE, "[2001:db8:1:2::1]").await.status,
        StatusCode::CREATED
    );
    // Another address of the same /64: the same client.
    assert_rate_limited(&h.create(BOB, "[2001:db8:1:2:ffff:ffff:ffff:fffe]").await);
    // The next /64 is another client.
    assert_eq!(
        h.create(BOB, "[2001:db8:1:3::1]").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn one_bad_forwarded_entry_does_not_discard_the_chain() {
    let h = harness(
        false,
        LimitSettings {
            ip_per_minute: 1,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..limits()
        },
    )
    .await;
    let via_proxy = |chain: &'static str| {
        let r = h.req(Method::POST, "/api/combine-orders", "10.1.2.3");
        Req {
            builder: r
                .builder
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ORIGIN, OWN_ORIGIN)
                .header(header::COOKIE, h.session(ALICE))
                .header("x-forwarded-for", chain),
            ..r
        }
    };
    // Garbage left of the client, a port, a second proxy: still per client.
    assert_eq!(
        h.send(via_proxy("unknown, 198.51.100.1:5000, 10.0.0.9"), CART)
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.send(via_proxy("garbage, 198.51.100.2, 10.0.0.9"), CART)
            .await
            .status,
        StatusCode::CREATED,
        "another client is not in the proxy's bucket"
    );
    assert_rate_limited(&h.send(via_proxy("x, 198.51.100.1"), CART).await);
}

#[tokio::test]
async fn oversized_bodies_are_refused_on_every_route() {
    let h = harness(
        false,
        LimitSettings {
            max_body_bytes: 4096,
            ..limits()
        },
    )
    .await;
    let big = format!(
        r#"{{"items":[{{"sku":"{}","qty":1}}]}}"#,
        "x".repeat(8 * 1024)
    );
    let r = h.req(Method::POST, "/api/combine-orders", "203.0.113.1");
    let r = Req {
        builder: r
            .builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, OWN_ORIGIN)
            .header(header::CONTENT_LENGTH, big.len())
            .header(header::COOKIE, h.session(ALICE)),
        ..r
    };
    let reply = h.send(r, big.clone()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], "BODY_TOO_LARGE");
    // A chunked body (no Content-Length) is cut off while read.
    let r = h.req(Method::POST, "/api/combine-orders", "203.0.113.1");
    let r = Req {
        builder: r
            .builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, OWN_ORIGIN)
            .header(header::COOKIE, h.session(ALICE)),
        ..r
    };
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let reply = h.send(r, Body::from_stream(stream)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Not only the API: the OAuth routes too.
    let r = h.req(Method::GET, "/oauth/start", "203.0.113.1");
    let r = Req {
        builder: r.builder.header(header::CONTENT_LENGTH, 10_000),
        ..r
    };
    assert_eq!(
        h.send(r, vec![b'a'; 10_000]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(h.prepays(), 0);
    // Within the limit, the same route works.
    assert_eq!(
        h.create(ALICE, "203.0.113.1").await.status,
        StatusCode::CREATED
    );
}

async fn preflight(h: &Harness, origin: &str) -> Reply {
    let r = h.req(Method::OPTIONS, "/api/combine-orders", "203.0.113.1");
    let r = Req {
        builder: r
            .builder
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type"),
        ..r
    };
    h.send(r, "").await
}

#[tokio::test]
async fn cors_is_closed_by_default_and_open_to_listed_origins() {
    let closed = harness(false, limits()).await;
    let r = preflight(&closed, EVIL).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);

    let open = harness(
        false,
        LimitSettings {
            cors_allowed_origins: vec!["https://m.shop.example".into()],
            ..limits()
        },
    )
    .await;
    let r = preflight(&open, "https://m.shop.example").await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://m.shop.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .contains("POST"));
    let r = preflight(&open, EVIL).await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The listed origin may also create orders with the payer's cookie.
    let req = open.req(Method::POST, "/api/combine-orders", "203.0.113.1");
    let req = Req {
        builder: req
            .builder
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, "https://m.shop.example")
            .header(header::COOKIE, open.session(ALICE)),
        ..req
    };
    let r = open.send(req, CART).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://m.shop.example")
    );
}

/// The `Set-Cookie` values of the OAuth round trip (login cookie, then the
/// session cookie).
async fn login_cookies(h: &Harness) -> Vec<String> {
    let start = h
        .send(
            h.req(Method::GET, "/oauth/start?return_to=/pay/", "203.0.113.1"),
            "",
        )
        .await;
    let set = start.set_cookies();
    let location = url::Url::parse(start.header("location").expect("redirect")).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.to_string())
        .expect("state");
    let oauth_cookie = set[0].split(';').next().unwrap().to_string();
    let r = h.req(
        Method::GET,
        &format!("/oauth/callback?code=code-{ALICE}&state={state}"),
        "203.0.113.1",
    );
    let r = Req {
        builder: r.builder.header(header::COOKIE, oauth_cookie),
        ..r
    };
    let cb = h.send(r, "").await;
    assert!(cb.status.is_redirection(), "{}", cb.status);
    let mut all = set;
    all.extend(cb.set_cookies());
    all
}

/// The status of `GET /api/session` with `cookie`.
async fn h_session(h: &Harness, cookie: &str) -> StatusCode {
    let r = h.req(Method::GET, "/api/session", "203.0.113.9");
    let r = Req {
        builder: r.builder.header(header::COOKIE, cookie),
        ..r
    };
    h.send(r, "").await.status
}

#[tokio::test]
async fn cookie_flags_outside_and_inside_demo() {
    let prod = harness(false, limits()).await;
    let cookies = login_cookies(&prod).await;
    // Over https: `__Host-` (Secure, Path=/, no Domain), sealed.
    let session = cookies
        .iter()
        .find(|c| c.starts_with(&format!("{SECURE_SESSION_COOKIE}=")) && !c.contains("Max-Age=0"))
        .expect("a __Host- session cookie is set");
    for c in &cookies {
        let attrs: Vec<&str> = c.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"HttpOnly"), "{c}");
        assert!(attrs.contains(&"SameSite=Lax"), "{c}");
        assert!(attrs.contains(&"Secure"), "{c}");
        assert!(!c.to_ascii_lowercase().contains("domain="), "{c}");
    }
    assert!(
        session.split(';').any(|a| a.trim() == "Path=/"),
        "{session}"
    );
    let value = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1;
    assert!(!value.contains(ALICE), "the openid in plain: {value}");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.split('.').next().unwrap())
        .unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&decoded).contains(ALICE),
        "the openid in base64: {value}"
    );
    // The old name is cleared, not set.
    assert!(cookies
        .iter()
        .filter(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .all(|c| c.contains("Max-Age=0")));
    // The sealed session works; a cookie of the former signed format does not.
    let r = h_session(&prod, &format!("{SECURE_SESSION_COOKIE}={value}")).await;
    assert_eq!(r, StatusCode::OK);
    let old = format!(
        "{SECURE_SESSION_COOKIE}={}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"o":"{ALICE}","x":{}}}"#, T0 + 3600)),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 32])
    );
    assert_eq!(h_session(&prod, &old).await, StatusCode::UNAUTHORIZED);

    // Over plain http (the demo): no `Secure`, so no `__Host-` either.
    let demo = harness(true, limits()).await;
    let cookies = login_cookies(&demo).await;
    assert!(cookies
        .iter()
        .any(|c| c.starts_with(&format!("{SESSION_COOKIE}="))));
    assert!(!cookies.iter().any(|c| c.starts_with("__Host-")));
    for c in &cookies {
        let attrs: Vec<&str> = c.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"HttpOnly"), "{c}");
        assert!(attrs.contains(&"SameSite=Lax"), "{c}");
        assert!(!attrs.contains(&"Secure"), "demo runs on plain http: {c}");
    }
}

#[tokio::test]
async fn cross_site_form_post_cannot_create_an_order() {
    let h = harness(false, limits()).await;
    let form = |content_type: &'static str, origin: Option<&'static str>| {
        let r = h.req(Method::POST, "/api/combine-orders", "203.0.113.1");
        let mut b = r
            .builder
            .header(header::CONTENT_TYPE, content_type)
            .header(header::COOKIE, h.session(ALICE));
        b = match origin {
            Some(o) => b.header(header::ORIGIN, o),
            // Some browsers send only a Referer.
            None => b.header(header::REFERER, format!("{EVIL}/shop.html")),
        };
        Req { builder: b, ..r }
    };
    for (ct, origin, body) in [
        (
            "application/x-www-form-urlencoded",
            Some(EVIL),
            "items=book".to_string(),
        ),
        ("text/plain", Some(EVIL), CART.to_string()),
        ("text/plain", None, CART.to_string()),
        // Even a JSON body from another site (not possible from a plain form).
        ("application/json", Some(EVIL), CART.to_string()),
    ] {
        let r = h.send(form(ct, origin), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{ct} {origin:?}");
        assert_eq!(r.json()["code"], "CROSS_ORIGIN_REFUSED");
    }
    // A same-origin text/plain post (what a form would send) is still not
    // JSON: refused.
    let r = h.req(Method::POST, "/api/combine-orders", "203.0.113.1");
    let r = Req {
        builder: r
            .builder
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::ORIGIN, OWN_ORIGIN)
            .header(header::COOKIE, h.session(ALICE)),
        ..r
    };
    assert_eq!(
        h.send(r, CART).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(h.prepays(), 0, "no order was created");
    // The page's own request works.
    assert_eq!(
        h.create(ALICE, "203.0.113.1").await.status,
        StatusCode::CREATED
    );
    assert_eq!(h.prepays(), 1);
}
