//! The load generator behind `cargo xtask bench-load` (see BENCHMARKS.md,
//! "Load"). It starts the simulator and the merchant server as separate
//! processes (the release binary named by `--bin`), then measures:
//!
//! - **notifications**: N unpaid orders stored through the store API, N
//!   notifications signed with the simulator's WeChat Pay key and encrypted
//!   with the APIv3 key (made before the clock starts), fired concurrently at
//!   `POST /wxpay/notify`; only 2xx answers count, and only if the database
//!   shows the order SUCCESS with exactly one transition afterwards;
//! - **prepay**: 64 clients, each logged in through the simulator's OAuth,
//!   creating M orders through `POST /api/combine-orders` (p50/p99 latency);
//! - **crypto floor**: the RSA work one prepay costs server and simulator
//!   together, timed in-process on all cores: the server signs the request,
//!   the simulator verifies it and signs its answer, the server verifies the
//!   answer and signs `paySign` (3 signs + 2 verifies).
//!
//! Last line: `notify_per_s=<n> prepay_per_s=<n> prepay_p99_ms=<x> prepay_vs_crypto_floor=<x.xx>`.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wxpay_combine::apiv3::{
    generate_nonce, response_message, ApiV3Key, Clock, EncryptedResource, JsapiPayParams,
    PrivateKey, PublicKey, RequestSigner, SignatureHeaders, SystemClock, Verifier,
};
use wxpay_combine::combine::wire::{
    CombineTransaction, PayerInfo, TransactionAmount, TransactionSubOrder,
};
use wxpay_combine::combine::{CombineOrder, EventSource, SubOrder, TradeState};
use wxpay_combine::store::{self, Store};
use wxpay_combine_sim::MerchantCredentials;

type Result<T, E = String> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
struct Args {
    bin: PathBuf,
    dir: PathBuf,
    db: String,
    database_url: Option<String>,
    notifications: usize,
    orders: usize,
    in_flight: usize,
    clients: usize,
    floor_seconds: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        bin: PathBuf::from("target/release/wxpay-combine"),
        dir: PathBuf::from("target/bench-load"),
        db: "sqlite".into(),
        database_url: std::env::var("WXPAY_TEST_DATABASE_URL").ok(),
        notifications: 20_000,
        orders: 3_000,
        in_flight: 256,
        clients: 64,
        floor_seconds: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--bin" => a.bin = value()?.into(),
            "--dir" => a.dir = value()?.into(),
            "--db" => a.db = value()?,
            "--database-url" => a.database_url = Some(value()?),
            "--notifications" => a.notifications = num(value()?)?,
            "--orders" => a.orders = num(value()?)?,
            "--in-flight" => a.in_flight = num(value()?)?.max(1),
            "--clients" => a.clients = num(value()?)?.max(1),
            "--floor-seconds" => {
                a.floor_seconds = value()?
                    .parse()
                    .map_err(|e| format!("--floor-seconds: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.db != "sqlite" && a.db != "postgres" {
        return Err(format!("--db must be sqlite or postgres, not {}", a.db));
    }
    Ok(a)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Everything about the running pair of processes.
struct Setup {
    merchant: MerchantCredentials,
    platform_key: PrivateKey,
    merchant_key: PrivateKey,
    server: String,
    database_url: String,
    _sim: Proc,
    _server: Proc,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::File::create(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

async fn fresh_pg_schema(admin_url: &str) -> Result<String> {
    use sqlx::Connection;
    let schema = format!("bench_load_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut c)
        .await
        .map_err(|e| format!("create schema: {e}"))?;
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    Ok(format!("{admin_url}{sep}options[search_path]={schema}"))
}

async fn start(args: &Args) -> Result<Setup> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| e.to_string())?;
    let sim_dir = dir.join("simulator");

    // The simulator, on any free port; it prints its base URL.
    let mut child = Command::new(&args.bin)
        .args(["sim", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&sim_dir)
        .stdout(Stdio::piped())
        .stderr(log_file(&dir, "simulator.log")?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.bin.display()))?;
    let stdout = child.stdout.take().ok_or("no simulator stdout")?;
    let sim = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut sim_base = None;
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(u) = line.trim().strip_prefix("base URL :") {
            sim_base = Some(u.trim().trim_end_matches('/').to_string());
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let sim_base = sim_base.ok_or("the simulator did not print its base URL")?;
    let merchant = MerchantCredentials::load(&sim_dir).map_err(|e| e.to_string())?;
    let platform_key = PrivateKey::from_pem_file(
        sim_dir
            .join("platform")
            .join(&merchant.mchid)
            .join("wechatpay_private_key.pem"),
    )
    .map_err(|e| format!("the simulator's WeChat Pay key: {e}"))?;
    let merchant_key = merchant.private_key().map_err(|e| e.to_string())?;

    let database_url = match args.db.as_str() {
        "postgres" => {
            let admin = args
                .database_url
                .clone()
                .ok_or("--db postgres needs WXPAY_TEST_DATABASE_URL or --database-url")?;
            fresh_pg_schema(&admin).await?
        }
        _ => format!("sqlite:{}", dir.join("wxpay.db").display()),
    };

    // The merchant server's configuration, as `demo` writes it.
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = secrets.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    let apiv3_key_file = write("apiv3_key.txt", &merchant.apiv3_key)?;
    let app_secret_file = write("app_secret.txt", &merchant.app_secret)?;
    let session_secret_file = write(
        "session_secret.txt",
        &format!("{}{}", generate_nonce(), generate_nonce()),
    )?;
    let catalog =
        wxpay_combine::catalog::Catalog::demo(&merchant.sub_mchids).map_err(|e| e.to_string())?;
    let catalog_file = dir.join("catalog.toml");
    std::fs::write(&catalog_file, catalog.to_toml()).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let origin = format!("http://127.0.0.1:{port}");
    let raw = wxpay_combine::config::RawConfig {
        listen: Some(format!("127.0.0.1:{port}")),
        public_base_url: Some(origin.clone()),
        pay_directory: Some("/pay/".into()),
        demo: Some(true),
        simulator_base_url: Some(sim_base.clone()),
        database_url: Some(database_url.clone()),
        appid: Some(merchant.appid.clone()),
        mchid: Some(merchant.mchid.clone()),
        merchant_serial_no: Some(merchant.serial_no.clone()),
        merchant_private_key_file: merchant.private_key_path.clone(),
        apiv3_key_file: Some(apiv3_key_file),
        app_secret_file: Some(app_secret_file),
        session_secret_file: Some(session_secret_file),
        wechatpay_public_key_id: merchant.wechatpay_public_key_id.clone(),
        wechatpay_public_key_file: merchant.wechatpay_public_key_path.clone(),
        platform_certificates: Some(merchant.key_mode.has_certificates()),
        api_base_url: Some(sim_base.clone()),
        api_backup_url: Some(String::new()),
        notify_url: Some(format!("{origin}/wxpay/notify")),
        oauth_authorize_url: Some(format!("{sim_base}/connect/oauth2/authorize")),
        oauth_api_base_url: Some(sim_base.clone()),
        catalog_file: Some(catalog_file),
        // No query-on-read or reconciliation traffic during the run.
        query_after_secs: Some(3600),
        reconcile_interval_secs: Some(3600),
        reconcile_after_secs: Some(3600),
        ..Default::default()
    };
    let config_path = dir.join("wxpay.toml");
    std::fs::write(&config_path, raw.to_toml()).map_err(|e| e.to_string())?;
    let server = Proc(
        Command::new(&args.bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "server.log")?)
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?,
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let ready = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{origin}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if ready.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the server did not become ready; see {}",
                dir.join("server.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Setup {
        merchant,
        platform_key,
        merchant_key,
        server: origin,
        database_url,
        _sim: sim,
        _server: server,
    })
}

async fn run(args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench-load: db={} notifications={} orders={} in_flight={} clients={} cores={cores}",
        args.db, args.notifications, args.orders, args.in_flight, args.clients
    );
    let setup = start(&args).await?;
    println!(
        "server {} (simulator and server are separate processes; logs in {})",
        setup.server,
        args.dir.display()
    );

    let notify_per_s = notifications(&args, &setup).await?;
    let (prepay_per_s, p50, p99) = prepay(&args, &setup).await?;
    let floor = crypto_floor(&setup, cores, args.floor_seconds)?;
    let vd = verify_decrypt(&setup, cores, args.floor_seconds)?;
    println!(
        "crypto floor: {floor:.0} prepays/s on {cores} cores (3 RSA signs + 2 verifies each, in-process)"
    );
    println!(
        "in-process verify+decrypt: {vd:.0} notifications/s on {cores} cores ({:.0} per core)",
        vd / cores as f64
    );
    println!("prepay: {prepay_per_s:.0}/s p50={p50:.1} ms p99={p99:.1} ms");
    println!(
        "notify_per_s={notify_per_s:.0} prepay_per_s={prepay_per_s:.0} prepay_p99_ms={p99:.1} prepay_vs_crypto_floor={:.2}",
        prepay_per_s / floor
    );
    Ok(())
}

fn order_for(m: &MerchantCredentials, no: &str, now: i64) -> CombineOrder {
    let mchids = [
        m.sub_mchids.first().unwrap_or(&m.mchid).clone(),
        m.sub_mchids.get(1).unwrap_or(&m.mchid).clone(),
    ];
    let sub_orders = mchids
        .iter()
        .enumerate()
        .map(|(i, mchid)| {
            let n = i + 1;
            SubOrder::unpaid(
                mchid.clone(),
                format!("{no}-{n}"),
                format!("bench item {n}"),
                no,
                100 + i as i64,
            )
        })
        .collect();
    CombineOrder::unpaid(
        no,
        m.mchid.clone(),
        m.appid.clone(),
        m.demo_openid.clone(),
        sub_orders,
        Some(now + 3600),
        now,
    )
}

/// A signed, encrypted notification: headers and body.
struct Notification {
    no: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn notification_for(
    order: &CombineOrder,
    key: &ApiV3Key,
    platform_key: &PrivateKey,
    serial: &str,
    now: i64,
) -> Notification {
    let txn = CombineTransaction {
        combine_appid: order.combine_appid.clone(),
        combine_mchid: order.combine_mchid.clone(),
        combine_out_trade_no: order.combine_out_trade_no.clone(),
        scene_info: None,
        sub_orders: order
            .sub_orders
            .iter()
            .enumerate()
            .map(|(i, s)| TransactionSubOrder {
                mchid: s.mchid.clone(),
                trade_type: Some("JSAPI".into()),
                trade_state: "SUCCESS".into(),
                bank_type: Some("OTHERS".into()),
                attach: Some(s.attach.clone()),
                success_time: Some("2026-01-01T10:00:00+08:00".into()),
                transaction_id: Some(format!("4200{}{i}", order.combine_out_trade_no)),
                out_trade_no: s.out_trade_no.clone(),
                sub_mchid: None,
                amount: TransactionAmount {
                    total_amount: s.amount,
                    payer_amount: Some(s.amount),
                    currency: Some("CNY".into()),
                    payer_currency: Some("CNY".into()),
                    settlement_rate: None,
                },
                promotion_detail: None,
            })
            .collect(),
        combine_payer_info: Some(PayerInfo {
            openid: order.payer_openid.clone(),
        }),
    };
    let plaintext = serde_json::to_vec(&txn).expect("transaction JSON");
    let resource = EncryptedResource::seal(key, "transaction", Some("transaction"), &plaintext);
    let body = serde_json::to_vec(&json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "create_time": "2026-01-01T10:00:01+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }))
    .expect("envelope JSON");
    let ts = now.to_string();
    let nonce = generate_nonce();
    let signature = platform_key
        .sign_base64(&response_message(&ts, &nonce, &body))
        .expect("sign");
    Notification {
        no: order.combine_out_trade_no.clone(),
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("User-Agent", "Mozilla/4.0".into()),
            ("Wechatpay-Timestamp", ts),
            ("Wechatpay-Nonce", nonce),
            ("Wechatpay-Signature", signature),
            ("Wechatpay-Serial", serial.to_string()),
            (
                "Wechatpay-Signature-Type",
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ],
        body,
    }
}

/// Runs `f(i)` for `0..n` on every core, collecting the results in order.
fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let chunk = n.div_ceil(cores).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

async fn notifications(args: &Args, setup: &Setup) -> Result<f64> {
    let n = args.notifications;
    let m = &setup.merchant;
    let now = SystemClock.now();
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders: Vec<CombineOrder> = (0..n)
        .map(|i| order_for(m, &format!("N{run_id}{i:07}"), now))
        .collect();

    // The orders, stored through the store API on the server's database.
    let store = store::connect(&setup.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let created: Vec<_> = stream::iter(orders.iter())
        .map(|o| {
            let store = Arc::clone(&store);
            async move { store.create_order(o).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    if let Some(Err(e)) = created.into_iter().find(|r| r.is_err()) {
        return Err(format!("creating the orders: {e}"));
    }
    println!(
        "notifications: {n} unpaid orders stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let key = ApiV3Key::from_text(&m.apiv3_key).map_err(|e| e.to_string())?;
    let serial = m
        .wechatpay_public_key_id
        .clone()
        .ok_or("the simulator merchant has no WeChat Pay public key id")?;
    let t = Instant::now();
    let notes = parallel_map(n, |i| {
        notification_for(&orders[i], &key, &setup.platform_key, &serial, now)
    });
    println!(
        "notifications: {n} signed and encrypted in {:.1} s (before the clock starts)",
        t.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.in_flight)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/wxpay/notify", setup.server);
    let statuses = Arc::new(Vec::from_iter((0..n).map(|_| AtomicUsize::new(0))));
    let started = Instant::now();
    stream::iter(notes.iter().enumerate())
        .for_each_concurrent(args.in_flight, |(i, note)| {
            let http = &http;
            let url = &url;
            let statuses = &statuses;
            async move {
                let mut req = http.post(url.as_str()).body(note.body.clone());
                for (k, v) in &note.headers {
                    req = req.header(*k, v.as_str());
                }
                let status = match req.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16() as usize;
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 1,
                };
                statuses[i].store(status, Ordering::Relaxed);
            }
        })
        .await;
    let wall = started.elapsed().as_secs_f64();
    let ok: Vec<usize> = (0..n)
        .filter(|&i| (200..300).contains(&statuses[i].load(Ordering::Relaxed)))
        .collect();
    let mut other: std::collections::BTreeMap<usize, usize> = Default::default();
    for s in statuses.iter() {
        let s = s.load(Ordering::Relaxed);
        if !(200..300).contains(&s) {
            *other.entry(s).or_default() += 1;
        }
    }
    println!(
        "notifications: {} of {n} answered 2xx in {wall:.2} s{}",
        ok.len(),
        if other.is_empty() {
            String::new()
        } else {
            format!(" (others by status, 1 = transport error: {other:?})")
        }
    );

    // Durable effect: SUCCESS with exactly one transition per 2xx answer.
    let checks: Vec<bool> = stream::iter(ok.iter())
        .map(|&i| {
            let store = Arc::clone(&store);
            let no = notes[i].no.clone();
            async move { durable(&*store, &no).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let durable_ok = checks.iter().filter(|b| **b).count();
    if durable_ok != ok.len() {
        println!(
            "notifications: WARNING {} answered 2xx without the expected stored effect",
            ok.len() - durable_ok
        );
    } else {
        println!("notifications: database checked: every 2xx order is SUCCESS with one transition");
    }
    Ok(durable_ok as f64 / wall)
}

async fn durable(store: &dyn Store, no: &str) -> bool {
    let Ok(Some(o)) = store.get_order(no).await else {
        return false;
    };
    let Ok(events) = store.events(no).await else {
        return false;
    };
    let transitions = events
        .iter()
        .filter(|e| e.source == EventSource::Notify)
        .count();
    o.state == TradeState::Success && transitions == 1 && events.len() == 2
}

/// One logged-in payer: the server's session cookie.
async fn login(http: &reqwest::Client, server: &str, user: &str) -> Result<String> {
    let location = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("no redirect ({})", r.status()))
    };
    let r = http
        .get(format!("{server}/oauth/start?return=%2Fpay%2F"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let start_cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let authorize = location(&r)?;
    let authorize = authorize.trim_end_matches("#wechat_redirect").to_string() + "&user=" + user;
    let r = http
        .get(authorize)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let callback = location(&r)?;
    let r = http
        .get(callback)
        .header("Cookie", start_cookies.join("; "))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .find(|c| c.starts_with("wxpay_session="))
        .map(str::to_string)
        .ok_or_else(|| format!("login as {user}: no session cookie ({})", r.status()))
}

async fn prepay(args: &Args, setup: &Setup) -> Result<(f64, f64, f64)> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(args.clients * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let server = setup.server.as_str();
    let mut sessions = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        sessions.push(login(&http, server, &format!("bench{c}")).await?);
    }
    let catalog: Value = http
        .get(format!("{server}/api/catalog"))
        .header("Cookie", sessions[0].as_str())
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    let mut items = Vec::new();
    for item in catalog["items"].as_array().ok_or("catalog without items")? {
        let mchid = item["merchant"]["mchid"].to_string();
        if !seen.contains(&mchid) && seen.len() < 2 {
            seen.push(mchid);
            items.push(json!({"sku": item["sku"], "qty": 1}));
        }
    }
    let body = json!({ "items": items }).to_string();

    // Warm-up (connections, caches), not measured.
    for s in sessions.iter().take(4) {
        create(&http, server, s, &body).await?;
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let latencies: Vec<Vec<f64>> = futures_util::future::join_all(sessions.iter().map(|s| {
        let (http, next, failed, body) = (&http, &next, &failed, &body);
        async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < args.orders {
                let t = Instant::now();
                match create(http, server, s, body).await {
                    Ok(()) => mine.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("prepay failed: {e}");
                        }
                    }
                }
            }
            mine
        }
    }))
    .await;
    let wall = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "prepay: {} orders created (201) by {} clients in {wall:.2} s, {} failed",
        all.len(),
        args.clients,
        failed.load(Ordering::Relaxed)
    );
    Ok((all.len() as f64 / wall, pct(0.50), pct(0.99)))
}

async fn create(http: &reqwest::Client, server: &str, session: &str, body: &str) -> Result<()> {
    let r = http
        .post(format!("{server}/api/combine-orders"))
        .header("Cookie", session)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let answer = r.bytes().await.map_err(|e| e.to_string())?;
    if status.as_u16() != 201 {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        ));
    }
    Ok(())
}

/// Runs `op` on `threads` threads for `seconds`; total operations per second.
fn on_all_cores(threads: usize, seconds: f64, op: impl Fn() + Sync) -> f64 {
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0;
                while started.elapsed() < budget {
                    op();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Prepays per second the RSA work alone allows on all cores: per order,
/// the server signs the request, the simulator verifies it and signs the
/// answer, the server verifies the answer and signs `paySign`.
fn crypto_floor(setup: &Setup, cores: usize, seconds: f64) -> Result<f64> {
    let m = &setup.merchant;
    let signer = RequestSigner::new(&m.mchid, &m.serial_no, setup.merchant_key.clone());
    let merchant_public: PublicKey = setup.merchant_key.public_key().clone();
    let serial = m.wechatpay_public_key_id.clone().unwrap_or_default();
    let verifier = Verifier::new(Arc::new(SystemClock))
        .with_public_key(serial.clone(), setup.platform_key.public_key().clone());
    let request = br#"{"combine_appid":"wx0000000000000000","combine_mchid":"1900000000","combine_out_trade_no":"P20260101000000abcdefabcdef","sub_orders":[{"mchid":"1900000001","attach":"a","amount":{"total_amount":100,"currency":"CNY"},"out_trade_no":"P-1","description":"item 1"},{"mchid":"1900000002","attach":"a","amount":{"total_amount":101,"currency":"CNY"},"out_trade_no":"P-2","description":"item 2"}],"combine_payer_info":{"openid":"oBench"},"notify_url":"http://127.0.0.1/wxpay/notify"}"#;
    let response = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    let path = "/v3/combine-transactions/jsapi";
    let check = || -> Result<(), String> {
        let now = SystemClock.now();
        let nonce = generate_nonce();
        // 1. The server signs its request.
        let auth = signer
            .authorization_at("POST", path, now, &nonce, request)
            .map_err(|e| e.to_string())?;
        // 2. The simulator verifies it.
        let message = wxpay_combine::apiv3::request_message("POST", path, now, &nonce, request);
        let sig = auth
            .split("signature=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or("no signature in Authorization")?;
        if !merchant_public.verify_base64(&message, sig) {
            return Err("request signature does not verify".into());
        }
        // 3. The simulator signs its answer.
        let ts = now.to_string();
        let signature = setup
            .platform_key
            .sign_base64(&response_message(&ts, &nonce, response))
            .map_err(|e| e.to_string())?;
        // 4. The server verifies the answer.
        let headers = SignatureHeaders {
            timestamp: ts,
            nonce: nonce.clone(),
            signature,
            serial: serial.clone(),
            signature_type: None,
        };
        verifier
            .verify(&headers, response)
            .map_err(|e| e.to_string())?;
        // 5. paySign.
        JsapiPayParams::sign(
            &setup.merchant_key,
            &m.appid,
            "wx201410272009395522657a690389285100",
            now,
            &nonce,
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    };
    check()?;
    Ok(on_all_cores(cores, seconds, || {
        let _ = std::hint::black_box(check());
    }))
}

/// Notifications per second verified and decrypted in-process on all cores
/// (the notification handler's checks before the database).
fn verify_decrypt(setup: &Setup, cores: usize, seconds: f64) -> Result<f64> {
    let m = &setup.merchant;
    let key = ApiV3Key::from_text(&m.apiv3_key).map_err(|e| e.to_string())?;
    let serial = m.wechatpay_public_key_id.clone().unwrap_or_default();
    let verifier = Verifier::new(Arc::new(SystemClock))
        .with_public_key(serial.clone(), setup.platform_key.public_key().clone());
    let now = SystemClock.now();
    let order = order_for(m, "VD0000000001", now);
    let note = notification_for(&order, &key, &setup.platform_key, &serial, now);
    let check = || {
        wxpay_combine::notify::verify_notification(
            &verifier,
            &key,
            &m.mchid,
            &m.appid,
            |name| {
                note.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            },
            &note.body,
        )
        .is_ok()
    };
    if !check() {
        return Err("the generated notification does not verify in-process".into());
    }
    Ok(on_all_cores(cores, seconds, || {
        std::hint::black_box(check());
    }))
}
