//! Trade bills over HTTP: layouts, summaries, hashes (plain and gzip),
//! one-time 5-minute tokens, foreign tokens, NO_STATEMENT_EXIST, corrupt
//! hash, STATEMENT_CREATING until 10:00 the next day (and the switch that
//! serves a day's bill at once), coupons in 代金券金额.
//! Bills are per merchant: each sub-merchant's bill holds only its own
//! sub-orders and refunds, signed for and fetched with its own credentials;
//! the initiator, with no sub-orders of its own, has none.

use serde_json::json;
use sha1::{Digest, Sha1};
use std::io::Read;
use wxpay_combine::apiv3::EncryptedResource;
use wxpay_combine_tests::sim::{prepay_body, unique, ApiClient, Receiver, Reply, TestSim};

const NOTIFY: &str = "http://127.0.0.1:9/notify";
const ALL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUCCESS: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
const REFUND: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const ALL_SUMMARY: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const SUCCESS_SUMMARY: &str = "总交易单数,应结订单总金额,手续费总金额,订单总金额";

/// A +08:00 calendar date, `days` from today.
fn cst_date(days: i64) -> String {
    let d = (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap())
        .date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

async fn apply(c: &ApiClient, query: &str) -> Reply {
    c.get(&format!("/v3/bill/tradebill?{query}")).await
}

async fn download(c: &ApiClient, url: &str) -> Reply {
    let path = &url[c.base.len()..];
    c.get(path).await
}

fn sha1_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

/// Lines without the BOM and the final CRLF.
fn lines(file: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(file).unwrap();
    let text = text.strip_prefix('\u{feff}').expect("UTF-8 BOM");
    let text = text.strip_suffix("\r\n").expect("ends with CRLF");
    text.split("\r\n").map(str::to_string).collect()
}

fn assert_data_row(line: &str, columns: usize) {
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields.len(), columns, "{line}");
    assert!(
        fields.iter().all(|f| f.starts_with('`')),
        "every field back-quoted: {line}"
    );
}

#[tokio::test]
async fn trade_bills() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sim.toml"),
        "[[merchant]]\nmchid = \"1900000101\"\n[[merchant]]\nmchid = \"1900000202\"\n",
    )
    .unwrap();
    let t = TestSim::start_with(|o| {
        o.config = Some(dir.path().join("sim.toml"));
        // Today's bill, without waiting for 10:00 tomorrow.
        o.bills_ready_immediately = true;
    })
    .await;
    let initiator = t.client();
    let sub = |i: usize| {
        let mchid = &t.creds().sub_mchids[i];
        ApiClient::new(
            t.base(),
            t.sim.account(mchid).expect("sub-merchant account"),
        )
    };
    // The first sub-merchant's bill is the one examined in detail.
    let c = sub(0);
    let v = c.verifier();
    let today = cst_date(0);

    // Nothing paid yet.
    let r = apply(&c, &format!("bill_date={today}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "NO_STATEMENT_EXIST"),
        "{}",
        r.text()
    );

    let no1 = unique("B");
    initiator
        .create_and_pay(&prepay_body(t.creds(), &no1, NOTIFY))
        .await; // 12.34 (sub-merchant 0) + 0.01 (sub-merchant 1)
    let no2 = unique("B");
    let mut b2 = prepay_body(t.creds(), &no2, NOTIFY);
    b2["sub_orders"][0]["amount"]["total_amount"] = json!(500);
    b2["sub_orders"][1]["amount"]["total_amount"] = json!(700);
    initiator.create_and_pay(&b2).await;
    let unpaid = unique("B");
    assert_eq!(
        initiator
            .prepay(&prepay_body(t.creds(), &unpaid, NOTIFY))
            .await
            .status,
        200
    );
    // A partial refund of 2.34 yuan of the first sub-order.
    t.sim
        .control(json!({"combine_out_trade_no": no1, "refund": {"out_trade_no": format!("{no1}A"), "amount": 234, "out_refund_no": "RF0001"}}))
        .await
        .unwrap();
    assert_eq!(
        initiator.query(&no1).await.json()["sub_orders"][0]["trade_state"],
        "REFUND"
    );

    // The initiator has no sub-order of its own, hence no bill.
    let r = apply(&initiator, &format!("bill_date={today}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "NO_STATEMENT_EXIST"),
        "{}",
        r.text()
    );

    // ALL, uncompressed.
    let r = apply(&c, &format!("bill_date={today}&bill_type=ALL")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.verify(&v).unwrap();
    let j = r.json();
    assert_eq!(j["hash_type"], "SHA1");
    let url = j["download_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/v3/billdownload/file?token=", t.base())),
        "{url}"
    );
    let file = download(&c, &url).await;
    assert_eq!(file.status, 200, "{}", file.text());
    assert!(
        file.header("wechatpay-signature").is_none(),
        "the download is unsigned"
    );
    assert_eq!(sha1_hex(&file.body), j["hash_value"].as_str().unwrap());
    let l = lines(&file.body);
    assert_eq!(l[0], ALL);
    // Sub-merchant 0: two trades and the refund of one of them.
    assert_eq!(l.len(), 1 + 3 + 2, "{l:#?}");
    for row in &l[1..4] {
        assert_data_row(row, 27);
        assert!(
            row.contains(&format!(",`{},`0,", t.creds().sub_mchids[0])),
            "only its own rows: {row}"
        );
    }
    let refund_row = l[1..4]
        .iter()
        .find(|r| r.contains("`REFUND,"))
        .expect("a refund row");
    assert!(refund_row.contains("`RF0001,`2.34,"), "{refund_row}");
    let trade = l[1..4]
        .iter()
        .find(|r| r.contains(&format!("`{no1}A,")) && r.contains("`SUCCESS,"))
        .unwrap();
    let f: Vec<&str> = trade.split(',').collect();
    assert_eq!(
        (f[2], f[3], f[8], f[12], f[22], f[23], f[24]),
        (
            &*format!("`{}", t.creds().sub_mchids[0]),
            "`0",
            "`JSAPI",
            "`12.34",
            "`0.07000",
            "`0.60%",
            "`12.34"
        )
    );
    assert_eq!(f[7], format!("`{}", t.creds().demo_openid));
    assert_eq!(f[26], "`");
    assert_eq!(l[4], ALL_SUMMARY);
    // 2 trades + 1 refund; 17.34 settled; 0.07+0.03 fees.
    assert_eq!(l[5], "`3,`17.34,`2.34,`0.00,`0.10000,`17.34,`2.34");

    // Sub-merchant 1's bill: its two trades only, no refund.
    let c1 = sub(1);
    let r = apply(&c1, &format!("bill_date={today}&bill_type=ALL")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.verify(&c1.verifier()).unwrap();
    let file = download(&c1, r.json()["download_url"].as_str().unwrap()).await;
    let l1 = lines(&file.body);
    assert_eq!(l1.len(), 1 + 2 + 2, "{l1:#?}");
    assert!(l1[1..3]
        .iter()
        .all(|r| r.contains(&format!(",`{},`0,", t.creds().sub_mchids[1]))));
    // 0.01 + 7.00 settled; 0 + 0.04 fees.
    assert_eq!(l1[4], "`2,`7.01,`0.00,`0.00,`0.04000,`7.01,`0.00");

    // The token is single-use.
    let again = download(&c, &url).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (400, "INVALID_REQUEST")
    );

    // SUCCESS, gzip.
    let r = apply(
        &c,
        &format!("bill_date={today}&bill_type=SUCCESS&tar_type=GZIP"),
    )
    .await;
    let j = r.json();
    let url = j["download_url"].as_str().unwrap().to_string();
    assert!(url.ends_with("&tartype=gzip"), "{url}");
    let gz = download(&c, &url).await;
    assert_eq!(gz.status, 200);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_ne!(sha1_hex(&gz.body), j["hash_value"].as_str().unwrap());
    assert_eq!(
        sha1_hex(&plain),
        j["hash_value"].as_str().unwrap(),
        "hash of the uncompressed file"
    );
    let l = lines(&plain);
    assert_eq!(l[0], SUCCESS);
    assert_eq!(l.len(), 1 + 2 + 2);
    for row in &l[1..3] {
        assert_data_row(row, 20);
    }
    assert_eq!(l[3], SUCCESS_SUMMARY);
    assert_eq!(l[4], "`2,`17.34,`0.10000,`17.34");

    // REFUND.
    let r = apply(&c, &format!("bill_date={today}&bill_type=REFUND")).await;
    let file = download(&c, r.json()["download_url"].as_str().unwrap()).await;
    let l = lines(&file.body);
    assert_eq!(l[0], REFUND);
    assert_data_row(&l[1], 29);
    assert_eq!(l[2], ALL_SUMMARY);
    assert_eq!(l[3], "`1,`0.00,`2.34,`0.00,`0.00000,`0.00,`2.34");

    // The link lives 5 minutes (current pages): still good at 290 s (room
    // for the seconds the requests take), expired after 300 s.
    let r = apply(&c, &format!("bill_date={today}")).await;
    let url = r.json()["download_url"].as_str().unwrap().to_string();
    t.sim.set_clock_offset(290).await.unwrap();
    let ok = download(&sub(0).shifted(290), &url).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    t.sim.set_clock_offset(0).await.unwrap();
    let r = apply(&c, &format!("bill_date={today}")).await;
    let url = r.json()["download_url"].as_str().unwrap().to_string();
    t.sim.set_clock_offset(301).await.unwrap();
    let late = sub(0).shifted(301);
    let expired = download(&late, &url).await;
    assert_eq!(
        (expired.status, expired.code().as_str()),
        (400, "INVALID_REQUEST"),
        "{}",
        expired.text()
    );
    t.sim.set_clock_offset(0).await.unwrap();

    // Another merchant cannot use the token (neither the initiator of the
    // orders nor another sub-merchant); a merchant without trades has no bill.
    let other_creds = t.sim.merchants()[1].clone();
    let other = ApiClient::new(t.base(), &other_creds);
    let r = apply(&c, &format!("bill_date={today}")).await;
    let url = r.json()["download_url"].as_str().unwrap().to_string();
    for someone_else in [&other, &initiator, &c1] {
        let foreign = download(someone_else, &url).await;
        assert_eq!((foreign.status, foreign.code().as_str()), (403, "NO_AUTH"));
    }
    assert_eq!(
        download(&c, &url).await.status,
        200,
        "the refusal did not burn the token"
    );
    assert_eq!(
        apply(&other, &format!("bill_date={today}")).await.code(),
        "NO_STATEMENT_EXIST"
    );

    // Other days and bad parameters.
    assert_eq!(
        apply(&c, &format!("bill_date={}", cst_date(-1)))
            .await
            .code(),
        "NO_STATEMENT_EXIST"
    );
    assert_eq!(
        apply(&c, &format!("bill_date={}", cst_date(1)))
            .await
            .code(),
        "PARAM_ERROR"
    );
    assert_eq!(
        apply(&c, "bill_date=2024/01/01").await.code(),
        "PARAM_ERROR"
    );
    assert_eq!(
        apply(&c, &format!("bill_date={today}&tar_type=ZIP"))
            .await
            .code(),
        "PARAM_ERROR"
    );
    assert_eq!(apply(&c, "bill_type=ALL").await.code(), "PARAM_ERROR");

    // The corrupt-hash fault announces a hash the file does not have.
    t.sim
        .control(json!({"mchid": t.creds().sub_mchids[0], "corrupt_bill_hash": true}))
        .await
        .unwrap();
    let r = apply(&c, &format!("bill_date={today}")).await;
    let j = r.json();
    let file = download(&c, j["download_url"].as_str().unwrap()).await;
    let announced = j["hash_value"].as_str().unwrap();
    assert_eq!(announced.len(), 40);
    assert_ne!(sha1_hex(&file.body), announced);
    t.sim.shutdown().await;
}

/// Seconds from the simulator's now to `hh:mm:ss` +08:00 `days` from today.
fn offset_to(t: &TestSim, days: i64, secs_of_day: i64) -> i64 {
    let now = t.sim.now();
    let cst = time::OffsetDateTime::from_unix_timestamp(now)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap());
    let midnight = cst.replace_time(time::Time::MIDNIGHT).unix_timestamp();
    midnight + days * 86_400 + secs_of_day - now
}

#[tokio::test]
async fn statement_creating_until_ten_the_next_day() {
    let t = TestSim::start().await;
    let c = t.client();
    let sub_creds = t.sim.account(&t.creds().sub_mchids[0]).unwrap().clone();
    let sub = ApiClient::new(t.base(), &sub_creds);
    c.create_and_pay(&prepay_body(t.creds(), &unique("SC"), NOTIFY))
        .await;
    let today = cst_date(0);
    let creating = |r: &Reply| {
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "STATEMENT_CREATING"),
            "{}",
            r.text()
        );
    };
    // The day is not over.
    creating(&apply(&sub, &format!("bill_date={today}")).await);

    // The next day before 10:00: still being generated.
    // 09:59:30, leaving room for the seconds the requests take.
    let before = offset_to(&t, 1, 10 * 3600 - 30);
    t.sim.set_clock_offset(before).await.unwrap();
    let late = ApiClient::new(t.base(), &sub_creds).shifted(before);
    let r = apply(&late, &format!("bill_date={today}")).await;
    creating(&r);
    r.verify(&late.verifier()).expect("signed like every error");

    // From 10:00 the bill is there.
    let at_ten = before + 30;
    t.sim.set_clock_offset(at_ten).await.unwrap();
    let r = apply(
        &ApiClient::new(t.base(), &sub_creds).shifted(at_ten),
        &format!("bill_date={today}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    t.sim.set_clock_offset(0).await.unwrap();

    // The switch (also `sim --bills-ready-immediately`) serves today's bill
    // at once, and turning it off restores the wait.
    let state = t
        .sim
        .control(json!({"bills_ready_immediately": true}))
        .await
        .unwrap();
    assert!(state.bills_ready_immediately);
    let r = apply(&sub, &format!("bill_date={today}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    t.sim
        .control(json!({"bills_ready_immediately": false}))
        .await
        .unwrap();
    creating(&apply(&sub, &format!("bill_date={today}")).await);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_coupon_in_the_notification_the_query_and_the_bill() {
    let t = TestSim::start_with(|o| o.bills_ready_immediately = true).await;
    let c = t.client();
    let rx = Receiver::start(200).await;
    rx.verify_with(c.verifier());

    // The control key: every payment from now on uses a 2.00 yuan coupon.
    let state = t.sim.control(json!({"coupon_fen": 200})).await.unwrap();
    assert_eq!(state.coupon_fen, 200);
    let no = unique("CP");
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let q = c.query(&no).await.json();
    let s0 = &q["sub_orders"][0];
    assert_eq!(s0["amount"]["total_amount"], 1234);
    assert_eq!(s0["amount"]["payer_amount"], 1034);
    let promo = &s0["promotion_detail"][0];
    assert_eq!(
        (promo["amount"].as_i64(), promo["type"].as_str()),
        (Some(200), Some("CASH"))
    );
    assert_eq!(promo["wechatpay_contribute"], 200);
    // A 1-fen sub-order takes no coupon: the payer pays at least 1 fen.
    let s1 = &q["sub_orders"][1];
    assert_eq!(s1["amount"]["payer_amount"], 1);
    assert!(s1.get("promotion_detail").is_none());

    let hit = &rx.wait_for(1, std::time::Duration::from_secs(10)).await[0];
    let resource: EncryptedResource =
        serde_json::from_value(hit.json()["resource"].clone()).unwrap();
    let plain: serde_json::Value =
        serde_json::from_slice(&resource.open(&t.creds().apiv3_key().unwrap()).unwrap()).unwrap();
    assert_eq!(plain, q, "the notification carries the same amounts");

    // The bill: 订单金额 12.34, 代金券金额 2.00, 应结订单金额 12.34.
    let sub = ApiClient::new(t.base(), t.sim.account(&t.creds().sub_mchids[0]).unwrap());
    let r = apply(
        &sub,
        &format!("bill_date={}&bill_type=SUCCESS", cst_date(0)),
    )
    .await;
    let file = download(&sub, r.json()["download_url"].as_str().unwrap()).await;
    let bill = wxpay_combine::bill::parse(&file.body).unwrap();
    let d = &bill.details[0];
    assert_eq!(
        (
            d.order_amount_fen,
            d.coupon_amount_fen,
            d.settlement_amount_fen
        ),
        (1234, 200, 1234)
    );

    // The cashier option overrides the control for one payment; 0: none.
    t.sim.control(json!({"coupon_fen": 0})).await.unwrap();
    let no = unique("CP");
    let pid = c.prepay(&prepay_body(t.creds(), &no, NOTIFY)).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = serde_json::to_value(c.pay_params(&pid)).unwrap();
    body["action"] = json!("pay");
    body["coupon_fen"] = json!(34);
    let out: serde_json::Value = wxpay_combine_tests::sim::http()
        .post(format!("{}/sim/cashier/confirm", t.base()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok", "{out}");
    let q = c.query(&no).await.json();
    assert_eq!(q["sub_orders"][0]["amount"]["payer_amount"], 1200);
    t.sim.shutdown().await;
}
