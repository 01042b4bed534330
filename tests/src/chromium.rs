//! The end-to-end tests' harness: a `wxpay-combine demo` process (with its
//! embedded WeChat Pay simulator) on a free port with a temporary data dir,
//! and headless Chromium with a phone viewport, driven through chromedriver.
//!
//! Each test gets its own demo, chromedriver and browser, all ended when the
//! test ends (also on panic). Tests run one at a time (a global lock): each
//! starts a browser, and the machines this runs on are small.
//!
//! Every test saves a screenshot of its final screen under
//! `target/e2e-screenshots/<test>.png`; a failing test also prints the
//! browser's console log, the page's text and the demo's output.
//!
//! Prerequisites: the npm package built by `cargo xtask wasm` (`wasm/pkg/`),
//! chromedriver and Chromium. When one is missing the tests fail under
//! `CI=true`, and print why and pass elsewhere.
//!
//! Environment:
//! - `WXPAY_E2E_BIN`: the `wxpay-combine` binary to test (default: built
//!   into the workspace target dir, see [`server_binary`]).
//! - `CHROMEDRIVER`, `CHROME_BIN`: where chromedriver and Chromium are.
//! - `WXPAY_UPDATE_SCREENSHOT=1`: also copy the paid order page's
//!   screenshot to `docs/screenshot-paid.png` (the README's picture).

use crate::binary::{server_binary, target_dir, workspace_root};
use crate::under_ci;
use crate::wait::{wait_for, wait_for_blocking};
use anyhow::{anyhow, bail, Context as _, Result};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The phone the page is shown on (an iPhone 14-sized viewport).
const PHONE_WIDTH: u32 = 390;
const PHONE_HEIGHT: u32 = 844;
/// A plain mobile browser: not WeChat. The demo page pays through the
/// simulator's bridge in any browser.
const MOBILE_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
                         (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36";

/// How long a step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(20);
/// `checkout` polls the server for up to 20 s by default, then says
/// "not yet confirmed"; waiting for an outcome allows for that.
pub const OUTCOME: Duration = Duration::from_secs(30);

/// One test at a time: each runs a browser.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs one end-to-end test: `body` drives the page through `Ctx`; its
/// error (or panic) fails the test after the diagnostics are printed.
pub fn run<F, Fut>(name: &'static str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    // A test that panicked earlier poisons the lock; the next may still run.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut tools = match prerequisites() {
        Ok(tools) => tools,
        Err(reason) if under_ci() => panic!("{name}: cannot run under CI=true: {reason:#}"),
        Err(reason) => {
            eprintln!("{name}: SKIPPED (not under CI=true): {reason:#}");
            return;
        }
    };
    // Not a reason to skip: a server that does not build fails the test.
    tools.server = server_binary();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(failure) = runtime.block_on(session(name, tools, body)) {
        panic!("{name} failed: {failure:#}");
    }
    eprintln!("{name}: passed in {:.1} s", started.elapsed().as_secs_f64());
}

struct Tools {
    /// The `wxpay-combine` binary.
    server: PathBuf,
    chromedriver: PathBuf,
    chrome: Option<PathBuf>,
}

fn prerequisites() -> Result<Tools> {
    let pkg = workspace_root().join("wasm/pkg/index.js");
    if !pkg.is_file() {
        bail!("{} is missing: run `cargo xtask wasm` first", pkg.display());
    }
    let chromedriver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which("chromedriver"))
        .ok_or_else(|| {
            anyhow!("chromedriver not found (set CHROMEDRIVER, or run `cargo xtask test`)")
        })?;
    let chrome = std::env::var_os("CHROME_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .into_iter()
            .find_map(which)
        });
    if chrome.is_none() {
        bail!("Chromium not found (set CHROME_BIN, or run `cargo xtask test`)");
    }
    Ok(Tools {
        server: PathBuf::new(),
        chromedriver,
        chrome,
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Processes

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves nothing running.
struct Guard {
    child: Child,
    /// The child leads its own process group (chromedriver and the browser
    /// it starts): the whole group is ended.
    group: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.group {
            // Only the group this test created; `kill` takes `-PGID`.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo server and simulator of one test.
struct Demo {
    _process: Guard,
    page: String,
    simulator: String,
    /// The internal API's base (`http://127.0.0.1:PORT`) and bearer token.
    internal: Option<(String, String)>,
    log: PathBuf,
    /// Data dir, logs; removed when the test ends.
    scratch: tempfile::TempDir,
}

impl Demo {
    fn start(server: &Path) -> Result<Demo> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let log = dir.path().join("demo.log");
        let out = std::fs::File::create(&log)?;
        let root = workspace_root();
        // Port 0: the demo binds a free port and prints its address.
        let child = Command::new(server)
            .current_dir(&root)
            .args(["demo", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--www")
            .arg(root.join("www"))
            .arg("--wasm-pkg")
            .arg(root.join("wasm/pkg"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", server.display()))?;
        let mut process = Guard {
            child,
            group: false,
        };
        let deadline = Instant::now() + STEP;
        let printed = wait_for_blocking(deadline, Duration::from_millis(50), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // The last line printed: every address is there by then.
            let done = text.contains("Ctrl-C stops");
            if let (true, Some(page), Some(sim)) = (
                done,
                labelled(&text, "page:"),
                labelled(&text, "simulator:"),
            ) {
                return Ok(Some((page, sim.trim_end_matches('/').to_string())));
            }
            if let Some(status) = process.child.try_wait()? {
                bail!("the demo exited ({status}) before it was ready:\n{text}");
            }
            Ok(None)
        })?;
        let Some((page, simulator)) = printed else {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("the demo did not print its page and simulator addresses:\n{text}");
        };
        for url in [&page, &simulator] {
            wait_listening(url, deadline)?;
        }
        // Printed with the other addresses (before serving starts); the
        // token is in the data dir's secrets, where the demo says it is.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let internal = match labelled(&text, "internal API:") {
            Some(url) => {
                wait_listening(&url, deadline)?;
                let token_file = data.join("secrets/internal_token.txt");
                let token = std::fs::read_to_string(&token_file)
                    .with_context(|| format!("reading {}", token_file.display()))?;
                let base = url.trim_end_matches('/').trim_end_matches("/internal");
                Some((base.to_string(), token.trim().to_string()))
            }
            None => None,
        };
        Ok(Demo {
            _process: process,
            page,
            simulator,
            internal,
            log,
            scratch: dir,
        })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The URL after `label` on the first line that has it (`page: http://…`).
fn labelled(text: &str, label: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(label)? + label.len()..];
        let url = rest.split_whitespace().next()?;
        url.starts_with("http://").then(|| url.to_string())
    })
}

fn wait_listening(url: &str, deadline: Instant) -> Result<()> {
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    let listening = wait_for_blocking(deadline, Duration::from_millis(50), || {
        anyhow::Ok(TcpStream::connect(authority).ok())
    })?;
    if listening.is_none() {
        bail!("nothing listens at {url}");
    }
    Ok(())
}

fn start_chromedriver(tools: &Tools, scratch: &Path) -> Result<(Guard, String)> {
    use std::os::unix::process::CommandExt as _;
    let log = scratch.join("chromedriver.log");
    let out = std::fs::File::create(&log)?;
    // Port 0: chromedriver binds a free port and says which.
    let child = Command::new(&tools.chromedriver)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", tools.chromedriver.display()))?;
    let mut guard = Guard { child, group: true };
    let deadline = Instant::now() + STEP;
    let port = wait_for_blocking(deadline, Duration::from_millis(50), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let port = text.lines().find_map(|line| {
            let rest = line.split("started successfully on port ").nth(1)?;
            rest.trim_end_matches('.').trim().parse::<u16>().ok()
        });
        if port.is_none() {
            if let Some(status) = guard.child.try_wait()? {
                bail!("chromedriver exited ({status}):\n{text}");
            }
        }
        Ok(port)
    })?;
    let Some(port) = port else {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("chromedriver did not say which port it listens on:\n{text}");
    };
    Ok((guard, format!("http://127.0.0.1:{port}")))
}

fn capabilities(tools: &Tools) -> fantoccini::wd::Capabilities {
    let mut chrome = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            // Everything is on loopback; ignore any proxy in the environment.
            "--no-proxy-server",
            format!("--window-size={PHONE_WIDTH},{PHONE_HEIGHT}"),
        ],
        "mobileEmulation": {
            "deviceMetrics": { "width": PHONE_WIDTH, "height": PHONE_HEIGHT, "pixelRatio": 2 },
            "userAgent": MOBILE_UA,
        },
    });
    if let Some(bin) = &tools.chrome {
        chrome["binary"] = json!(bin);
    }
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": chrome,
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

// ---------------------------------------------------------------------------
// One test session

async fn session<F, Fut>(name: &'static str, tools: Tools, body: F) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let demo = Demo::start(&tools.server)?;
    let (_driver, driver_url) = start_chromedriver(&tools, demo.scratch.path())?;
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities(&tools))
        .connect(&driver_url)
        .await
        .with_context(|| {
            let log = std::fs::read_to_string(demo.scratch.path().join("chromedriver.log"));
            format!(
                "cannot start a Chromium session through chromedriver; its log:\n{}",
                log.unwrap_or_default()
            )
        })?;
    let ctx = Ctx {
        client: client.clone(),
        page: demo.page.clone(),
        simulator: demo.simulator.clone(),
        internal: demo.internal.clone(),
        http: reqwest::Client::builder().no_proxy().build()?,
    };
    // A panic in the body ends its task, not this function: the screenshot
    // and the diagnostics below still happen.
    let outcome = match tokio::spawn(body(ctx)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(anyhow!("panicked: {}", panic_message(e.into_panic()))),
        Err(e) => Err(anyhow!("the test task failed: {e}")),
    };
    let outcome = match outcome {
        Ok(()) => csp_violations(&client).await,
        failed => failed,
    };
    let shot = screenshot(&client, name).await;
    if let Err(failure) = &outcome {
        eprintln!("===== {name} FAILED: {failure:#}");
        eprintln!("{}", diagnostics(&client, &demo).await);
    }
    let shot = shot.with_context(|| format!("screenshot of {name}"));
    let _ = client.close().await;
    outcome?;
    shot.map(|path| eprintln!("{name}: screenshot {}", path.display()))
}

/// Fails when the browser console reports a Content-Security-Policy
/// violation: the server's policy must let the shipped pages (and, in demo
/// mode, the simulator's bridge) run unchanged.
async fn csp_violations(client: &Client) -> Result<()> {
    let Ok(Value::Array(entries)) = client.issue_cmd(BrowserLog).await else {
        return Ok(());
    };
    let violations: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("Content Security Policy"))
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        bail!("Content-Security-Policy violations: {violations:#?}")
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

async fn screenshot(client: &Client, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let dir = target_dir().join("e2e-screenshots");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png)?;
    Ok(path)
}

/// What a failing test prints: where the browser was, what the page said,
/// the console, and the demo's own log.
async fn diagnostics(client: &Client, demo: &Demo) -> String {
    let mut out = String::new();
    match client.current_url().await {
        Ok(url) => _ = writeln!(out, "--- browser at {url}"),
        Err(e) => _ = writeln!(out, "--- browser: no current URL ({e})"),
    }
    match client
        .execute(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .await
    {
        Ok(Value::String(text)) => _ = writeln!(out, "--- page text:\n{}", text.trim()),
        Ok(other) => _ = writeln!(out, "--- page text: {other}"),
        Err(e) => _ = writeln!(out, "--- page text unavailable: {e}"),
    }
    _ = writeln!(out, "--- browser console:");
    match client.issue_cmd(BrowserLog).await {
        Ok(Value::Array(entries)) if entries.is_empty() => _ = writeln!(out, "(empty)"),
        Ok(Value::Array(entries)) => {
            for entry in entries {
                let level = entry["level"].as_str().unwrap_or("?");
                let message = entry["message"].as_str().unwrap_or_default();
                _ = writeln!(out, "[{level}] {message}");
            }
        }
        Ok(other) => _ = writeln!(out, "{other}"),
        Err(e) => _ = writeln!(out, "(unavailable: {e})"),
    }
    _ = writeln!(out, "--- demo output:\n{}", demo.output().trim_end());
    out
}

/// chromedriver's console log of the page (`goog:loggingPrefs`): the
/// legacy `POST /session/{id}/se/log`, which chromedriver keeps serving.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// A Chrome DevTools Protocol command through chromedriver
/// (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// WeChat's user agent on an Android phone.
pub const WECHAT_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
                             (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 \
                             MicroMessenger/8.0.47.2560(0x28002F37) WeChat/arm64 NetType/WIFI Language/zh_CN";

/// Makes every page see `/api/config` with `demo: false` and no simulator
/// bridge: the page behaves as on a production server (the demo's
/// server and simulator still answer behind it).
const PRODUCTION_PAGE: &str = r#"(() => {
  const real = window.fetch;
  window.fetch = async (input, init) => {
    const response = await real(input, init);
    if (!String((input && input.url) || input).endsWith("/api/config")) return response;
    const config = await response.json();
    config.demo = false;
    delete config.simulator_bridge_url;
    return new Response(JSON.stringify(config), { status: response.status, headers: response.headers });
  };
})();"#;

// ---------------------------------------------------------------------------
// What the tests use

/// The browser, the demo's page and its simulator.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    /// `http://127.0.0.1:PORT/pay/`
    pub page: String,
    /// `http://127.0.0.1:SIMPORT`
    pub simulator: String,
    /// The demo's internal API: base URL and bearer token.
    internal: Option<(String, String)>,
    http: reqwest::Client,
}

/// `[data-testid="…"]`
pub fn tid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

impl Ctx {
    /// Opens a page of the pay directory (`""` for the shop).
    pub async fn open(&self, path: &str) -> Result<()> {
        let url = format!("{}{}", self.page, path);
        self.client
            .goto(&url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// Polls `probe` (every 100 ms) until it returns `Some`, for at most
    /// `limit`; on timeout the error names `what` and the last observation.
    pub async fn until<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(Option<T>, String)>>,
    {
        let last = Mutex::new(String::new());
        let found = wait_for(limit, Duration::from_millis(100), || {
            let looked = probe();
            let last = &last;
            async move {
                let (value, seen) = match looked.await {
                    Ok((value, seen)) => (value, seen),
                    Err(e) => (None, format!("{e:#}")),
                };
                *last.lock().unwrap_or_else(|e| e.into_inner()) = seen;
                value
            }
        })
        .await;
        found.ok_or_else(|| {
            let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
            anyhow!("timed out after {limit:?} waiting for {what}; last seen: {last}")
        })
    }

    /// Runs `script` (a function body; `arguments[0]` is `arg`) in the page.
    pub async fn js(&self, script: &str, arg: Value) -> Result<Value> {
        Ok(self.client.execute(script, vec![arg]).await?)
    }

    /// Waits until the element with this test id exists and is visible.
    pub async fn visible(&self, testid: &str) -> Result<()> {
        self.until(&format!("{testid} to be visible"), STEP, || async {
            let shown = self
                .js(
                    "const e = document.querySelector(arguments[0]);
                     return e ? (e.offsetParent !== null || getComputedStyle(e).position === 'fixed') : null;",
                    json!(tid(testid)),
                )
                .await?;
            Ok((shown.as_bool().filter(|v| *v).map(|_| ()), format!("{shown}")))
        })
        .await
    }

    /// Waits until an element matching `css` exists and is displayed.
    pub async fn visible_css(&self, css: &str) -> Result<()> {
        self.until(&format!("{css} to be visible"), STEP, || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) if e.is_displayed().await? => Ok((Some(()), String::new())),
                Ok(_) => Ok((None, "present but hidden".into())),
                Err(e) => Ok((None, format!("{e}"))),
            }
        })
        .await
    }

    /// Clicks the element matching `css` once it is there and enabled.
    pub async fn click(&self, css: &str) -> Result<()> {
        let element = self
            .until(&format!("{css} to be clickable"), STEP, || async {
                match self.client.find(Locator::Css(css)).await {
                    Ok(e) if e.is_displayed().await? && e.is_enabled().await? => {
                        Ok((Some(e), String::new()))
                    }
                    Ok(_) => Ok((None, "present but hidden or disabled".into())),
                    Err(e) => Ok((None, format!("{e}"))),
                }
            })
            .await?;
        // As a person would: scroll it to the middle of the screen first,
        // clear of the fixed pay bar.
        self.js(
            "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' });",
            json!(css),
        )
        .await?;
        element
            .click()
            .await
            .with_context(|| format!("clicking {css}"))
    }

    /// Clicks the element with this test id.
    pub async fn tap(&self, testid: &str) -> Result<()> {
        self.click(&tid(testid)).await
    }

    /// Text of the element with this test id (empty when there is none).
    pub async fn text(&self, testid: &str) -> Result<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';",
                json!(tid(testid)),
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Waits until the element with test id `testid` has a `data-state` in
    /// `wanted`, and returns it.
    pub async fn state(&self, testid: &str, wanted: &[&str], limit: Duration) -> Result<String> {
        self.until(
            &format!("{testid} to be one of {wanted:?}"),
            limit,
            || async {
                let v = self
                    .js(
                        "const e = document.querySelector(arguments[0]);
                     return e ? [e.dataset.state || '', e.innerText.trim()] : null;",
                        json!(tid(testid)),
                    )
                    .await?;
                let state = v[0].as_str().unwrap_or_default().to_string();
                let seen = format!(
                    "state {:?}: {}",
                    state,
                    v[1].as_str().unwrap_or("(no element)")
                );
                Ok((wanted.contains(&state.as_str()).then_some(state), seen))
            },
        )
        .await
    }

    /// Waits for the payment status panel to leave "waiting" (and idle) and
    /// checks that it reached `expected`.
    pub async fn outcome(&self, expected: &str) -> Result<()> {
        let finals = [
            "success",
            "cancelled",
            "failed",
            "timeout",
            "not_confirmed",
            "error",
        ];
        let state = self.state("status", &finals, OUTCOME).await?;
        if state != expected {
            let text = self.text("status").await?;
            bail!("the payment ended {state:?}, expected {expected:?}: {text}");
        }
        Ok(())
    }

    /// The catalog as the page shows it: for each merchant (in page order)
    /// its mchid and the skus of its items.
    pub async fn catalog(&self) -> Result<Vec<(String, Vec<String>)>> {
        let v = self
            .js(
                "return [...document.querySelectorAll('[data-testid^=\"merchant-\"]')].map(m => [
                   m.dataset.testid.slice('merchant-'.length),
                   [...m.querySelectorAll('[data-testid^=\"add-\"]')].map(b => b.dataset.testid.slice(4)),
                 ]);",
                Value::Null,
            )
            .await?;
        serde_json::from_value(v).context("reading the catalog from the page")
    }

    /// Opens the shop (through OAuth), and puts in the cart one item of each
    /// of the first three merchants, plus a second unit of the first one.
    /// Returns the merchants' mchids and the cart's per-merchant subtotals
    /// and total, as the page shows them.
    pub async fn fill_cart(&self) -> Result<Cart> {
        self.open("").await?;
        let catalog = self
            .until("the catalog (after OAuth)", STEP, || async {
                let catalog = self.catalog().await?;
                let seen = format!("{} merchants", catalog.len());
                Ok(((catalog.len() >= 3).then_some(catalog), seen))
            })
            .await?;
        let picked: Vec<&(String, Vec<String>)> = catalog.iter().take(3).collect();
        for (mchid, skus) in &picked {
            let sku = skus
                .first()
                .ok_or_else(|| anyhow!("merchant {mchid} shows no item"))?;
            self.tap(&format!("add-{sku}")).await?;
        }
        let first = &picked[0].1[0];
        self.tap(&format!("add-{first}")).await?;
        let qty = self.text(&format!("qty-{first}")).await?;
        if qty != "2" {
            bail!("after two taps on add-{first} the quantity shows {qty:?}");
        }
        let mut subtotals = Vec::new();
        for (mchid, _) in &picked {
            let subtotal = self.text(&format!("subtotal-{mchid}")).await?;
            if subtotal.is_empty() {
                bail!("the cart shows no subtotal for merchant {mchid}");
            }
            subtotals.push((mchid.clone(), subtotal));
        }
        Ok(Cart {
            subtotals,
            total: self.text("cart-total").await?,
        })
    }

    /// Waits for the simulated cashier and presses its button (`wxsim-pay`
    /// or `wxsim-cancel`).
    pub async fn cashier(&self, button: &str) -> Result<()> {
        self.click(&format!("#{button}")).await
    }

    /// The sub-orders shown inside the element with this test id: mchid,
    /// amount text and transaction id (empty when none).
    pub async fn sub_orders(&self, within: &str) -> Result<Vec<SubOrderView>> {
        let v = self
            .js(
                "const root = document.querySelector(arguments[0]);
                 if (!root) return [];
                 return [...root.querySelectorAll('[data-testid=\"sub-order\"]')].map(s => ({
                   mchid: s.dataset.mchid,
                   amount: s.querySelector('.amount').textContent.trim(),
                   trade_state: (s.querySelector('[data-testid=\"trade-state\"]') || {}).textContent || '',
                   transaction_id: (s.querySelector('[data-testid=\"transaction-id\"]') || {}).textContent || '',
                 }));",
                json!(tid(within)),
            )
            .await?;
        serde_json::from_value(v).context("reading the sub-orders from the page")
    }

    /// A request to the demo's internal API (bearer token, JSON body and
    /// `Idempotency-Key` when given): its status and JSON answer.
    pub async fn internal(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value)> {
        let Some((base, token)) = &self.internal else {
            bail!("the demo printed no internal API address");
        };
        let url = format!("{base}{path}");
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http.request(method, &url).bearer_auth(token);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| url.clone())?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("{url} answered {status} non-JSON: {text}"))?;
        Ok((status, json))
    }

    /// From now on, pages see the server as a production one (`demo: false`,
    /// no simulator bridge): outside WeChat they must not pay, and inside
    /// WeChat nothing injects `WeixinJSBridge`.
    pub async fn production_page(&self) -> Result<()> {
        self.on_new_document(PRODUCTION_PAGE).await
    }

    /// From now on, pages see WeChat's user agent (`navigator.userAgent`;
    /// chromedriver's mobile emulation keeps its own for the requests).
    pub async fn as_wechat(&self) -> Result<()> {
        self.user_agent(WECHAT_UA).await
    }

    /// From now on, pages run as in a mini program's `<web-view>` (its
    /// user agent says `miniProgram`, `window.__wxjs_environment` is set).
    pub async fn as_mini_program_web_view(&self) -> Result<()> {
        self.user_agent(&format!("{WECHAT_UA} miniProgram/wx2421b1c4370ec43b"))
            .await?;
        self.on_new_document("window.__wxjs_environment = 'miniprogram';")
            .await
    }

    async fn user_agent(&self, ua: &str) -> Result<()> {
        self.on_new_document(&format!(
            "Object.defineProperty(Navigator.prototype, 'userAgent', {{ get: () => {} }});",
            json!(ua)
        ))
        .await
    }

    /// Runs `source` in every page from now on, before the page's scripts.
    async fn on_new_document(&self, source: &str) -> Result<()> {
        self.client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": source }),
            })
            .await
            .context("CDP Page.addScriptToEvaluateOnNewDocument")?;
        Ok(())
    }

    /// Runs axe-core (WCAG 2.1 A and AA rules) on the page and fails on any
    /// serious or critical violation, listing them.
    pub async fn accessibility(&self, what: &str) -> Result<()> {
        let axe_path = workspace_root().join("node_modules/axe-core/axe.min.js");
        let axe = std::fs::read_to_string(&axe_path)
            .with_context(|| format!("reading {} (npm ci at the root)", axe_path.display()))?;
        // Injected through WebDriver, which the page's CSP does not govern.
        self.client
            .execute(&format!("{axe}\nreturn typeof window.axe;"), vec![])
            .await
            .context("injecting axe-core")?;
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                   .then(r => done({ ok: r.violations
                       .filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' — ' +
                            v.nodes.map(n => n.target.join(' ')).join(', ')),
                     passes: r.passes.length }),
                         e => done({ error: String(e) }));",
                vec![],
            )
            .await
            .context("running axe-core")?;
        if let Some(e) = found["error"].as_str() {
            bail!("axe-core failed on {what}: {e}");
        }
        let violations = found["ok"].as_array().cloned().unwrap_or_default();
        if !violations.is_empty() {
            bail!("{what}: accessibility violations (axe-core): {violations:#?}");
        }
        if found["passes"].as_u64().unwrap_or(0) == 0 {
            bail!("{what}: axe-core checked nothing: {found}");
        }
        Ok(())
    }

    /// `POST {simulator}/sim/control` with `body`.
    pub async fn sim_control(&self, body: Value) -> Result<Value> {
        self.sim("POST", "/sim/control", Some(body)).await
    }

    /// A JSON request to the simulator's control API.
    pub async fn sim(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{}", self.simulator, path);
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| url.clone())?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{url} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{url} answered non-JSON: {text}"))
    }
}

/// The cart as the shop showed it before paying.
#[derive(Debug)]
pub struct Cart {
    /// (mchid, "¥12.30") per merchant, in page order.
    pub subtotals: Vec<(String, String)>,
    /// "¥45.60"
    pub total: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct SubOrderView {
    pub mchid: String,
    pub amount: String,
    pub trade_state: String,
    pub transaction_id: String,
}

/// Checks the sub-orders of a paid order against the cart: one per
/// merchant, amounts equal to the cart's subtotals, all SUCCESS with a
/// transaction id.
pub fn check_paid(subs: &[SubOrderView], cart: &Cart) -> Result<()> {
    if subs.len() != cart.subtotals.len() {
        bail!(
            "{} sub-orders shown, the cart had {} merchants: {subs:?}",
            subs.len(),
            cart.subtotals.len()
        );
    }
    for (mchid, subtotal) in &cart.subtotals {
        let sub = subs
            .iter()
            .find(|s| &s.mchid == mchid)
            .ok_or_else(|| anyhow!("no sub-order of merchant {mchid}: {subs:?}"))?;
        if &sub.amount != subtotal {
            bail!(
                "sub-order of {mchid} shows {}, the cart's subtotal was {subtotal}",
                sub.amount
            );
        }
        if sub.trade_state.trim() != "SUCCESS" {
            bail!("sub-order of {mchid} is {:?}, not SUCCESS", sub.trade_state);
        }
        if sub.transaction_id.trim().is_empty() {
            bail!("sub-order of {mchid} shows no transaction id");
        }
    }
    Ok(())
}

/// Copies a screenshot to the README's picture when asked to
/// (`WXPAY_UPDATE_SCREENSHOT=1`), so normal runs leave the tree clean.
pub async fn readme_screenshot(ctx: &Ctx) -> Result<()> {
    if std::env::var("WXPAY_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let png = ctx.client.screenshot().await?;
        let path = workspace_root().join("docs/screenshot-paid.png");
        std::fs::write(&path, png)?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}
