//! Clusters: real `wxpay-combine serve` processes sharing one database,
//! driven against the embedded simulator of this test process.
//!
//! A [`Cluster`] prepares a demo data directory (simulator, keys, catalog,
//! `wxpay.toml`) exactly as `wxpay-combine demo` does, then runs one or more
//! `serve` processes from that configuration, each on its own loopback port.
//! Every process is killed when the cluster (or the process handle) is
//! dropped, also when a test panics; a PostgreSQL schema is dropped last.
//!
//! Sizes: `WXPAY_RELIABILITY_SCALE` (default 1) multiplies every count; the
//! tests name their own variables for exact counts.

use crate::binary::server_binary;
use crate::database::{Db, PgSchema};
use crate::demo::TestDemo;
use crate::flow::{order_events, stored_order};
use crate::payer::{loopback_client, Browser};
use crate::wait::wait_for;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wxpay_combine::combine::{CombineOrder, OrderEvent};
use wxpay_combine::store::Store;
use wxpay_combine_cli::app::DemoOptions;
use wxpay_combine_sim::SimHandle;

/// `WXPAY_RELIABILITY_SCALE` (default 1.0): multiplies the default counts.
pub fn scale() -> f64 {
    match std::env::var("WXPAY_RELIABILITY_SCALE") {
        Ok(v) => {
            let s: f64 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("WXPAY_RELIABILITY_SCALE={v:?} is not a number"));
            assert!(
                s.is_finite() && s > 0.0,
                "WXPAY_RELIABILITY_SCALE must be > 0"
            );
            s
        }
        Err(_) => 1.0,
    }
}

/// A count: `var` when set (exact), else `default` × [`scale`], at least 1.
pub fn count(var: &str, default: usize) -> usize {
    if let Ok(v) = std::env::var(var) {
        return v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a count"));
    }
    ((default as f64) * scale()).round().max(1.0) as usize
}

/// A free loopback port (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One `wxpay-combine serve` process; killed (SIGKILL) and reaped on drop.
pub struct ServerProcess {
    /// Which instance (0, 1, …), for messages.
    pub index: usize,
    /// Its port (kept across restarts).
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
    starts: AtomicUsize,
}

impl ServerProcess {
    /// `BASE/wxpay/notify`.
    pub fn notify_url(&self) -> String {
        format!("{}/wxpay/notify", self.base)
    }

    /// The output of every run so far.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for run in 0..self.starts.load(Ordering::SeqCst) {
            let p = self.log_path(run);
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }

    /// The last `lines` lines of the output, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How many lines of the output contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.log.with_extension(format!("{run}.log"))
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no graceful shutdown, in-flight requests cut off.
    pub fn kill9(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Merchant-server processes sharing one database, with the simulator.
pub struct Cluster {
    /// The processes (declared first: killed before anything else goes).
    pub servers: Vec<ServerProcess>,
    /// The embedded simulator (this process).
    pub sim: SimHandle,
    /// The shared database, opened by the test for its checks.
    pub store: Arc<dyn Store>,
    /// The database URL the servers use.
    pub database_url: String,
    /// The demo's `wxpay.toml`.
    pub config_path: PathBuf,
    /// Which backend.
    pub db: Db,
    launcher: Launcher,
    _pg: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

/// How server processes are started.
struct Launcher {
    bin: PathBuf,
    config_path: PathBuf,
    dir: PathBuf,
}

impl Launcher {
    fn spawn(&self, p: &ServerProcess) {
        let run = p.starts.load(Ordering::SeqCst);
        let log = std::fs::File::create(p.log_path(run)).expect("server log file");
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .env("WXPAY_LISTEN", format!("127.0.0.1:{}", p.port))
            .env("WXPAY_PUBLIC_BASE_URL", &p.base)
            .env("WXPAY_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        *p.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        p.starts.store(run + 1, Ordering::SeqCst);
    }
}

/// Waits until `p` answers `/readyz` with 200; panics with its log when it
/// exits first or is not ready within 60 s.
async fn wait_ready(p: &ServerProcess) {
    let http = loopback_client().build().unwrap();
    let url = format!("{}/readyz", p.base);
    let ready = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().as_u16() == 200 {
                    return Some(());
                }
            }
            assert!(
                p.is_running(),
                "server {} exited during start:\n{}",
                p.index,
                p.log_tail(40)
            );
            None
        },
    )
    .await;
    assert!(
        ready.is_some(),
        "server {} not ready within 60 s:\n{}",
        p.index,
        p.log_tail(40)
    );
}

impl Cluster {
    /// Prepares the demo configuration on `db` and starts `instances`
    /// server processes, one after the other, each ready before the call
    /// returns. `None` when PostgreSQL is not available (outside CI).
    /// Defaults: simulator time scale 0.01, no reconciliation and no
    /// query-on-read within a test unless `tweak` asks.
    pub async fn start(
        db: Db,
        instances: usize,
        tweak: impl FnOnce(&mut DemoOptions),
    ) -> Option<Cluster> {
        let TestDemo { demo, pg, dir } =
            TestDemo::prepare(db, "reliability", "wxrel_", tweak).await?;
        let bin = server_binary();
        // Instance 0 takes the port the configuration was written for.
        let first_port = demo.listener.local_addr().unwrap().port();
        drop(demo.listener);
        let database_url = demo.config.store.database_url.clone();
        let launcher = Launcher {
            bin,
            config_path: demo.config_path.clone(),
            dir: dir.path().to_path_buf(),
        };
        let mut servers: Vec<ServerProcess> = Vec::new();
        let mut store = None;
        for i in 0..instances {
            let port = if i == 0 { first_port } else { free_port() };
            let p = ServerProcess {
                index: i,
                port,
                base: format!("http://127.0.0.1:{port}"),
                child: Mutex::new(None),
                log: dir.path().join(format!("server{i}")),
                starts: AtomicUsize::new(0),
            };
            launcher.spawn(&p);
            wait_ready(&p).await;
            servers.push(p);
            if i == 0 {
                // After the first server ran the migrations.
                store = Some(
                    wxpay_combine::store::connect(&database_url)
                        .await
                        .expect("the test opens the shared database"),
                );
            }
        }
        Some(Cluster {
            servers,
            sim: demo.sim,
            store: store.expect("at least one instance"),
            database_url,
            config_path: demo.config_path,
            db,
            launcher,
            _pg: pg,
            _dir: dir,
        })
    }

    /// `kill -9` instance `i`.
    pub fn kill9(&self, i: usize) {
        self.servers[i].kill9();
    }

    /// Starts instance `i` again on its port and waits until it is ready.
    pub async fn restart(&self, i: usize) {
        let p = &self.servers[i];
        assert!(!p.is_running(), "server {i} is still running");
        self.launcher.spawn(p);
        wait_ready(p).await;
    }

    /// A payer signed in (OAuth through the simulator) on instance `i`.
    pub async fn login(&self, i: usize, user: &str) -> Browser {
        Browser::signed_in(&self.servers[i].base, user).await
    }

    /// The stored order.
    pub async fn order(&self, no: &str) -> CombineOrder {
        stored_order(self.store.as_ref(), no).await
    }

    /// The order's event log.
    pub async fn events(&self, no: &str) -> Vec<OrderEvent> {
        order_events(self.store.as_ref(), no).await
    }

    /// Every server's last log lines, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- server {} ---\n{}", s.index, s.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills the servers, then stops the simulator.
    pub async fn stop(self) {
        for s in &self.servers {
            s.kill9();
        }
        let Cluster { sim, .. } = self;
        sim.shutdown().await;
    }
}

/// The sim's delivery records: per notification id, the HTTP statuses of
/// every copy of every attempt (`None`: no answer).
pub fn answers_by_notification(
    log: &wxpay_combine_sim::NotificationLog,
) -> BTreeMap<String, Vec<Option<i64>>> {
    let mut m: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    for a in &log.attempts {
        if a.kind == "delivery" || a.kind == "duplicate" {
            m.entry(a.notification_id.clone())
                .or_default()
                .push(a.http_status);
        }
    }
    m
}

/// Whether an HTTP status is an acknowledgement (WeChat Pay counts 200/204).
pub fn acked(status: Option<i64>) -> bool {
    matches!(status, Some(200) | Some(204))
}
