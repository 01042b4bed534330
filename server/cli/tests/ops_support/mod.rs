//! Shared by the operations tests (`ops_metrics`, `ops_shutdown`,
//! `logs_no_secrets`): a demo setup (simulator + configuration) in a
//! temporary directory and a "browser" that signs in through the
//! simulator's OAuth pages and keeps the merchant's cookies by hand.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::JsapiPayParams;
use wxpay_combine_cli::app::{self, Demo, DemoOptions};

/// The merchant suites' helpers (order numbers, the hooked store, …).
#[path = "../../../merchant/tests/support/mod.rs"]
pub mod support;
pub use support::order_no;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Demo options for a test: loopback port 0, fast simulator notifications,
/// no reconciliation and no query-on-read unless `tweak` asks.
pub async fn demo(dir: &TempDir, tweak: impl FnOnce(&mut DemoOptions)) -> Demo {
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<!doctype html><title>ops</title>").unwrap();
    let mut opts = DemoOptions::new(dir.path().join("data"));
    opts.addr = "127.0.0.1:0".parse().unwrap();
    opts.www_dir = Some(www);
    opts.time_scale = 0.01;
    opts.query_after_secs = 3600;
    opts.reconcile_interval_secs = 3600;
    opts.reconcile_after_secs = 3600;
    tweak(&mut opts);
    app::prepare_demo(&opts).await.expect("demo prepares")
}

/// A browser: no automatic redirects, the merchant's cookies kept by hand.
pub struct Browser {
    http: reqwest::Client,
    pub base: String,
    pub cookies: Mutex<HashMap<String, String>>,
    /// OAuth codes seen in redirects.
    pub oauth_codes: Mutex<Vec<String>>,
    /// `X-Request-Id` of every answer from the merchant.
    pub request_ids: Mutex<Vec<String>>,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_string(),
            cookies: Mutex::new(HashMap::new()),
            oauth_codes: Mutex::new(Vec::new()),
            request_ids: Mutex::new(Vec::new()),
        }
    }

    pub async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Answer {
        let mine = url.starts_with(&self.base);
        let mut req = self.http.request(method, url);
        if mine {
            let cookie = self
                .cookies
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header("Cookie", cookie);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if mine {
            for v in headers.get_all("set-cookie") {
                let v = v.to_str().unwrap();
                let (k, val) = v.split(';').next().unwrap().split_once('=').unwrap();
                let mut jar = self.cookies.lock().unwrap();
                if val.is_empty() || v.contains("Max-Age=0") {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_string(), val.to_string());
                }
            }
            if let Some(id) = headers.get("x-request-id") {
                self.request_ids
                    .lock()
                    .unwrap()
                    .push(id.to_str().unwrap().to_string());
            }
        }
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        if let Some(code) = location
            .as_deref()
            .and_then(|l| url::Url::parse(l).ok())
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
            })
        {
            self.oauth_codes.lock().unwrap().push(code);
        }
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            location,
            headers,
            body,
        }
    }

    /// `/oauth/start` → simulator authorize (as `user`) → `/oauth/callback`.
    pub async fn login(&self, user: &str) {
        let a = self.get("/oauth/start?return=%2Fpay%2F").await;
        assert_eq!(a.status, 302, "{:?}", a.body);
        let authorize = a.location.unwrap();
        let authorize =
            authorize.trim_end_matches("#wechat_redirect").to_string() + "&user=" + user;
        let a = self.send(reqwest::Method::GET, &authorize, None).await;
        assert_eq!(a.status, 302, "authorize: {:?}", a.body);
        let callback = a.location.unwrap();
        let a = self.send(reqwest::Method::GET, &callback, None).await;
        assert_eq!(a.status, 302, "callback: {:?}", a.body);
        assert!(self.session_cookie().is_some(), "signed in");
    }

    /// The session cookie's value.
    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.lock().unwrap().get("wxpay_session").cloned()
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, &format!("{}{path}", self.base), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Answer {
        self.send(reqwest::Method::POST, &format!("{}{path}", self.base), body)
            .await
    }

    /// Creates an order with one item of each of the first `merchants` shops.
    pub async fn create_order(&self, merchants: usize) -> Value {
        let catalog = self.get("/api/catalog").await.body;
        let mut seen = Vec::new();
        let mut items = Vec::new();
        for item in catalog["items"].as_array().unwrap() {
            let m = item["merchant"]["mchid"].as_str().unwrap().to_string();
            if !seen.contains(&m) && seen.len() < merchants {
                seen.push(m);
                items.push(json!({"sku": item["sku"], "qty": 1}));
            }
        }
        let a = self
            .post("/api/combine-orders", Some(json!({ "items": items })))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body
    }

    /// Polls `GET /api/combine-orders/{no}` until its state is `state`.
    pub async fn wait_state(&self, no: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let a = self.get(&format!("/api/combine-orders/{no}")).await;
            if a.body["state"] == json!(state) {
                return a.body;
            }
            assert!(
                Instant::now() < deadline,
                "order {no} is {:?} after {within:?}, expected {state}",
                a.body["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The pay params of a create or pay-params answer.
pub fn pay_params(v: &Value) -> JsapiPayParams {
    serde_json::from_value(v["pay_params"].clone()).expect("pay_params")
}

/// Waits for `/readyz` to answer 200.
pub async fn wait_ready(base: &str, within: Duration) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{base} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
