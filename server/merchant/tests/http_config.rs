//! Configuration validation: every misconfiguration is refused at start with
//! a message naming the key and the problem.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use wxpay_combine::config::{Config, ConfigError, RawConfig};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory holding a complete, valid production configuration.
fn setup() -> Dir {
    let dir = std::env::temp_dir().join(format!("wxpay-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let copy = |name: &str, to: &str| std::fs::copy(common::fixture(name), dir.join(to)).unwrap();
    copy("merchant_key.pem", "apiclient_key.pem");
    copy("merchant_cert.pem", "apiclient_cert.pem");
    copy("platform_key.pem", "other_key.pem");
    copy("wechatpay_pub.pem", "wechatpay_pub.pem");
    copy("apiv3_key.txt", "apiv3_key.txt");
    std::fs::write(
        dir.join("short_apiv3_key.txt"),
        "0123456789abcdef0123456789abcde\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("app_secret.txt"),
        "3f2c1e0d9b8a7f6e5d4c3b2a19080706\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("session.key"),
        "c2Vzc2lvbi1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaC0xMjM0NTY3OA==\n",
    )
    .unwrap();
    std::fs::write(dir.join("short_session.key"), "too short\n").unwrap();
    std::fs::write(
        dir.join("catalog.toml"),
        "[[merchants]]\nmchid = \"1900000101\"\nname = \"A\"\n[[merchants]]\nmchid = \"1900000102\"\nname = \"B\"\n\
         [[items]]\nsku = \"a\"\nname = \"A1\"\nprice_fen = 100\nmchid = \"1900000101\"\n\
         [[items]]\nsku = \"b\"\nname = \"B1\"\nprice_fen = 200\nmchid = \"1900000102\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("wxpay.toml"), base_toml()).unwrap();
    Dir(dir)
}

fn kat_serial() -> String {
    let kat: serde_json::Value = serde_json::from_str(&common::fixture_text("kat.json")).unwrap();
    kat["merchant_serial"].as_str().unwrap().to_string()
}

fn base_toml() -> String {
    format!(
        r#"listen = "127.0.0.1:0"
public_base_url = "https://shop.example.com"
pay_directory = "/pay/"
pay_directory_registered = "https://shop.example.com/pay/"
www_dir = "www"
database_url = "sqlite:orders.db"
appid = "wxd678efh567hg6787"
mchid = "1900007291"
merchant_serial_no = "{serial}"
merchant_private_key_file = "apiclient_key.pem"
merchant_cert_file = "apiclient_cert.pem"
apiv3_key_file = "apiv3_key.txt"
app_secret_file = "app_secret.txt"
session_secret_file = "session.key"
wechatpay_public_key_id = "PUB_KEY_ID_0112345678901234567890123456789012"
wechatpay_public_key_file = "wechatpay_pub.pem"
notify_url = "https://shop.example.com/wxpay/notify"
catalog_file = "catalog.toml"
"#,
        serial = kat_serial()
    )
}

/// Loads `text` from the directory with `env` as the environment.
fn load(dir: &Path, text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let path = dir.join("case.toml");
    std::fs::write(&path, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(&path, &|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .map_err(|e| e.0)
}

/// Replaces (or, with `None`, removes) one `key = …` line.
fn with(key: &str, value: Option<&str>) -> String {
    let mut out: Vec<String> = base_toml()
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .map(str::to_string)
        .collect();
    if let Some(v) = value {
        out.push(format!("{key} = {v}"));
    }
    out.join("\n") + "\n"
}

#[test]
fn the_base_configuration_is_valid_and_paths_are_relative_to_it() {
    let d = setup();
    let c = load(&d.0, &base_toml(), &[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(c.wechatpay.merchant.mchid, "1900007291");
    assert_eq!(c.wechatpay.merchant.serial_no, kat_serial());
    assert_eq!(c.notify.notify_path, "/wxpay/notify");
    assert_eq!(c.page_url(), "https://shop.example.com/pay/");
    assert_eq!(
        c.oauth_redirect_uri(),
        "https://shop.example.com/oauth/callback"
    );
    assert_eq!(
        c.store.database_url,
        format!("sqlite:{}", d.0.join("orders.db").display())
    );
    assert_eq!(c.http.www_dir, d.0.join("www"));
    assert_eq!(
        c.wechatpay.api.base_url.as_str(),
        "https://api.mch.weixin.qq.com/"
    );
    assert_eq!(
        c.wechatpay.api.backup_url.as_ref().map(|u| u.as_str()),
        Some("https://api2.mch.weixin.qq.com/")
    );
    assert!(
        !c.wechatpay.merchant.verification.platform_certificates,
        "public-key mode by default when a key is configured"
    );
    assert_eq!(c.http.orders.close_min_age_secs, 300);
    assert_eq!(c.http.orders.query_after_secs, 30);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Secrets never show in Debug output.
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("3f2c1e0d9b8a7f6e"),
        "app secret leaked into Debug"
    );
    assert!(dbg.contains("redacted"));
}

#[test]
fn every_misconfiguration_is_refused_with_its_key_and_cause() {
    let d = setup();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            with("apiv3_key_file", Some("\"short_apiv3_key.txt\"")),
            "apiv3_key_file",
            "exactly 32 bytes",
        ),
        (
            with("apiv3_key_file", Some("\"missing.txt\"")),
            "apiv3_key_file",
            "missing.txt",
        ),
        (
            with("merchant_serial_no", Some("\"ABCDEF0123\"")),
            "merchant_serial_no",
            "is not the serial of the merchant certificate",
        ),
        (
            with("merchant_serial_no", Some("\"not-hex!\"")),
            "merchant_serial_no",
            "not a hex certificate serial",
        ),
        (
            with("merchant_private_key_file", Some("\"other_key.pem\"")),
            "merchant_private_key_file",
            "does not match the merchant certificate",
        ),
        (
            with("merchant_private_key_file", Some("\"catalog.toml\"")),
            "merchant_private_key_file",
            "PEM",
        ),
        (
            with(
                "notify_url",
                Some("\"https://shop.example.com/wxpay/notify?x=1\""),
            ),
            "notify_url",
            "query string",
        ),
        (
            with(
                "notify_url",
                Some("\"http://shop.example.com/wxpay/notify\""),
            ),
            "notify_url",
            "https",
        ),
        (
            with(
                "notify_url",
                Some("\"https://shop.example.com/pay/notify\""),
            ),
            "notify_url",
            "collides",
        ),
        (with("notify_url", None), "notify_url", "required"),
        (
            with("database_url", Some("\"mysql://u@h/db\"")),
            "database_url",
            "unknown database URL scheme",
        ),
        (with("database_url", None), "database_url", "required"),
        (with("appid", None), "appid", "required"),
        (
            with("appid", Some("\"wx 123\"")),
            "appid",
            "letters or digits",
        ),
        (
            with("session_secret_file", Some("\"short_session.key\"")),
            "session_secret_file",
            "at least 32 bytes",
        ),
        (
            with("wechatpay_public_key_file", None),
            "wechatpay_public_key_file",
            "required with wechatpay_public_key_id",
        ),
        (
            with("wechatpay_public_key_id", Some("\"KEY_1\"")),
            "wechatpay_public_key_id",
            "PUB_KEY_ID_",
        ),
        (
            with("wechatpay_public_key_id", None)
                .replace("wechatpay_public_key_file = \"wechatpay_pub.pem\"\n", "")
                + "platform_certificates = false\n",
            "platform_certificates",
            "no way to verify",
        ),
        (
            with("public_base_url", Some("\"https://shop.example.com/shop\"")),
            "public_base_url",
            "origin without a path",
        ),
        (
            with("public_base_url", Some("\"http://shop.example.com\"")),
            "public_base_url",
            "https",
        ),
        (
            with("pay_directory", Some("\"pay\"")),
            "pay_directory",
            "start and end with /",
        ),
        (
            with(
                "pay_directory_registered",
                Some("\"https://shop.example.com/pay\""),
            ),
            "pay_directory_registered",
            "must end with /",
        ),
        (
            with("api_base_url", Some("\"http://api.example.com\"")),
            "api_base_url",
            "https",
        ),
        (
            with("simulator_base_url", Some("\"http://127.0.0.1:9\"")),
            "simulator_base_url",
            "demo = true",
        ),
        (with("catalog_file", None), "catalog_file", "required"),
        (
            with("listen", Some("\"everywhere\"")),
            "listen",
            "socket address",
        ),
        (with("max_attempts", Some("0")), "max_attempts", "outside"),
        (
            with("order_expire_secs", Some("30")),
            "order_expire_secs",
            "outside",
        ),
        (with("log_format", Some("\"xml\"")), "log_format", "json"),
    ];
    for (text, key, needle) in cases {
        let errors = load(&d.0, &text, &[])
            .err()
            .unwrap_or_else(|| panic!("{key}/{needle}: accepted"));
        let hit = errors
            .iter()
            .find(|e| e.key() == Some(key))
            .unwrap_or_else(|| panic!("{key}: no error for this key in {errors:?}"));
        assert!(
            hit.to_string().contains(needle),
            "{key}: {hit} lacks {needle:?}"
        );
        assert!(hit.to_string().starts_with(key), "{hit}");
    }
}

#[test]
fn unknown_keys_and_bad_toml_are_refused() {
    let d = setup();
    let errors = load(&d.0, &(base_toml() + "notify_uri = \"x\"\n"), &[]).unwrap_err();
    assert!(
        matches!(&errors[0], ConfigError::Parse { detail, .. } if detail.contains("notify_uri")),
        "{errors:?}"
    );
    let errors = load(&d.0, "listen = \n", &[]).unwrap_err();
    assert!(matches!(&errors[0], ConfigError::Parse { .. }));
}

#[test]
fn several_problems_are_reported_together() {
    let d = setup();
    let text = with("appid", None).replace("sqlite:orders.db", "mysql://x");
    let errors = load(&d.0, &text, &[]).unwrap_err();
    let keys: Vec<_> = errors.iter().filter_map(|e| e.key()).collect();
    assert!(
        keys.contains(&"appid") && keys.contains(&"database_url"),
        "{keys:?}"
    );
}

#[test]
fn environment_overrides_win_and_are_validated() {
    let d = setup();
    let c = load(
        &d.0,
        &base_toml(),
        &[
            ("WXPAY_DATABASE_URL", "postgres://u:pw@db.internal/wxpay"),
            ("WXPAY_LISTEN", "0.0.0.0:9000"),
            ("WXPAY_CLOSE_MIN_AGE_SECS", "600"),
        ],
    )
    .unwrap();
    assert_eq!(c.store.database_url, "postgres://u:pw@db.internal/wxpay");
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.http.orders.close_min_age_secs, 600);
    let errors = load(
        &d.0,
        &base_toml(),
        &[("WXPAY_NOTIFY_URL", "https://shop.example.com/n?a=b")],
    )
    .unwrap_err();
    assert!(errors
        .iter()
        .any(|e| e.key() == Some("notify_url") && e.to_string().contains("query string")));
    let errors = load(&d.0, &base_toml(), &[("WXPAY_QUERY_AFTER_SECS", "soon")]).unwrap_err();
    assert!(matches!(&errors[0], ConfigError::Env { var, .. } if var == "WXPAY_QUERY_AFTER_SECS"));
}

#[test]
fn demo_mode_allows_plain_http_and_no_catalog_file() {
    let d = setup();
    let text = with("notify_url", Some("\"http://127.0.0.1:8080/wxpay/notify\""))
        .replace("https://shop.example.com\"", "http://127.0.0.1:8080\"")
        .replace(
            "pay_directory_registered = \"https://shop.example.com/pay/\"\n",
            "",
        )
        + "demo = true\nsimulator_base_url = \"http://127.0.0.1:9999\"\n";
    let text = text.replace("catalog_file = \"catalog.toml\"\n", "");
    let c = load(&d.0, &text, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(c.demo);
    assert_eq!(c.http.orders.query_after_secs, 5, "demo default");
}

#[test]
fn a_page_outside_the_registered_directory_is_a_start_up_warning() {
    let d = setup();
    let text = with(
        "pay_directory_registered",
        Some("\"https://shop.example.com/shop/pay/\""),
    );
    let c = load(&d.0, &text, &[]).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("does not match the registered"));
    assert!(c.warnings[0].contains("iOS"));
}

#[test]
fn raw_config_round_trips_through_toml() {
    let raw = RawConfig::parse(&base_toml(), "t", &|_| None).unwrap();
    let again = RawConfig::parse(&raw.to_toml(), "t", &|_| None).unwrap();
    assert_eq!(raw, again);

    // With merchants: a key appended to the written file stays top-level.
    let mut with = raw.clone();
    with.merchants = vec![
        wxpay_combine::combine::settings::MerchantEntry {
            mchid: "1900000110".into(),
            merchant_serial_no: Some("5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into()),
            apiv3_key_file: Some("m/apiv3 \"key\".txt".into()),
            platform_certificates: Some(false),
            ..Default::default()
        },
        wxpay_combine::combine::settings::MerchantEntry {
            mchid: "1900000111".into(),
            ..Default::default()
        },
    ];
    let mut text = with.to_toml();
    assert_eq!(RawConfig::parse(&text, "t", &|_| None).unwrap(), with);
    text.push_str("max_attempts = 4\n");
    let appended = RawConfig::parse(&text, "t", &|_| None).unwrap();
    assert_eq!(appended.max_attempts, Some(4));
    assert_eq!(appended.merchants, with.merchants);
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wxpay.example.toml")
}

#[test]
fn the_committed_example_parses_including_every_commented_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    RawConfig::parse(&text, "wxpay.example.toml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    // Uncomment every `# key = value` line: each documented key must exist.
    // `# [[merchants]]` too: the list is the file's last section, so its
    // keys land in its entries.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some("[[merchants]]") => "[[merchants]]".to_string(),
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let raw =
        RawConfig::parse(&uncommented, "uncommented", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        raw.merchant_cert_file.is_some() && raw.max_attempts.is_some() && raw.log_format.is_some()
    );
    assert_eq!(raw.merchants.len(), 2);
    assert!(
        raw.merchants[0].apiv3_key_file.is_some() && raw.merchants[1].apiv3_key_file.is_none(),
        "{:?}",
        raw.merchants
    );
}

#[test]
fn the_committed_example_loads_unchanged_but_for_its_absent_key_files() {
    // The example's key files live under /etc/wxpay, which a test machine
    // does not have: those keys (and only those) must be reported, so every
    // other value of the example is valid as written.
    if Path::new("/etc/wxpay").exists() {
        return;
    }
    let errors = Config::load_with_env(&example_path(), &|_| None)
        .expect_err("the key files are absent")
        .0;
    let mut keys: Vec<_> = errors.iter().filter_map(|e| e.key()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "apiv3_key_file",
            "app_secret_file",
            "merchant_private_key_file",
            "session_secret_file",
            "wechatpay_public_key_file",
        ],
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.to_string().contains("/etc/wxpay/")),
        "{errors:?}"
    );
}
