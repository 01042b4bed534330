//! `wxpay-combine refund` as a user runs it: against the demo's
//! configuration (every sub-merchant with its own credentials) and
//! simulator, on the demo's database. A refund prints one JSON object; a
//! rule's refusal exits 1 with the rule's code first on stderr.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::SystemClock;
use wxpay_combine::combine::wire::{PayerInfo, PrepayRequest, PrepaySubOrder, RequestAmount};
use wxpay_combine::combine::{CombineApi, CombineOrder, EventSource, SubOrder};
use wxpay_combine::config::RawConfig;
use wxpay_combine_cli::app::{self, DemoOptions};

fn refund(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
        .arg("refund")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("WXPAY_CONFIG")
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_and_query_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("wxpay-refund-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    // Refunds complete after 60 simulated seconds: 0.6 s here.
    opts.time_scale = 0.01;
    let demo = app::prepare_demo(&opts).await.unwrap();
    drop(demo.listener);
    let config = demo.config.clone();
    let store = wxpay_combine::store::connect(&config.store.database_url)
        .await
        .unwrap();

    // A paid order with sub-orders of two sub-merchants.
    let m = demo.sim.merchant().clone();
    let no = "CLIREFUND0001";
    let subs = vec![
        SubOrder::unpaid(&m.sub_mchids[0], format!("{no}S0"), "tea", "a", 300),
        SubOrder::unpaid(&m.sub_mchids[1], format!("{no}S1"), "cups", "b", 500),
    ];
    let now = demo.sim.now();
    let order = CombineOrder::unpaid(
        no,
        &m.mchid,
        &m.appid,
        &m.demo_openid,
        subs.clone(),
        None,
        now,
    );
    store.create_order(&order).await.unwrap();
    let client = wxpay_combine::kit::prepare_client(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let request = PrepayRequest {
        combine_appid: m.appid.clone(),
        combine_mchid: m.mchid.clone(),
        combine_out_trade_no: no.into(),
        scene_info: None,
        sub_orders: subs
            .iter()
            .map(|s| PrepaySubOrder {
                mchid: s.mchid.clone(),
                attach: s.attach.clone(),
                amount: RequestAmount {
                    total_amount: s.amount,
                    currency: "CNY".into(),
                },
                out_trade_no: s.out_trade_no.clone(),
                description: s.description.clone(),
                detail: None,
                goods_tag: None,
                settle_info: None,
            })
            .collect(),
        combine_payer_info: PayerInfo {
            openid: m.demo_openid.clone(),
        },
        time_start: None,
        time_expire: None,
        notify_url: config.notify.notify_url.to_string(),
    };
    let prepay_id = client.prepay(&request).await.unwrap();
    demo.sim.pay_prepay_id(&prepay_id).await.unwrap();
    let txn = client.query(no).await.unwrap();
    wxpay_combine::payment::apply_transaction(&*store, &txn, EventSource::Query, None, now)
        .await
        .unwrap();

    let cfg = demo.config_path.clone();
    let sub = format!("{no}S1");
    let made = json_of(&refund(
        &cfg,
        &[
            "--order",
            no,
            "--sub-order",
            &sub,
            "--amount",
            "200",
            "--reason",
            "退货",
        ],
    ));
    assert_eq!(made["amount"], 200);
    assert_eq!(made["out_trade_no"], sub.as_str());
    assert_eq!(made["mchid"], m.sub_mchids[1].as_str());
    assert_eq!(made["status"], "PROCESSING");
    let out_refund_no = made["out_refund_no"].as_str().unwrap().to_string();

    // --query asks WeChat Pay while PROCESSING: the simulator completes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = json_of(&refund(&cfg, &["--query", &out_refund_no]));
        assert_eq!(q["out_refund_no"], out_refund_no.as_str());
        if q["status"] == "SUCCESS" {
            assert!(q["success_time"].is_string(), "{q}");
            break;
        }
        assert!(Instant::now() < deadline, "still {q}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A refusal: exit 1, the rule's code first on stderr, nothing stored.
    let over = refund(
        &cfg,
        &["--order", no, "--sub-order", &sub, "--amount", "301"],
    );
    assert_eq!(over.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert!(stderr.starts_with("REFUND_EXCEEDS_AMOUNT: "), "{stderr}");
    assert_eq!(store.refunds_of_order(no).await.unwrap().len(), 1);

    // A merchant without credentials here: refused, naming it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut raw = RawConfig::parse(&text, "demo", &|_| None).unwrap();
    let entry = raw
        .merchants
        .iter_mut()
        .find(|e| e.mchid == m.sub_mchids[1])
        .unwrap();
    *entry = wxpay_combine::combine::settings::MerchantEntry {
        mchid: m.sub_mchids[1].clone(),
        ..Default::default()
    };
    let keyless = dir.join("wxpay-keyless.toml");
    std::fs::write(&keyless, raw.to_toml()).unwrap();
    let out = refund(
        &keyless,
        &["--order", no, "--sub-order", &sub, "--amount", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("MERCHANT_WITHOUT_CREDENTIALS: "),
        "{stderr}"
    );
    assert!(stderr.contains(&m.sub_mchids[1]), "{stderr}");

    // Usage errors exit 2.
    assert_eq!(refund(&cfg, &[]).status.code(), Some(2));
    assert_eq!(refund(&cfg, &["--order", no]).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
