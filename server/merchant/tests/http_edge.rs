//! The listeners' edge, with raw TCP sockets (a client library would hide
//! what is tested): slow and idle connections are dropped within the
//! header-read and keep-alive timeouts, a capped listener still answers a
//! normal client once a slot frees, and a connection stays usable after a
//! route refuses a POST before reading its late-arriving body.
//!
//! `cargo test -p wxpay-combine --test http_edge -- --nocapture` prints the
//! figures recorded in docs/operations.md.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use async_trait::async_trait;
use axum::Router;
use secrecy::{SecretSlice, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wxpay_combine::apiv3::{ManualClock, PrivateKey};
use wxpay_combine::catalog::{Catalog, ItemSpec, Merchant};
use wxpay_combine::combine::wire::{CloseRequest, CombineTransaction, PrepayRequest};
use wxpay_combine::combine::{ApiError, CombineApi};
use wxpay_combine::http::internal::{self, InternalApi};
use wxpay_combine::http::internal_settings::InternalApiConfig;
use wxpay_combine::http::limits::LimitSettings;
use wxpay_combine::http::listener::{self, ConnectionSettings};
use wxpay_combine::http::{
    app, AppState, HttpSettings, OAuthClient, OAuthExchangeError, OAuthIdentity, OrderPolicy,
};
use wxpay_combine::metrics::metrics;
use wxpay_combine::store;

const OWN_ORIGIN: &str = "https://shop.example";
const TOKEN: &str = "edge-test-internal-token-0123456789";

struct NoApi;

#[async_trait]
impl CombineApi for NoApi {
    async fn prepay(&self, _: &PrepayRequest) -> Result<String, ApiError> {
        Err(ApiError::Transport {
            endpoint: "test",
            detail: "not in this test".into(),
        })
    }
    async fn query(&self, _: &str) -> Result<CombineTransaction, ApiError> {
        Err(ApiError::Transport {
            endpoint: "test",
            detail: "not in this test".into(),
        })
    }
    async fn close(&self, _: &str, _: &CloseRequest) -> Result<(), ApiError> {
        Err(ApiError::Transport {
            endpoint: "test",
            detail: "not in this test".into(),
        })
    }
}

struct NoOAuth;

#[async_trait]
impl OAuthClient for NoOAuth {
    async fn exchange_code(&self, _: &str) -> Result<OAuthIdentity, OAuthExchangeError> {
        Err(OAuthExchangeError::Transport("not in this test".into()))
    }
}

/// The public app and the internal API, as `serve` mounts them.
struct Apps {
    public: Router,
    internal: Router,
    dir: PathBuf,
}

impl Drop for Apps {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn apps() -> Apps {
    let dir = std::env::temp_dir().join(format!("wxpay-edge-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "<!doctype html>").unwrap();
    let store = store::connect(&format!("sqlite:{}", dir.join("orders.db").display()))
        .await
        .unwrap();
    let key = PrivateKey::from_pem(&common::fixture_text("merchant_key.pem")).unwrap();
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
        demo: false,
        simulator_base_url: None,
        session_secret: SecretSlice::from(vec![7u8; 32]),
        secure_cookies: true,
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
    let state = AppState::new(
        settings,
        store,
        Arc::new(NoApi),
        Arc::new(NoOAuth),
        Arc::new(catalog),
        key,
        Arc::new(ManualClock::new(1_714_536_000)),
    )
    .with_limits(LimitSettings::default());
    let config = InternalApiConfig {
        token: SecretString::from(TOKEN),
        listen: None,
        on_public_listener: false,
        pay_link_ttl_secs: 3600,
    };
    let internal = internal::router(InternalApi::new(
        state.clone(),
        &config,
        b"http-edge-session-secret-0123456789abcdef",
        format!("{OWN_ORIGIN}/pay/"),
    ));
    Apps {
        public: app(state),
        internal,
        dir,
    }
}

/// A listener serving `router` with `settings` until the token is cancelled.
async fn start(
    router: Router,
    settings: ConnectionSettings,
    name: &'static str,
) -> (std::net::SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(listener::serve(l, router, settings, name, stop.clone()));
    (addr, stop)
}

fn settings(header_secs: u64, idle_secs: u64, max: usize) -> ConnectionSettings {
    ConnectionSettings {
        header_read_timeout: Duration::from_secs(header_secs),
        keep_alive_idle: Duration::from_secs(idle_secs),
        max_connections: max,
        ..ConnectionSettings::default()
    }
}

/// Waits until the server closes `s` (EOF or reset) and returns how long
/// that took and any bytes it sent first; panics after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((t0 + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (t0.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one answer (head and a `Content-Length` body); `None` when the
/// connection closes before a complete head.
async fn read_answer(s: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            Ok(_) => return None,
            Err(_) => panic!("no answer within 10 s: {}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let a = Answer { status, headers };
    let len: usize = a
        .header("content-length")
        .map(|v| v.parse().unwrap())
        .expect("answers here carry Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    Some(a)
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_header_timeout() {
    let apps = apps().await;
    let (addr, stop) = start(apps.public.clone(), settings(1, 10, 16), "edge_silent").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (took, got) = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(got.is_empty(), "no answer to nothing");
    assert!(
        took >= Duration::from_millis(900),
        "dropped too early: {took:?}"
    );
    println!("figure: silent connection dropped after {took:?} (header_read_timeout 1 s)");
    assert!(metrics().connections_dropped("header_timeout") >= 1);
    stop.cancel();
}

#[tokio::test]
async fn a_client_trickling_header_lines_is_dropped_within_the_header_timeout() {
    let apps = apps().await;
    let (addr, stop) = start(apps.public.clone(), settings(3, 10, 16), "edge_trickle").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // One header line a second: never a complete head.
    let mut closed_after = None;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = format!("X-Slow-{i}: {i}\r\n");
        if s.write_all(line.as_bytes()).await.is_err() {
            closed_after = Some(t0.elapsed());
            break;
        }
        let mut b = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "no answer to a partial head");
            closed_after = Some(t0.elapsed());
            break;
        }
    }
    let took = closed_after.expect("the trickling client was never dropped");
    assert!(
        took < Duration::from_millis(4500),
        "dropped after {took:?}, header_read_timeout is 3 s"
    );
    println!("figure: client sending one header line a second dropped after {took:?} (header_read_timeout 3 s)");
    stop.cancel();
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let apps = apps().await;
    let (addr, stop) = start(apps.public.clone(), settings(5, 1, 16), "edge_idle").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s).await.unwrap();
    assert_eq!(a.status, 200);
    assert!(!a.closes(), "kept alive");
    // A second request within the idle time works.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().status, 200);
    let (took, got) = closed_within(&mut s, Duration::from_secs(4)).await;
    assert!(got.is_empty());
    // Closed after the 1 s idle timeout, not the 5 s header timeout.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    println!("figure: idle kept-alive connection closed after {took:?} (keep_alive_idle 1 s)");
    assert!(metrics().connections_dropped("idle_timeout") >= 1);
    stop.cancel();
}

#[tokio::test]
async fn a_capped_listener_answers_a_normal_client_once_a_slot_frees() {
    let apps = apps().await;
    let cap = 64;
    let (addr, stop) = start(apps.public.clone(), settings(2, 10, cap), "edge_cap").await;
    // Many more silent connections than the cap: the kernel accepts them
    // into the backlog, the server holds at most `cap`.
    let mut silent = Vec::new();
    for _ in 0..(cap * 3) {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = metrics().connections_open("edge_cap");
    assert_eq!(held, cap as i64, "connections held at the cap");
    // A normal client, queued behind them, is answered once slots free.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s).await.expect("answered");
    let waited = t0.elapsed();
    assert_eq!(a.status, 200);
    // Three rounds of silent connections before it, 2 s each.
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    assert!(
        metrics().connections_open("edge_cap") <= cap as i64,
        "never more than the cap"
    );
    println!(
        "figure: {} silent connections against max_connections {cap}: {held} held; a normal client queued behind them answered after {waited:?} (header_read_timeout 2 s)",
        cap * 3
    );
    drop(silent);
    stop.cancel();
}

/// How a route refuses before reading the body.
struct Case {
    what: &'static str,
    head: String,
    body: Vec<u8>,
    status: u16,
}

fn post(path: &str, extra: &str, body: &[u8]) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
}

fn cases(internal: bool) -> Vec<Case> {
    let json = br#"{"items":[{"sku":"book","qty":1}]}"#.to_vec();
    let same = format!("Origin: {OWN_ORIGIN}\r\n");
    let big = vec![b'x'; 70 * 1024];
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let case = |what, path: &str, extra: &str, body: &Vec<u8>, status| Case {
        what,
        head: post(path, extra, body),
        body: body.clone(),
        status,
    };
    if internal {
        return vec![
            case(
                "internal: no token",
                "/internal/combine-orders",
                "",
                &json,
                401,
            ),
            case(
                "internal: wrong token",
                "/internal/combine-orders",
                "Authorization: Bearer nope\r\n",
                &json,
                401,
            ),
            case(
                "internal: too large",
                "/internal/combine-orders",
                &bearer,
                &big,
                413,
            ),
            case(
                "internal: no such route",
                "/internal/nope",
                &bearer,
                &json,
                404,
            ),
        ];
    }
    vec![
        case(
            "create without a session",
            "/api/combine-orders",
            &same,
            &json,
            401,
        ),
        case(
            "create cross-site",
            "/api/combine-orders",
            "Origin: https://evil.example\r\n",
            &json,
            403,
        ),
        case(
            "pay params without a session",
            "/api/combine-orders/C1/pay-params",
            &same,
            &json,
            401,
        ),
        case(
            "close without a session",
            "/api/combine-orders/C1/close",
            &same,
            &json,
            401,
        ),
        case(
            "claim without a session",
            "/api/pay-links/claim",
            &same,
            &json,
            401,
        ),
        case("unknown API route", "/api/nope", &same, &json, 404),
        case("unknown page", "/nope", &same, &json, 404),
        case("POST to a GET API route", "/api/catalog", &same, &json, 405),
        case("POST to health", "/healthz", "", &json, 405),
        case("POST to oauth", "/oauth/start", "", &json, 405),
        case("POST to the page", "/pay/", "", &json, 405),
        case("body too large", "/api/combine-orders", &same, &big, 413),
    ]
}

/// Headers, 50 ms, body, answer; then a second request on the same socket
/// must be answered, unless the first answer said `Connection: close` and
/// the server then closed cleanly.
async fn early_answer_keeps_the_connection_usable(addr: std::net::SocketAddr, c: &Case) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(c.head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The server may already have closed (after Connection: close).
    let _ = s.write_all(&c.body).await;
    let a = read_answer(&mut s)
        .await
        .unwrap_or_else(|| panic!("{}: no answer", c.what));
    assert_eq!(a.status, c.status, "{}", c.what);
    if a.closes() {
        let (_, rest) = closed_within(&mut s, Duration::from_secs(3)).await;
        assert!(rest.is_empty(), "{}: bytes after a closing answer", c.what);
        return;
    }
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{}: connection gone without Connection: close: {e}", c.what));
    let second = read_answer(&mut s).await.unwrap_or_else(|| {
        panic!(
            "{}: the connection was closed without Connection: close",
            c.what
        )
    });
    // `/healthz` on the public app; the internal router answers it 401.
    assert!(
        matches!(second.status, 200 | 401),
        "{}: second answer {}",
        c.what,
        second.status
    );
}

#[tokio::test]
async fn early_answers_to_late_bodies_keep_the_connection_usable() {
    let apps = apps().await;
    let (public, stop) = start(apps.public.clone(), settings(5, 10, 64), "edge_early").await;
    let mut kept = 0;
    for c in cases(false) {
        early_answer_keeps_the_connection_usable(public, &c).await;
        kept += 1;
    }
    assert_eq!(kept, cases(false).len());
    stop.cancel();
}

#[tokio::test]
async fn internal_api_early_answers_to_late_bodies_keep_the_connection_usable() {
    let apps = apps().await;
    let (internal, stop) = start(apps.internal.clone(), settings(5, 10, 64), "edge_internal").await;
    for c in cases(true) {
        early_answer_keeps_the_connection_usable(internal, &c).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn a_bounded_late_body_is_drained_and_the_connection_kept() {
    let apps = apps().await;
    let (addr, stop) = start(apps.public.clone(), settings(5, 10, 64), "edge_drain").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = br#"{"items":[{"sku":"book","qty":1}]}"#;
    s.write_all(
        post(
            "/api/combine-orders",
            &format!("Origin: {OWN_ORIGIN}\r\n"),
            body,
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(body).await.unwrap();
    let a = read_answer(&mut s).await.unwrap();
    assert_eq!(a.status, 401);
    // Drained, not closed: the connection is kept.
    assert!(!a.closes(), "a small late body is drained: {:?}", a.headers);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().status, 200);
    stop.cancel();
}
