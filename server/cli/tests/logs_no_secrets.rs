//! The logs of a full flow never carry a secret (issue 8, item 5).
//!
//! The real binary (`wxpay-combine serve --log-format text|json`) runs
//! against the embedded simulator at `WXPAY_LOG=debug,wxpay_combine=trace`
//! with its stderr captured: OAuth sign-in, an order created, paid in the
//! simulator and its notification applied, another queried and closed, a
//! graceful stop. The captured logs must not contain the merchant private
//! key (any 40-character stretch of its base64), the APIv3 key, the AppSecret,
//! the session secret, the session cookie, the OAuth code, an access token,
//! the payer's full openid, the internal API's bearer token (and a wrong one
//! sent to it), the webhook signing secret or a pay-link token — and must
//! contain the order numbers and the request ids (so the test would notice
//! logs that are simply empty). The flow drives the internal API (an order
//! as a pay link, claimed by the payer) and delivers a signed webhook.

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

/// A free loopback address (bound, then released for the server).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn write_owner_only(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A backend's webhook endpoint: answers 204 and keeps every request.
struct WebhookReceiver {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl WebhookReceiver {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then Content-Length bytes of body.
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                keep.lock().unwrap().push(text);
                                let _ = s
                                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                    .await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { base, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn full_flow_logs_hold_no_secret(format: &str) {
    let dir = TempDir::new(&format!("wxops-logs-{format}"));
    let internal_addr = free_addr();
    let demo = demo(&dir, |o| {
        o.query_after_secs = 1;
        o.close_min_age_secs = 0;
        o.internal_addr = internal_addr;
    })
    .await;
    // A webhook receiver, and its signing secret (owner-only, as required).
    let hooks = WebhookReceiver::start().await;
    let webhook_secret = format!(
        "{}{}",
        wxpay_combine::apiv3::generate_nonce(),
        wxpay_combine::apiv3::generate_nonce()
    );
    let webhook_secret_file = dir.path().join("webhook.key");
    write_owner_only(&webhook_secret_file, &webhook_secret);
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
        .env("WXPAY_WEBHOOK_URL", format!("{}/hooks/wxpay", hooks.base))
        .env("WXPAY_WEBHOOK_SECRET_FILE", &webhook_secret_file)
        .env("WXPAY_WEBHOOK_INITIAL_BACKOFF_SECS", "1")
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

    // The paid order's webhook, signed with the secret, reached the backend.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hooks.seen().iter().any(|b| b.contains(&paid_no)) {
        assert!(Instant::now() < deadline, "no webhook for {paid_no}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The internal API: an order as a pay link, claimed by the payer.
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
    let internal_token = read_secret(config_dir, &raw, "internal_token_file");
    let subs = &demo.sim.merchant().sub_mchids;
    let r = http
        .post(format!("http://{internal_addr}/internal/combine-orders"))
        .bearer_auth(&internal_token)
        .header("Idempotency-Key", "logs-test-link-1")
        .json(&serde_json::json!({
            "pay_link": true,
            "sub_orders": [
                {"mchid": subs[0], "description": "Tea", "amount": 100},
                {"mchid": subs[1], "description": "Cups", "amount": 200},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let link: serde_json::Value = r.json().await.unwrap();
    let link_no = link["combine_out_trade_no"].as_str().unwrap().to_string();
    let link_url = url::Url::parse(link["pay_link"]["url"].as_str().unwrap()).unwrap();
    let pay_link_token = link_url
        .query_pairs()
        .find(|(k, _)| k == "claim")
        .map(|(_, v)| v.into_owned())
        .expect("the pay link carries its token");
    let a = alice
        .post(
            "/api/pay-links/claim",
            Some(serde_json::json!({ "token": pay_link_token })),
        )
        .await;
    assert!(a.status < 300, "claim: {} {:?}", a.status, a.body);
    // A wrong token is refused, and not logged either.
    let wrong_token = format!("wrong{}", wxpay_combine::apiv3::generate_nonce());
    let r = http
        .get(format!(
            "http://{internal_addr}/internal/combine-orders/{link_no}"
        ))
        .bearer_auth(&wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

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
        ("internal API token", internal_token.clone()),
        ("wrong internal API token", wrong_token),
        ("webhook secret", webhook_secret),
        ("pay-link token", pay_link_token),
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
    assert!(logs.contains(&link_no), "the pay-link order is logged");
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
