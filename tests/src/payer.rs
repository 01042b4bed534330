//! A payer's browser against the merchant server: follows redirects by hand
//! and keeps the merchant's cookies; signs in through the simulator's OAuth
//! pages. Plus the helpers that read the merchant API's answers.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use wxpay_combine::apiv3::JsapiPayParams;

/// A browser: no automatic redirects, the merchant's cookies kept by hand.
pub struct Browser {
    http: reqwest::Client,
    pub base: String,
    cookies: Mutex<HashMap<String, String>>,
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Value,
}

/// An HTTP client for loopback servers: no proxy, no automatic redirects.
pub fn loopback_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: loopback_client().build().unwrap(),
            base: base.to_string(),
            cookies: Mutex::new(HashMap::new()),
        }
    }

    /// A browser on the merchant server at `base`, `user` signed in.
    pub async fn signed_in(base: &str, user: &str) -> Self {
        let b = Self::new(base);
        b.login(user).await;
        b
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Answer {
        let mine = url.starts_with(&self.base);
        let mut req = self.http.request(method, url);
        if mine {
            req = req.header("Cookie", self.cookie_header());
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        if mine {
            for v in resp.headers().get_all("set-cookie") {
                let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
                let (k, val) = pair.split_once('=').unwrap();
                let mut jar = self.cookies.lock().unwrap();
                if val.is_empty() || v.to_str().unwrap().contains("Max-Age=0") {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_string(), val.to_string());
                }
            }
        }
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            location,
            body,
        }
    }

    /// `/oauth/start` → simulator authorize (as `user`) → `/oauth/callback` → the page.
    pub async fn login(&self, user: &str) {
        let a = self
            .send(
                reqwest::Method::GET,
                &format!("{}/oauth/start?return=%2Fpay%2F", self.base),
                None,
            )
            .await;
        assert_eq!(a.status, 302, "{:?}", a.body);
        let authorize = a.location.unwrap();
        assert!(authorize.ends_with("#wechat_redirect"), "{authorize}");
        assert!(
            authorize.contains("&response_type=code&scope=snsapi_base&state="),
            "{authorize}"
        );
        // The fragment stays in the browser; the simulator picks the user by name.
        let authorize =
            authorize.trim_end_matches("#wechat_redirect").to_string() + "&user=" + user;
        let a = self.send(reqwest::Method::GET, &authorize, None).await;
        assert_eq!(a.status, 302, "authorize: {:?}", a.body);
        let callback = a.location.unwrap();
        assert!(
            callback.starts_with(&format!("{}/oauth/callback?", self.base)),
            "{callback}"
        );
        let a = self.send(reqwest::Method::GET, &callback, None).await;
        assert_eq!(a.status, 302, "callback: {:?}", a.body);
        assert_eq!(a.location.as_deref(), Some("/pay/"));
        assert!(self.cookies.lock().unwrap().contains_key("wxpay_session"));
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
        assert_eq!(
            seen.len(),
            merchants,
            "the demo catalog has {merchants} merchants"
        );
        let (status, body) = create_order(self, &Value::Array(items)).await;
        assert_eq!(status, 201, "{body:?}");
        body
    }
}

/// Creates an order of `items` through the public API; `(status, body)`.
pub async fn create_order(b: &Browser, items: &Value) -> (u16, Value) {
    let a = b
        .post("/api/combine-orders", Some(json!({ "items": items })))
        .await;
    (a.status, a.body)
}

/// The demo catalog's items, one of each of the three shops.
pub fn three_shop_items() -> Value {
    json!([
        {"sku": "book-3body", "qty": 1},
        {"sku": "coldbrew", "qty": 2},
        {"sku": "succulent", "qty": 1}
    ])
}

/// The pay params of a create or pay-params answer.
pub fn pay_params(v: &Value) -> JsapiPayParams {
    serde_json::from_value(v["pay_params"].clone())
        .unwrap_or_else(|e| panic!("no pay_params in {v}: {e}"))
}

/// The `prepay_id` inside pay params.
pub fn prepay_id(p: &JsapiPayParams) -> String {
    p.package
        .strip_prefix("prepay_id=")
        .unwrap_or_else(|| panic!("package {:?}", p.package))
        .to_string()
}

/// The order number of an answer.
pub fn order_no(v: &Value) -> String {
    v["combine_out_trade_no"]
        .as_str()
        .unwrap_or_else(|| panic!("no combine_out_trade_no in {v}"))
        .to_string()
}
