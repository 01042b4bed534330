//! The debugging tools, run as the built binary against the committed
//! fixtures: `sign paysign`, `sign request`, `verify`, `decrypt`.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use common::{fixture, fixture_text, kat};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use wxpay_combine::apiv3::{
    response_message, Clock, JsapiPayParams, PrivateKey, PublicKey, SystemClock,
};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
        .args(args)
        .output()
        .expect("the binary runs");
    let r = Run {
        code: status.code().expect("exited normally, not by a signal"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    };
    assert!(
        !r.stderr.contains("panicked"),
        "the tool panicked: {}",
        r.stderr
    );
    assert_no_secrets(&r);
    r
}

/// Neither the APIv3 key nor any piece of a private key may ever be printed.
fn assert_no_secrets(r: &Run) {
    let apiv3 = fixture_text("apiv3_key.txt").trim().to_string();
    let mut secrets = vec![apiv3];
    for file in [
        "merchant_key.pem",
        "merchant_key_pkcs1.pem",
        "platform_key.pem",
        "wechatpay_key.pem",
    ] {
        let body: String = fixture_text(file)
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        // The first ~300 DER bytes hold the public modulus, which certificates
        // (legitimately printed by `decrypt`) contain too; the rest is private.
        let private_part = &body[440..];
        secrets.extend(
            private_part
                .as_bytes()
                .chunks(16)
                .map(|c| String::from_utf8(c.to_vec()).unwrap()),
        );
    }
    for s in &secrets {
        assert!(
            !r.stdout.contains(s.as_str()) && !r.stderr.contains(s.as_str()),
            "secret printed"
        );
    }
}

fn path(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

/// A fresh file under the test target's scratch directory.
fn temp_file(contents: &[u8]) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("f{}", N.fetch_add(1, Ordering::SeqCst)));
    std::fs::write(&p, contents).unwrap();
    p.to_str().unwrap().to_string()
}

// --- sign paysign -------------------------------------------------------------

#[test]
fn paysign_prints_the_openssl_known_answer() {
    for v in &kat().paysign {
        for key in ["merchant_key.pem", "merchant_key_pkcs1.pem"] {
            let ts = v.timestamp.to_string();
            let r = run(&[
                "sign",
                "paysign",
                "--private-key",
                &path(key),
                "--app-id",
                &v.app_id,
                "--prepay-id",
                &v.prepay_id,
                "--timestamp",
                &ts,
                "--nonce",
                &v.nonce,
            ]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(json, v.expected, "{} / {key}", v.name);
            // Exactly these keys, in the documented order.
            let positions: Vec<usize> = [
                "appId",
                "timeStamp",
                "nonceStr",
                "package",
                "signType",
                "paySign",
            ]
            .iter()
            .map(|k| r.stdout.find(&format!("\"{k}\"")).unwrap())
            .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", r.stdout);
            assert_eq!(json.as_object().unwrap().len(), 6);
        }
    }
}

#[test]
fn paysign_defaults_to_now_and_a_random_nonce() {
    let before = SystemClock.now();
    let r = run(&[
        "sign",
        "paysign",
        "--private-key",
        &path("merchant_key.pem"),
        "--app-id",
        "wxd678efh567hg6787",
        "--prepay-id",
        "prepay_id=wx201410272009395522657a690389285100",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let params: JsapiPayParams = serde_json::from_str(&r.stdout).unwrap();
    let ts: i64 = params.time_stamp.parse().unwrap();
    assert_eq!(params.time_stamp.len(), 10);
    assert!(ts >= before && ts <= SystemClock.now());
    assert_eq!(params.nonce_str.len(), 32);
    // A `prepay_id=` prefix is not doubled.
    assert_eq!(
        params.package,
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(params.sign_type, "RSA");
    assert!(params.verify(&PublicKey::from_pem(&fixture_text("merchant_pub.pem")).unwrap()));
}

#[test]
fn paysign_refuses_bad_arguments_with_exit_2() {
    let key = path("merchant_key.pem");
    let base = ["sign", "paysign", "--app-id", "wx1", "--prepay-id", "wx2"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--private-key", "/nonexistent/key.pem"],
            "/nonexistent/key.pem",
        ),
        (
            vec!["--private-key", &key, "--timestamp", "1700000000000"],
            "milliseconds",
        ),
        (vec!["--private-key", &key, "--timestamp", "-5"], "positive"),
        (
            vec![
                "--private-key",
                &key,
                "--nonce",
                "123456789012345678901234567890123",
            ],
            "32",
        ),
        (vec!["--private-key", &key, "--nonce", "a\nb"], "control"),
        (vec!["--private-key", "PUBLIC_KEY"], "PUBLIC KEY"),
        (vec![], "--private-key"),
    ];
    let public = path("merchant_pub.pem");
    for (extra, expect) in cases {
        let extra: Vec<&str> = extra
            .iter()
            .map(|a| {
                if *a == "PUBLIC_KEY" {
                    public.as_str()
                } else {
                    a
                }
            })
            .collect();
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
    }
}

// --- sign request -------------------------------------------------------------

#[test]
fn request_signing_prints_the_openssl_authorization_header() {
    let k = kat();
    for v in &k.requests {
        let ts = v.timestamp.to_string();
        let body_file = temp_file(v.body.as_bytes());
        for key in ["merchant_key.pem", "merchant_key_pkcs1.pem"] {
            let key = path(key);
            let mut args = vec![
                "sign",
                "request",
                "--private-key",
                &key,
                "--mchid",
                &k.mchid,
                "--serial",
                &k.merchant_serial,
                "--method",
                &v.method,
                "--url",
                &v.url,
                "--timestamp",
                &ts,
                "--nonce",
                &v.nonce,
            ];
            if !v.body.is_empty() {
                args.extend(["--body-file", body_file.as_str()]);
            }
            let r = run(&args);
            assert_eq!(r.code, 0, "{}: {}", v.name, r.stderr);
            assert_eq!(r.stdout, format!("{}\n", v.authorization), "{}", v.name);
            if v.body.ends_with('\n') {
                assert!(r.stderr.contains("ends with a newline"), "{}", r.stderr);
            }
        }
    }
}

#[test]
fn request_signing_can_show_the_string_to_sign() {
    let v = kat().request("get_with_query");
    let ts = v.timestamp.to_string();
    let r = run(&[
        "sign",
        "request",
        "--private-key",
        &path("merchant_key.pem"),
        "--mchid",
        "1900007291",
        "--serial",
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "--method",
        "get",
        "--url",
        &v.url,
        "--timestamp",
        &ts,
        "--nonce",
        &v.nonce,
        "--show-message",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&v.message.escape_debug().to_string()),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, format!("{}\n", v.authorization));
}

#[test]
fn request_signing_with_default_time_and_nonce_verifies() {
    let r = run(&[
        "sign",
        "request",
        "--private-key",
        &path("merchant_key.pem"),
        "--mchid",
        "1900007291",
        "--serial",
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "--method",
        "GET",
        "--url",
        "/v3/certificates",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let auth = wxpay_combine::apiv3::Authorization::parse(r.stdout.trim()).unwrap();
    assert_eq!(auth.nonce_str.len(), 32);
    let ts: i64 = auth.timestamp.parse().unwrap();
    assert!((SystemClock.now() - ts).abs() < 60);
    let message =
        wxpay_combine::apiv3::request_message("GET", "/v3/certificates", ts, &auth.nonce_str, b"");
    let key = PublicKey::from_pem(&fixture_text("merchant_pub.pem")).unwrap();
    assert!(key.verify_base64(&message, &auth.signature));
}

#[test]
fn request_signing_refuses_bad_arguments_with_exit_2() {
    let key = path("merchant_key.pem");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--url", "v3/certificates"], "must start with '/'"),
        (
            vec!["--url", "https://api.mch.weixin.qq.com/v3/certificates"],
            "drop the scheme and host",
        ),
        (vec!["--url", "/v3/a b"], "whitespace"),
        (vec!["--url", "/v3/x", "--method", "G T"], "--method"),
        (
            vec!["--url", "/v3/x", "--body-file", "/nonexistent/body.json"],
            "/nonexistent/body.json",
        ),
        (vec!["--url", "/v3/x", "--nonce", "a\"b"], "--nonce"),
        (
            vec!["--url", "/v3/x", "--timestamp", "1700000000123"],
            "milliseconds",
        ),
        (vec!["--url", "/v3/x", "--mchid", ""], "--mchid"),
    ];
    for (extra, expect) in cases {
        let mut args = vec![
            "sign",
            "request",
            "--private-key",
            &key,
            "--serial",
            "5157F0",
        ];
        if !extra.contains(&"--method") {
            args.extend(["--method", "GET"]);
        }
        if !extra.contains(&"--mchid") {
            args.extend(["--mchid", "1900007291"]);
        }
        args.extend(extra.iter().copied());
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    // A missing required option is a usage error too.
    let r = run(&["sign", "request", "--private-key", &key, "--mchid", "1"]);
    assert_eq!(r.code, 2);
}

// --- verify ------------------------------------------------------------------

#[test]
fn verify_accepts_the_openssl_signatures_with_key_or_certificate() {
    let k = kat();
    for v in &k.responses {
        let body = temp_file(v.body.as_bytes());
        let key_files: Vec<String> = if v.serial == k.public_key_id {
            vec![path("wechatpay_pub.pem")]
        } else {
            vec![path("platform_pub.pem"), path("platform_cert.pem")]
        };
        for key in key_files {
            let r = run(&[
                "verify",
                "--public-key",
                &key,
                "--timestamp",
                &v.timestamp,
                "--nonce",
                &v.nonce,
                "--signature",
                &v.signature,
                "--body-file",
                &body,
            ]);
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, "valid\n"),
                "{}: {}",
                v.name,
                r.stderr
            );
            // The vectors are old: the skew is reported, but only as information.
            assert!(r.stderr.contains("clock skew: "), "{}", r.stderr);
            assert!(r.stderr.contains("outside the window"), "{}", r.stderr);
            if key.ends_with("cert.pem") {
                assert!(
                    r.stderr
                        .contains(&format!("certificate serial {}", v.serial)),
                    "{}",
                    r.stderr
                );
            }
        }
        if v.body.is_empty() {
            // No --body-file means an empty body.
            let r = run(&[
                "verify",
                "--public-key",
                &path(&v.public_key_file),
                "--timestamp",
                &v.timestamp,
                "--nonce",
                &v.nonce,
                "--signature",
                &v.signature,
            ]);
            assert_eq!(
                (r.code, r.stdout.as_str()),
                (0, "valid\n"),
                "{}: {}",
                v.name,
                r.stderr
            );
        }
    }
}

#[test]
fn verify_reports_the_clock_skew_of_a_fresh_signature() {
    let key = PrivateKey::from_pem(&fixture_text("wechatpay_key.pem")).unwrap();
    for (offset, direction) in [(12i64, "in the past"), (-40, "in the future")] {
        let ts = (SystemClock.now() - offset).to_string();
        let body = br#"{"code":"SUCCESS"}"#;
        let sig = key
            .sign_base64(&response_message(&ts, "nonce123", body))
            .unwrap();
        let r = run(&[
            "verify",
            "--public-key",
            &path("wechatpay_pub.pem"),
            "--timestamp",
            &ts,
            "--nonce",
            "nonce123",
            "--signature",
            &sig,
            "--body-file",
            &temp_file(body),
        ]);
        assert_eq!((r.code, r.stdout.as_str()), (0, "valid\n"), "{}", r.stderr);
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("clock skew: "))
            .expect(&r.stderr);
        let skew: i64 = line["clock skew: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((skew - offset).abs() <= 2, "{line}");
        assert!(
            line.contains(direction) && line.contains("WeChat Pay enforces 300 s"),
            "{line}"
        );
        assert!(!line.contains("outside the window"), "{line}");
    }
}

#[test]
fn verify_says_invalid_with_a_reason_and_exit_1() {
    let v = kat().response("response_public_key_json");
    let body = temp_file(v.body.as_bytes());
    let tampered = temp_file(v.body.replace("NOTPAY", "SUCCESS").as_bytes());
    let with_newline = temp_file(format!("{}\n", v.body).as_bytes());
    let wechatpay = path("wechatpay_pub.pem");
    let platform = path("platform_cert.pem");
    let probe = format!("WECHATPAY/SIGNTEST/{}", v.signature);
    let short = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 255])
    };
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        // (key, signature, body file, expected reason fragment)
        (&wechatpay, &v.signature, &tampered, "does not match"),
        (&wechatpay, &v.signature, &with_newline, "does not match"),
        (&platform, &v.signature, &body, "does not match"),
        (&wechatpay, &probe, &body, "WECHATPAY/SIGNTEST/ probe"),
        (
            &wechatpay,
            "WECHATPAY/SIGNTEST/",
            &body,
            "WECHATPAY/SIGNTEST/ probe",
        ),
        (&wechatpay, "not*base64", &body, "not standard base64"),
        (&wechatpay, &short, &body, "255 bytes"),
    ];
    for (key, sig, body_file, reason) in cases {
        let r = run(&[
            "verify",
            "--public-key",
            key,
            "--timestamp",
            &v.timestamp,
            "--nonce",
            &v.nonce,
            "--signature",
            sig,
            "--body-file",
            body_file,
        ]);
        assert_eq!(r.code, 1, "{sig}: {} {}", r.stdout, r.stderr);
        assert!(
            r.stdout.starts_with("invalid: ") && r.stdout.contains(reason),
            "{sig}: {}",
            r.stdout
        );
    }
    // A changed nonce or timestamp.
    let r = run(&[
        "verify",
        "--public-key",
        &wechatpay,
        "--timestamp",
        "1700000099",
        "--nonce",
        &v.nonce,
        "--signature",
        &v.signature,
        "--body-file",
        &body,
    ]);
    assert_eq!(r.code, 1);
    let r = run(&[
        "verify",
        "--public-key",
        &wechatpay,
        "--timestamp",
        "not-a-number",
        "--nonce",
        &v.nonce,
        "--signature",
        &v.signature,
        "--body-file",
        &body,
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("clock skew: unknown"), "{}", r.stderr);
}

#[test]
fn verify_refuses_unusable_keys_with_exit_2() {
    let v = kat().response("response_public_key_empty_body");
    for (key, expect) in [
        (path("wechatpay_key.pem"), "PRIVATE KEY"),
        ("/nonexistent/pub.pem".to_string(), "/nonexistent/pub.pem"),
        (temp_file(b"hello"), "no PUBLIC KEY"),
    ] {
        let r = run(&[
            "verify",
            "--public-key",
            &key,
            "--timestamp",
            &v.timestamp,
            "--nonce",
            &v.nonce,
            "--signature",
            &v.signature,
        ]);
        assert_eq!(r.code, 2, "{key}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{key}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    let r = run(&[
        "verify",
        "--public-key",
        &path("wechatpay_pub.pem"),
        "--timestamp",
        "1",
        "--nonce",
        "n",
        "--signature",
        "AAAA",
        "--body-file",
        "/nonexistent/body",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

// --- decrypt -----------------------------------------------------------------

#[test]
fn decrypt_prints_the_python_plaintext() {
    let k = kat();
    for v in &k.aead {
        let r = run(&[
            "decrypt",
            "--apiv3-key-file",
            &path(&k.apiv3_key_file),
            "--nonce",
            &v.nonce,
            "--associated-data",
            &v.associated_data,
            "--ciphertext",
            &v.ciphertext,
        ]);
        assert_eq!(r.code, 0, "{}: {}", v.name, r.stderr);
        assert_eq!(r.stdout, v.plaintext, "{}", v.name);
    }
}

#[test]
fn decrypt_failures_exit_1_and_bad_input_exits_2() {
    let k = kat();
    let v = k.aead("notification_transaction");
    let key_file = path(&k.apiv3_key_file);
    let apiv3 = fixture_text(&k.apiv3_key_file).trim().to_string();
    let key31 = temp_file(&apiv3.as_bytes()[..31]);
    let key33 = temp_file(format!("{apiv3}Z\n").as_bytes());
    let wrong_key = temp_file(b"00000000000000000000000000000000");
    let cases: Vec<(&str, &str, &str, &str, i32, &str)> = vec![
        (
            &key_file,
            &v.nonce,
            "certificate",
            &v.ciphertext,
            1,
            "authentication failed",
        ),
        (
            &wrong_key,
            &v.nonce,
            &v.associated_data,
            &v.ciphertext,
            1,
            "authentication failed",
        ),
        (
            &key31,
            &v.nonce,
            &v.associated_data,
            &v.ciphertext,
            2,
            "exactly 32 bytes, got 31",
        ),
        (
            &key33,
            &v.nonce,
            &v.associated_data,
            &v.ciphertext,
            2,
            "exactly 32 bytes, got 33",
        ),
        (
            "/nonexistent/apiv3.txt",
            &v.nonce,
            &v.associated_data,
            &v.ciphertext,
            2,
            "cannot read",
        ),
        (
            &key_file,
            "short",
            &v.associated_data,
            &v.ciphertext,
            2,
            "nonce must be 12 bytes, got 5",
        ),
        (
            &key_file,
            &v.nonce,
            &v.associated_data,
            "%%%",
            2,
            "not base64",
        ),
        (
            &key_file,
            &v.nonce,
            &v.associated_data,
            "AAAA",
            2,
            "shorter than the 16-byte tag",
        ),
    ];
    for (key, nonce, aad, ct, code, expect) in cases {
        let r = run(&[
            "decrypt",
            "--apiv3-key-file",
            key,
            "--nonce",
            nonce,
            "--associated-data",
            aad,
            "--ciphertext",
            ct,
        ]);
        assert_eq!(r.code, code, "{expect}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{expect}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{expect}");
    }
    // Missing --associated-data is a usage error (an empty one must be explicit).
    let r = run(&[
        "decrypt",
        "--apiv3-key-file",
        &key_file,
        "--nonce",
        &v.nonce,
        "--ciphertext",
        &v.ciphertext,
    ]);
    assert_eq!(r.code, 2);
}
