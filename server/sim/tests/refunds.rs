//! Refunds per sub-order against a running simulator, driven over HTTP by a
//! client that knows only `DIR/merchant.json`: per-merchant credentials,
//! refund create/query and their refusals, the move to a final status,
//! refund notifications, the combined query and per-merchant bills.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxpay_combine_core::apiv3::{
    ApiV3Key, Clock, EncryptedResource, ManualClock, PrivateKey, PublicKey, RequestSigner,
    SignatureHeaders, SystemClock, Verifier,
};
use wxpay_combine_core::bill::BillKind;
use wxpay_combine_core::refund::wire::RefundNotice;
use wxpay_combine_core::refund::RefundStatus;
use wxpay_combine_sim::{SimHandle, SimOptions, Simulator};

// ---- harness ------------------------------------------------------------

struct Sim {
    sim: SimHandle,
    dir: PathBuf,
    _cleanup: Cleanup,
}

/// Removes the data directory at the end of the test.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start() -> Sim {
    let dir = std::env::temp_dir().join(format!("wxsim-refunds-{}", uuid::Uuid::new_v4()));
    let mut o = SimOptions::new(&dir);
    o.time_scale = 0.01;
    // The bill test asks for today's bill.
    o.bills_ready_immediately = true;
    let sim = Simulator::start(o).await.expect("simulator starts");
    Sim {
        sim,
        _cleanup: Cleanup(dir.clone()),
        dir,
    }
}

/// A merchant client built from `DIR/merchant.json` alone.
struct Client {
    http: reqwest::Client,
    base: String,
    mchid: String,
    signer: RequestSigner,
    wechatpay_key: PublicKey,
    apiv3_key: ApiV3Key,
    key_id: String,
    clock: Arc<dyn Clock>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

fn merchant_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("merchant.json")).unwrap()).unwrap()
}

impl Client {
    /// The client of `mchid` from the `merchants` list of merchant.json.
    fn from_file(dir: &Path, base: &str, mchid: &str) -> Self {
        let file = merchant_json(dir);
        let e = file["merchants"]
            .as_array()
            .expect("merchants list")
            .iter()
            .find(|e| e["mchid"] == mchid)
            .unwrap_or_else(|| panic!("{mchid} listed"))
            .clone();
        let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
        let key = PrivateKey::from_pem_file(dir.join(s("private_key_file"))).unwrap();
        let public = PublicKey::from_pem_file(dir.join(s("wechatpay_public_key_file"))).unwrap();
        let key_id = s("wechatpay_public_key_id");
        Self {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: base.to_string(),
            mchid: mchid.to_string(),
            signer: RequestSigner::new(mchid, s("serial_no"), key),
            wechatpay_key: public,
            apiv3_key: ApiV3Key::from_text(&s("apiv3_key")).unwrap(),
            key_id,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same client on a clock shifted like the simulator's.
    fn shifted(mut self, secs: i64) -> Self {
        self.clock = Arc::new(ManualClock::new(SystemClock.now() + secs));
        self
    }

    /// Verifies WeChat Pay signatures with this merchant's listed key.
    fn verifier(&self) -> Verifier {
        Verifier::new(self.clock.clone())
            .with_public_key(self.key_id.clone(), self.wechatpay_key.clone())
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let auth = self
            .signer
            .authorization(self.clock.as_ref(), method, path, &bytes)
            .unwrap();
        let mut rb = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .header("Authorization", auth)
            .header("Accept", "application/json")
            .header("User-Agent", "refund-tests/1.0")
            .header("Wechatpay-Serial", &self.key_id);
        if body.is_some() {
            rb = rb.header("Content-Type", "application/json").body(bytes);
        }
        let r = rb.send().await.unwrap();
        let a = Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        };
        // Every answer to a known merchant is signed with its own WeChat Pay key.
        if !path.starts_with("/v3/billdownload") {
            let h =
                SignatureHeaders::from_lookup(|n| a.headers.get(n).and_then(|v| v.to_str().ok()))
                    .expect("signed answer");
            assert_eq!(
                h.serial, self.key_id,
                "answer signed with the merchant's key"
            );
            self.verifier()
                .verify(&h, &a.body)
                .expect("answer verifies with the merchant's WeChat Pay public key");
        }
        a
    }

    async fn refund(&self, body: &Value) -> Answer {
        self.send("POST", "/v3/refund/domestic/refunds", Some(body))
            .await
    }

    async fn query_refund(&self, no: &str) -> Answer {
        self.send("GET", &format!("/v3/refund/domestic/refunds/{no}"), None)
            .await
    }
}

/// Receives notifications and answers 204.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Received>>>);

/// One notification as received: headers and body.
type Received = (HeaderMap, Vec<u8>);

async fn receiver() -> (String, Inbox) {
    async fn take(
        State(inbox): State<Inbox>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        inbox.0.lock().unwrap().push((headers, body.to_vec()));
        StatusCode::NO_CONTENT
    }
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/notify", post(take))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/notify"), inbox)
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A paid two-sub-order combined order: (number, sub-orders as the
/// combined query shows them).
struct Paid {
    no: String,
    subs: Vec<Value>,
}

async fn paid_order(t: &Sim, pay: bool) -> Paid {
    let file = merchant_json(&t.dir);
    let primary = Client::from_file(&t.dir, t.sim.base_url(), file["mchid"].as_str().unwrap());
    let subs = file["sub_mchids"].as_array().unwrap();
    let no = format!("C{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let body = json!({
        "combine_appid": file["appid"],
        "combine_mchid": file["mchid"],
        "combine_out_trade_no": no,
        "sub_orders": [
            {"mchid": subs[0], "attach": "a", "amount": {"total_amount": 1000, "currency": "CNY"},
             "out_trade_no": format!("{no}A"), "description": "苹果"},
            {"mchid": subs[1], "attach": "b", "amount": {"total_amount": 500, "currency": "CNY"},
             "out_trade_no": format!("{no}B"), "description": "梨"}
        ],
        "combine_payer_info": {"openid": file["demo_openid"]},
        "notify_url": "http://127.0.0.1:9/pay-notify"
    });
    let r = primary
        .send("POST", "/v3/combine-transactions/jsapi", Some(&body))
        .await;
    assert_eq!(r.status, 200);
    if pay {
        let prepay_id = r.json()["prepay_id"].as_str().unwrap().to_string();
        let out = t.sim.pay_prepay_id(&prepay_id).await.unwrap();
        assert_eq!(out.err_msg, "get_brand_wcpay_request:ok");
    }
    let q = primary
        .send(
            "GET",
            &format!("/v3/combine-transactions/out-trade-no/{no}"),
            None,
        )
        .await;
    Paid {
        no,
        subs: q.json()["sub_orders"].as_array().unwrap().clone(),
    }
}

fn sub_client(t: &Sim, sub: &Value) -> Client {
    Client::from_file(&t.dir, t.sim.base_url(), sub["mchid"].as_str().unwrap())
}

fn refund_body(sub: &Value, no: &str, refund: i64, notify: Option<&str>) -> Value {
    let mut b = json!({
        "transaction_id": sub["transaction_id"],
        "out_refund_no": no,
        "reason": "测试退款",
        "amount": {"refund": refund, "total": sub["amount"]["total_amount"], "currency": "CNY"}
    });
    if let Some(u) = notify {
        b["notify_url"] = json!(u);
    }
    b
}

// ---- tests --------------------------------------------------------------

#[tokio::test]
async fn every_merchant_is_listed_with_usable_credentials_and_reloads_unchanged() {
    let t = start().await;
    let file = merchant_json(&t.dir);
    let list = file["merchants"].as_array().unwrap();
    let mut listed: Vec<&str> = list.iter().map(|e| e["mchid"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = vec![file["mchid"].as_str().unwrap()];
    expected.extend(
        file["sub_mchids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap()),
    );
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "the initiator and every sub-merchant");
    let ids: std::collections::HashSet<&str> = list
        .iter()
        .map(|e| e["wechatpay_public_key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), list.len(), "each its own WeChat Pay public key");
    for e in list {
        assert_eq!(e["apiv3_key"].as_str().unwrap().len(), 32);
        assert!(!Path::new(e["private_key_file"].as_str().unwrap()).is_absolute());
    }
    // A sub-merchant signs with its key from the file; the answer verifies
    // with its listed key (checked inside `send`).
    let sub = list[1]["mchid"].as_str().unwrap();
    let c = Client::from_file(&t.dir, t.sim.base_url(), sub);
    let r = c.query_refund("NOPE1").await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    // A sub-merchant cannot initiate combined orders.
    let r = c
        .send(
            "POST",
            "/v3/combine-transactions/jsapi",
            Some(&json!({
                "combine_appid": file["appid"],
                "combine_mchid": sub,
                "combine_out_trade_no": "CSUB01",
                "sub_orders": [
                    {"mchid": sub, "attach": "a", "amount": {"total_amount": 1, "currency": "CNY"},
                     "out_trade_no": "CSUB01A", "description": "a"},
                    {"mchid": sub, "attach": "b", "amount": {"total_amount": 1, "currency": "CNY"},
                     "out_trade_no": "CSUB01B", "description": "b"}
                ],
                "combine_payer_info": {"openid": file["demo_openid"]},
                "notify_url": "http://127.0.0.1:9/n"
            })),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "NO_AUTH"));

    // A restart on the same directory keeps every credential.
    let key_file = t.dir.join(list[1]["private_key_file"].as_str().unwrap());
    let before = std::fs::read(&key_file).unwrap();
    let Sim { sim, dir, _cleanup } = t;
    sim.shutdown().await;
    let mut o = SimOptions::new(&dir);
    o.time_scale = 0.01;
    let t = Sim {
        sim: Simulator::start(o).await.unwrap(),
        dir,
        _cleanup,
    };
    assert_eq!(
        merchant_json(&t.dir)["merchants"],
        file["merchants"],
        "same credentials after a restart"
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
    // …and the reloaded sub-merchant still authenticates.
    let c = Client::from_file(&t.dir, t.sim.base_url(), sub);
    assert_eq!(c.query_refund("NOPE2").await.status, 404);
}

#[tokio::test]
async fn refund_lifecycle_notification_query_and_combined_state() {
    let t = start().await;
    let (url, inbox) = receiver().await;
    let order = paid_order(&t, true).await;
    let sub = &order.subs[0];
    let c = sub_client(&t, sub);

    let r = c.refund(&refund_body(sub, "R1", 300, Some(&url))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["status"], "PROCESSING");
    assert_eq!(v["channel"], "ORIGINAL");
    assert_eq!(v["user_received_account"], "支付用户零钱");
    assert_eq!(v["out_trade_no"], sub["out_trade_no"]);
    assert_eq!(v["transaction_id"], sub["transaction_id"]);
    assert_eq!(v["amount"]["refund"], 300);
    assert_eq!(v["amount"]["total"], 1000);
    assert_eq!(v["amount"]["payer_refund"], 300);
    assert_eq!(v["amount"]["payer_total"], 1000);
    assert!(v["create_time"].as_str().unwrap().ends_with("+08:00"));
    assert!(v.get("success_time").is_none());
    let refund_id = v["refund_id"].as_str().unwrap().to_string();

    // Idempotent: the same number and body is the same refund.
    let again = c.refund(&refund_body(sub, "R1", 300, Some(&url))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["refund_id"], refund_id.as_str());
    // The same number with another amount is refused.
    let other = c.refund(&refund_body(sub, "R1", 301, Some(&url))).await;
    assert_eq!(
        (other.status, other.code().as_str()),
        (400, "INVALID_REQUEST")
    );

    // The combined query: REFUND for the refunded sub-order only.
    let file = merchant_json(&t.dir);
    let primary = Client::from_file(&t.dir, t.sim.base_url(), file["mchid"].as_str().unwrap());
    let q = primary
        .send(
            "GET",
            &format!("/v3/combine-transactions/out-trade-no/{}", order.no),
            None,
        )
        .await
        .json();
    assert_eq!(q["sub_orders"][0]["trade_state"], "REFUND");
    assert_eq!(q["sub_orders"][1]["trade_state"], "SUCCESS");

    // PROCESSING → SUCCESS within seconds at time scale 0.01.
    let done = eventually("refund success", async || {
        let v = c.query_refund("R1").await.json();
        (v["status"] == "SUCCESS").then_some(v)
    })
    .await;
    assert!(done["success_time"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(done["refund_id"], refund_id.as_str());

    // Another merchant (the initiator, the other sub-merchant) cannot see it.
    for m in [file["mchid"].clone(), order.subs[1]["mchid"].clone()] {
        let o = Client::from_file(&t.dir, t.sim.base_url(), m.as_str().unwrap());
        let r = o.query_refund("R1").await;
        assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    }

    // The notification: signed with the sub-merchant's WeChat Pay key,
    // decrypted with its APIv3 key.
    let (headers, body) = eventually("refund notification", async || {
        inbox.0.lock().unwrap().first().cloned()
    })
    .await;
    let h =
        SignatureHeaders::from_lookup(|n| headers.get(n).and_then(|v| v.to_str().ok())).unwrap();
    assert_eq!(h.serial, c.key_id);
    c.verifier()
        .verify(&h, &body)
        .expect("notification verifies");
    let env: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(env["event_type"], "REFUND.SUCCESS");
    assert_eq!(env["summary"], "退款成功");
    assert_eq!(env["resource_type"], "encrypt-resource");
    assert_eq!(env["resource"]["original_type"], "refund");
    assert_eq!(env["resource"]["associated_data"], "refund");
    let res: EncryptedResource = serde_json::from_value(env["resource"].clone()).unwrap();
    let notice: RefundNotice = serde_json::from_slice(&res.open(&c.apiv3_key).unwrap()).unwrap();
    assert_eq!(notice.mchid.as_deref(), Some(c.mchid.as_str()));
    assert_eq!(notice.refund_status, RefundStatus::Success);
    assert_eq!(notice.refund_id, refund_id);
    assert_eq!(notice.out_refund_no, "R1");
    assert_eq!(notice.amount.refund, 300);
    assert_eq!(notice.amount.total, 1000);
    assert!(notice.success_time.is_some());
    // Another merchant's APIv3 key does not open it.
    let other = Client::from_file(&t.dir, t.sim.base_url(), file["mchid"].as_str().unwrap());
    assert!(res.open(&other.apiv3_key).is_err());
}

#[tokio::test]
async fn refusals() {
    let t = start().await;
    let order = paid_order(&t, true).await;
    let sub = &order.subs[0];
    let c = sub_client(&t, sub);
    let file = merchant_json(&t.dir);
    let initiator = Client::from_file(&t.dir, t.sim.base_url(), file["mchid"].as_str().unwrap());

    // The initiator refunding a sub-merchant's sub-order.
    let r = initiator.refund(&refund_body(sub, "X1", 1, None)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert_eq!(r.json()["message"], "您的请求参数与订单信息不一致");
    let by_no = json!({"out_trade_no": sub["out_trade_no"], "out_refund_no": "X2",
        "amount": {"refund": 1, "total": 1000, "currency": "CNY"}});
    let r = initiator.refund(&by_no).await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    assert_eq!(r.json()["message"], "订单不存在");
    // …which works for the sub-order's own merchant.
    let r = c.refund(&by_no).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // amount.total other than the sub-order's.
    let mut b = refund_body(sub, "X3", 1, None);
    b["amount"]["total"] = json!(1500);
    let r = c.refund(&b).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert_eq!(r.json()["message"], "您的请求参数与订单信息不一致");

    // Over-refund: 1 fen taken already, 1000 more is too much.
    let r = c.refund(&refund_body(sub, "X4", 1000, None)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert_eq!(r.json()["message"], "申请退款金额超过订单可退金额");
    let r = c.refund(&refund_body(sub, "X5", 999, None)).await;
    assert_eq!(r.status, 200);
    let r = c
        .refund(&json!({"out_trade_no": "OTHER", "out_refund_no": "X7",
            "amount": {"refund": 1, "total": 1000, "currency": "CNY"}}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));

    // Missing and invalid fields name the field.
    let r = c
        .refund(&json!({"transaction_id": sub["transaction_id"],
        "amount": {"refund": 1, "total": 1000, "currency": "CNY"}}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "PARAM_ERROR"));
    assert_eq!(r.json()["detail"]["field"], "/out_refund_no");
    let mut b = refund_body(sub, "X6", 1, None);
    b["amount"]["currency"] = json!("USD");
    let r = c.refund(&b).await;
    assert_eq!(r.json()["detail"]["field"], "/amount/currency");

    // An unpaid sub-order.
    let unpaid = paid_order(&t, false).await;
    let by_no = json!({"out_trade_no": unpaid.subs[0]["out_trade_no"], "out_refund_no": "U1",
        "amount": {"refund": 1, "total": 1000, "currency": "CNY"}});
    let r = sub_client(&t, &unpaid.subs[0]).refund(&by_no).await;
    assert_eq!((r.status, r.code().as_str()), (404, "RESOURCE_NOT_EXISTS"));
    assert_eq!(r.json()["message"], "未支付的订单不能发起退款");
}

#[tokio::test]
async fn same_number_for_another_sub_order_is_refused() {
    let t = start().await;
    let a = paid_order(&t, true).await;
    let b = paid_order(&t, true).await;
    // Both orders' first sub-order belong to the same sub-merchant.
    let c = sub_client(&t, &a.subs[0]);
    assert_eq!(
        c.refund(&refund_body(&a.subs[0], "S1", 1, None))
            .await
            .status,
        200
    );
    let r = c.refund(&refund_body(&b.subs[0], "S1", 1, None)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
}

#[tokio::test]
async fn frequency_limit_and_outcomes_are_injectable() {
    let t = start().await;
    let (url, inbox) = receiver().await;
    let order = paid_order(&t, true).await;
    let sub = &order.subs[0];
    let c = sub_client(&t, sub);

    t.sim
        .control(json!({"mchid": c.mchid, "refund_frequency_limited": true}))
        .await
        .unwrap();
    let r = c.refund(&refund_body(sub, "F1", 1, Some(&url))).await;
    assert_eq!((r.status, r.code().as_str()), (429, "FREQUENCY_LIMITED"));
    assert_eq!(r.json()["message"], "该笔退款未受理，请降低频率后重试");
    assert_eq!(c.query_refund("F1").await.status, 404, "not accepted");
    t.sim
        .control(
            json!({"mchid": c.mchid, "refund_frequency_limited": null, "refund_outcome": "CLOSED"}),
        )
        .await
        .unwrap();
    assert_eq!(
        c.refund(&refund_body(sub, "F1", 600, Some(&url)))
            .await
            .status,
        200
    );
    t.sim
        .control(json!({"mchid": c.mchid, "refund_outcome": "ABNORMAL"}))
        .await
        .unwrap();
    assert_eq!(
        c.refund(&refund_body(sub, "F2", 400, Some(&url)))
            .await
            .status,
        200
    );

    for (no, status) in [("F1", "CLOSED"), ("F2", "ABNORMAL")] {
        let v = eventually(status, async || {
            let v = c.query_refund(no).await.json();
            (v["status"] != "PROCESSING").then_some(v)
        })
        .await;
        assert_eq!(v["status"], status);
        assert!(v.get("success_time").is_none());
    }
    let events = eventually("two notifications", async || {
        let got = inbox.0.lock().unwrap().clone();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let mut kinds: Vec<String> = events
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["REFUND.ABNORMAL", "REFUND.CLOSED"]);
    // The CLOSED refund freed its 600: ABNORMAL holds 400, so 600 fits, 601 not.
    t.sim
        .control(json!({"mchid": c.mchid, "refund_outcome": null}))
        .await
        .unwrap();
    let r = c.refund(&refund_body(sub, "F3", 601, None)).await;
    assert_eq!(r.code(), "INVALID_REQUEST");
    assert_eq!(
        c.refund(&refund_body(sub, "F4", 600, None)).await.status,
        200
    );
}

async fn bill(c: &Client, kind: &str) -> Option<wxpay_combine_core::bill::TradeBill> {
    let date = wxpay_combine_core::timefmt::beijing(SystemClock.now())
        .unwrap()
        .date()
        .to_string();
    let r = c
        .send(
            "GET",
            &format!("/v3/bill/tradebill?bill_date={date}&bill_type={kind}"),
            None,
        )
        .await;
    if r.status != 200 {
        assert_eq!(r.code(), "NO_STATEMENT_EXIST");
        return None;
    }
    let url = r.json()["download_url"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&c.base).unwrap().to_string();
    let file = c.send("GET", &path, None).await;
    assert_eq!(file.status, 200);
    let mut bytes = file.body;
    if path.contains("tartype=gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        bytes = out;
    }
    Some(wxpay_combine_core::bill::parse(&bytes).unwrap())
}

#[tokio::test]
async fn bills_are_per_merchant_with_refund_rows() {
    let t = start().await;
    let order = paid_order(&t, true).await;
    let sub = &order.subs[0];
    let c = sub_client(&t, sub);
    let r = c.refund(&refund_body(sub, "B1", 250, None)).await;
    assert_eq!(r.status, 200);
    let refund_id = r.json()["refund_id"].as_str().unwrap().to_string();
    eventually("refund success", async || {
        (c.query_refund("B1").await.json()["status"] == "SUCCESS").then_some(())
    })
    .await;

    let all = bill(&c, "ALL").await.expect("a bill");
    assert_eq!(all.kind, BillKind::All);
    assert!(
        all.details.iter().all(|d| d.mchid == c.mchid),
        "only its own rows"
    );
    assert_eq!(all.details.len(), 2, "its payment and its refund");
    let pay = all
        .details
        .iter()
        .find(|d| d.trade_state == "SUCCESS")
        .unwrap();
    assert_eq!(pay.out_trade_no, sub["out_trade_no"].as_str().unwrap());
    let rf = all
        .details
        .iter()
        .find(|d| d.trade_state == "REFUND")
        .unwrap();
    let cols = rf.refund.as_ref().unwrap();
    assert_eq!(cols.refund_id, refund_id);
    assert_eq!(cols.out_refund_no, "B1");
    assert_eq!(cols.refund_amount_fen, 250);
    assert_eq!(cols.refund_type, "ORIGINAL");
    assert_eq!(cols.refund_status, "SUCCESS");
    assert!(all.check_totals().is_empty());

    let refunds = bill(&c, "REFUND").await.expect("a refund bill");
    assert_eq!(refunds.kind, BillKind::Refund);
    assert_eq!(refunds.details.len(), 1);
    let cols = refunds.details[0].refund.as_ref().unwrap();
    assert!(cols.refund_apply_time.is_some());
    assert!(cols.refund_success_time.is_some());
    assert!(refunds.check_totals().is_empty());

    // The other sub-merchant's bill: its payment only, no refund rows.
    let c2 = sub_client(&t, &order.subs[1]);
    let all2 = bill(&c2, "ALL").await.expect("a bill");
    assert_eq!(all2.details.len(), 1);
    assert_eq!(all2.details[0].mchid, c2.mchid);
    assert!(bill(&c2, "REFUND").await.is_none());
    // The initiator sold nothing itself: no bill.
    let file = merchant_json(&t.dir);
    let initiator = Client::from_file(&t.dir, t.sim.base_url(), file["mchid"].as_str().unwrap());
    assert!(bill(&initiator, "ALL").await.is_none());
}

#[tokio::test]
async fn at_most_fifty_refunds_within_one_year() {
    let t = start().await;
    let order = paid_order(&t, true).await;
    let sub = &order.subs[0];
    let c = sub_client(&t, sub);
    for i in 0..50 {
        let r = c.refund(&refund_body(sub, &format!("N{i}"), 1, None)).await;
        assert_eq!(
            r.status,
            200,
            "refund {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = c.refund(&refund_body(sub, "N50", 1, None)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert!(r.json()["message"].as_str().unwrap().contains("50"));

    // A year and a day later the other sub-order can no longer be refunded.
    let later = 366 * 86_400;
    t.sim.set_clock_offset(later).await.unwrap();
    let other = &order.subs[1];
    let c2 = sub_client(&t, other).shifted(later);
    let r = c2.refund(&refund_body(other, "W1", 1, None)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert!(r.json()["message"].as_str().unwrap().contains("一年"));
}
