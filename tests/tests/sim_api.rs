//! The simulated APIv3 over HTTP: prepay rules and re-entry, query, close,
//! request authentication and response signatures.

use serde_json::{json, Value};
use wxpay_combine::apiv3::{
    Authorization, Clock, PrivateKey, RequestSigner, SystemClock, AUTH_SCHEME,
};
use wxpay_combine_tests::sim::{prepay_body, unique, ApiClient, TestSim};

const NOTIFY: &str = "http://127.0.0.1:9/notify";

#[tokio::test]
async fn prepay_query_happy_path_with_verified_signatures() {
    let t = TestSim::start().await;
    let c = t.client();
    let v = c.verifier();
    let no = unique("H");
    let r = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.verify(&v)
        .expect("prepay answer verifies with the WeChat Pay public key");
    assert_eq!(
        r.header("wechatpay-serial"),
        t.creds().wechatpay_public_key_id.as_deref()
    );
    assert_eq!(
        r.header("wechatpay-signature-type"),
        Some("WECHATPAY2-SHA256-RSA2048")
    );
    assert!(r.header("request-id").is_some());
    let prepay_id = r.json()["prepay_id"].as_str().unwrap().to_string();
    assert!(
        prepay_id.starts_with("wx") && prepay_id.len() == 36,
        "{prepay_id}"
    );

    let q = c.query(&no).await;
    assert_eq!(q.status, 200, "{}", q.text());
    q.verify(&v).unwrap();
    let body = q.json();
    assert_eq!(body["combine_mchid"], t.creds().mchid);
    assert_eq!(body["combine_appid"], t.creds().appid);
    assert_eq!(body["combine_payer_info"]["openid"], t.creds().demo_openid);
    assert_eq!(body["scene_info"]["device_id"], "POS1:1");
    let subs = body["sub_orders"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    for s in subs {
        assert_eq!(s["trade_state"], "NOTPAY");
        assert_eq!(s["trade_type"], "JSAPI");
        assert!(s.get("transaction_id").is_none() && s.get("success_time").is_none());
    }
    assert_eq!(subs[0]["amount"]["total_amount"], 1234);
    assert_eq!(subs[0]["attach"], "shop-a");

    // A tampered body fails the client's verification of the raw bytes.
    let mut tampered = q.clone();
    tampered.body.push(b' ');
    assert!(tampered.verify(&v).is_err());

    let missing = c.query("NOSUCHORDER1").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "ORDER_NOT_EXIST")
    );
    missing.verify(&v).expect("error answers are signed too");
    assert!(missing
        .header("request-id")
        .unwrap()
        .ends_with("-268512771"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn prepay_field_rules_table() {
    let t = TestSim::start().await;
    let c = t.client();
    let creds = t.creds().clone();
    let foreign_openid = t.sim.openid("wx00000000000000ff", "alice").await.unwrap();
    type Mutate = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutate, u16, &str, Option<&str>)> = vec![
        (
            "one sub-order",
            Box::new(|b| {
                b["sub_orders"].as_array_mut().unwrap().pop();
            }),
            400,
            "PARAM_ERROR",
            Some("/sub_orders"),
        ),
        (
            "eleven sub-orders",
            Box::new(|b| {
                let first = b["sub_orders"][0].clone();
                let subs = b["sub_orders"].as_array_mut().unwrap();
                for i in 0..9 {
                    let mut s = first.clone();
                    s["out_trade_no"] = json!(format!("ELEVEN{i:04}"));
                    subs.push(s);
                }
            }),
            400,
            "PARAM_ERROR",
            Some("/sub_orders"),
        ),
        (
            "amount 0",
            Box::new(|b| b["sub_orders"][0]["amount"]["total_amount"] = json!(0)),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/amount/total_amount"),
        ),
        (
            "amount float",
            Box::new(|b| b["sub_orders"][0]["amount"]["total_amount"] = json!(12.5)),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/amount/total_amount"),
        ),
        (
            "amount string",
            Box::new(|b| b["sub_orders"][1]["amount"]["total_amount"] = json!("100")),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/1/amount/total_amount"),
        ),
        (
            "amount over 10M yuan",
            Box::new(|b| b["sub_orders"][0]["amount"]["total_amount"] = json!(1_000_000_001i64)),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/amount/total_amount"),
        ),
        (
            "currency missing",
            Box::new(|b| {
                b["sub_orders"][0]["amount"]
                    .as_object_mut()
                    .unwrap()
                    .remove("currency");
            }),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/amount/currency"),
        ),
        (
            "unknown top-level field",
            Box::new(|b| b["payer_client_ip"] = json!("127.0.0.1")),
            400,
            "PARAM_ERROR",
            Some("/payer_client_ip"),
        ),
        (
            "unknown sub-order field (partner-only sub_mchid)",
            Box::new(|b| b["sub_orders"][1]["sub_mchid"] = json!("1900000109")),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/1/sub_mchid"),
        ),
        (
            "unknown scene_info field",
            Box::new(|b| b["scene_info"]["store_info"] = json!({"id": "1"})),
            400,
            "PARAM_ERROR",
            Some("/scene_info/store_info"),
        ),
        (
            "combine_out_trade_no with @ (old rule)",
            Box::new(|b| b["combine_out_trade_no"] = json!("V1a@b2c3")),
            400,
            "PARAM_ERROR",
            Some("/combine_out_trade_no"),
        ),
        (
            "combine_out_trade_no of 5 characters",
            Box::new(|b| b["combine_out_trade_no"] = json!("C1234")),
            400,
            "PARAM_ERROR",
            Some("/combine_out_trade_no"),
        ),
        (
            "currency USD",
            Box::new(|b| b["sub_orders"][0]["amount"]["currency"] = json!("USD")),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/amount/currency"),
        ),
        (
            "combine no 33 chars",
            Box::new(|b| b["combine_out_trade_no"] = json!("X".repeat(33))),
            400,
            "PARAM_ERROR",
            Some("/combine_out_trade_no"),
        ),
        (
            "combine no charset",
            Box::new(|b| b["combine_out_trade_no"] = json!("ABC#123456")),
            400,
            "PARAM_ERROR",
            Some("/combine_out_trade_no"),
        ),
        (
            "combine no Chinese",
            Box::new(|b| b["combine_out_trade_no"] = json!("订单123456")),
            400,
            "PARAM_ERROR",
            Some("/combine_out_trade_no"),
        ),
        (
            "sub no 5 chars",
            Box::new(|b| b["sub_orders"][0]["out_trade_no"] = json!("AB123")),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/out_trade_no"),
        ),
        (
            "sub no duplicated",
            Box::new(|b| {
                let n = b["sub_orders"][0]["out_trade_no"].clone();
                b["sub_orders"][1]["out_trade_no"] = n;
                b["sub_orders"][1]["mchid"] = b["sub_orders"][0]["mchid"].clone();
            }),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/1/out_trade_no"),
        ),
        (
            "description 128",
            Box::new(|b| b["sub_orders"][0]["description"] = json!("描".repeat(128))),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/description"),
        ),
        (
            "description emoji",
            Box::new(|b| b["sub_orders"][0]["description"] = json!("apple 🍎")),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/0/description"),
        ),
        (
            "attach missing",
            Box::new(|b| {
                b["sub_orders"][1].as_object_mut().unwrap().remove("attach");
            }),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/1/attach"),
        ),
        (
            "attach 129",
            Box::new(|b| b["sub_orders"][1]["attach"] = json!("a".repeat(129))),
            400,
            "PARAM_ERROR",
            Some("/sub_orders/1/attach"),
        ),
        (
            "notify_url query",
            Box::new(|b| b["notify_url"] = json!("http://127.0.0.1:9/notify?order=1")),
            400,
            "PARAM_ERROR",
            Some("/notify_url"),
        ),
        (
            "notify_url scheme",
            Box::new(|b| b["notify_url"] = json!("ftp://127.0.0.1/notify")),
            400,
            "PARAM_ERROR",
            Some("/notify_url"),
        ),
        (
            "notify_url 257",
            Box::new(|b| b["notify_url"] = json!(format!("http://127.0.0.1/{}", "n".repeat(240)))),
            400,
            "PARAM_ERROR",
            Some("/notify_url"),
        ),
        (
            "notify_url missing",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("notify_url");
            }),
            400,
            "PARAM_ERROR",
            Some("/notify_url"),
        ),
        (
            "payer missing",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("combine_payer_info");
            }),
            400,
            "PARAM_ERROR",
            Some("/combine_payer_info"),
        ),
        (
            "openid unknown",
            Box::new(|b| b["combine_payer_info"]["openid"] = json!("oNotAUserOfThisAppid0000000")),
            400,
            "OPENID_MISMATCH",
            Some("/combine_payer_info/openid"),
        ),
        (
            "openid of another appid",
            {
                let o = foreign_openid.clone();
                Box::new(move |b| b["combine_payer_info"]["openid"] = json!(o))
            },
            400,
            "OPENID_MISMATCH",
            None,
        ),
        (
            "sub mchid unknown",
            Box::new(|b| b["sub_orders"][1]["mchid"] = json!("1234567890")),
            400,
            "MCH_NOT_EXISTS",
            Some("/sub_orders/1/mchid"),
        ),
        (
            "combine_appid not bound",
            Box::new(|b| b["combine_appid"] = json!("wx1111111111111111")),
            400,
            "APPID_MCHID_NOT_MATCH",
            Some("/combine_appid"),
        ),
        (
            "combine_mchid not the signer",
            Box::new(|b| b["combine_mchid"] = json!("1900000001")),
            400,
            "INVALID_REQUEST",
            Some("/combine_mchid"),
        ),
        (
            "time_expire past",
            Box::new(|b| b["time_expire"] = json!("2020-01-01T00:00:00+08:00")),
            400,
            "PARAM_ERROR",
            Some("/time_expire"),
        ),
        (
            "time_expire format",
            Box::new(|b| b["time_expire"] = json!("2030-01-01 00:00:00")),
            400,
            "PARAM_ERROR",
            Some("/time_expire"),
        ),
        (
            "payer ip missing",
            Box::new(|b| {
                b["scene_info"]
                    .as_object_mut()
                    .unwrap()
                    .remove("payer_client_ip");
            }),
            400,
            "PARAM_ERROR",
            Some("/scene_info/payer_client_ip"),
        ),
        (
            "payer ip invalid",
            Box::new(|b| b["scene_info"]["payer_client_ip"] = json!("999.1.1.1")),
            400,
            "PARAM_ERROR",
            Some("/scene_info/payer_client_ip"),
        ),
        (
            "limit_pay value",
            Box::new(|b| b["limit_pay"] = json!(["no_credit_card"])),
            400,
            "PARAM_ERROR",
            Some("/limit_pay/0"),
        ),
    ];
    let total = cases.len();
    for (i, (name, mutate, status, code, field)) in cases.into_iter().enumerate() {
        let mut b = prepay_body(&creds, &format!("RULE{i:03}X"), NOTIFY);
        mutate(&mut b);
        let r = c.prepay(&b).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "case {name}: {}",
            r.text()
        );
        if let Some(f) = field {
            assert_eq!(r.json()["detail"]["field"], f, "case {name}: {}", r.text());
        }
        assert!(
            !r.json()["message"].as_str().unwrap_or_default().is_empty(),
            "case {name} has a message"
        );
    }
    let bad_json = c
        .post("/v3/combine-transactions/jsapi", b"{\"combine_appid\":")
        .await;
    assert_eq!(
        (bad_json.status, bad_json.code().as_str()),
        (400, "PARAM_ERROR")
    );

    // Every documented variant is accepted.
    let variants: Vec<Mutate> = vec![
        Box::new(|b| b["combine_out_trade_no"] = json!("V1|a*b-c_de")),
        Box::new(|b| {
            b.as_object_mut().unwrap().remove("scene_info");
        }),
        Box::new(|b| b["time_expire"] = json!("2099-01-01T00:00:00.123Z")),
        Box::new(|b| b["sub_orders"][0]["amount"]["total_amount"] = json!(1_000_000_000i64)),
        Box::new(|b| b["sub_orders"][1]["mchid"] = b["combine_mchid"].clone()),
        Box::new(|b| {
            b["sub_orders"][0]["settle_info"] = json!({"profit_sharing": true});
            b["sub_orders"][0]["goods_tag"] = json!("WXG");
            b["sub_orders"][0]["detail"] = json!("d");
        }),
    ];
    let n_variants = variants.len();
    for (i, mutate) in variants.into_iter().enumerate() {
        let mut b = prepay_body(&creds, &format!("VAR{i:03}X"), NOTIFY);
        mutate(&mut b);
        let r = c.prepay(&b).await;
        assert_eq!(r.status, 200, "variant {i}: {}", r.text());
    }
    let stats = t.sim.stats().await.unwrap();
    assert_eq!(
        stats.orders as usize, n_variants,
        "rejected requests create nothing"
    );
    assert_eq!(stats.api_calls["prepay"] as usize, total + 1 + n_variants);
    // The order number with | and * is queried URL-encoded.
    let q = c.query("V1%7Ca*b-c_de").await;
    assert_eq!(q.status, 200, "{}", q.text());
    assert_eq!(q.json()["combine_out_trade_no"], "V1|a*b-c_de");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn prepay_reentry_mismatch_paid_and_closed() {
    let t = TestSim::start().await;
    let c = t.client();
    let no = unique("R");
    let body = prepay_body(t.creds(), &no, NOTIFY);
    let first = c.prepay(&body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Same parameters, other spacing and key order: the same prepay_id.
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let r = c
        .post("/v3/combine-transactions/jsapi", pretty.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["prepay_id"], first.as_str());
    // Different parameters.
    let mut changed = body.clone();
    changed["sub_orders"][0]["amount"]["total_amount"] = json!(999);
    let r = c.prepay(&changed).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "INVALID_REQUEST"),
        "{}",
        r.text()
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("参数与首次请求时不一致"));
    assert!(r.header("request-id").unwrap().ends_with("-268498688"));
    assert_eq!(t.sim.prepay_calls(&no).await.unwrap(), 3);

    // time_expire can only be set on the first prepay: adding or changing
    // it on a repeat is refused naming the field, and the order keeps its
    // prepay_id.
    for te in ["2099-01-01T00:00:00+08:00", "2099-01-02T00:00:00+08:00"] {
        let mut later = body.clone();
        later["time_expire"] = json!(te);
        let r = c.prepay(&later).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "INVALID_REQUEST"),
            "{}",
            r.text()
        );
        assert_eq!(r.json()["detail"]["field"], "/time_expire");
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .contains("time_expire"));
    }
    let no_te = unique("R");
    let mut with_te = prepay_body(t.creds(), &no_te, NOTIFY);
    with_te["time_expire"] = json!("2099-01-01T00:00:00+08:00");
    let pid = c.prepay(&with_te).await.json()["prepay_id"].clone();
    assert_eq!(c.prepay(&with_te).await.json()["prepay_id"], pid);
    with_te["time_expire"] = json!("2099-01-01T00:00:01+08:00");
    assert_eq!(c.prepay(&with_te).await.code(), "INVALID_REQUEST");
    assert_eq!(c.prepay(&body).await.json()["prepay_id"], first.as_str());

    // A sub-order number cannot be reused by another combined order.
    let mut other = prepay_body(t.creds(), &unique("R"), NOTIFY);
    other["sub_orders"][0]["out_trade_no"] = body["sub_orders"][0]["out_trade_no"].clone();
    let r = c.prepay(&other).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "OUT_TRADE_NO_USED"),
        "{}",
        r.text()
    );

    // After payment: ORDER_PAID.
    let out = c.confirm(&c.pay_params(&first), "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok");
    let r = c.prepay(&body).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "ORDER_PAID"),
        "{}",
        r.text()
    );

    // After close: ORDER_CLOSED.
    let no2 = unique("R");
    let b2 = prepay_body(t.creds(), &no2, NOTIFY);
    assert_eq!(c.prepay(&b2).await.status, 200);
    assert_eq!(c.close(&no2, &c.close_body(&b2)).await.status, 204);
    let r = c.prepay(&b2).await;
    assert_eq!((r.status, r.code().as_str()), (400, "ORDER_CLOSED"));
    t.sim.shutdown().await;
}

/// A new number is inserted without the simulator's write lock: concurrent
/// identical prepays must still end as one order with one prepay_id.
#[tokio::test]
async fn concurrent_prepays_for_one_new_number() {
    let t = TestSim::start().await;
    let c = t.client();
    let no = unique("K");
    let body = prepay_body(t.creds(), &no, NOTIFY);
    let replies = futures_util::future::join_all((0..8).map(|_| c.prepay(&body))).await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["prepay_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one prepay_id for one order: {ids:?}");
    assert_eq!(t.sim.stats().await.unwrap().orders, 1);
    assert_eq!(t.sim.prepay_calls(&no).await.unwrap(), 8);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn prepay_id_lives_two_hours_and_time_expire_closes() {
    let t = TestSim::start().await;
    let c = t.client();
    let no = unique("T");
    let body = prepay_body(t.creds(), &no, NOTIFY);
    let first = c.prepay(&body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Two hours and a second later the prepay_id is dead; re-entry issues a new one.
    let shift = 2 * 3600 + 1;
    t.sim.set_clock_offset(shift).await.unwrap();
    let late = ApiClient::new(t.base(), t.creds()).shifted(shift);
    let out = late.confirm(&late.pay_params(&first), "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:fail", "{out}");
    let r = late.prepay(&body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json()["prepay_id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    r.verify(&late.verifier()).unwrap();
    let out = late.confirm(&late.pay_params(&second), "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok", "{out}");
    t.sim.set_clock_offset(0).await.unwrap();

    // time_expire: unpaid past it, the order is CLOSED and cannot be paid.
    let no = unique("T");
    let mut body = prepay_body(t.creds(), &no, NOTIFY);
    let expire = SystemClock.now() + 120;
    let fmt = time::format_description::well_known::Rfc3339;
    body["time_expire"] = json!(time::OffsetDateTime::from_unix_timestamp(expire)
        .unwrap()
        .format(&fmt)
        .unwrap());
    let pid = c.prepay(&body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.sim.set_clock_offset(121).await.unwrap();
    let late = ApiClient::new(t.base(), t.creds()).shifted(121);
    let q = late.query(&no).await.json();
    assert!(
        q["sub_orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["trade_state"] == "CLOSED"),
        "{q}"
    );
    let out = late.confirm(&late.pay_params(&pid), "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:fail");
    let r = late.close(&no, &late.close_body(&body)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "ORDER_CLOSED"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn close_variants() {
    let t = TestSim::start().await;
    let c = t.client();
    let v = c.verifier();
    let no = unique("C");
    let body = prepay_body(t.creds(), &no, NOTIFY);
    let pid = c.prepay(&body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let full = c.close_body(&body);

    // Partial close, a wrong out_trade_no and a wrong appid are refused.
    let mut partial = full.clone();
    partial["sub_orders"].as_array_mut().unwrap().pop();
    let r = c.close(&no, &partial).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "INVALID_REQUEST"),
        "{}",
        r.text()
    );
    let mut wrong = full.clone();
    wrong["sub_orders"][1]["out_trade_no"] = json!("SOMETHINGELSE");
    assert_eq!(c.close(&no, &wrong).await.code(), "INVALID_REQUEST");
    let mut appid = full.clone();
    appid["combine_appid"] = json!("wx1111111111111111");
    assert_eq!(c.close(&no, &appid).await.code(), "APPID_MCHID_NOT_MATCH");
    assert_eq!(
        c.close("NOSUCHORDER1", &full).await.code(),
        "ORDER_NOT_EXIST"
    );

    // User paying: 202 USER_PAYING.
    t.sim
        .control(json!({"combine_out_trade_no": no, "set_user_paying": true}))
        .await
        .unwrap();
    let r = c.close(&no, &full).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (202, "USER_PAYING"),
        "{}",
        r.text()
    );
    t.sim
        .control(json!({"combine_out_trade_no": no, "set_user_paying": false}))
        .await
        .unwrap();

    // Sub-orders in another order are still "exactly the original".
    let mut reordered = full.clone();
    reordered["sub_orders"].as_array_mut().unwrap().reverse();
    let r = c.close(&no, &reordered).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    r.verify(&v).expect("204 is signed over the empty body");
    // Close is re-entrant.
    assert_eq!(c.close(&no, &full).await.status, 204);
    let q = c.query(&no).await.json();
    assert!(q["sub_orders"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["trade_state"] == "CLOSED"));
    let out = c.confirm(&c.pay_params(&pid), "pay").await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:fail");

    // Paid orders cannot be closed.
    let no = unique("C");
    let body = prepay_body(t.creds(), &no, NOTIFY);
    c.create_and_pay(&body).await;
    let r = c.close(&no, &c.close_body(&body)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "ORDER_PAID"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn authentication_rules() {
    let t = TestSim::start().await;
    let c = t.client();
    let v = c.verifier();
    let path = "/v3/combine-transactions/out-trade-no/NOSUCHORDER1";

    // Auth passes (404 comes from the order lookup).
    assert_eq!(c.get(path).await.status, 404);

    // Body changed after signing: SIGN_ERROR with the real detail shape.
    let body = prepay_body(t.creds(), &unique("A"), NOTIFY).to_string();
    let mut raw = c.raw("POST", "/v3/combine-transactions/jsapi", body.as_bytes());
    raw.body.extend_from_slice(b" ");
    let r = c.send(raw).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "SIGN_ERROR"),
        "{}",
        r.text()
    );
    let j = r.json();
    assert_eq!(j["message"], "错误的签名，验签失败");
    assert_eq!(j["detail"]["field"], "signature");
    assert_eq!(j["detail"]["location"], "authorization");
    assert_eq!(j["detail"]["detail"]["issue"], "sign not match");
    assert_eq!(j["detail"]["sign_information"]["method"], "POST");
    assert_eq!(
        j["detail"]["sign_information"]["url"],
        "/v3/combine-transactions/jsapi"
    );
    assert_eq!(
        j["detail"]["sign_information"]["sign_message_length"]
            .as_u64()
            .unwrap() as usize,
        body.len() + 82
    );
    assert!(r.header("request-id").unwrap().ends_with("-268443699"));
    r.verify(&v).unwrap();

    // Signed with another key.
    let other = RequestSigner::new(
        &t.creds().mchid,
        &t.creds().serial_no,
        PrivateKey::generate().unwrap(),
    );
    let mut raw = c.raw("GET", path, b"");
    raw.authorization = Some(other.authorization(&SystemClock, "GET", path, b"").unwrap());
    let r = c.send(raw).await;
    assert_eq!(
        (r.status, r.json()["detail"]["field"].as_str()),
        (401, Some("signature"))
    );

    // Right key, wrong serial.
    let wrong_serial = RequestSigner::new(
        &t.creds().mchid,
        "0123456789ABCDEF0123456789ABCDEF01234567",
        c.signer.private_key().clone(),
    );
    let mut raw = c.raw("GET", path, b"");
    raw.authorization = Some(
        wrong_serial
            .authorization(&SystemClock, "GET", path, b"")
            .unwrap(),
    );
    let r = c.send(raw).await;
    // The real service's words (observed), without a `detail`.
    assert_eq!((r.status, r.code().as_str()), (401, "SIGN_ERROR"));
    assert_eq!(r.json()["message"], "商户证书序列号有误。");
    assert!(r.json().get("detail").is_none(), "{}", r.json());

    // Unknown merchant, missing Authorization, wrong scheme.
    let stranger = RequestSigner::new(
        "1000000001",
        &t.creds().serial_no,
        c.signer.private_key().clone(),
    );
    let mut raw = c.raw("GET", path, b"");
    raw.authorization = Some(
        stranger
            .authorization(&SystemClock, "GET", path, b"")
            .unwrap(),
    );
    assert_eq!(c.send(raw).await.status, 401);
    let mut raw = c.raw("GET", path, b"");
    raw.authorization = None;
    assert_eq!(c.send(raw).await.code(), "SIGN_ERROR");
    let mut raw = c.raw("GET", path, b"");
    raw.authorization = Some(
        raw.authorization
            .unwrap()
            .replace(AUTH_SCHEME, "WECHATPAY2-SHA256-RSA4096"),
    );
    assert_eq!(c.send(raw).await.status, 401);

    // Missing Accept or User-Agent (hand-written HTTP: reqwest always sends Accept).
    for (accept, ua) in [(false, true), (true, false), (false, false)] {
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n",
            c.authorization("GET", path, b"")
        );
        if accept {
            head.push_str("Accept: application/json\r\n");
        }
        if ua {
            head.push_str("User-Agent: raw/1\r\n");
        }
        head.push_str("\r\n");
        let (status, body) = wxpay_combine_tests::sim::raw_http(t.base(), &head).await;
        assert_eq!(status, 400, "accept {accept} ua {ua}: {body}");
        let j: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            j,
            json!({"code": "INVALID_REQUEST", "message": "Http头缺少Accept或User-Agent"})
        );
    }
    let mut raw = c.raw("GET", path, b"");
    raw.user_agent = false;
    let r = c.send(raw).await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_REQUEST"));
    assert!(r.header("request-id").is_some());

    // Clock skew: within 5 minutes passes, beyond is refused.
    let now = SystemClock.now();
    for (offset, ok) in [(-290, true), (290, true), (-310, false), (310, false)] {
        let mut raw = c.raw("GET", path, b"");
        raw.authorization = Some(
            c.signer
                .authorization_at("GET", path, now + offset, "NONCE123", b"")
                .unwrap(),
        );
        let r = c.send(raw).await;
        if ok {
            assert_eq!(r.status, 404, "skew {offset}: {}", r.text());
        } else {
            assert_eq!(
                (r.status, r.json()["detail"]["field"].as_str()),
                (401, Some("timestamp")),
                "skew {offset}"
            );
        }
    }

    // Field order is free, as the documentation says (PHP order, official example order, spaces).
    let ts = SystemClock.now();
    let nonce = "593BEC0C930BF1AFEB40B4A08C8FB242";
    let sig = Authorization::parse(
        &c.signer
            .authorization_at("GET", path, ts, nonce, b"")
            .unwrap(),
    )
    .unwrap()
    .signature;
    let m = &t.creds().mchid;
    let s = &t.creds().serial_no;
    for header in [
        format!("{AUTH_SCHEME} mchid=\"{m}\",serial_no=\"{s}\",timestamp=\"{ts}\",nonce_str=\"{nonce}\",signature=\"{sig}\""),
        format!("{AUTH_SCHEME} mchid=\"{m}\",nonce_str=\"{nonce}\",signature=\"{sig}\",timestamp=\"{ts}\",serial_no=\"{s}\""),
        format!("{AUTH_SCHEME} signature=\"{sig}\", timestamp=\"{ts}\", serial_no=\"{s}\", nonce_str=\"{nonce}\", mchid=\"{m}\""),
    ] {
        let mut raw = c.raw("GET", path, b"");
        raw.authorization = Some(header.clone());
        assert_eq!(c.send(raw).await.status, 404, "{header}");
    }

    // Unknown paths.
    let r = c.get("/v3/pay/transactions/id/1").await;
    assert_eq!(r.status, 404);
    assert!(r.header("request-id").is_some());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn fault_injection_errors_and_timeouts() {
    let t = TestSim::start().await;
    let c = t.client();
    let path = "/v3/combine-transactions/out-trade-no/NOSUCHORDER1";
    // Exactly half the calls fail, deterministically: the 2nd and the 4th.
    t.sim
        .control(json!({"mchid": t.creds().mchid, "api_error_share": 0.5}))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c.get(path).await;
        if r.status == 500 {
            assert_eq!(r.code(), "SYSTEM_ERROR");
            r.verify(&c.verifier()).unwrap();
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [404, 500, 404, 500]);

    // Timed-out calls are processed; only the answer is late.
    t.sim
        .control(json!({"mchid": t.creds().mchid, "api_error_share": null, "api_timeout_share": 1.0, "api_timeout_ms": 1500}))
        .await
        .unwrap();
    let no = unique("F");
    let body = prepay_body(t.creds(), &no, NOTIFY).to_string();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .post(format!("{}/v3/combine-transactions/jsapi", t.base()))
        .header(
            "Authorization",
            c.authorization("POST", "/v3/combine-transactions/jsapi", body.as_bytes()),
        )
        .header("Accept", "application/json")
        .header("User-Agent", "impatient/1")
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect_err("the client times out");
    assert!(err.is_timeout());
    t.sim
        .control(json!({"mchid": t.creds().mchid, "api_timeout_share": null}))
        .await
        .unwrap();
    let q = c.query(&no).await;
    assert_eq!(
        q.status,
        200,
        "the timed-out prepay was processed: {}",
        q.text()
    );
    // The merchant's retry of the same prepay gets the same prepay_id.
    let again = c
        .post("/v3/combine-transactions/jsapi", body.as_bytes())
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(t.sim.prepay_calls(&no).await.unwrap(), 2);

    // Out-of-process view of the same counters.
    let stats: Value = wxpay_combine_tests::sim::http()
        .get(format!("{}/sim/stats", t.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["prepay_calls"][&no], 2);
    let control: Value = wxpay_combine_tests::sim::http()
        .get(format!("{}/sim/control", t.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(control["faults"][0]["scope"]["scope"], "merchant");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn per_api_faults_refuse_only_that_api() {
    let t = TestSim::start().await;
    let c = t.client();
    let missing = "/v3/combine-transactions/out-trade-no/NOSUCHORDER2";
    t.sim
        .control(json!({"api_faults": {"prepay": "FREQUENCY_LIMITED", "query": "SYSTEM_ERROR"}}))
        .await
        .unwrap();
    let no = unique("PF");
    let body = prepay_body(t.creds(), &no, NOTIFY).to_string();
    let r = c
        .post("/v3/combine-transactions/jsapi", body.as_bytes())
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "FREQUENCY_LIMITED"));
    r.verify(&c.verifier()).unwrap();
    let r = c.get(missing).await;
    assert_eq!((r.status, r.code().as_str()), (500, "SYSTEM_ERROR"));
    // Other APIs answer as usual: close of an unknown order is processed.
    let r = c
        .post(
            &format!("{missing}/close"),
            json!({"combine_appid": t.creds().appid, "sub_orders": [{"mchid": t.creds().mchid, "out_trade_no": "X1"}]})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_ne!(r.status, 429);
    assert_ne!(r.status, 500);
    // Refused calls were not processed: the order does not exist.
    t.sim.control(json!({"api_faults": null})).await.unwrap();
    assert_eq!(c.query(&no).await.status, 404);

    // Counted: only the next two prepay calls are refused.
    t.sim
        .control(json!({"api_faults": {"prepay": {"code": "FREQUENCY_LIMITED", "calls": 2}}}))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            c.post("/v3/combine-transactions/jsapi", body.as_bytes())
                .await
                .status,
        );
    }
    assert_eq!(statuses, [429, 429, 200]);
    let calls = t.sim.api_calls().await.unwrap();
    let prepay_codes: Vec<_> = calls
        .iter()
        .filter(|c| c.endpoint == "prepay")
        .map(|c| c.code.clone())
        .collect();
    assert_eq!(
        prepay_codes,
        [
            Some("FREQUENCY_LIMITED".to_string()),
            Some("FREQUENCY_LIMITED".into()),
            Some("FREQUENCY_LIMITED".into()),
            None
        ]
    );
    // Unknown APIs and codes are refused by the control.
    for bad in [
        json!({"api_faults": {"pay": "SYSTEM_ERROR"}}),
        json!({"api_faults": {"query": "ORDER_CLOSED"}}),
    ] {
        assert!(t.sim.control(bad.clone()).await.is_err(), "{bad} accepted");
    }
    t.sim.shutdown().await;
}
