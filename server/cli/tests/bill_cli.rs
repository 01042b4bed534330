//! `wxpay-combine bill`, run as the binary against an in-process simulator
//! (through the demo's configuration, where every sub-merchant is a
//! `[[merchants]]` entry with its own credentials), and the scheduled run
//! with an injected clock. Bills are per merchant: each sub-merchant's bill
//! holds only its own sub-orders.
//!
//! A small forwarding proxy stands in front of the simulator as the
//! configured API host, to add what the simulator does not do by itself:
//! expired download URLs (it
//! applies with the simulator's clock 150 s behind and then moves it 151 s
//! ahead: past the URL's 5-minute life, while each request stays within
//! the 5-minute signature window, so the simulator itself refuses the
//! download). The demo serves today's bill at once; `STATEMENT_CREATING`
//! is the simulator's own answer once that switch is off.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use wxpay_combine::apiv3::{ManualClock, SystemClock};
use wxpay_combine::bill::schedule::{BillScheduleConfig, BillScheduler, StepOutcome};
use wxpay_combine::bill::BillKind;
use wxpay_combine::combine::wire::{PayerInfo, PrepayRequest, PrepaySubOrder, RequestAmount};
use wxpay_combine::combine::{
    CombineApi, CombineOrder, EventSource, SubOrder, SubOrderPayment, TradeState, Transition,
};
use wxpay_combine::config::{Config, RawConfig};
use wxpay_combine::store::Store;
use wxpay_combine_cli::app::{self, DemoOptions};
use wxpay_combine_sim::SimHandle;

struct ProxyState {
    sim: Arc<SimHandle>,
    http: reqwest::Client,
    /// Expire the download URL of the next N applications.
    expire_next: AtomicU32,
    applications: AtomicU32,
    downloads: AtomicU32,
}

async fn forward(State(p): State<Arc<ProxyState>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let apply = req.uri().path() == "/v3/bill/tradebill";
    let mut expire = false;
    if apply {
        p.applications.fetch_add(1, Ordering::SeqCst);
        expire = p
            .expire_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        p.sim
            .set_clock_offset(if expire { -150 } else { 0 })
            .await
            .unwrap();
    }
    if req.uri().path().starts_with("/v3/billdownload") {
        p.downloads.fetch_add(1, Ordering::SeqCst);
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut rb = p
        .http
        .request(method, format!("{}{path}", p.sim.base_url()))
        .body(body);
    for (k, v) in &headers {
        if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let rh = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    if expire && status.is_success() {
        p.sim.set_clock_offset(151).await.unwrap();
    }
    let mut out = Response::builder().status(status.as_u16());
    for (k, v) in &rh {
        if k != http::header::TRANSFER_ENCODING && k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(bytes)).unwrap()
}

struct Env {
    dir: PathBuf,
    config_path: PathBuf,
    sim: Arc<SimHandle>,
    proxy: Arc<ProxyState>,
    proxy_base: String,
    store: Arc<dyn Store>,
    config: Config,
    today: time::Date,
    /// The initiator (no sub-orders of its own).
    initiator: String,
    /// The sub-merchants, in the order `pay_in_sim` uses them.
    subs: Vec<String>,
}

impl Env {
    async fn start() -> Env {
        let dir =
            std::env::temp_dir().join(format!("wxpay-bill-{}", uuid::Uuid::new_v4().simple()));
        let mut opts = DemoOptions::new(&dir);
        opts.addr = "127.0.0.1:0".parse().unwrap();
        let demo = app::prepare_demo(&opts).await.unwrap();
        drop(demo.listener);
        let sim = Arc::new(demo.sim);
        let proxy = Arc::new(ProxyState {
            sim: sim.clone(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            expire_next: AtomicU32::new(0),
            applications: AtomicU32::new(0),
            downloads: AtomicU32::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let store = wxpay_combine::store::connect(&demo.config.store.database_url)
            .await
            .unwrap();
        let today = time::OffsetDateTime::from_unix_timestamp(sim.now())
            .unwrap()
            .to_offset(wxpay_combine::bill::BEIJING)
            .date();
        let initiator = sim.merchant().mchid.clone();
        let subs = sim.merchant().sub_mchids.clone();
        // The demo configures every sub-merchant with its own credentials.
        let configured: Vec<&str> = demo
            .config
            .wechatpay
            .credentialed()
            .map(|c| c.mchid.as_str())
            .collect();
        let mut want = vec![initiator.as_str()];
        want.extend(subs.iter().map(String::as_str));
        assert_eq!(configured, want);
        Env {
            dir,
            config_path: demo.config_path,
            sim,
            proxy,
            proxy_base,
            store,
            config: demo.config,
            today,
            initiator,
            subs,
        }
    }

    /// A copy of the demo's configuration in which `mchid`'s
    /// `[[merchants]]` entry has no credentials.
    fn config_without_keys_of(&self, mchid: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let mut raw = RawConfig::parse(&text, "demo", &|_| None).unwrap();
        let entry = raw.merchants.iter_mut().find(|e| e.mchid == mchid).unwrap();
        *entry = wxpay_combine::combine::settings::MerchantEntry {
            mchid: mchid.to_string(),
            ..Default::default()
        };
        let path = self.path("wxpay-without-keys.toml");
        std::fs::write(&path, raw.to_toml()).unwrap();
        path
    }

    /// Runs `bill` through the proxy; `backup` adds the simulator's own
    /// host as a configured API host (so its download URLs are accepted).
    fn bill(&self, args: &[&str], backup: bool) -> Output {
        self.bill_with(&self.config_path, args, backup)
    }

    /// [`Self::bill`] with another configuration file.
    fn bill_with(&self, config: &Path, args: &[&str], backup: bool) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
            .arg("bill")
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("WXPAY_CONFIG")
            .env("WXPAY_API_BASE_URL", &self.proxy_base)
            .env(
                "WXPAY_API_BACKUP_URL",
                if backup { self.sim.base_url() } else { "" },
            )
            .output()
            .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A combined order paid in the simulator; returns it as WeChat Pay has it.
    async fn pay_in_sim(&self, no: &str, amounts: &[i64]) -> CombineOrder {
        let m = self.sim.merchant().clone();
        let client = wxpay_combine::kit::prepare_client(&self.config, Arc::new(SystemClock))
            .await
            .unwrap();
        let request = PrepayRequest {
            combine_appid: m.appid.clone(),
            combine_mchid: m.mchid.clone(),
            combine_out_trade_no: no.into(),
            scene_info: None,
            sub_orders: amounts
                .iter()
                .enumerate()
                .map(|(i, a)| PrepaySubOrder {
                    mchid: m.sub_mchids[i % m.sub_mchids.len()].clone(),
                    attach: "bill".into(),
                    amount: RequestAmount {
                        total_amount: *a,
                        currency: "CNY".into(),
                    },
                    out_trade_no: format!("{no}S{i}"),
                    description: "bill test".into(),
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
            notify_url: self.config.notify.notify_url.to_string(),
        };
        let prepay_id = client.prepay(&request).await.unwrap();
        self.sim.pay_prepay_id(&prepay_id).await.unwrap();
        let tx = client.query(no).await.unwrap();
        let now = self.sim.now();
        CombineOrder {
            combine_out_trade_no: no.into(),
            combine_mchid: m.mchid.clone(),
            combine_appid: m.appid.clone(),
            payer_openid: m.demo_openid.clone(),
            state: TradeState::Success,
            sub_orders: tx
                .sub_orders
                .iter()
                .map(|s| SubOrder {
                    mchid: s.mchid.clone(),
                    out_trade_no: s.out_trade_no.clone(),
                    description: "bill test".into(),
                    attach: "bill".into(),
                    amount: s.amount.total_amount,
                    transaction_id: s.transaction_id.clone(),
                    payer_amount: s.amount.payer_amount,
                    bank_type: s.bank_type.clone(),
                    success_time: s.success_time.clone(),
                })
                .collect(),
            prepay_id: None,
            prepay_expires_at: None,
            time_expire: None,
            created_at: now,
            updated_at: now,
            notified_at: None,
        }
    }

    /// Stores `paid` locally as created, then paid (the same facts).
    async fn store_paid(&self, paid: &CombineOrder) {
        let mut new = paid.clone();
        new.state = TradeState::NotPay;
        for s in &mut new.sub_orders {
            s.transaction_id = None;
            s.payer_amount = None;
            s.bank_type = None;
            s.success_time = None;
        }
        self.store.create_order(&new).await.unwrap();
        let t = Transition {
            to: TradeState::Success,
            source: EventSource::Query,
            payments: paid
                .sub_orders
                .iter()
                .map(|s| SubOrderPayment {
                    mchid: s.mchid.clone(),
                    out_trade_no: s.out_trade_no.clone(),
                    transaction_id: s.transaction_id.clone(),
                    payer_amount: s.payer_amount,
                    bank_type: s.bank_type.clone(),
                    success_time: s.success_time.clone(),
                })
                .collect(),
            notification: None,
            detail: "test".into(),
        };
        self.store
            .apply_transition(&paid.combine_out_trade_no, &t, paid.updated_at)
            .await
            .unwrap();
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Nothing but the expected files in `dir` (no temporary file left).
fn no_part_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "temporary file left: {name}");
    }
}

/// The run report's entry of merchant `mchid`.
fn merchant<'a>(run: &'a Value, mchid: &str) -> &'a Value {
    run["merchants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mchid"] == mchid)
        .unwrap_or_else(|| panic!("{mchid} not in {run:#}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn kinds(report: &Value, kind: &str) -> Vec<String> {
    report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["out_trade_no"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bill_command_downloads_verifies_and_reconciles() {
    let env = Env::start().await;
    let today = env.today.to_string();
    let no = |p: &str| format!("{p}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (initiator, s0, s1, s2) = (&env.initiator, &env.subs[0], &env.subs[1], &env.subs[2]);

    // WeChat Pay has two paid orders (sub-orders of s0 and s1); locally one
    // matches, one has a different amount on its s0 sub-order, and a third
    // order was paid locally only.
    let matching = env.pay_in_sim(&no("BM"), &[1234, 100]).await;
    env.store_paid(&matching).await;
    let mut differing = env.pay_in_sim(&no("BD"), &[500, 700]).await;
    differing.sub_orders[0].amount = 501;
    differing.sub_orders[0].payer_amount = Some(501);
    env.store_paid(&differing).await;
    let mut local_only = matching.clone();
    local_only.combine_out_trade_no = no("BL");
    for (i, s) in local_only.sub_orders.iter_mut().enumerate() {
        s.out_trade_no = format!("{}S{i}", local_only.combine_out_trade_no);
        s.transaction_id = Some(format!("4200LOCAL{i}"));
    }
    env.store_paid(&local_only).await;
    assert_eq!(
        (&matching.sub_orders[0].mchid, &matching.sub_orders[1].mchid),
        (s0, s1)
    );

    // Every merchant's bill, each to its own file: discrepancies → exit 1.
    let all = env.path("all");
    let run = env.path("run.json");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--out-dir",
            all.to_str().unwrap(),
            "--report",
            run.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("DISCREPANCIES: 3"), "{}", text(&o));
    assert!(stdout.contains("DISCREPANCIES: 1"), "{}", text(&o));
    assert!(
        stdout.contains(&format!("merchant {initiator}: no bill")),
        "{}",
        text(&o)
    );
    let r = read_json(&run);
    assert_eq!(r["bill_date"], today);
    assert_eq!(r["ok"], false);
    assert_eq!(r["skipped"], json!([]));
    let order: Vec<&str> = r["merchants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mchid"].as_str().unwrap())
        .collect();
    assert_eq!(order, [initiator, s0, s1, s2]);
    let file = |m: &str, ext: &str| all.join(format!("{today}-ALL-{m}.{ext}"));
    // The initiator and s2 have no bill and nothing paid: clean and empty.
    for m in [initiator, s2] {
        assert_eq!(merchant(&r, m)["status"], "no_statement", "{r:#}");
        assert_eq!(merchant(&r, m)["ok"], true);
        assert!(!file(m, "csv").exists());
    }
    // s0: its own rows only, reconciled against its own sub-orders only.
    let plain = std::fs::read(file(s0, "csv")).unwrap();
    let bill = wxpay_combine::bill::parse(&plain).unwrap();
    assert_eq!(bill.kind, BillKind::All);
    assert_eq!(bill.details.len(), 2);
    assert!(bill.details.iter().all(|d| d.mchid == *s0));
    let r0 = read_json(&file(s0, "json"));
    assert_eq!(merchant(&r, s0)["report"]["matched"], r0["matched"]);
    assert_eq!(r0["mchid"], s0.as_str());
    assert_eq!(r0["matched"], 1, "{r0:#}");
    assert_eq!(r0["matched_amount_fen"], 1234);
    assert_eq!(r0["local"]["paid_sub_orders"], 3);
    assert_eq!(r0["bill"]["payment_rows"], 2);
    assert_eq!(r0["bill"]["summary_order_total_fen"], 1234 + 500);
    assert_eq!(r0["total_mismatches"], json!([]));
    assert_eq!(r0["ok"], false);
    let d0 = &differing.sub_orders[0].out_trade_no;
    assert_eq!(kinds(&r0, "amount_mismatch"), vec![d0.clone()]);
    let mismatch = r0["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "amount_mismatch")
        .unwrap();
    assert_eq!(
        (&mismatch["bill_amount_fen"], &mismatch["local_amount_fen"]),
        (&json!(500), &json!(501))
    );
    // Only the amount differs (payer amount is compared separately).
    assert_eq!(kinds(&r0, "payer_amount_mismatch"), vec![d0.clone()]);
    // The local-only sub-orders are missing each from its own merchant's bill.
    assert_eq!(
        kinds(&r0, "missing_from_bill"),
        vec![local_only.sub_orders[0].out_trade_no.clone()]
    );
    assert_eq!(r0["discrepancies"].as_array().unwrap().len(), 3);
    assert_eq!(r0["file"]["sha1"], wxpay_combine::bill::sha1_hex(&plain));
    let r1 = read_json(&file(s1, "json"));
    assert_eq!(
        (&r1["matched"], &r1["matched_amount_fen"]),
        (&json!(2), &json!(800))
    );
    assert_eq!(
        kinds(&r1, "missing_from_bill"),
        vec![local_only.sub_orders[1].out_trade_no.clone()]
    );
    assert_eq!(r1["discrepancies"].as_array().unwrap().len(), 1, "{r1:#}");

    // One merchant to one file: the same bill.
    let out = env.path("plain.csv");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--merchant",
            s0,
            "--out",
            out.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), plain);

    // Gzip: the same file after decompression.
    let gz = env.path("gzip.csv");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--merchant",
            s0,
            "--gzip",
            "--out",
            gz.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_eq!(std::fs::read(&gz).unwrap(), plain);

    // A corrupted hash: exit 5, both hashes named, nothing at --out.
    env.sim
        .control(json!({"corrupt_bill_hash": true}))
        .await
        .unwrap();
    for gzip in [false, true] {
        let bad = env.path(&format!("corrupt-{gzip}.csv"));
        let mut args = vec![
            "--date",
            &today,
            "--merchant",
            s0,
            "--out",
            bad.to_str().unwrap(),
        ];
        if gzip {
            args.push("--gzip");
        }
        let o = env.bill(&args, true);
        assert_eq!(code(&o), 5, "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let real = wxpay_combine::bill::sha1_hex(&plain);
        assert!(err.contains(&real), "{err}");
        assert!(err.contains("hash_value"), "{err}");
        assert!(!bad.exists());
    }
    no_part_files(&env.dir);
    env.sim
        .control(json!({"corrupt_bill_hash": null}))
        .await
        .unwrap();

    // The download URL expired once: applied again, then fine.
    let before = env.proxy.applications.load(Ordering::SeqCst);
    env.proxy.expire_next.store(1, Ordering::SeqCst);
    let again = env.path("again.csv");
    let one_s0 = |out: &Path| {
        vec![
            "--date".to_string(),
            today.clone(),
            "--merchant".into(),
            s0.clone(),
            "--out".into(),
            out.to_str().unwrap().to_string(),
        ]
    };
    let args = one_s0(&again);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.bill(&args, true);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_eq!(env.proxy.applications.load(Ordering::SeqCst) - before, 2);
    assert_eq!(std::fs::read(&again).unwrap(), plain);

    // It keeps expiring: three applications, then exit 6, nothing written.
    let before = env.proxy.applications.load(Ordering::SeqCst);
    env.proxy.expire_next.store(100, Ordering::SeqCst);
    let never = env.path("never.csv");
    let args = one_s0(&never);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.bill(&args, true);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("expired"),
        "{}",
        text(&o)
    );
    assert_eq!(env.proxy.applications.load(Ordering::SeqCst) - before, 3);
    assert!(!never.exists());
    env.proxy.expire_next.store(0, Ordering::SeqCst);
    env.sim.set_clock_offset(0).await.unwrap();

    // A download URL on another host than the configured one: refused
    // before any request (the simulator sees no download).
    let downloads =
        |s: &wxpay_combine_sim::SimStats| s.api_calls.get("billdownload").copied().unwrap_or(0);
    let seen = downloads(&env.sim.stats().await.unwrap());
    let foreign = env.path("foreign.csv");
    let args = one_s0(&foreign);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.bill(&args, false);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing download_url"),
        "{}",
        text(&o)
    );
    assert_eq!(downloads(&env.sim.stats().await.unwrap()), seen);
    assert_eq!(env.proxy.downloads.load(Ordering::SeqCst), 0);
    assert!(!foreign.exists());

    // STATEMENT_CREATING → 4: the simulator's own answer for a day not yet
    // over once its "ready immediately" switch (on in the demo) is off.
    env.sim
        .control(json!({"bills_ready_immediately": false}))
        .await
        .unwrap();
    let o = env.bill(&args, true);
    assert_eq!(code(&o), 4, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("STATEMENT_CREATING"), "{err}");
    assert!(err.contains("not ready, retry later"), "{err}");
    env.sim
        .control(json!({"bills_ready_immediately": true}))
        .await
        .unwrap();

    // NO_STATEMENT_EXIST: an error (3) for a merchant with a sub-order paid
    // locally that day, a clean empty result for one without (the initiator).
    let yesterday = env.today.previous_day().unwrap().to_string();
    let mut paid_yesterday = matching.clone();
    paid_yesterday.combine_out_trade_no = no("BY");
    paid_yesterday.sub_orders.truncate(1);
    paid_yesterday.sub_orders[0].out_trade_no =
        format!("{}S0", paid_yesterday.combine_out_trade_no);
    paid_yesterday.sub_orders[0].transaction_id = Some("4200YESTERDAY".into());
    paid_yesterday.sub_orders[0].success_time = Some(format!("{yesterday}T12:00:00+08:00"));
    env.store_paid(&paid_yesterday).await;
    let o = env.bill(
        &[
            "--date",
            &yesterday,
            "--merchant",
            s0,
            "--out",
            foreign.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NO_STATEMENT_EXIST"), "{err}");
    assert!(err.contains(&format!("merchant {s0}")), "{err}");
    assert!(err.contains("1 of its sub-orders"), "{err}");
    assert!(!foreign.exists());
    let o = env.bill(
        &[
            "--date",
            &yesterday,
            "--merchant",
            initiator,
            "--out",
            foreign.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("nothing to reconcile"), "{}", text(&o));
    assert!(!foreign.exists());

    // Usage errors → 2: a bad date; --out for several merchants.
    let o = env.bill(
        &["--date", "2024-13-01", "--out", foreign.to_str().unwrap()],
        true,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = env.bill(
        &["--date", &today, "--out", foreign.to_str().unwrap()],
        true,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--out-dir"),
        "{}",
        text(&o)
    );
    assert!(!foreign.exists());

    // The scheduled run: the clock says 10:01 (Beijing) the next day.
    let mut config = Config::load_with_env(&env.config_path, &|k| match k {
        "WXPAY_API_BASE_URL" => Some(env.proxy_base.clone()),
        "WXPAY_API_BACKUP_URL" => Some(env.sim.base_url().to_string()),
        _ => None,
    })
    .unwrap();
    config.bill_schedule.dir = env.path("bills");
    let (start, _) = wxpay_combine::bill::reconcile::beijing_day_bounds(env.today);
    let clock = Arc::new(ManualClock::new(start + 86_400 + 9 * 3600));
    let client = wxpay_combine::kit::prepare_client(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let clients =
        wxpay_combine::kit::prepare_merchant_clients(&config, client, Arc::new(SystemClock))
            .await
            .unwrap();
    let fetchers = wxpay_combine::kit::bill_fetchers(&config, &clients, env.store.clone()).unwrap();
    assert_eq!(fetchers.len(), 4);
    let schedule = BillScheduleConfig {
        enabled: true,
        ..config.bill_schedule.clone()
    };
    let mut scheduler = BillScheduler::new(
        fetchers,
        env.store.clone(),
        wxpay_combine::kit::merchants_without_credentials(&config),
        schedule,
        clock.clone(),
    );
    assert_eq!(scheduler.step().await, StepOutcome::Idle, "09:00: not yet");
    clock.advance(3600 + 60);
    // The simulator (its clock still today) answers STATEMENT_CREATING.
    env.sim
        .control(json!({"bills_ready_immediately": false}))
        .await
        .unwrap();
    assert_eq!(
        scheduler.step().await,
        StepOutcome::RetryLater {
            date: env.today,
            reason: "not_ready"
        }
    );
    env.sim
        .control(json!({"bills_ready_immediately": true}))
        .await
        .unwrap();
    assert_eq!(scheduler.step().await, StepOutcome::Idle, "waits 30 min");
    clock.advance(31 * 60);
    assert_eq!(
        scheduler.step().await,
        StepOutcome::Reconciled {
            date: env.today,
            ok: false
        }
    );
    let bills = env.path("bills");
    let day = read_json(&bills.join(format!("{today}.json")));
    assert_eq!(day["ok"], false);
    assert_eq!(day["merchants"].as_array().unwrap().len(), 4, "{day:#}");
    assert_eq!(merchant(&day, initiator)["status"], "no_statement");
    assert_eq!(merchant(&day, s0)["report"]["matched"], 1);
    assert_eq!(merchant(&day, s1)["report"]["matched"], 2);
    assert_eq!(
        read_json(&bills.join(format!("{today}-ALL-{s0}.json")))["matched"],
        1
    );
    assert_eq!(
        std::fs::read(bills.join(format!("{today}-ALL-{s0}.csv"))).unwrap(),
        plain
    );
    assert_eq!(scheduler.step().await, StepOutcome::Idle, "the day is done");
    // Counted in the process-global metrics.
    let m = wxpay_combine::metrics::metrics();
    assert!(m.bill_results("not_ready") >= 1);
    assert!(m.bill_results("discrepancies") >= 1);

    // `serve` registers the daily run as one of its workers when enabled.
    for enabled in [false, true] {
        let mut c = config.clone();
        c.bill_schedule.enabled = enabled;
        let kit = wxpay_combine::kit::Kit::builder(c).build().await.unwrap();
        assert_eq!(
            kit.workers.names().contains(&"bill-schedule"),
            enabled,
            "{:?}",
            kit.workers
        );
    }
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_merchants_reconcile_clean_and_merchants_without_credentials_are_skipped() {
    let env = Env::start().await;
    let today = env.today.to_string();
    let no = |p: &str| format!("{p}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (initiator, s0, s1, s2) = (&env.initiator, &env.subs[0], &env.subs[1], &env.subs[2]);
    let three = env.pay_in_sim(&no("T"), &[300, 400, 500]).await;
    env.store_paid(&three).await;
    let two = env.pay_in_sim(&no("U"), &[600, 700]).await;
    env.store_paid(&two).await;

    // A day with payments over three merchants: each reconciles clean.
    let dir = env.path("clean");
    let run = env.path("clean.json");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--gzip",
            "--out-dir",
            dir.to_str().unwrap(),
            "--report",
            run.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let r = read_json(&run);
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["skipped"], json!([]));
    assert_eq!(merchant(&r, initiator)["status"], "no_statement");
    for (m, matched, amount) in [(s0, 2, 900), (s1, 2, 1100), (s2, 1, 500)] {
        let entry = merchant(&r, m);
        assert_eq!(entry["status"], "reconciled");
        assert_eq!(entry["report"]["ok"], true, "{entry:#}");
        assert_eq!(entry["report"]["mchid"], m.as_str());
        assert_eq!(entry["report"]["matched"], matched);
        assert_eq!(entry["report"]["matched_amount_fen"], amount);
        assert_eq!(entry["report"]["local"]["paid_sub_orders"], matched);
        let stem = format!("{today}-ALL-{m}");
        assert_eq!(
            read_json(&dir.join(format!("{stem}.json")))["matched"],
            matched
        );
        let bill = wxpay_combine::bill::parse_file(&dir.join(format!("{stem}.csv"))).unwrap();
        assert_eq!(bill.details.len(), matched as usize);
        assert!(bill.details.iter().all(|d| d.mchid == *m));
    }

    // s2 without credentials: skipped and listed as such, with its payment.
    let without = env.config_without_keys_of(s2);
    let dir2 = env.path("skipping");
    let run2 = env.path("skipping.json");
    let o = env.bill_with(
        &without,
        &[
            "--date",
            &today,
            "--out-dir",
            dir2.to_str().unwrap(),
            "--report",
            run2.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("SKIPPED merchant {s2}")),
        "{}",
        text(&o)
    );
    let r2 = read_json(&run2);
    let fetched: Vec<&str> = r2["merchants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mchid"].as_str().unwrap())
        .collect();
    assert_eq!(fetched, [initiator, s0, s1]);
    assert_eq!(
        r2["skipped"],
        json!([{"mchid": s2, "reason": "no_credentials", "listed": true,
                "paid_sub_orders": 1, "paid_amount_fen": 500}])
    );
    assert!(!dir2.join(format!("{today}-ALL-{s2}.csv")).exists());

    // --merchant for it: an error naming it, nothing fetched.
    let before = env.proxy.applications.load(Ordering::SeqCst);
    let nothing = env.path("nothing.csv");
    let o = env.bill_with(
        &without,
        &[
            "--date",
            &today,
            "--merchant",
            s2,
            "--out",
            nothing.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(s2.as_str()) && err.contains("no credentials"),
        "{err}"
    );
    assert!(!nothing.exists());
    assert_eq!(env.proxy.applications.load(Ordering::SeqCst), before);

    // --merchant fetches just that one bill.
    let one = env.path("one.csv");
    let one_report = env.path("one.json");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--merchant",
            s1,
            "--out",
            one.to_str().unwrap(),
            "--report",
            one_report.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(env.proxy.applications.load(Ordering::SeqCst) - before, 1);
    let bill = wxpay_combine::bill::parse_file(&one).unwrap();
    assert_eq!(bill.details.len(), 2);
    assert!(bill.details.iter().all(|d| d.mchid == *s1));
    let r3 = read_json(&one_report);
    assert_eq!(r3["merchants"].as_array().unwrap().len(), 1);
    assert_eq!(merchant(&r3, s1)["report"]["matched"], 2);
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[tokio::test]
async fn the_sample_bill_reconciles_as_unknown_against_an_empty_database() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/src/bill/testdata/sample-trade-bill-ALL.csv");
    let bill = wxpay_combine::bill::parse_file(&sample).unwrap();
    assert_eq!(bill.kind, BillKind::All);
    assert!(bill.check_totals().is_empty());
    let date = bill.details[0].trade_time.date();
    let r = wxpay_combine::bill::reconcile(&bill, date, &[], &[]);
    let payments = r.bill.payment_rows;
    assert!(payments > 0);
    assert_eq!(
        r.counts
            .get(&wxpay_combine::bill::reconcile::DiscrepancyKind::UnknownLocally)
            .copied()
            .unwrap_or(0),
        payments
    );
    assert_eq!(r.matched, 0);
    assert!(!r.ok);
}
