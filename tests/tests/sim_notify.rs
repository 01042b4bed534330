//! Payment notifications over HTTP: signed, encrypted, retried on the
//! (scaled) real schedule, faults, and delivery across a restart.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::EncryptedResource;
use wxpay_combine_sim::{NotificationLog, SimOptions, Simulator};
use wxpay_combine_tests::sim::{prepay_body, unique, Receiver, TestSim};
use wxpay_combine_tests::wait::eventually;

async fn log(t: &TestSim, no: &str) -> NotificationLog {
    t.sim.notifications(Some(no)).await.unwrap()
}

async fn wait_status(t: &TestSim, no: &str, status: &str, timeout: Duration) -> NotificationLog {
    eventually(&format!("notification {status}"), timeout, || async {
        let l = log(t, no).await;
        (l.notifications.first().map(|n| n.status.as_str()) == Some(status)).then_some(l)
    })
    .await
}

#[tokio::test]
async fn delivered_signed_and_decryptable() {
    let t = TestSim::start().await;
    let c = t.client();
    let rx = Receiver::start(200).await;
    rx.verify_with(c.verifier());
    let no = unique("N");
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let hits = rx.wait_for(1, Duration::from_secs(10)).await;
    let hit = &hits[0];
    assert_eq!(
        hit.answered, 200,
        "the receiver's verifier accepted the signature"
    );
    c.verifier()
        .verify(&hit.signature_headers(), &hit.body)
        .expect("signature over the raw body");
    assert_eq!(
        hit.header("wechatpay-serial"),
        t.creds().wechatpay_public_key_id.as_deref()
    );
    assert_eq!(
        hit.header("wechatpay-signature-type"),
        Some("WECHATPAY2-SHA256-RSA2048")
    );
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert!(hit.header("user-agent").is_some());

    let env = hit.json();
    assert_eq!(env["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(env["resource_type"], "encrypt-resource");
    assert_eq!(env["summary"], "支付成功");
    assert_eq!(env["id"].as_str().unwrap().len(), 36);
    assert!(env["create_time"].as_str().unwrap().ends_with("+08:00"));
    let res = &env["resource"];
    assert_eq!(res["original_type"], "transaction");
    assert_eq!(res["algorithm"], "AEAD_AES_256_GCM");
    assert_eq!(res["associated_data"], "transaction");
    assert_eq!(res["nonce"].as_str().unwrap().len(), 12);
    let resource: EncryptedResource = serde_json::from_value(res.clone()).unwrap();
    let plain: Value =
        serde_json::from_slice(&resource.open(&t.creds().apiv3_key().unwrap()).unwrap()).unwrap();

    // The plaintext is the same transaction the query answers.
    let q = c.query(&no).await.json();
    assert_eq!(plain, q);
    let subs = plain["sub_orders"].as_array().unwrap();
    for s in subs {
        assert_eq!(s["trade_state"], "SUCCESS");
        assert_eq!(s["bank_type"], "OTHERS");
        assert_eq!(s["transaction_id"].as_str().unwrap().len(), 28);
        assert!(s["success_time"].as_str().unwrap().ends_with("+08:00"));
        assert_eq!(s["amount"]["payer_amount"], s["amount"]["total_amount"]);
        assert_eq!(s["amount"]["payer_currency"], "CNY");
    }
    assert_ne!(subs[0]["transaction_id"], subs[1]["transaction_id"]);

    let l = wait_status(&t, &no, "delivered", Duration::from_secs(5)).await;
    assert_eq!(l.notifications[0].id, env["id"].as_str().unwrap());
    assert_eq!(l.attempts.len(), 1);
    assert_eq!(
        (l.attempts[0].kind.as_str(), l.attempts[0].http_status),
        ("delivery", Some(200))
    );
    // The same log over HTTP.
    let over_http: Value = wxpay_combine_tests::sim::http()
        .get(format!(
            "{}/sim/notifications?combine_out_trade_no={no}",
            t.base()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["notifications"][0]["status"], "delivered");
    assert_eq!(over_http["attempts"][0]["http_status"], 200);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn retried_on_failure_with_scaled_schedule() {
    // time_scale 0.01: waits of 15 s, 15 s, 30 s become 150, 150, 300 ms.
    let t = TestSim::start().await;
    let c = t.client();
    let rx = Receiver::start(200).await;
    rx.script(&[500, 202, 500]);
    let no = unique("N");
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let hits = rx.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [500, 202, 500, 200]
    );
    let gaps: Vec<u128> = hits
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    for (gap, want) in gaps.iter().zip([150u128, 150, 300]) {
        assert!(
            *gap + 15 >= want && *gap < want + 800,
            "gaps {gaps:?}, expected about 150/150/300 ms"
        );
    }
    let ids: Vec<Value> = hits.iter().map(|h| h.json()["id"].clone()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "a retry resends the same notification"
    );
    let l = wait_status(&t, &no, "delivered", Duration::from_secs(5)).await;
    assert_eq!(l.notifications[0].attempts, 4);
    let statuses: Vec<Option<i64>> = l.attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, [Some(500), Some(202), Some(500), Some(200)]);
    assert_eq!(
        l.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(l.attempts[0]
        .response_body
        .as_deref()
        .unwrap()
        .contains("FAIL"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn gives_up_after_the_schedule() {
    // 24 h 4 min scaled by 1e-5 is under a second.
    let t = TestSim::start_with(|o| o.time_scale = 0.000_01).await;
    let c = t.client();
    let rx = Receiver::start(500).await;
    let no = unique("N");
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let l = wait_status(&t, &no, "failed", Duration::from_secs(15)).await;
    assert_eq!(
        l.notifications[0].attempts, 16,
        "the first delivery and 15 retries"
    );
    assert_eq!(rx.hits().len(), 16);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn duplicates_drop_delay_and_probe() {
    let t = TestSim::start().await;
    let c = t.client();

    // Duplicates: 1 + 2 copies, concurrently, same notification id.
    let rx = Receiver::start(200).await;
    let no = unique("D");
    t.sim
        .control(json!({"combine_out_trade_no": no, "duplicate_notifications": 2}))
        .await
        .unwrap();
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let hits = rx.wait_for(3, Duration::from_secs(10)).await;
    assert!(hits.iter().all(|h| h.json()["id"] == hits[0].json()["id"]));
    let l = wait_status(&t, &no, "delivered", Duration::from_secs(5)).await;
    let mut kinds: Vec<&str> = l.attempts.iter().map(|a| a.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["delivery", "duplicate", "duplicate"]);

    // Drop: nothing is sent; the merchant must query.
    let rx = Receiver::start(200).await;
    let no = unique("D");
    t.sim
        .control(json!({"combine_out_trade_no": no, "drop_notifications": true}))
        .await
        .unwrap();
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let l = wait_status(&t, &no, "dropped", Duration::from_secs(5)).await;
    assert_eq!(l.attempts[0].kind, "dropped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.hits().is_empty());
    assert_eq!(
        c.query(&no).await.json()["sub_orders"][0]["trade_state"],
        "SUCCESS"
    );

    // Delay before the first delivery.
    let rx = Receiver::start(200).await;
    let no = unique("D");
    t.sim
        .control(json!({"combine_out_trade_no": no, "notify_delay_ms": 400}))
        .await
        .unwrap();
    let paid_at = Instant::now();
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let hits = rx.wait_for(1, Duration::from_secs(10)).await;
    assert!(hits[0].at - paid_at >= Duration::from_millis(400));

    // A WECHATPAY/SIGNTEST/ probe comes first; a verifying merchant refuses it.
    let rx = Receiver::start(200).await;
    rx.verify_with(c.verifier());
    let no = unique("D");
    t.sim
        .control(json!({"combine_out_trade_no": no, "signtest_probe": true}))
        .await
        .unwrap();
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    let hits = rx.wait_for(2, Duration::from_secs(10)).await;
    assert!(hits[0]
        .header("wechatpay-signature")
        .unwrap()
        .starts_with("WECHATPAY/SIGNTEST/"));
    assert!(c
        .verifier()
        .verify(&hits[0].signature_headers(), &hits[0].body)
        .is_err());
    assert_eq!((hits[0].answered, hits[1].answered), (401, 200));
    let l = wait_status(&t, &no, "delivered", Duration::from_secs(5)).await;
    let summary: Vec<(&str, i64, Option<i64>)> = l
        .attempts
        .iter()
        .map(|a| (a.kind.as_str(), a.attempt, a.http_status))
        .collect();
    assert_eq!(
        summary,
        [("probe", 0, Some(401)), ("delivery", 1, Some(200))]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn slow_answer_counts_as_failure() {
    let t = TestSim::start().await;
    let c = t.client();
    let rx = Receiver::start(200).await;
    rx.delay(Duration::from_millis(5_600));
    let no = unique("S");
    c.create_and_pay(&prepay_body(t.creds(), &no, &rx.url))
        .await;
    rx.wait_for(1, Duration::from_secs(5)).await;
    rx.delay(Duration::ZERO);
    let l = wait_status(&t, &no, "delivered", Duration::from_secs(15)).await;
    assert_eq!(l.attempts[0].error.as_deref(), Some("no answer within 5 s"));
    assert!(l.attempts[0].duration_ms >= 4_900);
    assert_eq!(l.attempts[1].http_status, Some(200));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn delivery_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        let mut o = SimOptions::new(dir.path());
        o.time_scale = 0.1; // the first retry waits 1.5 s
        o
    };
    let rx = Receiver::start(503).await;
    let sim = Simulator::start(opts()).await.unwrap();
    let c = wxpay_combine_tests::sim::ApiClient::new(sim.base_url(), sim.merchant());
    let no = unique("P");
    c.create_and_pay(&prepay_body(sim.merchant(), &no, &rx.url))
        .await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    // Let the failed attempt be recorded, then stop before the retry.
    eventually("attempt recorded", Duration::from_secs(5), || async {
        let l = sim.notifications(Some(&no)).await.unwrap();
        (l.notifications[0].attempts == 1).then_some(())
    })
    .await;
    sim.shutdown().await;
    rx.set_default(200);

    let sim = Simulator::start(opts()).await.unwrap();
    let hits = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits[0].json()["id"], hits[1].json()["id"]);
    assert_eq!((hits[0].answered, hits[1].answered), (503, 200));
    let l = eventually(
        "delivered after restart",
        Duration::from_secs(5),
        || async {
            let l = sim.notifications(Some(&no)).await.unwrap();
            (l.notifications[0].status == "delivered").then_some(l)
        },
    )
    .await;
    assert_eq!(
        l.attempts.iter().map(|a| a.http_status).collect::<Vec<_>>(),
        [Some(503), Some(200)]
    );
    sim.shutdown().await;
}
