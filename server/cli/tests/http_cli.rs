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

/// The configuration `demo` writes loads back unchanged with
/// `Config::load`, to the same settings the demo runs with.
#[tokio::test]
async fn the_demo_configuration_file_loads_back() {
    use secrecy::ExposeSecret;
    use wxpay_combine::secrecy;
    let dir = std::env::temp_dir().join(format!("wxpay-demo-cfg-{}", uuid::Uuid::new_v4()));
    let mut opts = wxpay_combine_cli::app::DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    let demo = wxpay_combine_cli::app::prepare_demo(&opts)
        .await
        .expect("demo prepares");
    drop(demo.listener);
    let written = std::fs::read_to_string(&demo.config_path).unwrap();
    let loaded = wxpay_combine::config::Config::load_with_env(&demo.config_path, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read_to_string(&demo.config_path).unwrap(), written);
    let want = &demo.config;
    assert_eq!(loaded.source.as_deref(), Some(demo.config_path.as_path()));
    assert!(loaded.demo);
    assert_eq!(loaded.http.listen, want.http.listen);
    assert_eq!(loaded.page_url(), demo.page_url);
    assert_eq!(loaded.http.www_dir, want.http.www_dir);
    assert_eq!(loaded.http.simulator_base_url, want.http.simulator_base_url);
    assert_eq!(loaded.http.orders, want.http.orders);
    assert_eq!(loaded.http.limits, want.http.limits);
    assert_eq!(
        loaded.http.oauth.authorize_url,
        want.http.oauth.authorize_url
    );
    assert_eq!(
        loaded.http.oauth.app_secret.expose_secret(),
        want.http.oauth.app_secret.expose_secret()
    );
    assert_eq!(
        loaded.http.session_secret.expose_secret(),
        want.http.session_secret.expose_secret()
    );
    assert_eq!(loaded.store, want.store);
    assert_eq!(loaded.notify, want.notify);
    assert_eq!(loaded.reconcile, want.reconcile);
    assert_eq!(loaded.bill_schedule, want.bill_schedule);
    assert_eq!(loaded.metrics, want.metrics);
    assert_eq!(loaded.catalog_file, want.catalog_file);
    let (l, w) = (&loaded.wechatpay, &want.wechatpay);
    assert_eq!(l.appid, w.appid);
    assert_eq!(l.merchant.mchid, w.merchant.mchid);
    assert_eq!(l.merchant.serial_no, w.merchant.serial_no);
    assert_eq!(
        l.merchant.private_key.public_key(),
        w.merchant.private_key.public_key()
    );
    assert_eq!(
        l.merchant.verification.platform_certificates,
        w.merchant.verification.platform_certificates
    );
    assert_eq!(
        l.merchant
            .verification
            .public_key
            .as_ref()
            .map(|(id, _)| id),
        w.merchant
            .verification
            .public_key
            .as_ref()
            .map(|(id, _)| id)
    );
    assert_eq!(l.api.base_url, w.api.base_url);
    assert_eq!(l.api.backup_url, w.api.backup_url);
    let credentialed = |c: &wxpay_combine::config::Config| -> Vec<(String, String)> {
        c.wechatpay
            .credentialed()
            .map(|m| (m.mchid.clone(), m.serial_no.clone()))
            .collect()
    };
    assert_eq!(credentialed(&loaded), credentialed(want));
    assert!(
        credentialed(&loaded).len() > 2,
        "every simulator merchant has keys"
    );
    assert!(loaded.webhook.is_none());
    // The demo serves the internal API on a loopback listener of its own.
    let (li, wi) = (
        loaded.internal.as_ref().unwrap(),
        want.internal.as_ref().unwrap(),
    );
    assert_eq!(li.token.expose_secret(), wi.token.expose_secret());
    assert_eq!((li.listen, li.on_public_listener), (wi.listen, false));
    assert!(li.listen.is_some_and(|a| a.ip().is_loopback()));
    drop(demo.sim);
    let _ = std::fs::remove_dir_all(&dir);
}
