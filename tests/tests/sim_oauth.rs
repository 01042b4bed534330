//! OAuth2 openid over HTTP: the authorize redirect, single-use five-minute
//! codes, per-appid openids, and the documented error codes.

use serde_json::Value;
use wxpay_combine_tests::sim::{http, prepay_body, unique, Reply, TestSim};

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn authorize(t: &TestSim, query: &str) -> Reply {
    wxpay_combine_tests::sim::into_reply(
        http()
            .get(format!("{}/connect/oauth2/authorize?{query}", t.base()))
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn auth_query(appid: &str, redirect: &str, extra: &str) -> String {
    format!(
        "appid={appid}&redirect_uri={}&response_type=code&scope=snsapi_base&state=st4te{extra}",
        enc(redirect)
    )
}

/// The code from a 302, checking the rest of the Location.
fn code_of(r: &Reply, redirect: &str) -> String {
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = url::Url::parse(r.header("location").unwrap()).unwrap();
    assert!(loc.as_str().starts_with(redirect), "{loc}");
    let pairs: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
    assert!(pairs.contains(&("state".into(), "st4te".into())), "{loc}");
    pairs.into_iter().find(|(k, _)| k == "code").unwrap().1
}

async fn exchange(t: &TestSim, appid: &str, secret: &str, code: &str) -> Value {
    http()
        .get(format!(
            "{}/sns/oauth2/access_token?appid={appid}&secret={secret}&code={code}&grant_type=authorization_code",
            t.base()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn error_code(r: &Reply) -> String {
    let text = r.text();
    let start = text.find("data-errcode=\"").expect("an error page") + 14;
    text[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn codes_openids_and_errors() {
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("sim.toml"),
        "[oauth]\ndomains = [\"127.0.0.1\", \"shop.test\"]\n[[merchant]]\nmchid = \"1900000301\"\n[[merchant]]\nmchid = \"1900000302\"\n",
    )
    .unwrap();
    let t = TestSim::start_with(|o| o.config = Some(cfg.path().join("sim.toml"))).await;
    let m = t.creds().clone();
    let m2 = t.sim.merchants()[1].clone();
    let back = "http://127.0.0.1:8080/pay/openid?from=cart";

    // The demo user, silently redirected with a code; the code gives the openid once.
    let code = code_of(&authorize(&t, &auth_query(&m.appid, back, "")).await, back);
    let tok = exchange(&t, &m.appid, &m.app_secret, &code).await;
    assert_eq!(tok["openid"], m.demo_openid.as_str());
    assert_eq!(tok["expires_in"], 7200);
    assert_eq!(tok["scope"], "snsapi_base");
    assert!(tok["access_token"].as_str().unwrap().len() >= 32);
    let reused = exchange(&t, &m.appid, &m.app_secret, &code).await;
    assert_eq!(reused["errcode"], 40029);
    assert!(reused["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("invalid code"));

    // Expiry after five minutes.
    let code = code_of(&authorize(&t, &auth_query(&m.appid, back, "")).await, back);
    t.sim.set_clock_offset(301).await.unwrap();
    assert_eq!(
        exchange(&t, &m.appid, &m.app_secret, &code).await["errcode"],
        40029
    );
    t.sim.set_clock_offset(0).await.unwrap();

    // A chosen user: stable per appid, different across appids, accepted by prepay.
    let alice = |appid: &str| auth_query(appid, "https://shop.test/cb", "&user=alice");
    let c1 = code_of(
        &authorize(&t, &alice(&m.appid)).await,
        "https://shop.test/cb",
    );
    let a1 = exchange(&t, &m.appid, &m.app_secret, &c1).await["openid"]
        .as_str()
        .unwrap()
        .to_string();
    let c1b = code_of(
        &authorize(&t, &alice(&m.appid)).await,
        "https://shop.test/cb",
    );
    assert_eq!(
        exchange(&t, &m.appid, &m.app_secret, &c1b).await["openid"],
        a1.as_str()
    );
    assert_ne!(a1, m.demo_openid);
    let c2 = code_of(
        &authorize(&t, &alice(&m2.appid)).await,
        "https://shop.test/cb",
    );
    let a2 = exchange(&t, &m2.appid, &m2.app_secret, &c2).await["openid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a1, a2, "openids differ between appids");
    let c = t.client();
    let mut body = prepay_body(&m, &unique("O"), "http://127.0.0.1:9/n");
    body["combine_payer_info"]["openid"] = a1.clone().into();
    assert_eq!(c.prepay(&body).await.status, 200);
    body["combine_out_trade_no"] = unique("O").into();
    body["sub_orders"][0]["out_trade_no"] = unique("S").into();
    body["sub_orders"][1]["out_trade_no"] = unique("S").into();
    body["combine_payer_info"]["openid"] = a2.into();
    assert_eq!(
        c.prepay(&body).await.code(),
        "OPENID_MISMATCH",
        "the other appid's openid"
    );

    // Exchange errors.
    let code = code_of(&authorize(&t, &auth_query(&m.appid, back, "")).await, back);
    assert_eq!(
        exchange(&t, &m.appid, "wrongsecret", &code).await["errcode"],
        40125
    );
    assert_eq!(
        exchange(&t, &m2.appid, &m2.app_secret, &code).await["errcode"],
        40029,
        "a code is bound to its appid"
    );
    assert_eq!(
        exchange(&t, "wx0000000000000000", "x", &code).await["errcode"],
        40013
    );
    assert_eq!(
        exchange(&t, &m.appid, &m.app_secret, "").await["errcode"],
        41008
    );
    let grant: Value = http()
        .get(format!("{}/sns/oauth2/access_token?appid={}&secret={}&code={code}&grant_type=client_credential", t.base(), m.appid, m.app_secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grant["errcode"], 40002);

    // Authorize errors: domain (ports ignored), parameter order, missing or bad values.
    let ok_port = authorize(&t, &auth_query(&m.appid, "http://127.0.0.1:9999/x", "")).await;
    assert_eq!(ok_port.status, 302);
    for (query, want) in [
        (
            auth_query(&m.appid, "http://localhost:8080/cb", ""),
            "10003",
        ),
        (auth_query(&m.appid, "http://evil.example/cb", ""), "10003"),
        (
            auth_query(&m.appid, "http://shop.test.evil.example/cb", ""),
            "10003",
        ),
        (
            format!(
                "redirect_uri={}&appid={}&response_type=code&scope=snsapi_base&state=s",
                enc(back),
                m.appid
            ),
            "10001",
        ),
        (
            format!(
                "redirect_uri={}&response_type=code&scope=snsapi_base",
                enc(back)
            ),
            "10012",
        ),
        (
            format!("appid={}&response_type=code&scope=snsapi_base", m.appid),
            "10011",
        ),
        (
            format!(
                "appid={}&redirect_uri={}&response_type=code",
                m.appid,
                enc(back)
            ),
            "10010",
        ),
        (
            format!(
                "appid={}&redirect_uri={}&response_type=code&scope=snsapi_login",
                m.appid,
                enc(back)
            ),
            "10005",
        ),
        (
            format!(
                "appid={}&redirect_uri={}&response_type=token&scope=snsapi_base",
                m.appid,
                enc(back)
            ),
            "10001",
        ),
    ] {
        let r = authorize(&t, &query).await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(error_code(&r), want, "{query}");
    }
    t.sim.shutdown().await;
}
