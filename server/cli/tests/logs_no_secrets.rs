//! The logs of a full flow never carry a secret (issue 8, item 5).
//!
//! The real binary (`wxpay-combine serve --log-format text|json`) runs
//! against the embedded simulator at `WXPAY_LOG=debug,wxpay_combine=trace`
//! with its stderr captured: OAuth sign-in, an order created, paid in the
//! simulator and its notification applied, another queried and closed, a
//! graceful stop. The captured logs must not contain the merchant private
//! key (any 40-character stretch of its base64), the APIv3 key, the AppSecret,
//! the session secret, the session cookie, the OAuth code, an access token,
//! or the payer's full openid — and must contain the order number and the
//! request ids (so the test would notice logs that are simply empty).

mod ops_support;

use ops_support::{demo, order_no, pay_params, wait_ready, Browser, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read_secret(config_dir: &Path, raw: &toml::Value, key: &str) -> String {
    let p = PathBuf::from(
        raw.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{key} in the demo configuration")),
    );
    let p = if p.is_absolute() {
        p
    } else {
        config_dir.join(p)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The base64 body of a PEM file (all lines between the BEGIN/END markers).
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .map(str::trim)
        .collect()
}

async fn wait_for_log(log: &Path, within: Duration, found: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if found(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not found in the log within {within:?}:\n{}",
            tail(&text)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn full_flow_logs_hold_no_secret(format: &str) {
    let dir = TempDir::new(&format!("wxops-logs-{format}"));
    let demo = demo(&dir, |o| {
        o.query_after_secs = 1;
        o.close_min_age_secs = 0;
    })
    .await;
    let base = demo.config.http.public_base_url.clone();
    let listen = demo.listener.local_addr().unwrap();
    drop(demo.listener); // the binary listens there instead
    let log_path = dir.path().join(format!("server-{format}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
        .args(["serve", "--config"])
        .arg(&demo.config_path)
        .args(["--log-format", format])
        .current_dir(dir.path())
        .env("WXPAY_LISTEN", listen.to_string())
        .env("WXPAY_LOG", "debug,wxpay_combine=trace")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the wxpay-combine binary starts");
    wait_ready(&base, Duration::from_secs(60)).await;

    // Sign in, create and pay an order; the notification is applied.
    let alice = Browser::new(&base);
    alice.login("alice").await;
    let created = alice.create_order(2).await;
    let paid_no = order_no(&created);
    let paid = demo.sim.pay(&pay_params(&created)).await;
    assert_eq!(paid.err_msg, "get_brand_wcpay_request:ok");
    let applied = |t: &str| {
        t.lines().any(|l| {
            l.contains(&paid_no)
                && (l.contains("notification applied")
                    || l.contains("duplicate notification acknowledged"))
        })
    };
    wait_for_log(&log_path, Duration::from_secs(30), applied).await;
    let a = alice
        .send(
            reqwest::Method::GET,
            &format!("{base}/api/combine-orders/{paid_no}"),
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    // A request with our own id; its lines carry the id and the order.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let cookie = format!("wxpay_session={}", alice.session_cookie().unwrap());
    let r = http
        .get(format!("{base}/api/combine-orders/{paid_no}"))
        .header("Cookie", &cookie)
        .header("X-Request-Id", "ops-log-test-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "ops-log-test-0001");

    // Another order: queried (query-on-read after 1 s), then closed.
    let other = alice.create_order(2).await;
    let closed_no = order_no(&other);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = alice.get(&format!("/api/combine-orders/{closed_no}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = alice
        .post(&format!("/api/combine-orders/{closed_no}/close"), None)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["state"], "CLOSED");

    // Graceful stop.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = std::fs::read_to_string(&log_path).unwrap();
    if std::env::var_os("WXPAY_OPS_PRINT_LOGS").is_some() {
        eprintln!("----- {format} logs -----\n{logs}");
    }

    // The secrets of this run.
    let config_dir = demo.config_path.parent().unwrap();
    let raw: toml::Value = toml::from_str(
        &std::fs::read_to_string(&demo.config_path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let key_body = pem_body(&read_secret(config_dir, &raw, "merchant_private_key_file"));
    assert!(key_body.len() > 1000, "the private key was read");
    let mut secrets = vec![
        ("APIv3 key", read_secret(config_dir, &raw, "apiv3_key_file")),
        (
            "AppSecret",
            read_secret(config_dir, &raw, "app_secret_file"),
        ),
        (
            "session secret",
            read_secret(config_dir, &raw, "session_secret_file"),
        ),
        ("session cookie", alice.session_cookie().unwrap()),
        (
            "openid",
            demo.sim
                .openid(&demo.config.wechatpay.appid, "alice")
                .await
                .unwrap(),
        ),
    ];
    let codes = alice.oauth_codes.lock().unwrap().clone();
    assert!(!codes.is_empty(), "the OAuth code was seen");
    for c in codes {
        secrets.push(("OAuth code", c));
    }
    for (what, secret) in &secrets {
        assert!(
            secret.len() >= 16,
            "{what} is too short to test: {secret:?}"
        );
        assert!(
            !logs.contains(secret.as_str()),
            "the {format} logs contain the {what}"
        );
    }
    // Any 40-character stretch of the key contains one of these chunks.
    let chunks: Vec<&str> = key_body
        .as_bytes()
        .chunks(20)
        .filter(|c| c.len() == 20)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    for chunk in chunks {
        assert!(
            !logs.contains(chunk),
            "the {format} logs contain part of the merchant private key"
        );
    }
    assert!(!logs.contains("PRIVATE KEY"), "a PEM marker is logged");
    // Access tokens are random and never stored: no line may name one.
    assert!(!logs.to_ascii_lowercase().contains("access_token"));

    // The logs are not empty: the order number, the request ids, JSON.
    assert!(logs.contains(&paid_no), "the order number is logged");
    assert!(logs.contains(&closed_no));
    assert!(
        logs.lines()
            .any(|l| l.contains("ops-log-test-0001") && l.contains(&paid_no)),
        "a line carries both the request id and the order number"
    );
    let generated = alice.request_ids.lock().unwrap().clone();
    assert!(generated.iter().any(|id| logs.contains(id.as_str())));
    assert!(logs.contains("combine_out_trade_no"));
    if format == "json" {
        for l in logs.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        }
    }
    demo.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_of_a_full_flow_hold_no_secret() {
    full_flow_logs_hold_no_secret("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_of_a_full_flow_hold_no_secret() {
    full_flow_logs_hold_no_secret("json").await;
}
