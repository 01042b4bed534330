//! The payer over HTTP: bridge.js, the cashier preview, and confirm (pay,
//! cancel, tampered or mismatched parameters).

use serde_json::{json, Value};
use wxpay_combine_sim::{CashierAction, SimOptions, Simulator};
use wxpay_combine_tests::sim::{http, prepay_body, unique, TestSim};

const NOTIFY: &str = "http://127.0.0.1:9/notify";

#[tokio::test]
async fn bridge_script_and_preview() {
    let t = TestSim::start().await;
    let c = t.client();
    let r = http()
        .get(format!("{}/sim/bridge.js", t.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    let js = r.text().await.unwrap();
    for needle in [
        "WeixinJSBridgeReady",
        "getBrandWCPayRequest",
        "wxsim-pay",
        "wxsim-cancel",
        "/sim/cashier/confirm",
        "info.lose_answer",
    ] {
        assert!(js.contains(needle), "bridge.js mentions {needle}");
    }

    let no = unique("K");
    let pid = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/sim/cashier/order?package=prepay_id%3D{pid}", t.base());
    let preview: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(preview["merchant_name"], t.creds().merchant_name);
    assert_eq!(preview["total_amount"], 1235);
    assert_eq!(preview["sub_orders"][0]["description"], "苹果 x2");
    assert_eq!(preview["tamper_pay_sign"], false);
    assert_eq!(preview["lose_answer"], false);
    t.sim
        .control(json!({"tamper_pay_sign": true, "lose_bridge_answer": true}))
        .await
        .unwrap();
    let preview: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(preview["tamper_pay_sign"], true);
    // bridge.js then never calls the page back (e2e_demo covers the page).
    assert_eq!(preview["lose_answer"], true);
    let missing = http()
        .get(format!(
            "{}/sim/cashier/order?package=prepay_id%3Dwx0",
            t.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The cashier is called cross-origin from the merchant's page.
    let pre = http()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/sim/cashier/confirm", t.base()),
        )
        .header("Origin", "http://localhost:8080")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(pre.headers().contains_key("access-control-allow-origin"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn pay_cancel_and_refusals() {
    let t = TestSim::start().await;
    let c = t.client();
    let no = unique("K");
    let pid = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let params = c.pay_params(&pid);

    // Cancel leaves the order unpaid.
    let out = c.confirm(&params, "cancel").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:cancel");
    assert_eq!(
        c.query(&no).await.json()["sub_orders"][0]["trade_state"],
        "NOTPAY"
    );

    // Tampered paySign, wrong appId, unknown prepay_id, extra or missing keys: fail.
    let mut bad = params.clone();
    let flipped = if bad.pay_sign.starts_with('A') {
        "B"
    } else {
        "A"
    };
    bad.pay_sign.replace_range(0..1, flipped);
    assert_eq!(
        c.confirm(&bad, "pay").await["err_msg"],
        "get_brand_wcpay_request:fail"
    );
    let mut other_app = params.clone();
    other_app.app_id = "wx1111111111111111".into();
    assert_eq!(
        c.confirm(&other_app, "pay").await["err_msg"],
        "get_brand_wcpay_request:fail"
    );
    let ghost = c.pay_params("wx20240101000000aaaaaaaaaaaaaaaaaaaa");
    assert_eq!(
        c.confirm(&ghost, "pay").await["err_msg"],
        "get_brand_wcpay_request:fail"
    );
    let mut extra = serde_json::to_value(&params).unwrap();
    extra["timestamp"] = json!(params.time_stamp);
    extra["action"] = json!("pay");
    let r: Value = http()
        .post(format!("{}/sim/cashier/confirm", t.base()))
        .json(&extra)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["err_msg"], "get_brand_wcpay_request:fail", "{r}");
    // A signature by another key over the right string also fails.
    let stranger = wxpay_combine::apiv3::PrivateKey::generate().unwrap();
    let forged = wxpay_combine::apiv3::JsapiPayParams::sign(
        &stranger,
        &params.app_id,
        &pid,
        1_700_000_000,
        "n",
    )
    .unwrap();
    assert_eq!(
        c.confirm(&forged, "pay").await["err_msg"],
        "get_brand_wcpay_request:fail"
    );
    assert_eq!(
        c.query(&no).await.json()["sub_orders"][1]["trade_state"],
        "NOTPAY",
        "nothing was paid"
    );

    // Pay: every sub-order at once.
    let out = c.confirm(&params, "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok", "{out}");
    let q = c.query(&no).await.json();
    for s in q["sub_orders"].as_array().unwrap() {
        assert_eq!(s["trade_state"], "SUCCESS");
        assert!(s["transaction_id"].as_str().unwrap().starts_with("4200"));
        assert!(s["success_time"].is_string() && s["bank_type"].is_string());
        assert_eq!(s["amount"]["payer_amount"], s["amount"]["total_amount"]);
    }
    // Paying again fails; the order stays paid once.
    assert_eq!(
        c.confirm(&params, "pay").await["err_msg"],
        "get_brand_wcpay_request:fail"
    );
    let stats = t.sim.stats().await.unwrap();
    assert_eq!(stats.paid_orders, 1);

    // The tamper fault alters paySign on every cashier path: the page's
    // bridge.js does it itself, a direct confirm and the handle's pay get
    // the same refusal here; a cancel still cancels.
    let no = unique("K");
    let pid = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.sim
        .control(json!({"combine_out_trade_no": no, "tamper_pay_sign": true}))
        .await
        .unwrap();
    let refused = c.confirm(&c.pay_params(&pid), "pay").await;
    assert_eq!(
        refused["err_msg"], "get_brand_wcpay_request:fail",
        "{refused}"
    );
    assert_eq!(refused["err_desc"], "支付验证签名失败", "{refused}");
    let out = t.sim.pay_prepay_id(&pid).await.unwrap();
    assert!(!out.is_ok(), "{out:?}");
    assert_eq!(
        t.sim
            .confirm(&c.pay_params(&pid), CashierAction::Cancel)
            .await
            .err_msg,
        "get_brand_wcpay_request:cancel"
    );
    t.sim
        .control(json!({"combine_out_trade_no": no, "tamper_pay_sign": null}))
        .await
        .unwrap();
    let out = t.sim.pay_prepay_id(&pid).await.unwrap();
    assert!(out.is_ok(), "{out:?}");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn merchant_with_its_own_key() {
    // A merchant that brings its own API key (public half only): requests
    // signed with its private key work; the simulator holds no private key.
    let dir = tempfile::tempdir().unwrap();
    let key = wxpay_combine::apiv3::PrivateKey::generate().unwrap();
    std::fs::write(dir.path().join("own_pub.pem"), key.public_key().to_pem()).unwrap();
    std::fs::write(
        dir.path().join("sim.toml"),
        "[[merchant]]\nmchid = \"1900000109\"\nmerchant_public_key = \"own_pub.pem\"\nserial_no = \"5157F09EFDC096DE15EBE81A47057A7232F1B8E1\"\n",
    )
    .unwrap();
    let mut o = SimOptions::new(dir.path().join("data"));
    o.config = Some(dir.path().join("sim.toml"));
    let sim = Simulator::start(o).await.unwrap();
    let creds = sim.merchant().clone();
    assert_eq!(creds.mchid, "1900000109");
    assert!(creds.private_key_path.is_none());
    assert!(!dir.path().join("data/merchant_key.pem").exists());
    let mut c = wxpay_combine_tests::sim::ApiClient::new_with_key(sim.base_url(), &creds, key);
    c.serial = creds.wechatpay_public_key_id.clone();
    let no = unique("O");
    let r = c.prepay(&prepay_body(&creds, &no, NOTIFY)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.verify(&c.verifier()).unwrap();
    let pid = r.json()["prepay_id"].as_str().unwrap().to_string();
    assert!(
        sim.pay_prepay_id(&pid).await.is_err(),
        "the simulator cannot sign for this merchant"
    );
    assert!(sim.pay(&c.pay_params(&pid)).await.is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn pages_outside_the_registered_pay_directory_are_refused() {
    let t = TestSim::start().await;
    let c = t.client();
    let no = unique("D");
    let pid = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let params = c.pay_params(&pid);
    let confirm = |page: &'static str| {
        let mut body = serde_json::to_value(&params).unwrap();
        body["action"] = json!("pay");
        body["page_url"] = json!(page);
        let url = format!("{}/sim/cashier/confirm", t.base());
        async move {
            http()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let preview = |page: &str| {
        let url = format!(
            "{}/sim/cashier/order?package=prepay_id%3D{pid}&page_url={}",
            t.base(),
            urlencode(page)
        );
        async move {
            http()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let refused =
        json!({"err_msg": "get_brand_wcpay_request:fail", "err_desc": "当前页面的URL未注册"});
    t.sim
        .set_pay_directories(&t.creds().mchid, vec!["https://shop.test/pay/".into()])
        .unwrap();
    // Outside (a sub-directory, a parent, another host): refused before the
    // cashier opens, and at confirm.
    for page in [
        "https://shop.test/pay/sub/index.html",
        "https://shop.test/index.html",
        "https://other.test/pay/index.html",
    ] {
        assert_eq!(preview(page).await["refused"], refused, "{page}");
    }
    assert_eq!(
        confirm("https://shop.test/pay/sub/index.html").await,
        refused
    );
    assert_eq!(
        c.query(&no).await.json()["sub_orders"][0]["trade_state"],
        "NOTPAY"
    );
    // Bad directories are refused by the control.
    assert!(t
        .sim
        .control(json!({"pay_directories": ["https://shop.test/pay/index.html"]}))
        .await
        .is_err());
    // Inside (query and fragment do not count): the cashier opens and pays.
    let inside = "https://shop.test/pay/order.html?no=1#x";
    assert!(preview(inside).await.get("refused").is_none());
    assert_eq!(
        confirm(inside).await["err_msg"],
        "get_brand_wcpay_request:ok"
    );
    t.sim.shutdown().await;
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
