//! `wxpay-combine bill`, run as the binary against an in-process simulator
//! (through the demo's configuration), and the scheduled run with an
//! injected clock.
//!
//! A small forwarding proxy stands in front of the simulator as the
//! configured API host, to add what the simulator does not do by itself:
//! `STATEMENT_CREATING` answers, and expired download URLs (after an
//! application it moves the simulator's clock past the URL's 30 s life, so
//! the simulator itself refuses the download).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use wxpay_combine::apiv3::{ManualClock, SystemClock};
use wxpay_combine::bill::fetch::BillFetcher;
use wxpay_combine::bill::schedule::{BillScheduleConfig, BillScheduler, StepOutcome};
use wxpay_combine::bill::BillKind;
use wxpay_combine::combine::wire::{PayerInfo, PrepayRequest, PrepaySubOrder, RequestAmount};
use wxpay_combine::combine::{
    CombineApi, CombineOrder, EventSource, SubOrder, SubOrderPayment, TradeState, Transition,
};
use wxpay_combine::config::Config;
use wxpay_combine::store::Store;
use wxpay_combine_cli::app::{self, DemoOptions};
use wxpay_combine_sim::SimHandle;

struct ProxyState {
    sim: Arc<SimHandle>,
    http: reqwest::Client,
    /// Expire the download URL of the next N applications.
    expire_next: AtomicU32,
    /// Answer STATEMENT_CREATING to applications.
    creating: AtomicBool,
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
    if apply {
        p.applications.fetch_add(1, Ordering::SeqCst);
        if p.creating.load(Ordering::SeqCst) {
            return (
                http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"code": "STATEMENT_CREATING", "message": "账单生成中"})),
            )
                .into_response();
        }
        p.sim.set_clock_offset(0).await.unwrap();
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
    if apply
        && status.is_success()
        && p.expire_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        p.sim.set_clock_offset(31).await.unwrap();
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
            creating: AtomicBool::new(false),
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
        Env {
            dir,
            config_path: demo.config_path,
            sim,
            proxy,
            proxy_base,
            store,
            config: demo.config,
            today,
        }
    }

    /// Runs `bill` through the proxy; `backup` adds the simulator's own
    /// host as a configured API host (so its download URLs are accepted).
    fn bill(&self, args: &[&str], backup: bool) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
            .arg("bill")
            .arg("--config")
            .arg(&self.config_path)
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

    // WeChat Pay has two paid orders; locally one matches, one has a
    // different amount on its first sub-order, and a third order was paid
    // locally only.
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

    // Plain download, with report: discrepancies → exit 1.
    let out = env.path("plain.csv");
    let report = env.path("plain.json");
    let o = env.bill(
        &[
            "--date",
            &today,
            "--out",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("DISCREPANCIES: 4"), "{}", text(&o));
    let plain = std::fs::read(&out).unwrap();
    let bill = wxpay_combine::bill::parse(&plain).unwrap();
    assert_eq!(bill.kind, BillKind::All);
    assert_eq!(bill.details.len(), 4);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["bill_date"], today);
    assert_eq!(r["matched"], 3, "{r:#}");
    assert_eq!(r["matched_amount_fen"], 1234 + 100 + 700);
    assert_eq!(r["local"]["paid_sub_orders"], 6);
    assert_eq!(r["bill"]["payment_rows"], 4);
    assert_eq!(r["bill"]["summary_order_total_fen"], 1234 + 100 + 500 + 700);
    assert_eq!(r["total_mismatches"], json!([]));
    assert_eq!(r["ok"], false);
    let d0 = &differing.sub_orders[0].out_trade_no;
    assert_eq!(kinds(&r, "amount_mismatch"), vec![d0.clone()]);
    let mismatch = r["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "amount_mismatch")
        .unwrap();
    assert_eq!(
        (&mismatch["bill_amount_fen"], &mismatch["local_amount_fen"]),
        (&json!(500), &json!(501))
    );
    let mut missing = kinds(&r, "missing_from_bill");
    missing.sort();
    assert_eq!(
        missing,
        local_only
            .sub_orders
            .iter()
            .map(|s| s.out_trade_no.clone())
            .collect::<Vec<_>>()
    );
    // Only the amount differs (payer amount is compared separately).
    assert_eq!(kinds(&r, "payer_amount_mismatch"), vec![d0.clone()]);
    assert_eq!(r["discrepancies"].as_array().unwrap().len(), 4);
    assert_eq!(r["file"]["sha1"], wxpay_combine::bill::sha1_hex(&plain));

    // Gzip: the same file after decompression.
    let gz = env.path("gzip.csv");
    let o = env.bill(
        &["--date", &today, "--gzip", "--out", gz.to_str().unwrap()],
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
        let mut args = vec!["--date", &today, "--out", bad.to_str().unwrap()];
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
    let o = env.bill(&["--date", &today, "--out", again.to_str().unwrap()], true);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_eq!(env.proxy.applications.load(Ordering::SeqCst) - before, 2);
    assert_eq!(std::fs::read(&again).unwrap(), plain);

    // It keeps expiring: three applications, then exit 6, nothing written.
    let before = env.proxy.applications.load(Ordering::SeqCst);
    env.proxy.expire_next.store(100, Ordering::SeqCst);
    let never = env.path("never.csv");
    let o = env.bill(&["--date", &today, "--out", never.to_str().unwrap()], true);
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
    let o = env.bill(
        &["--date", &today, "--out", foreign.to_str().unwrap()],
        false,
    );
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing download_url"),
        "{}",
        text(&o)
    );
    assert_eq!(downloads(&env.sim.stats().await.unwrap()), seen);
    assert_eq!(env.proxy.downloads.load(Ordering::SeqCst), 0);
    assert!(!foreign.exists());

    // STATEMENT_CREATING → 4; NO_STATEMENT_EXIST (a day without trades) → 3.
    env.proxy.creating.store(true, Ordering::SeqCst);
    let o = env.bill(
        &["--date", &today, "--out", foreign.to_str().unwrap()],
        true,
    );
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("STATEMENT_CREATING"));
    env.proxy.creating.store(false, Ordering::SeqCst);
    let yesterday = env.today.previous_day().unwrap().to_string();
    let o = env.bill(
        &["--date", &yesterday, "--out", foreign.to_str().unwrap()],
        true,
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NO_STATEMENT_EXIST"));
    assert!(!foreign.exists());

    // Usage errors → 2.
    let o = env.bill(
        &["--date", "2024-13-01", "--out", foreign.to_str().unwrap()],
        true,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));

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
    let fetcher = BillFetcher::new(&config.wechatpay.api, client, env.store.clone()).unwrap();
    let schedule = BillScheduleConfig {
        enabled: true,
        ..config.bill_schedule.clone()
    };
    let mut scheduler = BillScheduler::new(fetcher, schedule, clock.clone());
    assert_eq!(scheduler.step().await, StepOutcome::Idle, "09:00: not yet");
    clock.advance(3600 + 60);
    env.proxy.creating.store(true, Ordering::SeqCst);
    assert_eq!(
        scheduler.step().await,
        StepOutcome::RetryLater {
            date: env.today,
            reason: "not_ready"
        }
    );
    env.proxy.creating.store(false, Ordering::SeqCst);
    assert_eq!(scheduler.step().await, StepOutcome::Idle, "waits 30 min");
    clock.advance(31 * 60);
    assert_eq!(
        scheduler.step().await,
        StepOutcome::Reconciled {
            date: env.today,
            ok: false
        }
    );
    let kept: Value = serde_json::from_slice(
        &std::fs::read(env.path("bills").join(format!("{today}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["matched"], 3);
    assert_eq!(
        std::fs::read(env.path("bills").join(format!("{today}.csv"))).unwrap(),
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
