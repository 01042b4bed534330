//! The documents, run as written: README.md and docs/*.md promise commands,
//! outputs and HTTP exchanges; this file runs them and compares.
//!
//! A block is checked when the line before its fence is
//! `<!-- doc-test: NAME -->` (an HTML comment: GitHub shows the block as
//! usual). Each name has one check below, which takes the block's text from
//! the document — so editing a marked block changes what is run, and a
//! document that no longer holds fails `cargo xtask test`.
//! [`every_marked_block_has_a_check`] keeps the list of names and the
//! documents in step.
//!
//! Why marked blocks and not scripts beside the documents: the reader sees
//! exactly what is run, and there is one copy of every command.
//!
//! How commands are run:
//! - shell blocks: each `$ COMMAND` line (with `\` continuations) runs in
//!   `bash` in a temporary directory, stdout and stderr together; the lines
//!   after it are its expected output, each matching one output line, in
//!   order (other lines may come between). Blocks without `$ ` prompts are
//!   commands only;
//! - in expected lines, `…` matches any text and `PORT` a port number;
//! - `wxpay-combine` is the binary of this build (on `PATH`),
//!   `cargo xtask` the xtask binary (its `demo` runs that binary instead of
//!   a release build: `XTASK_DEMO_BIN`), `cargo run -p wxpay-combine-cli --`
//!   the binary and `cargo run -p wxpay-combine --example embed --` the
//!   example;
//! - placeholders filled in everywhere: `/tmp/` and `/home/you/` are the
//!   temporary directory, `demo-data/` the demo's data directory (the
//!   README's `--data-dir /tmp/shop`), the ports 9000, 8080 (the demo),
//!   8081 (the embedding example) and 7730 (the simulator) free ports;
//!   per check, what the document says stands for a generated value
//!   (`TODAY`, `SUB_MCHID`, `MCHID`, the example mchids and openid of
//!   docs/internal-api.md, `NO`, `C1`, …).
//!
//! Blocks that cannot run as they stand are checked another way: Rust
//! blocks are regions of `server/merchant/examples/doc_snippets.rs` (compared
//! here, compiled by `cargo test`); configuration blocks are read by the
//! real loaders (commented-out `# key = value` lines too; an unknown key
//! fails) and the server's are laid over the demo's configuration for
//! `serve --check`; synopses with `[optional]` parts are run with and
//! without them; `cargo test` lines must name a package, test file and
//! filter that select tests; JSON documents are compared field by field
//! with what the code writes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxpay_combine_tests::binary::{server_binary, target_dir, workspace_root};
use wxpay_combine_tests::reliability::free_port;
use wxpay_combine_tests::sim::{http, prepay_body, unique, TestSim};

/// Every check's block names; [`every_marked_block_has_a_check`] compares
/// them with the documents' markers.
const CHECKED: &[&str] = &[
    "demo-options",
    "demo-output",
    "serve-check",
    "readme-refund",
    "refund-cli",
    "webhook-request",
    "webhook-payload",
    "webhook-python",
    "webhook-node",
    "embed-run",
    "embed-output",
    "embed-shop",
    "embed-paydir",
    "internal-create",
    "internal-create-answer",
    "internal-get",
    "internal-unauthorized",
    "internal-invalid",
    "bill-demo",
    "sim-run",
    "sim-run-output",
    "sim-control",
    "readme-overview",
    "readme-real",
    "readme-tools",
    "library-embed",
    "library-handler",
    "library-refund-handler",
    "sim-embedded",
    "sim-config",
    "internal-config",
    "webhook-config",
    "bill-schedule-config",
    "metrics-config",
    "internal-tests",
    "bill-tests",
    "edge-tests",
    "limits-tests",
    "ops-tests",
    "internal-pay-link",
    "internal-pay-link-answer",
    "internal-refund",
    "internal-refund-answer",
    "bill-command",
    "tools-paysign-usage",
    "tools-paysign",
    "tools-request-usage",
    "tools-request",
    "tools-verify-usage",
    "tools-verify",
    "tools-verify-failures",
    "tools-decrypt-usage",
    "tools-decrypt",
    "webhook-refund-payload",
    "bill-merchant-report",
    "bill-run-report",
    "sim-merchants",
    "internal-auth-header",
];

// ---------------------------------------------------------------------------
// The documents' marked blocks

#[derive(Debug, Clone)]
struct Block {
    file: String,
    name: String,
    text: String,
}

fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn marked_blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for path in documents() {
        let file = path
            .strip_prefix(workspace_root())
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("a document");
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            if let Some(name) = line
                .strip_prefix("<!-- doc-test:")
                .and_then(|r| r.strip_suffix("-->"))
            {
                let name = name.trim().to_string();
                let fence = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
                assert!(
                    fence.starts_with("```"),
                    "{file}:{}: the marker doc-test: {name} is not followed by a fenced block",
                    i + 1
                );
                let mut body = Vec::new();
                let mut j = i + 2;
                while j < lines.len() && lines[j].trim_start() != "```" {
                    body.push(lines[j]);
                    j += 1;
                }
                assert!(j < lines.len(), "{file}: block {name} is not closed");
                out.push(Block {
                    file: file.clone(),
                    name,
                    text: body.join("\n") + "\n",
                });
                i = j;
            }
            i += 1;
        }
    }
    out
}

/// The block marked `name`; panics when no document has it (a check whose
/// block was removed fails).
fn block(name: &str) -> Block {
    let found: Vec<Block> = marked_blocks()
        .into_iter()
        .filter(|b| b.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one block marked doc-test: {name} in README.md and docs/*.md"
    );
    found.into_iter().next().unwrap()
}

#[test]
fn every_marked_block_has_a_check() {
    let marked: BTreeSet<String> = marked_blocks().into_iter().map(|b| b.name).collect();
    let checked: BTreeSet<String> = CHECKED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        marked, checked,
        "the doc-test markers of README.md and docs/*.md and the checks of tests/tests/docs.rs"
    );
}

/// Whether an output line matches an expected one: `…` matches any text,
/// `PORT` one or more digits, everything else itself.
fn line_matches(pattern: &str, line: &str) -> bool {
    fn go(p: &str, s: &str) -> bool {
        if let Some(rest) = p.strip_prefix('…') {
            return (0..=s.len())
                .filter(|i| s.is_char_boundary(*i))
                .any(|i| go(rest, &s[i..]));
        }
        if let Some(rest) = p.strip_prefix("PORT") {
            let n = s.bytes().take_while(u8::is_ascii_digit).count();
            return n > 0 && go(rest, &s[n..]);
        }
        match (p.chars().next(), s.chars().next()) {
            (None, None) => true,
            (Some(a), Some(b)) if a == b => go(&p[a.len_utf8()..], &s[b.len_utf8()..]),
            _ => false,
        }
    }
    go(pattern.trim_end(), line.trim_end())
}

/// Checks that every expected line matches an output line, in order.
fn expect_lines(what: &str, expected: &[String], output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let mut at = 0;
    for e in expected.iter().filter(|e| !e.trim().is_empty()) {
        match lines[at..].iter().position(|l| line_matches(e, l)) {
            Some(k) => at += k + 1,
            None => panic!(
                "{what}: no output line matches the documented\n  {e}\n(after line {at}) in the output:\n{output}"
            ),
        }
    }
}

#[test]
fn line_patterns() {
    assert!(line_matches(
        "page: http://127.0.0.1:PORT/pay/",
        "page: http://127.0.0.1:8080/pay/"
    ));
    assert!(!line_matches(
        "page: http://127.0.0.1:PORT/pay/",
        "page: http://127.0.0.1:/pay/"
    ));
    assert!(line_matches("a … b", "a x y b"));
    assert!(line_matches("…missing.toml: gone", "/x/missing.toml: gone"));
    assert!(!line_matches("configuration OK", "configuration refused"));
}

// ---------------------------------------------------------------------------
// Running commands as the documents write them

/// The binaries the documents' commands name, built once.
struct Tools {
    server: PathBuf,
    xtask: PathBuf,
}

fn cargo_build(args: &[&str], built: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .arg("build")
        .args(args)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build {args:?}: {status}");
    let path = target_dir().join("debug").join(built);
    assert!(
        path.is_file(),
        "{} after cargo build {args:?}",
        path.display()
    );
    path
}

fn tools() -> Tools {
    Tools {
        server: server_binary(),
        xtask: cargo_build(&["-p", "xtask"], "xtask"),
    }
}

/// A temporary directory where the documents' commands run, with
/// `wxpay-combine` on `PATH` and the placeholders filled in.
struct Workdir {
    dir: tempfile::TempDir,
    path_var: String,
    subs: Vec<(String, String)>,
    env: Vec<(String, String)>,
    commands: Vec<(String, String)>,
}

impl Workdir {
    fn new(tools: &Tools) -> Workdir {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&tools.server, bin.join("wxpay-combine")).unwrap();
        let path_var = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let root = dir.path().display().to_string();
        let subs = vec![
            ("/tmp/".to_string(), format!("{root}/")),
            ("/home/you/".to_string(), format!("{root}/")),
            ("demo-data/".to_string(), format!("{root}/shop/")),
        ];
        let commands = vec![
            (
                "cargo xtask ".to_string(),
                format!("{} ", tools.xtask.display()),
            ),
            (
                "cargo run -p wxpay-combine-cli -- ".to_string(),
                format!("{} ", tools.server.display()),
            ),
        ];
        Workdir {
            dir,
            path_var,
            subs,
            env: vec![("XTASK_DEMO_BIN".into(), tools.server.display().to_string())],
            commands,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills in `from` → `to` in every later text (before the general
    /// placeholders).
    fn sub(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.subs.insert(0, (from.into(), to.into()));
    }

    fn fill(&self, text: &str) -> String {
        // One pass per placeholder, most specific first; a filled-in value
        // is not filled in again.
        let mut pieces: Vec<(String, bool)> = vec![(text.to_string(), false)];
        for (from, to) in &self.subs {
            let mut next = Vec::new();
            for (piece, done) in pieces {
                if done {
                    next.push((piece, true));
                    continue;
                }
                let mut rest = piece.as_str();
                while let Some(i) = rest.find(from.as_str()) {
                    // `demo-data/` inside a longer path is not the placeholder.
                    let inside = from == "demo-data/"
                        && rest[..i].ends_with(|c: char| c == '/' || c.is_alphanumeric());
                    if inside {
                        next.push((rest[..i + from.len()].to_string(), false));
                    } else {
                        next.push((rest[..i].to_string(), false));
                        next.push((to.clone(), true));
                    }
                    rest = &rest[i + from.len()..];
                }
                next.push((rest.to_string(), false));
            }
            pieces = next;
        }
        pieces.into_iter().map(|(p, _)| p).collect()
    }

    fn command(&self, cmd: &str) -> String {
        let mut cmd = self.fill(cmd);
        for (from, to) in &self.commands {
            cmd = cmd.replace(from.as_str(), to);
        }
        cmd
    }

    fn bash(&self, script: &str, env: &[(String, String)]) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .current_dir(self.path())
            .env("PATH", &self.path_var)
            .env("RUST_LOG", "info");
        for (k, v) in self.env.iter().chain(env) {
            c.env(k, v);
        }
        c
    }

    /// Runs one documented command (placeholders filled in), stdout and
    /// stderr together.
    fn run(&self, cmd: &str, env: &[(String, String)]) -> (i32, String) {
        let script = format!("exec 2>&1; {}", self.command(cmd));
        let out = self.bash(&script, env).output().expect("bash runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs a transcript block: `$ COMMAND` lines and their expected output.
    fn transcript(&self, b: &Block, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut results = Vec::new();
        for (cmd, expected) in transcript_steps(&b.text) {
            let (_, output) = self.run(&cmd, env);
            let expected: Vec<String> = expected.iter().map(|e| self.fill(e)).collect();
            expect_lines(
                &format!("{} ({}): $ {}", b.name, b.file, self.command(&cmd)),
                &expected,
                &output,
            );
            results.push((cmd, output));
        }
        results
    }

    /// Starts a documented long-running command.
    fn spawn(&self, cmd: &str, env: &[(String, String)]) -> Proc {
        let script = format!("exec {}", self.command(cmd));
        let mut child = self
            .bash(&script, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash starts");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Proc {
            child,
            output,
            what: self.command(cmd),
        }
    }
}

/// `$ ` commands (with `\` continuations) and the lines after each.
fn transcript_steps(text: &str) -> Vec<(String, Vec<String>)> {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        if continuing {
            let step = steps.last_mut().unwrap();
            continuing = line.trim_end().ends_with('\\');
            step.0.push('\n');
            step.0.push_str(line);
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            continuing = cmd.trim_end().ends_with('\\');
            steps.push((cmd.to_string(), Vec::new()));
        } else if let Some(step) = steps.last_mut() {
            step.1.push(line.to_string());
        }
    }
    assert!(!steps.is_empty(), "a transcript block without `$ ` lines");
    steps
}

/// The commands of a block without prompts: lines (with `\`
/// continuations), comments and blank lines left out.
fn command_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        if continuing {
            let last = out.last_mut().unwrap();
            last.push('\n');
            last.push_str(line);
        } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            out.push(line.to_string());
        }
        continuing = line.trim_end().ends_with('\\');
    }
    out
}

/// A command that runs until stopped; killed on drop.
struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
    what: String,
}

impl Proc {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output has a line matching `pattern`; returns it.
    fn wait_line(&mut self, pattern: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Some(l) = self.output().lines().find(|l| line_matches(pattern, l)) {
                return l.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`{}` exited ({status}) before printing {pattern:?}:\n{}",
                    self.what,
                    self.output()
                );
            }
            assert!(
                Instant::now() < until,
                "`{}` did not print {pattern:?} within {within:?}:\n{}",
                self.what,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, prefix: &str) -> &'a str {
    line.split_once(prefix).map(|(_, r)| r).unwrap_or("").trim()
}

/// Today's date in Beijing (bills are per +08:00 day).
fn beijing_today() -> String {
    let now =
        time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap());
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

// ---------------------------------------------------------------------------
// HTTP exchanges as the documents show them

/// A documented HTTP request: method, path, headers, body.
struct HttpExample {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn http_request(text: &str) -> HttpExample {
    let mut lines = text.lines();
    let first = lines.next().expect("a request line");
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap().to_string();
    let path = parts.next().unwrap().to_string();
    let mut headers = Vec::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    HttpExample {
        method,
        path,
        headers,
        body: lines.collect::<Vec<_>>().join("\n"),
    }
}

/// A documented answer: status and JSON body.
fn http_answer(text: &str) -> (u16, Value) {
    let (head, body) = text
        .split_once("\n\n")
        .expect("status line, blank line, body");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (
        status,
        serde_json::from_str(body).expect("the documented answer is JSON"),
    )
}

/// A documented answer without a blank line before its body: status,
/// headers, JSON body.
fn http_answer_with_headers(text: &str) -> (u16, Vec<(String, String)>, Value) {
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = Vec::new();
    let mut body = String::new();
    for l in lines {
        if !body.is_empty() || l.trim_start().starts_with('{') {
            body.push_str(l);
            body.push('\n');
        } else if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (
        status,
        headers,
        serde_json::from_str(&body).expect("the documented body is JSON"),
    )
}

/// The same fields, recursively (arrays: their first elements), whatever
/// the values.
fn same_fields(at: &str, documented: &Value, actual: &Value) {
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let dk: BTreeSet<&String> = d.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            assert_eq!(
                dk, ak,
                "{at}: the documented fields and the sent ones:\n{actual:#}"
            );
            for (k, v) in d {
                same_fields(&format!("{at}.{k}"), v, &a[k]);
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            if let (Some(dv), Some(av)) = (d.first(), a.first()) {
                same_fields(&format!("{at}[0]"), dv, av);
            }
        }
        _ => {}
    }
}

/// Compares an answer with the documented one: the same fields
/// (recursively) and the same values, except where the document shows a
/// value that differs on every run: `…`, the documented order number (and
/// what starts with it), times, prepay ids, nonces and signatures.
fn same_shape(at: &str, documented: &Value, actual: &Value, doc_no: &str, no: &str) {
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let dk: BTreeSet<&String> = d.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            assert_eq!(
                dk, ak,
                "{at}: the documented fields and the answer's:\n{actual:#}"
            );
            for (k, v) in d {
                same_shape(&format!("{at}.{k}"), v, &a[k], doc_no, no);
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            assert_eq!(d.len(), a.len(), "{at}: length");
            for (i, (dv, av)) in d.iter().zip(a).enumerate() {
                same_shape(&format!("{at}[{i}]"), dv, av, doc_no, no);
            }
        }
        (Value::String(d), Value::String(a)) => {
            let generated = d.contains('…')
                || at.ends_with("_at")
                || at.ends_with("time_expire")
                || at.ends_with("timeStamp")
                || at.ends_with("prepay_id");
            if !generated {
                assert_eq!(&d.replace(doc_no, no), a, "{at}");
            }
        }
        (d, a) => assert_eq!(d, a, "{at}"),
    }
}

// ---------------------------------------------------------------------------
// A webhook receiver: what arrives, as it arrives

/// One request as it arrived: header names and values, raw body.
type Delivery = (Vec<(String, String)>, Vec<u8>);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Delivery>>>);

async fn receive(State(r): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    r.0.lock().unwrap().push((headers, body.to_vec()));
    ""
}

async fn webhook_receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/hooks/wxpay", axum::routing::post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/wxpay", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received)
}

/// Runs a recipe of docs/webhooks.md on one delivery: the documented
/// function with the secret read as documented, on the headers as they
/// arrived, in Title-Case, and on a tampered body. Prints `true true false`
/// when the recipe works.
fn run_recipe(w: &Workdir, lang: &str, recipe: &str, headers: &[(String, String)], body: &[u8]) {
    let dir = w.path().join(format!("recipe-{lang}"));
    std::fs::create_dir_all(&dir).unwrap();
    let as_received: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let title_case: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            let t = k
                .split('-')
                .map(|p| {
                    let mut c = p.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            (t, json!(v))
        })
        .collect();
    std::fs::write(
        dir.join("headers.json"),
        Value::Object(as_received).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("title.json"),
        Value::Object(title_case).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("body"), body).unwrap();
    let key = w.path().join("webhook.key").display().to_string();
    let (file, program, harness) = match lang {
        "python" => (
            "recipe.py",
            "python3",
            format!(
                "\nimport json\nbody = open('body', 'rb').read()\nsecret = load_secret({key:?})\n\
                 print(str(verify(secret, json.load(open('headers.json')), body)).lower(),\n\
                       str(verify(secret, json.load(open('title.json')), body)).lower(),\n\
                       str(verify(secret, json.load(open('headers.json')), body + b' ')).lower())\n"
            ),
        ),
        _ => (
            "recipe.js",
            "node",
            format!(
                "\nconst body = fs.readFileSync('body');\nconst secret = loadSecret({key:?});\n\
                 const h = JSON.parse(fs.readFileSync('headers.json', 'utf8'));\n\
                 const t = JSON.parse(fs.readFileSync('title.json', 'utf8'));\n\
                 console.log(verify(secret, h, body), verify(secret, t, body),\n\
                   verify(secret, h, Buffer.concat([body, Buffer.from(' ')])));\n"
            ),
        ),
    };
    std::fs::write(dir.join(file), format!("{recipe}{harness}")).unwrap();
    let out = Command::new(program)
        .arg(file)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (needed by the {lang} recipe): {e}"));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        "true true false",
        "the {lang} recipe of docs/webhooks.md on a real delivery (as received, Title-Case, tampered); stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The checks

/// The README's demo, the documents that run against it, and the embedding
/// example: one demo started as the README's options line says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_against_the_demo() {
    let tools = tools();
    let mut w = Workdir::new(&tools);
    let demo_addr = format!("127.0.0.1:{}", free_port());
    w.sub("127.0.0.1:9000", demo_addr.clone());
    w.sub("127.0.0.1:8080", demo_addr.clone());

    // README "Options": `cargo xtask demo -- …` (item 1: the `--` reaches
    // no one).
    let options = block("demo-options");
    let lines = command_lines(&options.text);
    assert_eq!(lines.len(), 1, "one demo command in {}", options.file);
    let mut demo = w.spawn(&lines[0], &[]);
    demo.wait_line("Open the page in a browser…", Duration::from_secs(120));
    let printed = demo.output();

    // README: what the demo prints.
    let out = block("demo-output");
    let expected: Vec<String> = out.text.lines().map(|l| w.fill(l)).collect();
    expect_lines("demo-output (README.md)", &expected, &printed);
    let sim_base = after(
        &demo.wait_line("simulator: …", Duration::ZERO),
        "simulator:",
    )
    .to_string();
    let internal_line = demo.wait_line("internal API: …", Duration::ZERO);
    let internal_base = after(&internal_line, "internal API:")
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string(); // http://127.0.0.1:P/internal
    let data = w.path().join("shop");
    let token = std::fs::read_to_string(data.join("secrets/internal_token.txt")).unwrap();
    let merchant: Value =
        serde_json::from_slice(&std::fs::read(data.join("simulator/merchant.json")).unwrap())
            .unwrap();
    let sub_mchids: Vec<String> = merchant["sub_mchids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let openid = merchant["demo_openid"].as_str().unwrap().to_string();
    let client = http();

    // README "Running it for real": `serve --check` (item 2).
    w.transcript(&block("serve-check"), &[]);
    // The catalog in wxpay.example.toml's comment is one `serve` accepts.
    let example = std::fs::read_to_string(workspace_root().join("wxpay.example.toml")).unwrap();
    let catalog: String = example
        .split("# The product catalog")
        .nth(1)
        .and_then(|r| r.split("\ncatalog_file").next())
        .expect("the catalog comment of wxpay.example.toml")
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(w.path().join("example-catalog.toml"), &catalog).unwrap();
    let (code, output) = w.run(
        "WXPAY_CATALOG_FILE=$PWD/example-catalog.toml wxpay-combine serve --config demo-data/wxpay.toml --check",
        &[],
    );
    assert!(
        code == 0 && output.contains("configuration OK"),
        "the catalog of wxpay.example.toml's comment:\n{catalog}\n{output}"
    );
    let serve_cmd = readme_real(&w);
    server_config_blocks(&w);
    // `serve` says in its log that it creates the database's directory, and
    // logs addresses as addresses (item 9).
    let mut serve = w.spawn(
        &serve_cmd,
        &[
            (
                "WXPAY_DATABASE_URL".into(),
                format!("sqlite:{}/new-db/wxpay.db", w.path().display()),
            ),
            ("WXPAY_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            (
                "WXPAY_METRICS_LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ],
    );
    serve.wait_line(
        "…creating the database directory…new-db…",
        Duration::from_secs(60),
    );
    serve.wait_line(
        "…merchant server listening…addr=127.0.0.1:PORT…",
        Duration::from_secs(60),
    );
    serve.wait_line(
        "…metrics listening…addr=127.0.0.1:PORT…",
        Duration::from_secs(10),
    );
    serve.wait_line(
        "…internal API listening…addr=127.0.0.1:PORT…",
        Duration::from_secs(10),
    );
    assert!(!serve.output().contains("Some("), "{}", serve.output());
    drop(serve);

    // docs/internal-api.md: the request for a known payer, as documented
    // with the simulator's sub-merchants and payer (item 5).
    let request = block("internal-create");
    let mut req = http_request(&request.text);
    req.body = req
        .body
        .replace("1900000110", &sub_mchids[0])
        .replace("1900000111", &sub_mchids[1])
        .replace("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", &openid);
    let body: Value = serde_json::from_str(&req.body).expect("the documented body is JSON");
    let key = unique("doc-");
    let send = |key: &str, body: &Value| {
        let mut r = client.request(
            req.method.parse().unwrap(),
            format!(
                "{}{}",
                internal_base.trim_end_matches("/internal"),
                req.path
            ),
        );
        for (k, v) in &req.headers {
            r = match k.as_str() {
                "Authorization" => r.header(k, format!("Bearer {}", token.trim())),
                "Idempotency-Key" => r.header(k, key),
                _ => r.header(k, v),
            };
        }
        r.body(body.to_string()).send()
    };
    let r = send(&key, &body).await.unwrap();
    let status = r.status().as_u16();
    let created: Value = r.json().await.unwrap();
    let (doc_status, doc_answer) = http_answer(&block("internal-create-answer").text);
    let doc_answer: Value = serde_json::from_str(
        &doc_answer
            .to_string()
            .replace("1900000110", &sub_mchids[0])
            .replace("1900000111", &sub_mchids[1])
            .replace("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", &openid),
    )
    .unwrap();
    assert_eq!(status, doc_status, "{created}");
    let no = created["combine_out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let doc_no = doc_answer["combine_out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    same_shape(
        "internal-create-answer",
        &doc_answer,
        &created,
        &doc_no,
        &no,
    );
    // Idempotency, as the table says: same key and body 200; a new key
    // naming that number 409 ORDER_NUMBER_USED.
    let doc = std::fs::read_to_string(workspace_root().join("docs/internal-api.md")).unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| new key, but a `combine_out_trade_no`"))
        .expect("the idempotency table's row for a reused number");
    assert!(
        row.contains("409") && row.contains("ORDER_NUMBER_USED"),
        "{row}"
    );
    let again = send(&key, &body).await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let mut named = body.clone();
    named["combine_out_trade_no"] = json!(no);
    let first = unique("doc-");
    let r = send(&first, &named).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        409,
        "a new key naming an existing order's number"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "ORDER_NUMBER_USED"
    );
    let r = send(&first, &named).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        409,
        "and again: the key was not bound to it"
    );
    // A wrong token: the documented 401, header and body.
    let (doc_status, doc_headers, doc_body) =
        http_answer_with_headers(&block("internal-unauthorized").text);
    let r = client
        .post(format!("{internal_base}/combine-orders"))
        .bearer_auth("not-the-token")
        .header("Idempotency-Key", unique("doc-"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), doc_status);
    for (k, v) in &doc_headers {
        assert_eq!(
            r.headers().get(k.as_str()).and_then(|h| h.to_str().ok()),
            Some(v.as_str()),
            "internal-unauthorized: {k}"
        );
    }
    assert_eq!(r.json::<Value>().await.unwrap(), doc_body);
    // The header as documented: `Bearer` and the token; the token alone is
    // refused.
    let header = block("internal-auth-header");
    let form = header.text.trim();
    assert!(
        form.starts_with("Authorization: Bearer <") && form.ends_with('>'),
        "internal-auth-header: {form}"
    );
    for (value, status) in [
        (format!("Bearer {}", token.trim()), 200),
        (token.trim().to_string(), 401),
    ] {
        let r = client
            .get(format!("{internal_base}/combine-orders/{no}"))
            .header("Authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "internal-auth-header");
    }
    // A validation error names the field, as documented.
    let (doc_status, doc_body) = http_answer(&block("internal-invalid").text);
    let mut invalid = body.clone();
    invalid["sub_orders"][1]["amount"] = json!(0);
    let r = send(&unique("doc-"), &invalid).await.unwrap();
    assert_eq!(r.status().as_u16(), doc_status);
    assert_eq!(r.json::<Value>().await.unwrap(), doc_body);
    // GET: the same shape without pay_params.
    let get = http_request(&block("internal-get").text);
    let path = get.path.replace(&doc_no, &no);
    let read: Value = client
        .get(format!(
            "{}{}",
            internal_base.trim_end_matches("/internal"),
            path
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut without = doc_answer.clone();
    without.as_object_mut().unwrap().remove("pay_params");
    same_shape("internal-get", &without, &read, &doc_no, &no);

    // Pay it in the simulator's cashier, as bridge.js does.
    let mut confirm = created["pay_params"].clone();
    confirm["action"] = json!("pay");
    let paid: Value = client
        .post(format!("{sim_base}/sim/cashier/confirm"))
        .json(&confirm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["err_msg"], "get_brand_wcpay_request:ok", "{paid}");
    // The day of the payment: its bill's.
    let paid_on = beijing_today();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let o: Value = client
            .get(format!("{internal_base}/combine-orders/{no}"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if o["state"] == "SUCCESS" {
            break;
        }
        assert!(Instant::now() < until, "the order is not paid: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // README: a partial refund with curl.
    let sub2 = created["sub_orders"][1]["out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let refund = command_lines(&block("readme-refund").text);
    assert_eq!(refund.len(), 1);
    let cmd = refund[0]
        .replace("http://127.0.0.1:PORT/internal", &internal_base)
        .replace("NO-2", &sub2)
        .replace("/NO/", &format!("/{no}/"));
    let (code, output) = w.run(&cmd, &[]);
    // curl's progress meter goes to stderr (merged here): the answer is
    // the JSON line.
    let answer: Value = output
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("readme-refund (exit {code}): {output}"));
    assert_eq!(answer["status"], "PROCESSING", "{answer}");
    assert_eq!(answer["amount"], 100, "{answer}");

    // docs/internal-api.md: the refund request and its answer.
    let refund_body: Value = serde_json::from_str(
        &block("internal-refund")
            .text
            .replace("<sub-order number>", &sub2),
    )
    .expect("internal-refund is JSON");
    let r = client
        .post(format!("{internal_base}/combine-orders/{no}/refunds"))
        .bearer_auth(token.trim())
        .header("Idempotency-Key", unique("doc-"))
        .json(&refund_body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let refunded: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "internal-refund: {refunded}");
    let documented: Value = serde_json::from_str(&block("internal-refund-answer").text)
        .expect("internal-refund-answer is JSON");
    same_shape(
        "internal-refund-answer",
        &documented,
        &refunded,
        &doc_no,
        &no,
    );

    // docs/refunds.md: the refund command.
    let mut refund_cli = block("refund-cli");
    refund_cli.text = refund_cli
        .text
        .replace("NO-1", &format!("{no}-1"))
        .replace("\"NO\"", &format!("{no:?}"))
        .replace(" NO ", &format!(" {no} "));
    w.transcript(&refund_cli, &[]);

    // docs/bills.md: --out into a directory that does not exist (item 6).
    w.sub("SUB_MCHID", sub_mchids[0].clone());
    w.sub("TODAY", paid_on.clone());
    w.transcript(&block("bill-demo"), &[]);
    assert!(w
        .path()
        .join("bills")
        .join(format!("{paid_on}.csv"))
        .is_file());
    bill_command(&w);

    // docs/webhooks.md: the recipes on a real delivery (item 3). The order
    // events wait in the outbox (the demo has no webhook_url); one is sent
    // with the secret made as documented.
    let webhooks = std::fs::read_to_string(workspace_root().join("docs/webhooks.md")).unwrap();
    let make_secret = "head -c 32 /dev/urandom | base64 > webhook.key";
    assert!(webhooks.contains(make_secret));
    let (code, output) = w.run(make_secret, &[]);
    assert_eq!(code, 0, "{output}");
    let (code, pending) = w.run(
        "wxpay-combine events --config demo-data/wxpay.toml --pending",
        &[],
    );
    assert_eq!(code, 0, "{pending}");
    let event_id = pending
        .lines()
        .find(|l| l.contains(&no))
        .and_then(|l| l.split_whitespace().find(|t| t.starts_with("evt_")))
        .unwrap_or_else(|| panic!("order.paid of {no} pending:\n{pending}"))
        .to_string();
    let (url, received) = webhook_receiver().await;
    let hook_env = [
        ("WXPAY_WEBHOOK_URL".to_string(), url),
        (
            "WXPAY_WEBHOOK_SECRET_FILE".to_string(),
            w.path().join("webhook.key").display().to_string(),
        ),
    ];
    let (code, output) = w.run(
        &format!("wxpay-combine events --config demo-data/wxpay.toml --redeliver {event_id}"),
        &hook_env,
    );
    assert_eq!(code, 0, "{output}");
    expect_lines(
        "events --redeliver",
        &[format!("{event_id}: delivered (HTTP 200)")],
        &output,
    );
    assert!(
        output.contains(&format!("combine_out_trade_no={no}")),
        "the webhook delivered line carries the order number (item 9): {output}"
    );
    let (hook_headers, hook_body) = received.0.lock().unwrap()[0].clone();
    // The request as docs/webhooks.md shows it: the headers (fixed values
    // equal, the others of the documented form) and the payload's fields.
    let documented = http_request(&block("webhook-request").text);
    for (name, value) in &documented.headers {
        let got = hook_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("webhook-request: no {name} header in {hook_headers:?}"));
        let ok = match name.as_str() {
            "Content-Type" | "User-Agent" => got == value,
            "Wxpay-Combine-Event-Id" => got == event_id && got.len() == value.len(),
            "Wxpay-Combine-Timestamp" => {
                got.len() == value.len() && got.bytes().all(|b| b.is_ascii_digit())
            }
            "Wxpay-Combine-Signature" => {
                value.starts_with("v1=")
                    && got.len() == 3 + 64
                    && got.starts_with("v1=")
                    && got[3..].bytes().all(|b| b.is_ascii_hexdigit())
            }
            _ => panic!("webhook-request: a header this check does not know: {name}"),
        };
        assert!(
            ok,
            "webhook-request: {name}: documented {value:?}, sent {got:?}"
        );
    }
    let payload: Value = serde_json::from_slice(&hook_body).unwrap();
    let doc_payload: Value = serde_json::from_str(&block("webhook-payload").text).unwrap();
    same_fields("webhook-payload", &doc_payload, &payload);
    assert_eq!(payload["type"], doc_payload["type"]);
    assert_eq!(payload["order"]["state"], doc_payload["order"]["state"]);
    assert_eq!(payload["order"]["combine_out_trade_no"], json!(no));
    run_recipe(
        &w,
        "python",
        &block("webhook-python").text,
        &hook_headers,
        &hook_body,
    );
    run_recipe(
        &w,
        "node",
        &block("webhook-node").text,
        &hook_headers,
        &hook_body,
    );

    // docs/webhooks.md: a pay link closed before a claim posts nothing
    // (item 8) — the documented exception.
    let flat = webhooks.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("closed or expired before a payer claimed it emits no event"),
        "docs/webhooks.md states the pay-link exception"
    );
    // The documented pay link request and its answer.
    let link_body: Value = serde_json::from_str(
        &block("internal-pay-link")
            .text
            .replace("1900000110", &sub_mchids[0])
            .replace("1900000111", &sub_mchids[1]),
    )
    .expect("internal-pay-link is JSON");
    let r = send(&unique("doc-"), &link_body).await.unwrap();
    let status = r.status().as_u16();
    let link: Value = r.json().await.unwrap();
    let (doc_status, doc_link) = http_answer(
        &block("internal-pay-link-answer")
            .text
            .replace("1900000110", &sub_mchids[0])
            .replace("1900000111", &sub_mchids[1]),
    );
    assert_eq!(status, doc_status, "{link}");
    let link_no = link["combine_out_trade_no"].as_str().unwrap().to_string();
    let doc_link_no = doc_link["combine_out_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    same_shape(
        "internal-pay-link-answer",
        &doc_link,
        &link,
        &doc_link_no,
        &link_no,
    );
    let closed: Value = client
        .post(format!("{internal_base}/combine-orders/{link_no}/close"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["state"], "CLOSED", "{closed}");
    let (_, pending) = w.run(
        "wxpay-combine events --config demo-data/wxpay.toml --pending",
        &[],
    );
    assert!(
        !pending.contains(&link_no),
        "no event for the closed link:\n{pending}"
    );

    // docs/library.md: the embedding example against the demo (item 4).
    embed_example(&mut w, &sim_base, &token, &client).await;

    // Item 9: the demo's log has addresses, not `Some(…)`.
    assert!(!demo.output().contains("Some("), "{}", demo.output());
}

/// docs/bills.md's command synopsis, run against the demo: once with every
/// optional part (the first of the alternatives), once with none.
fn bill_command(w: &Workdir) {
    let b = block("bill-command");
    let mut runs = Vec::new();
    for line in command_lines(&b.text) {
        let line = line
            .replace("wxpay.toml", "demo-data/wxpay.toml")
            .replace("2024-05-20", "TODAY")
            .replace("1900000101", "SUB_MCHID")
            .replace("--out-dir bills", "--out-dir bills-all")
            .replace("--out bills/", "--out bills-one/");
        let mut with_all = String::new();
        let mut with_none = String::new();
        let mut rest = line.as_str();
        while let Some(open) = rest.find('[') {
            let close = open + rest[open..].find(']').expect("a closing ]");
            with_all.push_str(&rest[..open]);
            with_none.push_str(&rest[..open]);
            let inner = &rest[open + 1..close];
            // `--type ALL|SUCCESS|REFUND`: the first alternative.
            let first: String = inner
                .split_whitespace()
                .map(|w| w.split('|').next().unwrap())
                .collect::<Vec<_>>()
                .join(" ");
            with_all.push_str(&first);
            rest = &rest[close + 1..];
        }
        with_all.push_str(rest);
        with_none.push_str(rest);
        if with_all.contains("--report") {
            let run = with_all
                .split("--report ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            runs.push(w.path().join(w.fill(&run)));
        }
        let report = with_all.contains("--report");
        for cmd in [with_all, with_none] {
            let (code, output) = w.run(&cmd, &[]);
            assert_eq!(
                code,
                0,
                "bill-command ({}): $ {}\n{output}",
                b.file,
                w.command(&cmd)
            );
        }
        if report {
            bill_reports(w, runs.last().unwrap(), line.contains("--out-dir"));
        }
    }
    assert!(!runs.is_empty(), "bill-command: a --report");
}

/// The README's "Running it for real": the example configuration copied
/// as written is refused by `--check` key by key (its files are the
/// reader's to provide, none exists here); with the demo's configuration
/// in its place `--check` passes. Returns the `serve` line with the demo's
/// configuration. (`server/merchant/tests/http_config.rs` checks that every
/// key of the example, commented-out ones included, is one the loader knows.)
fn readme_real(w: &Workdir) -> String {
    let b = block("readme-real");
    let lines = command_lines(&b.text);
    assert_eq!(lines.len(), 3, "readme-real: cp, --check, serve");
    std::fs::copy(
        workspace_root().join("wxpay.example.toml"),
        w.path().join("wxpay.example.toml"),
    )
    .unwrap();
    let (code, output) = w.run(lines[0].split('#').next().unwrap(), &[]);
    assert_eq!(code, 0, "readme-real: {}: {output}", lines[0]);
    let (code, output) = w.run(&lines[1], &[]);
    assert_ne!(code, 0, "readme-real: {}: {output}", lines[1]);
    expect_lines(
        "readme-real: --check of the example as copied",
        &[
            "wxpay-combine serve: invalid configuration (… problem(s)):".to_string(),
            "  - merchant_private_key_file: …/etc/wxpay/apiclient_key.pem…".to_string(),
        ],
        &output,
    );
    let demo_check = lines[1].replace("wxpay.toml", "demo-data/wxpay.toml");
    let (code, output) = w.run(&demo_check, &[]);
    assert!(
        code == 0 && output.contains("configuration OK"),
        "readme-real: $ {}\n{output}",
        w.command(&demo_check)
    );
    // The third line, `serve`, with the demo's configuration.
    lines[2].replace("wxpay.toml", "demo-data/wxpay.toml")
}

/// The server's configuration blocks, each laid over the demo's
/// configuration: `serve --check` accepts them (and refuses a misspelt
/// key). Files they name are made as the documents say.
fn server_config_blocks(w: &Workdir) {
    let data = w.path().join("shop");
    for cmd in [
        "head -c 32 /dev/urandom | base64 > webhook.key",
        "head -c 32 /dev/urandom | base64 > internal.token",
    ] {
        let out = w.bash(cmd, &[]).current_dir(&data).output().unwrap();
        assert!(out.status.success(), "{cmd}");
    }
    let demo: toml::Table =
        toml::from_str(&std::fs::read_to_string(data.join("wxpay.toml")).unwrap()).unwrap();
    for name in SERVER_CONFIG_BLOCKS {
        let b = block(name);
        let fragment = config_fragment(&b);
        let mut config = demo.clone();
        config.extend(fragment.clone());
        let path = data.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let cmd = format!("wxpay-combine serve --config demo-data/{name}.toml --check");
        let (code, output) = w.run(&cmd, &[]);
        assert!(
            code == 0 && output.contains("configuration OK"),
            "{name} ({}) over the demo's configuration: $ {cmd}\n{output}",
            b.file
        );
        let (k, v) = fragment.iter().next().unwrap();
        let mut typo = config.clone();
        typo.insert(format!("{k}s"), v.clone());
        std::fs::write(&path, toml::to_string(&typo).unwrap()).unwrap();
        let (code, output) = w.run(&cmd, &[]);
        assert!(
            code != 0 && output.contains(&format!("{k}s")),
            "{name}: a misspelt key is refused: {output}"
        );
    }
}

async fn embed_example(w: &mut Workdir, sim_base: &str, token: &str, client: &reqwest::Client) {
    let embed = cargo_build(
        &["-p", "wxpay-combine", "--example", "embed"],
        "examples/embed",
    );
    let example_addr = format!("127.0.0.1:{}", free_port());
    w.sub("127.0.0.1:8081", example_addr.clone());
    w.commands.push((
        "cargo run -p wxpay-combine --example embed -- ".into(),
        format!("{} ", embed.display()),
    ));
    let merchant: Value = serde_json::from_slice(
        &std::fs::read(w.path().join("shop/simulator/merchant.json")).unwrap(),
    )
    .unwrap();
    let run = block("embed-run");
    let mut env = Vec::new();
    let mut example = None;
    for line in command_lines(&run.text) {
        let line = line.split("  #").next().unwrap().trim().to_string();
        if line.starts_with("cargo xtask demo") {
            continue; // running already
        }
        if let Some(assign) = line.strip_prefix("export ") {
            let (k, v) = assign.split_once('=').unwrap();
            env.push((k.to_string(), w.fill(v.trim())));
            continue;
        }
        example = Some(w.spawn(&line, &env));
    }
    let mut example = example.expect("embed-run starts the example");
    example.wait_line("shop: http://…/shop", Duration::from_secs(60));
    let expected: Vec<String> = block("embed-output")
        .text
        .lines()
        .map(|l| w.fill(l))
        .collect();
    expect_lines(
        "embed-output (docs/library.md)",
        &expected,
        &example.output(),
    );
    let internal_line = example.wait_line("internal API: …", Duration::ZERO);
    let internal = after(&internal_line, "internal API:")
        .trim_end_matches('/')
        .to_string();
    w.transcript(&block("embed-shop"), &[]);
    // Registering the example's page directory with the simulator.
    let paydir = command_lines(&block("embed-paydir").text);
    let (code, output) = w.run(&paydir[0].replace("SIM", sim_base), &[]);
    assert_eq!(code, 0, "{output}");
    // The page's origin is the example's: its POSTs are not refused as
    // cross-origin (401: no payer session yet).
    let r = client
        .post(format!("http://{example_addr}/api/combine-orders"))
        .header("Origin", format!("http://{example_addr}"))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(
        status != 403 && !text.contains("CROSS_ORIGIN_REFUSED"),
        "{status} {text}"
    );
    // An order created through the example's internal API and paid on its
    // page reaches its event handler: /shop/paid lists it.
    let body = json!({
        "payer_openid": merchant["demo_openid"],
        "sub_orders": [
            {"mchid": merchant["sub_mchids"][0], "description": "Green tea", "amount": 3600},
            {"mchid": merchant["sub_mchids"][1], "description": "Tea cups", "amount": 5900}]
    });
    let created: Value = client
        .post(format!("{internal}/combine-orders"))
        .bearer_auth(token.trim())
        .header("Idempotency-Key", unique("embed-"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let no = created["combine_out_trade_no"]
        .as_str()
        .expect("created")
        .to_string();
    let mut confirm = created["pay_params"].clone();
    confirm["action"] = json!("pay");
    confirm["page_url"] = json!(format!("http://{example_addr}/pay/order.html?no={no}"));
    let paid: Value = client
        .post(format!("{sim_base}/sim/cashier/confirm"))
        .json(&confirm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["err_msg"], "get_brand_wcpay_request:ok", "{paid}");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = client
            .get(format!("http://{example_addr}/shop/paid"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list.as_array().unwrap().iter().any(|v| v == &json!(no)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "/shop/paid does not list {no}: {list}\n{}",
            example.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = example.output();
    assert!(
        !log.contains("unavailable") && !log.contains("Some("),
        "{log}"
    );
}

/// docs/simulator.md: `sim` as documented prints what the document shows;
/// the control examples are accepted; `tamper_pay_sign` applies to a
/// direct confirm (item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_documents() {
    let tools = Tools {
        server: server_binary(),
        xtask: PathBuf::new(),
    };
    let mut w = Workdir::new(&tools);
    w.sub("127.0.0.1:7730", format!("127.0.0.1:{}", free_port()));
    let sim_dir = format!("{}/wxsim-data", w.path().display());
    w.sub("wxsim-data", sim_dir.clone());
    w.sub("/home/you/wxsim-data", sim_dir);
    let run = command_lines(&block("sim-run").text);
    let mut sim = w.spawn(&run[0], &[]);
    sim.wait_line("Press Ctrl-C to stop.", Duration::from_secs(60));
    let merchant: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("wxsim-data/merchant.json")).unwrap())
            .unwrap();
    let doc = block("sim-run-output");
    let mchid = merchant["mchid"].as_str().unwrap().to_string();
    let appid = merchant["appid"].as_str().unwrap().to_string();
    w.sub("1944962615", mchid);
    w.sub("wx619473b47134030f", appid);
    let expected: Vec<String> = doc.text.lines().map(|l| w.fill(l)).collect();
    expect_lines(
        "sim-run-output (docs/simulator.md)",
        &expected,
        &sim.output(),
    );
    drop(sim);
    // merchant.json's `merchants`, as shown: the initiator, then a
    // sub-merchant.
    let doc: Value = serde_json::from_str(&format!("{{{}}}", block("sim-merchants").text))
        .expect("sim-merchants is a JSON member");
    for (i, entry) in doc["merchants"].as_array().unwrap().iter().enumerate() {
        same_keys(
            &format!("sim-merchants[{i}]"),
            entry,
            &merchant["merchants"][i],
        );
    }

    // The configuration file, as documented: the simulator starts with it.
    std::fs::write(w.path().join("sim.toml"), block("sim-config").text).unwrap();
    let mut configured = w.spawn(
        "wxpay-combine sim --config sim.toml --data-dir sim-config-data --addr 127.0.0.1:0",
        &[],
    );
    configured.wait_line("Press Ctrl-C to stop.", Duration::from_secs(60));
    expect_lines(
        "sim-config (docs/simulator.md): the simulator with it",
        &[
            "  merchant : mchid 1900000109 appid … (Both mode) -> …".to_string(),
            "  merchant : mchid 1900000202 appid … (PublicKey mode) -> …".to_string(),
        ],
        &configured.output(),
    );
    drop(configured);
    let started: Value = serde_json::from_slice(
        &std::fs::read(w.path().join("sim-config-data/merchant.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        started["sub_mchids"],
        json!(["1900000110", "1900000111", "1900000112"]),
        "sim-config: sub_mchids"
    );

    // The control examples, each posted to a simulator with a paid order.
    let t = TestSim::start().await;
    let c = t.client();
    let paid = unique("C");
    c.create_and_pay(&prepay_body(t.creds(), &paid, "http://127.0.0.1:9/notify"))
        .await;
    let open = unique("C");
    let r = c
        .prepay(&prepay_body(t.creds(), &open, "http://127.0.0.1:9/notify"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let creds = t.creds().clone();
    for line in block("sim-control").text.lines() {
        let json_text = line.split(" //").next().unwrap().trim();
        if json_text.is_empty() {
            continue;
        }
        let filled = json_text
            .replace("\"SUB_MCHID\"", &format!("{:?}", creds.sub_mchids[0]))
            .replace("\"MCHID\"", &format!("{:?}", creds.mchid))
            .replace("\"C2-1\"", &format!("\"{paid}A\""))
            .replace("\"C2\"", &format!("{paid:?}"))
            .replace("\"C1\"", &format!("{open:?}"));
        let body: Value = serde_json::from_str(&filled)
            .unwrap_or_else(|e| panic!("sim-control line {line:?} is JSON: {e}"));
        let r = http()
            .post(format!("{}/sim/control", t.base()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "POST /sim/control {filled}: {text}");
    }
    t.sim
        .control(json!({"reset_faults": true, "clock_offset_secs": 0}))
        .await
        .unwrap();

    // tamper_pay_sign: every cashier path, as the fault table says.
    let faults = std::fs::read_to_string(workspace_root().join("docs/simulator.md")).unwrap();
    let row = faults
        .lines()
        .find(|l| l.starts_with("| `tamper_pay_sign`"))
        .expect("the tamper_pay_sign row");
    assert!(row.contains("POST /sim/cashier/confirm"), "{row}");
    t.sim
        .control(json!({"tamper_pay_sign": true}))
        .await
        .unwrap();
    let no = unique("C");
    let prepay = c
        .prepay(&prepay_body(&creds, &no, "http://127.0.0.1:9/notify"))
        .await;
    let pid = prepay.json()["prepay_id"].as_str().unwrap().to_string();
    let answer = c.confirm(&c.pay_params(&pid), "pay").await;
    assert_eq!(
        answer["err_msg"], "get_brand_wcpay_request:fail",
        "{answer}"
    );
    t.sim.shutdown().await;
}

/// docs/operations.md describes `wxpay_orders_created_total` with its HELP text
/// (item 9: one definition).
#[test]
fn metrics_descriptions_match_the_help_text() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/operations.md")).unwrap();
    let text = wxpay_combine::metrics::metrics().render();
    let name = "wxpay_orders_created_total";
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| `{name}` |")))
        .unwrap_or_else(|| panic!("docs/operations.md lists {name}"));
    let what = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
    let help = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
        .unwrap_or_else(|| panic!("HELP of {name} in:\n{text}"));
    assert_eq!(
        what.trim_end_matches('.'),
        help.trim().trim_end_matches('.'),
        "{name}: docs/operations.md and the HELP text"
    );
}

/// docs/simulator.md's fault table names every fault the control accepts,
/// and nothing else.
#[test]
fn simulator_fault_table_lists_every_fault() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/simulator.md")).unwrap();
    let start = doc
        .find("| field / flag | effect |")
        .expect("the fault table");
    let documented: std::collections::BTreeSet<&str> = doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or_default()
        })
        .collect();
    let accepted: std::collections::BTreeSet<&str> =
        wxpay_combine_sim::FAULT_FIELDS.iter().copied().collect();
    assert_eq!(documented, accepted, "docs/simulator.md's fault table");
}

// ---------------------------------------------------------------------------
// Blocks that are not run as they stand: checked another way

/// The Rust blocks: each is, less its indentation, a region of
/// `server/merchant/examples/doc_snippets.rs` between `// doc-snippet: NAME`
/// and `// doc-snippet-end`, which `cargo test` compiles.
const RUST_SNIPPETS: &[&str] = &[
    "library-embed",
    "library-handler",
    "library-refund-handler",
    "sim-embedded",
];

fn snippet_regions(source: &str) -> std::collections::BTreeMap<String, String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut regions = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(name) = lines[i].trim_start().strip_prefix("// doc-snippet: ") {
            let indent = lines[i].len() - lines[i].trim_start().len();
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "// doc-snippet-end" {
                body.push_str(lines[i].get(indent..).unwrap_or("").trim_end());
                body.push('\n');
                i += 1;
            }
            assert!(i < lines.len(), "doc-snippet {name} is not closed");
            regions.insert(name.trim().to_string(), body);
        }
        i += 1;
    }
    regions
}

#[test]
fn rust_blocks_are_the_compiled_example() {
    let path = workspace_root().join("server/merchant/examples/doc_snippets.rs");
    let regions = snippet_regions(&std::fs::read_to_string(&path).expect("the example"));
    let names: BTreeSet<&str> = regions.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        RUST_SNIPPETS.iter().copied().collect::<BTreeSet<&str>>(),
        "the regions of {} and the Rust blocks",
        path.display()
    );
    for name in RUST_SNIPPETS {
        let b = block(name);
        let documented: String = b
            .text
            .lines()
            .map(|l| format!("{}\n", l.trim_end()))
            .collect();
        assert_eq!(
            documented,
            regions[*name],
            "{name} ({}): the block is not the code compiled in {}",
            b.file,
            path.display()
        );
    }
}

/// The server's configuration blocks (keys of `wxpay.toml`).
const SERVER_CONFIG_BLOCKS: &[&str] = &[
    "internal-config",
    "webhook-config",
    "bill-schedule-config",
    "metrics-config",
];

/// A configuration block's keys, the commented-out `# key = value` ones
/// too (the documents show optional keys that way).
fn config_fragment(b: &Block) -> toml::Table {
    let mut table = toml::Table::new();
    for line in b.text.lines() {
        let (text, commented) = match line.trim().strip_prefix('#') {
            Some(rest) => (rest.trim(), true),
            None => (line.trim(), false),
        };
        if text.is_empty() {
            continue;
        }
        match toml::from_str::<toml::Table>(text) {
            Ok(t) => table.extend(t),
            Err(e) => assert!(
                commented,
                "{} ({}): {line:?} is not TOML: {e}",
                b.name, b.file
            ),
        }
    }
    assert!(!table.is_empty(), "{} ({}): no keys", b.name, b.file);
    table
}

/// Every key of the server's configuration blocks is one the loader
/// knows (`RawConfig` refuses unknown keys: a typo fails here).
#[test]
fn server_config_blocks_name_real_keys() {
    use wxpay_combine::config::RawConfig;
    for name in SERVER_CONFIG_BLOCKS {
        let b = block(name);
        let table = config_fragment(&b);
        let parse =
            |t: &toml::Table| RawConfig::parse(&toml::to_string(t).unwrap(), name, &|_| None);
        if let Err(e) = parse(&table) {
            panic!("{name} ({}): {e}", b.file);
        }
        // The check itself: the same block with a misspelt key is refused.
        let mut typo = table.clone();
        let (k, v) = table.iter().next().unwrap();
        typo.remove(k);
        typo.insert(format!("{k}s"), v.clone());
        assert!(parse(&typo).is_err(), "{name}: a misspelt key is refused");
    }
}

/// docs/simulator.md's configuration file, read by the simulator's loader
/// (unknown keys refused, values checked).
#[test]
fn simulator_config_block_loads() {
    use wxpay_combine_sim::SimConfig;
    let b = block("sim-config");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    std::fs::write(&path, &b.text).unwrap();
    let config = SimConfig::load(&path).unwrap_or_else(|e| panic!("sim-config ({}): {e}", b.file));
    assert_eq!(config.merchants.len(), 2, "sim-config: two merchants");
    // Its commented-out keys are keys of a merchant too.
    for line in b.text.lines() {
        if let Some(key) = line
            .strip_prefix("# ")
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        {
            let entry = format!("mchid = \"1900000109\"\n{key}\n");
            if let Err(e) = toml::from_str::<wxpay_combine_sim::MerchantConfig>(&entry) {
                panic!("sim-config: {line:?}: {e}");
            }
        }
    }
    // The check itself: a misspelt key is refused.
    std::fs::write(&path, b.text.replace("sub_mchids", "sub_mchid")).unwrap();
    assert!(SimConfig::load(&path).is_err(), "a misspelt key is refused");
}

/// The `cargo test` lines name real packages, test files and filters that
/// select tests (the suites themselves run in `cargo xtask test`).
const TEST_COMMAND_BLOCKS: &[&str] = &[
    "internal-tests",
    "bill-tests",
    "edge-tests",
    "limits-tests",
    "ops-tests",
];

/// The directory of the workspace package `name`.
fn package_dir(name: &str) -> PathBuf {
    let root = workspace_root();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for m in members {
        let dir = root.join(m.as_str().unwrap());
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let pkg: toml::Table = toml::from_str(&text).unwrap();
        if pkg
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            == Some(name)
        {
            return dir;
        }
    }
    panic!("no workspace package {name}");
}

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if e.is_dir() {
            out.extend(rust_files(&e));
        } else if e.extension().is_some_and(|x| x == "rs") {
            out.push(e);
        }
    }
    out
}

/// The names of a file's tests (`#[test]`, `#[tokio::test…]`, `proptest!`
/// functions): the `fn` after each attribute.
fn test_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut armed = false;
    let proptest = source.contains("proptest!");
    // Tests generated per backend: `backend_tests!(a, b);`.
    if let Some((_, rest)) = source.split_once("\nbackend_tests!(") {
        let list = rest.split(");").next().unwrap();
        names.extend(
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
            armed = true;
        }
        let f = line
            .strip_prefix("async fn ")
            .or_else(|| line.strip_prefix("fn "))
            .or_else(|| line.strip_prefix("pub fn "));
        if let Some(f) = f {
            if armed || proptest {
                names.push(f.split(['(', '<']).next().unwrap().to_string());
            }
            armed = false;
        }
    }
    names
}

/// `src/http/limits.rs` → `http::limits::`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p != "mod" && p != "lib")
        .collect();
    parts.iter().map(|p| format!("{p}::")).collect()
}

fn check_test_command(what: &str, line: &str) {
    let words: Vec<&str> = line
        .split("  #")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let at = words
        .iter()
        .position(|w| *w == "cargo")
        .unwrap_or_else(|| panic!("{what}: not a cargo command: {line}"));
    assert_eq!(words.get(at + 1), Some(&"test"), "{what}: {line}");
    let args = &words[at + 2..];
    let value = |flag: &str| {
        args.iter()
            .position(|w| *w == flag)
            .map(|i| args[i + 1].to_string())
    };
    let package = value("-p").unwrap_or_else(|| panic!("{what}: -p PACKAGE in {line}"));
    let dir = package_dir(&package);
    let after_dashes: Vec<&str> = args
        .iter()
        .skip_while(|w| **w != "--")
        .skip(1)
        .copied()
        .filter(|w| !w.starts_with('-'))
        .collect();
    // The tests the line selects: (file, names with their module paths).
    let mut selected: Vec<String> = Vec::new();
    if let Some(test) = value("--test") {
        let file = dir.join("tests").join(format!("{test}.rs"));
        assert!(file.is_file(), "{what}: {line}: no {}", file.display());
        let source = std::fs::read_to_string(&file).unwrap();
        if line.contains("(\"figure: …\")") {
            assert!(
                source.contains("figure: "),
                "{what}: {} prints no figure",
                file.display()
            );
        }
        selected.extend(test_names(&source));
    } else if args.contains(&"--lib") {
        let filter = args
            .iter()
            .skip_while(|w| **w != "--lib")
            .nth(1)
            .filter(|w| !w.starts_with('-'))
            .map(|w| w.to_string());
        let src = dir.join("src");
        for file in rust_files(&src) {
            let source = std::fs::read_to_string(&file).unwrap();
            let module = module_path(&src, &file);
            for name in test_names(&source) {
                let full = format!("{module}tests::{name}");
                if filter.as_deref().is_none_or(|f| full.contains(f)) {
                    if line.contains("prints the figure") && !source.contains("figure") {
                        continue;
                    }
                    selected.push(full);
                }
            }
        }
    } else {
        panic!("{what}: --test NAME or --lib in {line}");
    }
    for filter in &after_dashes {
        selected.retain(|n| n.contains(filter));
    }
    assert!(!selected.is_empty(), "{what}: {line} selects no test");
}

#[test]
fn test_commands_select_tests() {
    for name in TEST_COMMAND_BLOCKS {
        let b = block(name);
        for line in command_lines(&b.text) {
            check_test_command(&format!("{name} ({})", b.file), &line);
        }
    }
}

/// The README's first block names the xtask commands; they are the ones
/// `cargo xtask` dispatches (running them here would run this test).
#[test]
fn readme_overview_commands_exist() {
    let root = workspace_root();
    let alias = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(
        alias.contains("xtask = \"run --quiet --package xtask --\""),
        "the cargo xtask alias"
    );
    let main = std::fs::read_to_string(root.join("xtask/src/main.rs")).unwrap();
    let lines = command_lines(&block("readme-overview").text);
    assert!(!lines.is_empty());
    for line in lines {
        let task = line
            .strip_prefix("cargo xtask ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("readme-overview: {line}"));
        assert!(
            main.contains(&format!("Some(\"{task}\") =>")),
            "readme-overview: `cargo xtask {task}` is not a task of xtask/src/main.rs"
        );
    }
}

/// The README's debugging-tools lines, run with the test fixtures of
/// docs/tools.md in place of the reader's files and of the `…` values:
/// each succeeds (`verify` prints `valid`, `decrypt` the plaintext).
#[test]
fn readme_tools_run() {
    let fixtures = workspace_root().join("tests/fixtures");
    let kat: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("kat.json")).unwrap()).unwrap();
    let response = kat["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "response_public_key_json")
        .unwrap()
        .clone();
    let notification: Value = serde_json::from_str(
        kat["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "notification_public_key")
            .unwrap()["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let resource = &notification["resource"];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("body.json"),
        response["body"].as_str().unwrap(),
    )
    .unwrap();
    for (name, fixture) in [
        ("apiclient_key.pem", "merchant_key.pem"),
        ("pub_key.pem", "wechatpay_pub.pem"),
        ("apiv3.key", "apiv3_key.txt"),
    ] {
        std::fs::copy(fixtures.join(fixture), dir.path().join(name)).unwrap();
    }
    let b = block("readme-tools");
    let lines = command_lines(&b.text);
    assert_eq!(lines.len(), 4, "readme-tools: four tools");
    for line in lines {
        let filled = line
            .replace("--app-id wx…", "--app-id wxd678efh567hg6787")
            .replace(
                "--prepay-id wx…",
                "--prepay-id wx201410272009395522657a690389285100",
            )
            .replace(
                "--serial 408B…",
                "--serial 408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
            );
        let filled = if filled.contains(" verify ") {
            let ts = filled
                .split("--timestamp ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            filled
                .replace(
                    &format!("--timestamp {ts}"),
                    &format!("--timestamp {}", response["timestamp"]),
                )
                .replace("--nonce …", &format!("--nonce {}", response["nonce"]))
                .replace(
                    "--signature …",
                    &format!("--signature {}", response["signature"]),
                )
        } else if filled.contains(" decrypt ") {
            assert_eq!(resource["associated_data"], "transaction");
            filled
                .replace("--nonce …", &format!("--nonce {}", resource["nonce"]))
                .replace(
                    "--ciphertext …",
                    &format!("--ciphertext {}", resource["ciphertext"]),
                )
        } else {
            filled
        };
        assert!(!filled.contains('…'), "readme-tools: unfilled {filled}");
        let script = filled.replacen("wxpay-combine", &server_binary().display().to_string(), 1);
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "readme-tools: $ {filled}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if filled.contains(" verify ") {
            assert_eq!(stdout.trim(), "valid", "readme-tools: {filled}");
        }
        if filled.contains(" decrypt ") {
            assert!(stdout.contains("\"combine_out_trade_no\""), "{stdout}");
        }
    }
}

/// docs/tools.md, as written: each synopsis names exactly the options of
/// the command's `--help` (the bracketed ones optional), each example's
/// output is the output, line for line, and each failure message is the one
/// the tool prints.
#[test]
fn tools_document_runs() {
    let tools = Tools {
        server: server_binary(),
        xtask: PathBuf::new(),
    };
    let mut w = Workdir::new(&tools);
    std::os::unix::fs::symlink(workspace_root().join("tests"), w.path().join("tests")).unwrap();

    for (name, command) in [
        ("tools-paysign-usage", "sign paysign"),
        ("tools-request-usage", "sign request"),
        ("tools-verify-usage", "verify"),
        ("tools-decrypt-usage", "decrypt"),
    ] {
        let synopsis = block(name).text.replace("\\\n", " ");
        let (code, help) = w.run(&format!("wxpay-combine {command} --help"), &[]);
        assert_eq!(code, 0, "{help}");
        let flags = |text: &str| -> BTreeSet<String> {
            text.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',')
                .filter(|t| t.starts_with("--") && *t != "--help")
                .map(String::from)
                .collect()
        };
        assert_eq!(
            flags(&synopsis),
            flags(&help),
            "{name} (docs/tools.md) and `{command} --help`"
        );
        // Required: outside brackets in the synopsis, on the help's usage
        // line.
        let mut outside = String::new();
        let mut depth = 0;
        for c in synopsis.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        let usage = help
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap()
            .replace("[OPTIONS]", "");
        assert_eq!(
            flags(&outside),
            flags(&usage),
            "{name}: the required options"
        );
    }

    // The examples, with `$SIG` and `body.json` as the document says: the
    // `response_public_key_json` vector of kat.json.
    let kat: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("tests/fixtures/kat.json")).unwrap(),
    )
    .unwrap();
    let vector = kat["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "response_public_key_json")
        .unwrap()
        .clone();
    std::fs::write(w.path().join("body.json"), vector["body"].as_str().unwrap()).unwrap();
    let env = [(
        "SIG".to_string(),
        vector["signature"].as_str().unwrap().to_string(),
    )];
    // The skew shown was measured when the document was written.
    let doc_skew = block("tools-verify")
        .text
        .split("clock skew: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    w.sub(doc_skew, "…");
    for name in [
        "tools-paysign",
        "tools-request",
        "tools-verify",
        "tools-decrypt",
    ] {
        let b = block(name);
        let mut last_code = 0;
        for (cmd, expected) in transcript_steps(&b.text) {
            let output = if cmd.trim() == "echo $?" {
                format!("{last_code}\n")
            } else {
                let (code, output) = w.run(&cmd, &env);
                last_code = code;
                output
            };
            let expected: Vec<String> = expected
                .iter()
                .map(|e| w.fill(e))
                .filter(|e| !e.trim().is_empty())
                .collect();
            let got: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(
                expected.len() == got.len()
                    && expected.iter().zip(&got).all(|(e, g)| line_matches(e, g)),
                "{name} (docs/tools.md): $ {cmd}\ndocumented:\n{}\nprinted:\n{output}",
                expected.join("\n")
            );
        }
    }

    // The failure messages, each from the input that causes it (exit 1).
    let b = block("tools-verify-failures");
    let verify = format!(
        "wxpay-combine verify --public-key tests/fixtures/wechatpay_pub.pem --timestamp {} --body-file body.json",
        vector["timestamp"]
    );
    let short = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 255])
    };
    let causes = [
        "--nonce wrong-nonce --signature \"$SIG\"".to_string(),
        format!(
            "--nonce {} --signature WECHATPAY/SIGNTEST/AAAA",
            vector["nonce"]
        ),
        format!("--nonce {} --signature '%%%'", vector["nonce"]),
        format!("--nonce {} --signature {short}", vector["nonce"]),
    ];
    let lines: Vec<&str> = b.text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        causes.len(),
        "tools-verify-failures: one line per cause"
    );
    for (line, cause) in lines.iter().zip(&causes) {
        let (code, output) = w.run(&format!("{verify} {cause} 2>/dev/null"), &env);
        assert_eq!(
            (code, output.trim()),
            (1, *line),
            "tools-verify-failures: verify {cause}"
        );
    }
}

/// The key names of a JSON text, in order of appearance.
fn key_order(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('"') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('"') else { break };
        let name = &after[..j];
        let tail = after[j + 1..].trim_start();
        if tail.starts_with(':') {
            keys.push(name.to_string());
        }
        rest = &after[j + 1..];
    }
    keys
}

/// docs/webhooks.md's refund event is what the outbox stores for that
/// refund: the same fields, in the same order, with the same values.
#[test]
fn webhook_refund_event_is_the_payload() {
    use wxpay_combine::events::{RefundEventKind, RefundEventNotice};
    use wxpay_combine::outbox::{refund_payload, EventKind};
    use wxpay_combine_core::refund::RefundStatus;
    let b = block("webhook-refund-payload");
    let doc: Value = serde_json::from_str(&b.text).expect("webhook-refund-payload is JSON");
    let r = &doc["refund"];
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let status: RefundStatus = serde_json::from_value(r["status"].clone()).unwrap();
    let kind = match status {
        RefundStatus::Success => RefundEventKind::Succeeded,
        RefundStatus::Closed => RefundEventKind::Closed,
        _ => RefundEventKind::Abnormal,
    };
    // `created_at` (UTC, `…Z`) as Unix seconds.
    let created = text(&doc["created_at"]);
    let n = |range: std::ops::Range<usize>| created[range].parse::<i64>().unwrap();
    let date = time::Date::from_calendar_date(
        n(0..4) as i32,
        time::Month::try_from(n(5..7) as u8).unwrap(),
        n(8..10) as u8,
    )
    .unwrap();
    let at = time::PrimitiveDateTime::new(
        date,
        time::Time::from_hms(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8).unwrap(),
    )
    .assume_utc()
    .unix_timestamp();
    let notice = RefundEventNotice {
        kind,
        combine_out_trade_no: text(&r["combine_out_trade_no"]),
        out_trade_no: text(&r["out_trade_no"]),
        mchid: text(&r["mchid"]),
        out_refund_no: text(&r["out_refund_no"]),
        refund_id: r["refund_id"].as_str().map(String::from),
        amount: r["amount"].as_i64().unwrap(),
        status,
        previous: RefundStatus::Processing,
        source: "notify",
        success_time: r["success_time"].as_str().map(String::from),
        user_received_account: r["user_received_account"].as_str().map(String::from),
        at,
    };
    let event = EventKind::for_refund(status).expect("an event status");
    assert_eq!(doc["type"], event.event_type());
    let body = refund_payload(
        doc["id"].as_str().unwrap(),
        event,
        doc["sequence"].as_i64().unwrap(),
        &notice,
        at,
    );
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent, doc,
        "webhook-refund-payload ({}): the payload",
        b.file
    );
    assert_eq!(
        key_order(&body),
        key_order(&b.text),
        "webhook-refund-payload: the order of the fields"
    );
}

/// The key sets of two JSON objects.
fn same_keys(at: &str, documented: &Value, actual: &Value) {
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("{at}: an object: {v}"))
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        keys(documented),
        keys(actual),
        "{at}: the documented fields and the written ones:\n{actual:#}"
    );
}

/// docs/bills.md's reports and the ones the command wrote (`run`: the run
/// report of `--report`).
fn bill_reports(w: &Workdir, run: &Path, out_dir: bool) {
    let run_doc: Value =
        serde_json::from_str(&block("bill-run-report").text).expect("bill-run-report is JSON");
    let run_report: Value = serde_json::from_slice(&std::fs::read(run).unwrap()).unwrap();
    same_keys("bill-run-report", &run_doc, &run_report);
    let mut reconciled = None;
    for entry in run_doc["merchants"].as_array().unwrap() {
        let status = &entry["status"];
        if let Some(actual) = run_report["merchants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| &m["status"] == status)
        {
            // With `--out` there is no merchant report file.
            let mut entry = entry.clone();
            if !out_dir {
                entry.as_object_mut().unwrap().remove("report_path");
            }
            same_keys(
                &format!("bill-run-report: merchants ({status})"),
                &entry,
                actual,
            );
            if status == "reconciled" {
                reconciled = Some(actual.clone());
            }
        }
    }
    let reconciled = reconciled.expect("a reconciled merchant in the run report");
    if let (Some(doc), Some(actual)) = (
        run_doc["skipped"].as_array().and_then(|a| a.first()),
        run_report["skipped"].as_array().and_then(|a| a.first()),
    ) {
        same_keys("bill-run-report: skipped", doc, actual);
    }
    let doc: Value = serde_json::from_str(&block("bill-merchant-report").text)
        .expect("bill-merchant-report is JSON");
    let report = reconciled["report"].clone();
    if out_dir {
        let path = w
            .path()
            .join(reconciled["report_path"].as_str().expect("report_path"));
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written, report, "the run report holds the merchant report");
    }
    same_keys("bill-merchant-report", &doc, &report);
    for part in ["bill", "local", "file"] {
        same_keys(
            &format!("bill-merchant-report.{part}"),
            &doc[part],
            &report[part],
        );
    }
}

/// The commands written inline in the documents' prose (`` `wxpay-combine
/// SUBCOMMAND --flag …` ``, `` `cargo xtask TASK` ``, `` `cargo test …` ``):
/// the subcommand exists and has every option named, the task exists, the
/// test line selects tests.
#[test]
fn inline_commands_exist() {
    let main = std::fs::read_to_string(workspace_root().join("xtask/src/main.rs")).unwrap();
    let mut helps: std::collections::BTreeMap<String, String> = Default::default();
    for path in documents() {
        let file = path
            .strip_prefix(workspace_root())
            .unwrap()
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        // Prose only: fenced blocks are checked above.
        let prose: String = text.split("```").step_by(2).collect::<Vec<_>>().join(" ");
        for span in prose.split('`').skip(1).step_by(2) {
            let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(rest) = span.strip_prefix("wxpay-combine ") {
                let sub: Vec<&str> = rest
                    .split(' ')
                    .take_while(|t| {
                        t.starts_with(|c: char| c.is_ascii_lowercase())
                            && t.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    })
                    .collect();
                let sub = sub.join(" ");
                let help = helps.entry(sub.clone()).or_insert_with(|| {
                    let out = Command::new(server_binary())
                        .args(sub.split(' '))
                        .arg("--help")
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{file}: `{span}`: no subcommand `{sub}`"
                    );
                    String::from_utf8_lossy(&out.stdout).into_owned()
                });
                for flag in rest.split([' ', '[', ']']).filter(|t| t.starts_with("--")) {
                    assert!(
                        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                        "{file}: `{span}`: `wxpay-combine {sub}` has no {flag}"
                    );
                }
            } else if let Some(tasks) = span.strip_prefix("cargo xtask ") {
                for task in tasks.split(" | ") {
                    let task = task.split(' ').next().unwrap();
                    assert!(
                        main.contains(&format!("Some(\"{task}\")")),
                        "{file}: `{span}`: no xtask task {task}"
                    );
                }
            } else if span.starts_with("cargo test -p ") {
                check_test_command(&file, &span);
            }
        }
    }
    assert!(
        helps.contains_key("events"),
        "the inline commands were found"
    );
}
