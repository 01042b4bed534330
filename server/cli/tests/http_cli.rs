//! The `check-pay-dir` and `serve --check` commands, run as the binary.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wxpay-combine"))
}

fn check(registered: &str, page: &str) -> (i32, String) {
    let out = bin()
        .args(["check-pay-dir", "--registered", registered, "--page", page])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_pay_dir_applies_the_product_rule() {
    let reg = "https://www.weixin.com/abc/123/";
    let (code, out) = check(reg, "https://www.weixin.com/abc/123/pay.html");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("match:"), "{out}");
    for page in [
        "https://www.weixin.com/abc/pay.html",
        "https://www.weixin.com/abc/123/pay/index.html",
    ] {
        let (code, out) = check(reg, page);
        assert_eq!(code, 1, "{page}: {out}");
        assert!(out.starts_with("mismatch:"), "{out}");
        assert!(out.contains("iOS") && out.contains("landing URL"), "{out}");
    }
    let (code, out) = check(
        "https://www.weixin.com/",
        "https://www.weixin.com/any/where/pay.php",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("top-level domain"));
    let (code, out) = check("https://www.weixin.com/", "https://pay.weixin.com/x.html");
    assert_eq!(code, 1, "{out}");
    let (code, out) = check("not a url", "https://www.weixin.com/");
    assert_eq!(code, 2, "{out}");
}

#[test]
fn serve_check_reports_every_problem_and_exits_nonzero() {
    let dir = std::env::temp_dir().join(format!("wxpay-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("wxpay.toml");
    std::fs::write(
        &cfg,
        "public_base_url = \"http://shop.example.com\"\nnotify_url = \"https://shop.example.com/n?x=1\"\ndatabase_url = \"mysql://x\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--check", "--config"])
        .arg(&cfg)
        .env_remove("WXPAY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "public_base_url",
        "query string",
        "unknown database URL scheme",
        "appid is required",
        "apiv3_key_file is required",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
    let out = bin()
        .args(["serve", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let _ = std::fs::remove_dir_all(&dir);
}
