//! Browser tests (wasm-bindgen-test in headless Chromium, run by
//! `cargo xtask wasm-test`). A fake `WeixinJSBridge`, user agent, document
//! listeners and `fetch` are controlled from the JS below. Tests run one at a
//! time (wasm-bindgen-test's default) and each starts from `reset()`.

use super::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(module = "/js/support.js")]
extern "C" {
    #[wasm_bindgen(js_name = PayError)]
    type PayErrorClass;
    #[wasm_bindgen(js_name = isWeChat)]
    fn is_wechat() -> bool;
    #[wasm_bindgen(js_name = weChatVersion)]
    fn wechat_version() -> JsValue;
    /// The package's `checkout(options)` is `checkout(options, requestPayment)`.
    #[wasm_bindgen(js_name = checkout)]
    fn checkout_with(options: JsValue, pay: &JsValue) -> JsValue;
}

thread_local! {
    /// `requestPayment` as a JS function, as index.js passes it.
    static PAY: JsValue =
        wasm_bindgen::closure::Closure::<dyn Fn(JsValue, JsValue) -> JsValue>::new(request_payment)
            .into_js_value();
}

fn checkout(options: JsValue) -> JsValue {
    PAY.with(|pay| checkout_with(options, pay))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn web_timeout(f: &js_sys::Function, ms: i32) -> JsValue;
}

#[wasm_bindgen(inline_js = r#"
const W = window;
const REAL_FETCH = W.fetch;
const WECHAT_UA =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 " +
  "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";

export function setUserAgent(ua) {
  if (ua === undefined) delete navigator.userAgent;
  else Object.defineProperty(navigator, "userAgent", { value: ua, configurable: true });
}
export const inWeChat = () => setUserAgent(WECHAT_UA);

export function reset() {
  setUserAgent(undefined);
  delete W.WeixinJSBridge;
  delete W.__wxjs_environment;
  if (W.__home) history.replaceState(null, "", W.__home);
  for (const k of ["addEventListener", "removeEventListener", "attachEvent", "detachEvent"]) {
    delete document[k];
  }
  W.fetch = REAL_FETCH;
  W.__calls = [];
  W.__fetches = [];
}

// answer: "ok" | "cancel" | "fail" | "never" | "throw" | "weird", or a whole
// err_msg (with a ":", or after "="); `key` is where the answer puts it.
export function installBridge(answer, delayMs = 5, key = "err_msg") {
  W.WeixinJSBridge = {
    invoke(name, params, cb) {
      W.__calls.push({ name, params: { ...params }, keys: Object.keys(params).join(",") });
      if (answer === "throw") throw new Error("boom");
      if (answer === "never") return;
      const res = {
        [key]: answer.startsWith("=")
          ? answer.slice(1)
          : answer.includes(":")
          ? answer
          : "get_brand_wcpay_request:" + (answer === "weird" ? "what" : answer),
      };
      if (answer === "fail") res.err_desc = "当前页面的URL未注册";
      setTimeout(() => cb(res), delayMs);
    },
  };
}
export function inWebView(how) {
  if (how === "ua") setUserAgent(WECHAT_UA + " miniProgram/wx2421b1c4370ec43b");
  else W.__wxjs_environment = "miniprogram";
}
// Moves this page to `path` (same origin; reset() moves it back).
export function moveTo(path) {
  W.__home ||= location.pathname + location.search;
  history.replaceState(null, "", path);
}
export const origin = () => location.origin;
export const calls = () => W.__calls;

export function fireReady() {
  document.dispatchEvent(new Event("WeixinJSBridgeReady"));
}

// Counts WeixinJSBridgeReady listeners on document.
export function spyListeners() {
  const spy = { added: 0, removed: 0, active: new Set() };
  const proto = EventTarget.prototype;
  document.addEventListener = function (t, f, o) {
    if (t === "WeixinJSBridgeReady") { spy.added++; spy.active.add(f); }
    return proto.addEventListener.call(this, t, f, o);
  };
  document.removeEventListener = function (t, f, o) {
    if (t === "WeixinJSBridgeReady") { spy.removed++; spy.active.delete(f); }
    return proto.removeEventListener.call(this, t, f, o);
  };
  W.__spy = spy;
}
export const listeners = () => [W.__spy.added, W.__spy.removed, W.__spy.active.size];

// An old browser's document: attachEvent / detachEvent only.
export function legacyDocument() {
  const handlers = {};
  document.addEventListener = undefined;
  document.attachEvent = (name, f) => { (handlers[name] ||= []).push(f); };
  document.detachEvent = (name, f) => {
    handlers[name] = (handlers[name] || []).filter((g) => g !== f);
  };
  W.__legacy = handlers;
}
export const legacyListeners = () =>
  Object.keys(W.__legacy).sort().map((k) => k + ":" + W.__legacy[k].length).join(",");
export function fireLegacy(name) {
  for (const f of [...(W.__legacy[name] || [])]) f();
}

export const validParams = () => ({
  appId: "wx2421b1c4370ec43b",
  timeStamp: "1700000000",
  nonceStr: "e61463f8efa94090b1f366cccfbbb444",
  package: "prepay_id=up_wx21201855730335ac86f8c43d1889123400",
  signType: "RSA",
  paySign: "oR9d8PuhnIc+YZ8cBHFCwfgpaK9gd7vaRvkYD7rthRAZ/X+QBhcCYL21N7cHCTUxbQ==",
});
// A valid object with `key` set to `value` (deleted when value is undefined),
// or renamed to `rename`.
export function paramsWith(key, value, rename) {
  const p = validParams();
  if (rename) { p[rename] = p[key]; delete p[key]; }
  else if (value === undefined) delete p[key];
  else p[key] = value;
  return p;
}
export const numberTimeStamp = () => ({ ...validParams(), timeStamp: 1700000000 });

// A fake merchant server behind fetch: POST pay-params answers `post`
// ({ status, body }); each GET answers the next of `states` (the last repeats).
export function fakeServer(post, states) {
  let i = 0;
  W.fetch = async (url, init) => {
    W.__fetches.push({ url, method: init.method, credentials: init.credentials, cache: init.cache });
    W.__headers = init.headers;
    W.__signals = (W.__signals || []).concat(init.signal);
    if (init.method === "POST") {
      return new Response(JSON.stringify(post.body), { status: post.status });
    }
    const state = states[Math.min(i++, states.length - 1)];
    return new Response(
      JSON.stringify({ combine_out_trade_no: "C123", state, total_amount: 300, sub_orders: [] }),
      { status: 200 },
    );
  };
}
export const fetches = () => W.__fetches.map((f) => [f.method, f.url, f.credentials, f.cache].join(" "));
export const payParamsBody = () => ({ combine_out_trade_no: "C123", pay_params: validParams() });
export const lastHeaders = () => JSON.stringify(W.__headers);
// A server that never answers (its requests are only aborted).
export function silentServer() {
  W.__signals = [];
  W.fetch = (url, init) => {
    W.__fetches.push({ url, method: init.method, credentials: init.credentials, cache: init.cache });
    W.__signals.push(init.signal);
    return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
  };
}
export const abortedFetches = () => W.__signals.filter((s) => s && s.aborted).length;
// Hooks for checkout: getPayParams answers the valid parameters; each
// getOrderState answers the next of `states`; both record their calls.
export function hookOptions(states, failParams) {
  let i = 0;
  W.__hooked = [];
  return {
    order: "H-1",
    confirmTimeoutMs: 5000,
    getPayParams: (order) => {
      W.__hooked.push("params " + order);
      if (failParams) throw new Error("token expired");
      return validParams();
    },
    getOrderState: async (order) => {
      W.__hooked.push("state " + order);
      return { state: states[Math.min(i++, states.length - 1)], by: "hook" };
    },
  };
}
export const hooked = () => W.__hooked.join(",");
export const abortController = () => new AbortController();
"#)]
extern "C" {
    #[wasm_bindgen(js_name = setUserAgent)]
    fn set_user_agent(ua: &str);
    #[wasm_bindgen(js_name = inWeChat)]
    fn in_wechat();
    fn reset();
    #[wasm_bindgen(js_name = installBridge)]
    fn install_bridge(answer: &str, delay_ms: u32);
    fn calls() -> js_sys::Array;
    #[wasm_bindgen(js_name = fireReady)]
    fn fire_ready();
    #[wasm_bindgen(js_name = spyListeners)]
    fn spy_listeners();
    /// [added, removed, active]
    fn listeners() -> Vec<u32>;
    #[wasm_bindgen(js_name = legacyDocument)]
    fn legacy_document();
    #[wasm_bindgen(js_name = legacyListeners)]
    fn legacy_listeners() -> String;
    #[wasm_bindgen(js_name = fireLegacy)]
    fn fire_legacy(name: &str);
    #[wasm_bindgen(js_name = validParams)]
    fn valid_params() -> JsValue;
    #[wasm_bindgen(js_name = paramsWith)]
    fn params_with(key: &str, value: JsValue, rename: Option<&str>) -> JsValue;
    #[wasm_bindgen(js_name = numberTimeStamp)]
    fn number_time_stamp() -> JsValue;
    #[wasm_bindgen(js_name = fakeServer)]
    fn fake_server(post: JsValue, states: Vec<String>);
    fn fetches() -> Vec<String>;
    #[wasm_bindgen(js_name = payParamsBody)]
    fn pay_params_body() -> JsValue;
    #[wasm_bindgen(js_name = installBridge)]
    fn install_bridge_keyed(answer: &str, delay_ms: u32, key: &str);
    #[wasm_bindgen(js_name = inWebView)]
    fn in_web_view(how: &str);
    #[wasm_bindgen(js_name = moveTo)]
    fn move_to(path: &str);
    fn origin() -> String;
    #[wasm_bindgen(js_name = lastHeaders)]
    fn last_headers() -> String;
    #[wasm_bindgen(js_name = silentServer)]
    fn silent_server();
    #[wasm_bindgen(js_name = abortedFetches)]
    fn aborted_fetches() -> u32;
    #[wasm_bindgen(js_name = hookOptions)]
    fn hook_options(states: Vec<String>, fail_params: bool) -> JsValue;
    fn hooked() -> String;
    #[wasm_bindgen(js_name = abortController)]
    fn abort_controller() -> JsValue;
}

async fn settle(promise: JsValue) -> Result<JsValue, JsValue> {
    JsFuture::from(js_sys::Promise::unchecked_from_js(promise)).await
}

fn opts(key: &str, ms: f64) -> JsValue {
    let o = new_object();
    set(&o, key, &JsValue::from_f64(ms));
    o
}

fn text(v: &JsValue, key: &str) -> String {
    get(v, key).as_string().unwrap_or_default()
}

/// Checks `e` is a real PayError with `code`, and returns it.
#[track_caller]
fn pay_error_with(e: JsValue, code: &str) -> JsValue {
    assert!(e.is_instance_of::<js_sys::Error>(), "not an Error: {e:?}");
    assert!(e.is_instance_of::<PayErrorClass>(), "not a PayError: {e:?}");
    assert_eq!(text(&e, "name"), "PayError");
    assert_eq!(text(&e, "code"), code, "message: {}", text(&e, "message"));
    assert!(!text(&e, "message").is_empty());
    e
}

async fn rejected(promise: JsValue, code: &str) -> JsValue {
    match settle(promise).await {
        Ok(v) => panic!("expected a {code} rejection, got {v:?}"),
        Err(e) => pay_error_with(e, code),
    }
}

/// Waits `ms` on the test harness's own executor (the crate's `sleep` only
/// runs inside the crate's tasks).
async fn pause(ms: i32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = web_timeout(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

#[wasm_bindgen_test]
fn user_agent_detection() {
    reset();
    in_wechat();
    assert!(is_wechat());
    assert_eq!(wechat_version().as_string().as_deref(), Some("8.0.47"));
    assert_eq!(environment(), "wechat");
    set_user_agent("Mozilla/5.0 (Linux; Android 10) Mobile Safari/537.36 MicroMessenger/7.0.20.1781(0x27001439) Process/tools");
    assert_eq!(wechat_version().as_string().as_deref(), Some("7.0.20.1781"));
    set_user_agent("Mozilla/5.0 micromessenger/6.5.2");
    assert!(is_wechat());
    assert_eq!(wechat_version().as_string().as_deref(), Some("6.5.2"));
    set_user_agent("Mozilla/5.0 MicroMessenger");
    assert!(is_wechat());
    assert!(wechat_version().is_undefined());
    set_user_agent("Mozilla/5.0 MicroMessenger/.1");
    assert!(wechat_version().is_undefined());
    set_user_agent("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0 Safari/537.36");
    assert!(!is_wechat());
    assert!(wechat_version().is_undefined());
    assert_eq!(environment(), "other");
    reset();
}

#[wasm_bindgen_test]
fn web_view_detection() {
    for how in ["ua", "variable"] {
        reset();
        in_wechat();
        in_web_view(how);
        assert_eq!(environment(), "miniprogram-webview", "{how}");
        assert!(is_wechat(), "a web-view is still WeChat");
    }
    reset();
}

#[wasm_bindgen_test]
async fn web_view_cannot_pay() {
    for how in ["ua", "variable"] {
        reset();
        in_wechat();
        in_web_view(how);
        install_bridge("ok", 5);
        let e = rejected(
            request_payment(valid_params(), JsValue::UNDEFINED),
            "not_wechat",
        )
        .await;
        assert!(text(&e, "message").contains("mini program"), "{how}");
        let hint = text(&e, "hint");
        assert!(hint.contains("wx.requestPayment"), "{how}: {hint}");
        rejected(ready(JsValue::UNDEFINED), "not_wechat").await;
        assert_eq!(calls().length(), 0, "{how}: the bridge was not invoked");
    }
    reset();
}

#[wasm_bindgen_test]
async fn web_view_known_only_once_ready() {
    // WeChat may set __wxjs_environment only when the bridge is ready.
    reset();
    in_wechat();
    let p = request_payment(valid_params(), JsValue::UNDEFINED);
    pause(10).await;
    install_bridge("ok", 5);
    in_web_view("variable");
    fire_ready();
    rejected(p, "not_wechat").await;
    assert_eq!(calls().length(), 0);
    reset();
}

#[wasm_bindgen_test]
async fn ready_resolves_at_once_when_bridge_present() {
    reset();
    install_bridge("ok", 5);
    // Even outside WeChat's user agent: the bridge is what counts.
    assert!(settle(ready(JsValue::UNDEFINED)).await.is_ok());
    reset();
}

#[wasm_bindgen_test]
async fn ready_waits_for_bridge_injected_later_and_removes_listener() {
    reset();
    in_wechat();
    spy_listeners();
    let p = ready(JsValue::UNDEFINED);
    assert_eq!(listeners(), [1, 0, 1]);
    pause(20).await;
    install_bridge("ok", 5);
    fire_ready();
    assert!(settle(p).await.is_ok());
    assert_eq!(listeners(), [1, 1, 0]);
    reset();
}

#[wasm_bindgen_test]
async fn concurrent_ready_calls_share_one_wait() {
    reset();
    in_wechat();
    spy_listeners();
    let ps = [
        ready(JsValue::UNDEFINED),
        ready(opts("timeoutMs", 5000.0)),
        ready(JsValue::UNDEFINED),
    ];
    assert_eq!(listeners(), [1, 0, 1], "one listener for all callers");
    install_bridge("ok", 5);
    fire_ready();
    for p in ps {
        assert!(settle(p).await.is_ok());
    }
    assert_eq!(listeners(), [1, 1, 0]);
    reset();
}

#[wasm_bindgen_test]
async fn ready_uses_attach_event_where_only_that_exists() {
    reset();
    in_wechat();
    legacy_document();
    let p = ready(JsValue::UNDEFINED);
    assert_eq!(
        legacy_listeners(),
        "WeixinJSBridgeReady:1,onWeixinJSBridgeReady:1"
    );
    pause(10).await;
    install_bridge("ok", 5);
    fire_legacy("onWeixinJSBridgeReady");
    assert!(settle(p).await.is_ok());
    assert_eq!(
        legacy_listeners(),
        "WeixinJSBridgeReady:0,onWeixinJSBridgeReady:0"
    );
    reset();
}

#[wasm_bindgen_test]
async fn ready_times_out_and_removes_listener() {
    reset();
    in_wechat();
    spy_listeners();
    let e = rejected(ready(opts("timeoutMs", 50.0)), "timeout").await;
    assert!(text(&e, "message").contains("WeixinJSBridge"));
    assert_eq!(listeners(), [1, 1, 0]);
    reset();
}

#[wasm_bindgen_test]
async fn listener_stays_until_the_last_waiter_leaves() {
    reset();
    in_wechat();
    spy_listeners();
    let short = ready(opts("timeoutMs", 30.0));
    let long = ready(opts("timeoutMs", 5000.0));
    rejected(short, "timeout").await;
    assert_eq!(listeners(), [1, 0, 1], "the long waiter still listens");
    install_bridge("ok", 5);
    fire_ready();
    assert!(settle(long).await.is_ok());
    assert_eq!(listeners(), [1, 1, 0]);
    reset();
}

#[wasm_bindgen_test]
async fn not_in_wechat() {
    reset();
    let e = rejected(ready(JsValue::UNDEFINED), "not_wechat").await;
    assert!(text(&e, "message").contains("inside WeChat's built-in browser"));
    rejected(
        request_payment(valid_params(), JsValue::UNDEFINED),
        "not_wechat",
    )
    .await;
    assert_eq!(calls().length(), 0);
    reset();
}

#[wasm_bindgen_test]
async fn pay_ok_passes_exact_params() {
    reset();
    install_bridge("ok", 5);
    let r = settle(request_payment(valid_params(), JsValue::UNDEFINED))
        .await
        .expect("ok");
    assert_eq!(text(&r, "status"), "ok");
    assert_eq!(text(&r, "errMsg"), "get_brand_wcpay_request:ok");
    assert_eq!(calls().length(), 1);
    let call = calls().get(0);
    assert_eq!(text(&call, "name"), "getBrandWCPayRequest");
    assert_eq!(
        text(&call, "keys"),
        "appId,timeStamp,nonceStr,package,signType,paySign"
    );
    assert_eq!(text(&get(&call, "params"), "timeStamp"), "1700000000");
    reset();
}

#[wasm_bindgen_test]
async fn pay_waits_for_a_late_bridge() {
    reset();
    in_wechat();
    let p = request_payment(valid_params(), JsValue::UNDEFINED);
    pause(20).await;
    assert_eq!(calls().length(), 0);
    install_bridge("ok", 5);
    fire_ready();
    assert!(settle(p).await.is_ok());
    assert_eq!(calls().length(), 1);
    reset();
}

#[wasm_bindgen_test]
async fn pay_cancel() {
    reset();
    install_bridge("cancel", 5);
    let e = rejected(
        request_payment(valid_params(), JsValue::UNDEFINED),
        "cancel",
    )
    .await;
    assert_eq!(text(&e, "errMsg"), "get_brand_wcpay_request:cancel");
    assert!(get(&e, "hint").is_undefined());
    reset();
}

#[wasm_bindgen_test]
async fn pay_fail_carries_hint() {
    reset();
    install_bridge("fail", 5);
    let e = rejected(request_payment(valid_params(), JsValue::UNDEFINED), "fail").await;
    assert_eq!(text(&e, "errMsg"), "get_brand_wcpay_request:fail");
    let hint = text(&e, "hint");
    // The signature causes first, then the pay directory, openid, permission.
    let mut at = 0;
    for needle in [
        "支付验证签名失败",
        "paySign",
        "appId",
        "changed after signing",
        "pay directory",
        "支付授权目录",
        "iOS",
        "openid",
        "JSAPI payment permission",
    ] {
        let found = hint[at..].find(needle).map(|i| i + at);
        assert!(
            found.is_some(),
            "hint lacks {needle} after byte {at}: {hint}"
        );
        at = found.unwrap_or(at);
    }
    let message = text(&e, "message");
    assert!(message.contains("当前页面的URL未注册"), "{message}");
    assert!(message.contains(&hint));
    reset();
}

#[wasm_bindgen_test]
async fn fail_variants_and_prefix_matching() {
    // (answer, expected code, hint needle)
    let cases = [
        (
            "get_brand_wcpay_request:fail_nopermission",
            "fail",
            "支付验证签名失败",
        ),
        (
            "get_brand_wcpay_request:fail:当前页面的URL未注册",
            "fail",
            "支付授权目录",
        ),
        ("system:access_denied", "fail", "access_denied"),
        ("system:function_not_exist", "fail", "function_not_exist"),
        // Splitting at the last colon would read these as ok / cancel.
        ("weird:ok", "bridge_error", ""),
        ("get_brand_wcpay_request:x:cancel", "bridge_error", ""),
        ("ok", "bridge_error", ""),
        ("", "bridge_error", ""),
    ];
    for (answer, code, needle) in cases {
        reset();
        install_bridge(&format!("={answer}"), 5);
        let e = rejected(request_payment(valid_params(), JsValue::UNDEFINED), code).await;
        let hint = text(&e, "hint");
        if needle.is_empty() {
            assert!(get(&e, "hint").is_undefined(), "{answer}: {hint}");
        } else {
            assert!(hint.contains(needle), "{answer}: {hint}");
        }
        assert_eq!(text(&e, "errMsg"), answer);
    }
    reset();
}

#[wasm_bindgen_test]
async fn camel_case_err_msg() {
    reset();
    install_bridge_keyed("ok", 5, "errMsg");
    let r = settle(request_payment(valid_params(), JsValue::UNDEFINED))
        .await
        .expect("ok");
    assert_eq!(text(&r, "errMsg"), "get_brand_wcpay_request:ok");
    install_bridge_keyed("cancel", 5, "errMsg");
    rejected(
        request_payment(valid_params(), JsValue::UNDEFINED),
        "cancel",
    )
    .await;
    install_bridge_keyed("system:access_denied", 5, "errMsg");
    let e = rejected(request_payment(valid_params(), JsValue::UNDEFINED), "fail").await;
    assert!(text(&e, "hint").contains("access_denied"));
    reset();
}

fn pay_dir_options(dirs: &[String], landing: Option<&str>) -> JsValue {
    let o = new_object();
    let list = js_sys::Array::new();
    for d in dirs {
        list.push(&JsValue::from_str(d));
    }
    set(&o, "payDirectory", &list);
    if let Some(l) = landing {
        set(&o, "landingUrl", &JsValue::from_str(l));
    }
    o
}

#[wasm_bindgen_test]
async fn pay_directory_is_checked_before_the_cashier() {
    reset();
    install_bridge("ok", 5);
    let o = origin();
    move_to("/pay/app/checkout.html?x=1#top");
    let dir = |p: &str| format!("{o}{p}");
    // Matches: the page's directory exactly, or the bare domain.
    for ok in [
        vec![dir("/pay/app/")],
        vec![dir("/")],
        vec![dir("/x/"), dir("/pay/app/")],
    ] {
        let r = settle(request_payment(valid_params(), pay_dir_options(&ok, None))).await;
        assert!(r.is_ok(), "{ok:?}: {r:?}");
    }
    assert_eq!(calls().length(), 3);
    // Mismatches: a parent, a child, another case, not a directory, too many.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![dir("/pay/")],
            "/pay/app/ is not a registered pay directory",
        ),
        (
            vec![dir("/pay/app/sub/")],
            "is not a registered pay directory",
        ),
        (vec![dir("/Pay/app/")], "is not a registered pay directory"),
        (
            vec![dir("/pay/app")],
            "must be an absolute http(s) URL ending in /",
        ),
        (
            vec!["pay/app/".into()],
            "must be an absolute http(s) URL ending in /",
        ),
        ((0..6).map(|i| dir(&format!("/{i}/"))).collect(), "1 to 5"),
    ];
    for (dirs, needle) in cases {
        let e = rejected(
            request_payment(valid_params(), pay_dir_options(&dirs, None)),
            "invalid_params",
        )
        .await;
        let message = text(&e, "message");
        assert!(message.contains(needle), "{dirs:?}: {message}");
    }
    assert_eq!(calls().length(), 3, "no cashier for a mismatch");
    // On iOS the landing URL counts too.
    in_wechat();
    let landing = dir("/pay/index.html");
    let e = rejected(
        request_payment(
            valid_params(),
            pay_dir_options(&[dir("/pay/app/")], Some(&landing)),
        ),
        "invalid_params",
    )
    .await;
    let message = text(&e, "message");
    assert!(
        message.contains("iOS") && message.contains(&landing),
        "{message}"
    );
    let both = [dir("/pay/app/"), dir("/pay/")];
    assert!(settle(request_payment(
        valid_params(),
        pay_dir_options(&both, Some(&landing))
    ))
    .await
    .is_ok());
    // Elsewhere only this page's URL.
    set_user_agent("Mozilla/5.0 (Linux; Android 13) MicroMessenger/8.0.47");
    assert!(settle(request_payment(
        valid_params(),
        pay_dir_options(&[dir("/pay/app/")], Some(&landing))
    ))
    .await
    .is_ok());
    reset();
}

#[wasm_bindgen_test]
async fn bridge_that_never_answers_times_out_and_frees_the_lock() {
    reset();
    install_bridge("never", 5);
    let e = rejected(
        request_payment(valid_params(), opts("timeoutMs", 50.0)),
        "timeout",
    )
    .await;
    assert!(text(&e, "message").contains("did not answer"));
    install_bridge("ok", 5);
    assert!(settle(request_payment(valid_params(), JsValue::UNDEFINED))
        .await
        .is_ok());
    reset();
}

#[wasm_bindgen_test]
async fn bridge_errors() {
    reset();
    install_bridge("throw", 5);
    rejected(
        request_payment(valid_params(), JsValue::UNDEFINED),
        "bridge_error",
    )
    .await;
    install_bridge("weird", 5);
    let e = rejected(
        request_payment(valid_params(), JsValue::UNDEFINED),
        "bridge_error",
    )
    .await;
    assert_eq!(text(&e, "errMsg"), "get_brand_wcpay_request:what");
    reset();
}

#[wasm_bindgen_test]
async fn invalid_params_are_rejected_before_invoking() {
    reset();
    install_bridge("ok", 5);
    let s = |v: &str| JsValue::from_str(v);
    let cases: Vec<(JsValue, &str)> = vec![
        (
            JsValue::from_str("prepay_id=x"),
            "params must be the object",
        ),
        (JsValue::NULL, "params must be the object"),
        (
            params_with("timeStamp", JsValue::UNDEFINED, Some("timestamp")),
            "params.timestamp: keys are case-sensitive",
        ),
        (
            params_with("timeStamp", JsValue::UNDEFINED, Some("timestamp")),
            "use timeStamp",
        ),
        (
            params_with("paySign", JsValue::UNDEFINED, Some("paysign")),
            "use paySign",
        ),
        (number_time_stamp(), "not a number"),
        (
            params_with("timeStamp", s("1700000000000"), None),
            "milliseconds",
        ),
        (params_with("timeStamp", s("170000000"), None), "10-digit"),
        (params_with("timeStamp", s("17000000x0"), None), "10-digit"),
        (
            params_with("paySign", JsValue::UNDEFINED, None),
            "params.paySign is missing",
        ),
        (
            params_with("nonceStr", s(&"n".repeat(33)), None),
            "nonceStr",
        ),
        (params_with("nonceStr", s(""), None), "nonceStr"),
        (
            params_with("package", s("up_wx2120185573"), None),
            "prepay_id=",
        ),
        (params_with("package", s("prepay_id="), None), "prepay_id="),
        (params_with("signType", s("MD5"), None), "RSA"),
        (params_with("paySign", s("not base64!"), None), "base64"),
        (params_with("paySign", s("abc"), None), "base64"),
        (params_with("appId", s(""), None), "appId"),
        (
            params_with("appId", JsValue::from_f64(1.0), None),
            "params.appId must be a string",
        ),
        (
            params_with("total_fee", s("1"), None),
            "unexpected key params.total_fee",
        ),
    ];
    for (params, needle) in cases {
        let e = rejected(
            request_payment(params, JsValue::UNDEFINED),
            "invalid_params",
        )
        .await;
        let message = text(&e, "message");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert_eq!(calls().length(), 0, "the bridge was never invoked");
    reset();
}

#[wasm_bindgen_test]
async fn second_concurrent_payment_is_refused() {
    reset();
    install_bridge("ok", 30);
    let first = request_payment(valid_params(), JsValue::UNDEFINED);
    let second = request_payment(valid_params(), JsValue::UNDEFINED);
    rejected(second, "busy").await;
    assert!(settle(first).await.is_ok());
    assert_eq!(calls().length(), 1, "one cashier only");
    reset();
}

fn answer(status: u32, body: JsValue) -> JsValue {
    let o = new_object();
    set(&o, "status", &JsValue::from_f64(status.into()));
    set(&o, "body", &body);
    o
}

fn checkout_options(order: &str, confirm_ms: f64) -> JsValue {
    let o = opts("confirmTimeoutMs", confirm_ms);
    set(&o, "baseUrl", &JsValue::from_str("https://shop.example/"));
    set(&o, "order", &JsValue::from_str(order));
    o
}

fn states(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[wasm_bindgen_test]
async fn checkout_resolves_on_server_confirmed_success() {
    reset();
    install_bridge("ok", 5);
    fake_server(
        answer(200, pay_params_body()),
        states(&["NOTPAY", "USERPAYING", "SUCCESS"]),
    );
    let status = settle(checkout(checkout_options("C123", 10_000.0)))
        .await
        .expect("SUCCESS");
    assert_eq!(text(&status, "state"), "SUCCESS");
    assert_eq!(text(&status, "combine_out_trade_no"), "C123");
    let f = fetches();
    assert_eq!(
        f[0],
        "POST https://shop.example/api/combine-orders/C123/pay-params include no-store"
    );
    assert_eq!(f.len(), 4, "{f:?}");
    for get in &f[1..] {
        assert_eq!(
            get,
            "GET https://shop.example/api/combine-orders/C123 include no-store"
        );
    }
    assert_eq!(calls().length(), 1);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_ok_without_confirmation_is_not_confirmed() {
    reset();
    install_bridge("ok", 5);
    fake_server(answer(200, pay_params_body()), states(&["NOTPAY"]));
    let e = rejected(checkout(checkout_options("C123", 300.0)), "not_confirmed").await;
    assert_eq!(text(&e, "errMsg"), "get_brand_wcpay_request:ok");
    assert!(fetches().len() >= 2);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_final_failure_state() {
    reset();
    install_bridge("ok", 5);
    fake_server(answer(200, pay_params_body()), states(&["PAYERROR"]));
    let e = rejected(checkout(checkout_options("C123", 5000.0)), "fail").await;
    assert!(text(&e, "message").contains("PAYERROR"));
    reset();
}

#[wasm_bindgen_test]
async fn checkout_server_error() {
    reset();
    install_bridge("ok", 5);
    let body = new_object();
    set(&body, "code", &JsValue::from_str("ORDER_CLOSED"));
    set(&body, "message", &JsValue::from_str("the order is closed"));
    fake_server(answer(409, body), states(&["CLOSED"]));
    let e = rejected(checkout(checkout_options("C123", 5000.0)), "server_error").await;
    assert_eq!(text(&e, "errMsg"), "ORDER_CLOSED");
    let message = text(&e, "message");
    assert!(
        message.contains("409") && message.contains("the order is closed"),
        "{message}"
    );
    assert_eq!(calls().length(), 0);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_cancel_asks_once_and_does_not_poll() {
    reset();
    install_bridge("cancel", 5);
    fake_server(answer(200, pay_params_body()), states(&["NOTPAY"]));
    rejected(checkout(checkout_options("C/1 2", 5000.0)), "cancel").await;
    assert_eq!(
        fetches(),
        [
            "POST https://shop.example/api/combine-orders/C%2F1%202/pay-params include no-store",
            "GET https://shop.example/api/combine-orders/C%2F1%202 include no-store"
        ]
    );
    reset();
}

#[wasm_bindgen_test]
async fn checkout_needs_base_url_and_order() {
    reset();
    rejected(checkout(JsValue::UNDEFINED), "invalid_params").await;
    rejected(checkout(opts("order", 1.0)), "invalid_params").await;
    reset();
}

fn with(o: JsValue, key: &str, value: &JsValue) -> JsValue {
    set(&o, key, value);
    o
}

#[wasm_bindgen_test]
async fn checkout_with_hooks_needs_no_base_url() {
    reset();
    install_bridge("ok", 5);
    let status = settle(checkout(hook_options(
        states(&["NOTPAY", "SUCCESS"]),
        false,
    )))
    .await
    .expect("SUCCESS");
    assert_eq!(text(&status, "state"), "SUCCESS");
    assert_eq!(text(&status, "by"), "hook");
    assert_eq!(hooked(), "params H-1,state H-1,state H-1");
    assert!(fetches().is_empty(), "no request of its own");
    reset();
}

#[wasm_bindgen_test]
async fn checkout_hook_failure_is_a_server_error() {
    reset();
    install_bridge("ok", 5);
    let e = rejected(
        checkout(hook_options(states(&["SUCCESS"]), true)),
        "server_error",
    )
    .await;
    let message = text(&e, "message");
    assert!(
        message.contains("getPayParams failed: token expired"),
        "{message}"
    );
    assert_eq!(text(&get(&e, "cause"), "message"), "token expired");
    assert_eq!(calls().length(), 0);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_one_hook_and_base_url() {
    // getPayParams from the caller, the order state from the default route.
    reset();
    install_bridge("ok", 5);
    fake_server(answer(200, pay_params_body()), states(&["SUCCESS"]));
    let o = hook_options(states(&["NOTPAY"]), false);
    set(&o, "getOrderState", U);
    set(&o, "baseUrl", &JsValue::from_str(""));
    let status = settle(checkout(o)).await.expect("SUCCESS");
    assert_eq!(text(&status, "state"), "SUCCESS");
    assert_eq!(hooked(), "params H-1");
    assert_eq!(fetches(), ["GET /api/combine-orders/H-1 include no-store"]);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_sends_headers_and_credentials() {
    reset();
    install_bridge("ok", 5);
    fake_server(answer(200, pay_params_body()), states(&["SUCCESS"]));
    let headers = new_object();
    set(&headers, "X-CSRF-Token", &JsValue::from_str("t0k"));
    set(&headers, "Authorization", &JsValue::from_str("Bearer abc"));
    let o = with(checkout_options("C123", 5000.0), "headers", &headers);
    let o = with(o, "credentials", &JsValue::from_str("same-origin"));
    settle(checkout(o)).await.expect("SUCCESS");
    assert_eq!(
        last_headers(),
        r#"{"Accept":"application/json","X-CSRF-Token":"t0k","Authorization":"Bearer abc"}"#
    );
    for f in fetches() {
        assert!(f.ends_with(" same-origin no-store"), "{f}");
    }
    reset();
}

#[wasm_bindgen_test]
async fn checkout_asks_the_server_after_a_bridge_timeout() {
    // The cashier never answered, but the payment went through.
    reset();
    install_bridge("never", 5);
    fake_server(answer(200, pay_params_body()), states(&["SUCCESS"]));
    let o = with(
        checkout_options("C123", 5000.0),
        "timeoutMs",
        &JsValue::from_f64(50.0),
    );
    let status = settle(checkout(o)).await.expect("the server says paid");
    assert_eq!(text(&status, "state"), "SUCCESS");
    assert_eq!(fetches().len(), 2, "pay-params, then one question");
    // Not paid: the timeout stands, after one question.
    fake_server(answer(200, pay_params_body()), states(&["NOTPAY"]));
    let o = with(
        checkout_options("C123", 5000.0),
        "timeoutMs",
        &JsValue::from_f64(50.0),
    );
    rejected(checkout(o), "timeout").await;
    assert_eq!(fetches().len(), 4);
    reset();
}

#[wasm_bindgen_test]
async fn checkout_asks_the_server_after_fail_or_cancel() {
    for answer_ in ["fail", "cancel"] {
        reset();
        install_bridge(answer_, 5);
        let status = settle(checkout(hook_options(states(&["SUCCESS"]), false)))
            .await
            .expect("the server says paid");
        assert_eq!(text(&status, "state"), "SUCCESS", "{answer_}");
        rejected(checkout(hook_options(states(&["NOTPAY"]), false)), answer_).await;
        assert_eq!(hooked(), "params H-1,state H-1", "{answer_}: asked once");
    }
    reset();
}

#[wasm_bindgen_test]
async fn checkout_does_not_ask_when_the_cashier_never_opened() {
    reset();
    install_bridge("throw", 5);
    rejected(
        checkout(hook_options(states(&["SUCCESS"]), false)),
        "bridge_error",
    )
    .await;
    assert_eq!(hooked(), "params H-1");
    reset();
}

#[wasm_bindgen_test]
async fn timed_out_requests_are_aborted() {
    // Parameters from a hook; the order's state from a server that never
    // answers: each request is aborted when its time is up (3 s at least).
    reset();
    install_bridge("ok", 5);
    silent_server();
    let o = hook_options(states(&["SUCCESS"]), false);
    set(&o, "getOrderState", U);
    set(&o, "baseUrl", &JsValue::from_str("https://shop.example"));
    set(&o, "confirmTimeoutMs", &JsValue::from_f64(100.0));
    let e = rejected(checkout(o), "not_confirmed").await;
    assert_eq!(text(&e, "errMsg"), "get_brand_wcpay_request:ok");
    assert_eq!(
        fetches(),
        ["GET https://shop.example/api/combine-orders/H-1 include no-store"]
    );
    assert_eq!(aborted_fetches(), 1);
    reset();
}

#[wasm_bindgen_test]
async fn abort_signal_stops_checkout_and_its_requests() {
    reset();
    install_bridge("never", 5);
    silent_server();
    let control = abort_controller();
    let o = with(
        checkout_options("C123", 5000.0),
        "signal",
        &get(&control, "signal"),
    );
    let p = checkout(o);
    pause(30).await;
    let abort = get(&control, "abort");
    let _ = call(&abort, &control, U, U, U);
    let e = rejected(p, "aborted").await;
    assert_eq!(text(&get(&e, "cause"), "name"), "AbortError");
    pause(10).await;
    assert_eq!(aborted_fetches(), 1, "the pay-params request was aborted");
    // The lock is free again.
    install_bridge("ok", 5);
    assert!(settle(request_payment(valid_params(), JsValue::UNDEFINED))
        .await
        .is_ok());
    reset();
}

#[wasm_bindgen_test]
async fn abort_while_waiting_for_the_bridge_removes_the_listener() {
    reset();
    in_wechat();
    spy_listeners();
    let control = abort_controller();
    let p = ready(with(new_object(), "signal", &get(&control, "signal")));
    assert_eq!(listeners(), [1, 0, 1]);
    let _ = call(&get(&control, "abort"), &control, U, U, U);
    rejected(p, "aborted").await;
    assert_eq!(listeners(), [1, 1, 0]);
    // Already aborted: rejected at once.
    let p = request_payment(
        valid_params(),
        with(new_object(), "signal", &get(&control, "signal")),
    );
    rejected(p, "aborted").await;
    reset();
}

#[wasm_bindgen_test]
fn helpers() {
    assert!(is_base64("YWJj"));
    assert!(is_base64("YWI="));
    assert!(is_base64("Y+/="));
    assert!(!is_base64("YW=="[..3].as_ref()));
    assert!(!is_base64("Y==="));
    assert!(!is_base64("YW=j"));
}
