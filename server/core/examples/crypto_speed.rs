//! Single-threaded throughput of the APIv3 crypto paths, for
//! `cargo xtask bench-crypto` (which compares it with `openssl speed rsa2048`).
//!
//! ```text
//! cargo run --release -p wxpay-combine --example crypto_speed -- --seconds 2 [--backend pure-rust]
//! ```
//!
//! Each operation runs for `--seconds` of wall time and is divided by the
//! thread's CPU time, as `openssl speed` does by default (it counts
//! operations for N wall seconds and divides by user CPU time), so time spent
//! descheduled on a busy machine counts for neither side. Measured, through
//! the library's public API and the committed test fixtures:
//! - `sign`: `RequestSigner::authorization_at` for the combined-order JSAPI
//!   request (RSA-2048 PKCS#1 v1.5 / SHA-256 plus building the header);
//! - `verify`: `Verifier::verify` of a signed notification (window, serial
//!   lookup, base64, RSA verification);
//! - `decrypt`: opening the ~1 KB AEAD_AES_256_GCM notification resource.
//!
//! Output, one `key=value` per line, e.g. `sign_per_s=1234.5`.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wxpay_combine_core::apiv3::backend::{all_backends, default_backend, CryptoBackend};
use wxpay_combine_core::apiv3::{
    aead, ApiV3Key, EncryptedResource, ManualClock, PrivateKey, PublicKey, RequestSigner,
    SignatureHeaders, Verifier,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(name: &str) -> Result<String, String> {
    std::fs::read_to_string(fixtures().join(name))
        .map_err(|e| format!("cannot read fixture {name}: {e}"))
}

/// CPU time of the calling thread, from the scheduler's own accounting.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

struct Rate {
    per_cpu_s: Option<f64>,
    per_wall_s: f64,
}

/// Runs `op` in batches of `batch` until `seconds` of wall time have passed.
fn measure(seconds: f64, batch: u32, mut op: impl FnMut()) -> Rate {
    op(); // warm caches and lazy initialisation
    let budget = Duration::from_secs_f64(seconds);
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut count: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..batch {
            op();
        }
        count += u64::from(batch);
    }
    let wall = start.elapsed();
    let cpu = match (cpu_start, thread_cpu_time()) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    Rate {
        per_cpu_s: cpu.map(|c| count as f64 / c.as_secs_f64()),
        per_wall_s: count as f64 / wall.as_secs_f64(),
    }
}

struct Args {
    seconds: f64,
    backend: &'static dyn CryptoBackend,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 2.0,
        backend: default_backend(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                args.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: not a number: {v}"))?;
                if !(args.seconds > 0.0 && args.seconds <= 600.0) {
                    return Err("--seconds must be in (0, 600]".into());
                }
            }
            "--backend" => {
                let v = it.next().ok_or("--backend needs a value")?;
                args.backend = all_backends()
                    .into_iter()
                    .find(|b| b.name() == v)
                    .ok_or_else(|| {
                        let names: Vec<_> = all_backends().iter().map(|b| b.name()).collect();
                        format!(
                            "--backend {v} is not compiled in; available: {}",
                            names.join(", ")
                        )
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: crypto_speed [--seconds S] [--backend NAME]"
                ))
            }
        }
    }
    Ok(args)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let backend = args.backend;
    let kat: serde_json::Value =
        serde_json::from_str(&read("kat.json")?).map_err(|e| e.to_string())?;
    let find = |list: &str, name: &str| -> Result<serde_json::Value, String> {
        kat[list]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["name"] == name))
            .cloned()
            .ok_or_else(|| format!("kat.json has no {list}/{name}"))
    };
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();

    // sign: the combined-order JSAPI request.
    let key = PrivateKey::from_pem_with(&read("merchant_key.pem")?, backend)
        .map_err(|e| e.to_string())?;
    let signer = RequestSigner::new(text(&kat, "mchid"), text(&kat, "merchant_serial"), key);
    let req = find("requests", "post_jsapi_json")?;
    let (method, url, nonce, body) = (
        text(&req, "method"),
        text(&req, "url"),
        text(&req, "nonce"),
        text(&req, "body"),
    );
    let ts = req["timestamp"].as_i64().unwrap_or_default();
    let expected = text(&req, "authorization");
    let header = signer
        .authorization_at(&method, &url, ts, &nonce, body.as_bytes())
        .map_err(|e| e.to_string())?;
    if header != expected {
        return Err("the signer does not reproduce the known answer; refusing to benchmark".into());
    }

    // verify: a notification signed with the WeChat Pay public key.
    let resp = find("responses", "notification_public_key")?;
    let pubkey = PublicKey::from_pem_with(&read("wechatpay_pub.pem")?, backend)
        .map_err(|e| e.to_string())?;
    let ts_text = text(&resp, "timestamp");
    let now: i64 = ts_text.parse().map_err(|_| "bad timestamp in kat.json")?;
    let verifier = Verifier::new(Arc::new(ManualClock::new(now)))
        .with_public_key(text(&kat, "public_key_id"), pubkey);
    let headers = SignatureHeaders {
        timestamp: ts_text,
        nonce: text(&resp, "nonce"),
        signature: text(&resp, "signature"),
        serial: text(&resp, "serial"),
        signature_type: Some("WECHATPAY2-SHA256-RSA2048".into()),
    };
    let notification = text(&resp, "body");
    verifier
        .verify(&headers, notification.as_bytes())
        .map_err(|e| format!("known answer: {e}"))?;

    // decrypt: the resource of that notification.
    let envelope: serde_json::Value =
        serde_json::from_str(&notification).map_err(|e| e.to_string())?;
    let resource: EncryptedResource =
        serde_json::from_value(envelope["resource"].clone()).map_err(|e| e.to_string())?;
    let apiv3 = ApiV3Key::from_text(&read("apiv3_key.txt")?).map_err(|e| e.to_string())?;
    let open = || {
        aead::decrypt_with(
            backend,
            &apiv3,
            &resource.nonce,
            &resource.associated_data,
            &resource.ciphertext,
        )
    };
    let plaintext_len = open().map_err(|e| format!("known answer: {e}"))?.len();

    let sign = measure(args.seconds, 1, || {
        black_box(
            signer
                .authorization_at(&method, &url, ts, &nonce, black_box(body.as_bytes()))
                .ok(),
        );
    });
    let verify = measure(args.seconds, 16, || {
        black_box(
            verifier
                .verify(black_box(&headers), black_box(notification.as_bytes()))
                .is_ok(),
        );
    });
    let decrypt = measure(args.seconds, 64, || {
        black_box(open().ok());
    });

    let clock = if sign.per_cpu_s.is_some() {
        "thread-cpu"
    } else {
        "wall"
    };
    println!("backend={}", backend.name());
    println!("seconds={}", args.seconds);
    println!("clock={clock}");
    println!("decrypt_plaintext_bytes={plaintext_len}");
    for (name, r) in [("sign", &sign), ("verify", &verify), ("decrypt", &decrypt)] {
        println!("{name}_per_s={:.1}", r.per_cpu_s.unwrap_or(r.per_wall_s));
        println!("{name}_per_wall_s={:.1}", r.per_wall_s);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crypto_speed: {e}");
            ExitCode::from(2)
        }
    }
}
