//! The simulator checked by code that is not ours: OpenSSL verifies its
//! answer and notification signatures; an independent Python client signs
//! a prepay itself and verifies the answers; and the `wxpay-combine sim`
//! binary is driven out of process.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use wxpay_combine_sim::MerchantCredentials;
use wxpay_combine_tests::binary::{server_binary, workspace_root};
use wxpay_combine_tests::sim::{http, prepay_body, unique, ApiClient, Receiver, TestSim};
use wxpay_combine_tests::under_ci;

/// Whether an external tool is usable; under CI its absence is a failure.
fn tool_available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if under_ci() {
            panic!("{program} {args:?} is required under CI");
        }
        eprintln!("SKIP: {program} {args:?} is not available");
    }
    ok
}

/// Checks `timestamp\nnonce\nbody\n` against the signature with `openssl dgst`.
fn openssl_verifies(
    public_key_pem: &Path,
    ts: &str,
    nonce: &str,
    body: &[u8],
    signature_b64: &str,
) -> bool {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut msg = format!("{ts}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    std::fs::write(dir.path().join("msg"), msg).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .unwrap();
    std::fs::write(dir.path().join("sig"), sig).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key_pem)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("msg"))
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[tokio::test]
async fn openssl_verifies_answers_and_notifications() {
    if !tool_available("openssl", &["version"]) {
        return;
    }
    let t = TestSim::start().await;
    let c = t.client();
    let pem = t.creds().wechatpay_public_key_path.clone().unwrap();
    let rx = Receiver::start(200).await;
    let no = unique("X");
    let r = c.prepay(&prepay_body(t.creds(), &no, &rx.url)).await;
    let h = r.signature_headers().unwrap();
    assert!(openssl_verifies(
        &pem,
        &h.timestamp,
        &h.nonce,
        &r.body,
        &h.signature
    ));
    let mut other = r.body.clone();
    other.push(b' ');
    assert!(
        !openssl_verifies(&pem, &h.timestamp, &h.nonce, &other, &h.signature),
        "openssl really checks"
    );

    let out = c
        .confirm(
            &c.pay_params(r.json()["prepay_id"].as_str().unwrap()),
            "pay",
        )
        .await;
    assert_eq!(out["err_msg"], "get_brand_wcpay_request:ok");
    let hit = &rx.wait_for(1, Duration::from_secs(10)).await[0];
    let h = hit.signature_headers();
    assert!(openssl_verifies(
        &pem,
        &h.timestamp,
        &h.nonce,
        &hit.body,
        &h.signature
    ));

    // 204: the signature covers the empty body.
    let no = unique("X");
    let b = prepay_body(t.creds(), &no, &rx.url);
    c.prepay(&b).await;
    let r = c.close(&no, &c.close_body(&b)).await;
    assert_eq!(r.status, 204);
    let h = r.signature_headers().unwrap();
    assert!(openssl_verifies(
        &pem,
        &h.timestamp,
        &h.nonce,
        b"",
        &h.signature
    ));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn independent_python_client() {
    if !tool_available("python3", &["-c", "import cryptography"]) {
        return;
    }
    let t = TestSim::start().await;
    let no = unique("PY");
    let base = t.base().to_string();
    let dir = t.dir.path().to_path_buf();
    let order = no.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(workspace_root().join("tests/scripts/sim_client.py"))
            .args(["--base", &base, "--order", &order])
            .arg("--dir")
            .arg(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["prepay_status"], 200, "{seen}");
    assert_eq!(seen["prepay_verified"], true, "{seen}");
    assert_eq!(seen["tampered_verified"], false);
    assert_eq!(
        seen["prepay_serial"],
        t.creds().wechatpay_public_key_id.as_deref().unwrap()
    );
    assert_eq!(seen["query_status"], 200);
    assert_eq!(seen["query_verified"], true);
    assert_eq!(
        seen["trade_states"],
        serde_json::json!(["NOTPAY", "NOTPAY"])
    );
    // Our side agrees on what happened.
    assert_eq!(t.sim.prepay_calls(&no).await.unwrap(), 1);
    let q = t.client().query(&no).await.json();
    assert_eq!(
        q["sub_orders"][0]["description"],
        serde_json::Value::Null,
        "query has no description field"
    );
    assert_eq!(q["sub_orders"][0]["amount"]["total_amount"], 88);
    assert_eq!(
        q["sub_orders"][1]["mchid"],
        t.creds().sub_mchids[2].as_str()
    );
    let pid = seen["prepay_id"].as_str().unwrap();
    assert!(t.sim.pay_prepay_id(pid).await.unwrap().is_ok());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn the_binary_runs_standalone() {
    let bin = tokio::task::spawn_blocking(server_binary).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "sim",
            "--addr",
            "127.0.0.1:0",
            "--time-scale",
            "0.01",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader keeps draining stdout after the base URL line: closing the
    // pipe early would make the simulator's next print fail (EPIPE).
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.trim().strip_prefix("base URL :") {
                let _ = url_tx.send(url.trim().to_string());
            }
        }
    });
    let base = tokio::task::spawn_blocking(move || {
        url_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("no base URL printed")
    })
    .await
    .unwrap();
    let creds = MerchantCredentials::load(dir.path()).unwrap();
    let c = ApiClient::new(&base, &creds);
    let no = unique("BIN");
    let r = c
        .prepay(&prepay_body(&creds, &no, "http://127.0.0.1:9/n"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.verify(&c.verifier()).unwrap();
    let stats: Value = http()
        .get(format!("{base}/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["prepay_calls"][&no], 1);
    assert_eq!(stats["orders"], 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
