//! `wxpay-combine-jsapi`: WeChat Pay JSAPI payment (`getBrandWCPayRequest`)
//! as a typed Promise, for the page that pays a combined order (合单支付).
//!
//! It exists to stop the mistakes merchants keep making with the callback
//! snippet from the docs:
//! * calling before `WeixinJSBridge` is injected ([`ready`] waits for it);
//! * a millisecond `timeStamp`, a number, or a lower-case `timestamp` key
//!   (→ 支付验证签名失败): [`request_payment`] validates the parameters first;
//! * treating `get_brand_wcpay_request:ok` as proof of payment: [`checkout`]
//!   resolves only once the merchant's server confirms SUCCESS;
//! * an unexplained `:fail`: the `PayError` carries a hint with the usual
//!   causes (an unregistered pay directory first).
//!
//! Built for `wasm32-unknown-unknown`. Without the `std` feature (the npm
//! package's build) it is `no_std` with a tiny allocator and a trapping panic
//! handler, to fit the package's size budget (BENCHMARKS.md); no code path
//! here panics on purpose: every error becomes a rejected Promise. The unit
//! tests run in a browser with `std`. On other targets the crate compiles
//! (for workspace-wide checks) but the exported functions need a browser.

#![cfg_attr(all(target_arch = "wasm32", not(feature = "std")), no_std)]

extern crate alloc;

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!("this crate assumes single-threaded wasm (its statics are not thread-safe)");

#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
mod heap;

#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[global_allocator]
static HEAP: heap::Heap = heap::Heap::new();

#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(all(test, target_arch = "wasm32"))]
mod tests;

mod task;

use alloc::string::String;
use core::cell::Cell;
use task::{sleep, spawn, within, Signal};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

// The JS this crate calls, declared here rather than through js-sys/web-sys
// to keep the generated glue and the .wasm small (see BENCHMARKS.md). Every
// call that can throw is `catch`: an exception unwinding through wasm would
// skip Rust's cleanup and could leave the executor (src/task.rs) stuck.
#[wasm_bindgen(module = "/js/support.js")]
extern "C" {
    /// `new PayError(code, a + b + c + d (+ " " + hint), errMsg, hint)`
    #[wasm_bindgen(js_name = payError)]
    fn pay_error(
        code: &str,
        a: &str,
        b: &str,
        c: &str,
        d: &str,
        err_msg: &str,
        hint: &str,
    ) -> JsValue;
    /// `globalThis[key]`
    fn global(key: &str) -> JsValue;
    /// `fetch(url, { method, credentials: "include", cache: "no-store", … })`,
    /// then the JSON body: a Promise of `{ r: Response, body }` (`body`
    /// undefined when not JSON), rejected only when the request failed.
    #[wasm_bindgen(js_name = fetchJson, catch)]
    fn fetch_json(url: &str, method: &str) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Reflect, js_name = get, catch)]
    fn reflect_get(target: &JsValue, key: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = Reflect, js_name = get)]
    fn get_index(array: &JsValue, index: u32) -> JsValue;
    #[wasm_bindgen(js_namespace = Reflect, js_name = set, catch)]
    fn reflect_set(target: &JsValue, key: &str, value: &JsValue) -> Result<bool, JsValue>;
    #[wasm_bindgen(js_namespace = Object, js_name = keys, catch)]
    fn object_keys(object: &JsValue) -> Result<JsValue, JsValue>;
    /// `Object()`: a new empty object.
    #[wasm_bindgen(js_name = Object)]
    fn new_object() -> JsValue;
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn now() -> f64;
    type Callable;
    /// `f.call(this, a, b, c)`; extra `undefined` arguments are harmless to
    /// every function called here.
    #[wasm_bindgen(method, js_name = call, catch)]
    fn call3(
        f: &Callable,
        this: &JsValue,
        a: &JsValue,
        b: &JsValue,
        c: &JsValue,
    ) -> Result<JsValue, JsValue>;
    /// `String(v)`
    #[wasm_bindgen(js_name = String)]
    fn js_string(v: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = encodeURIComponent, catch)]
    fn encode_uri_component(s: &str) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** The object your server signed (see its `pay_params`); keys are case-sensitive. */
export interface PayParams {
  /** The 公众号 appid the order was placed with (for a combined order: combine_appid). */
  appId: string;
  /** Unix time in **seconds**, as a 10-digit **string**. */
  timeStamp: string;
  /** Random string, at most 32 characters. */
  nonceStr: string;
  /** `prepay_id=<prepay_id>` */
  package: string;
  /** Always `RSA` (APIv3). */
  signType: "RSA";
  /** Base64 SHA256-with-RSA signature of `appId\ntimeStamp\nnonceStr\npackage\n`. */
  paySign: string;
}
export interface ReadyOptions {
  /** How long to wait for `WeixinJSBridgeReady` (default 10000 ms). */
  timeoutMs?: number;
}
export interface PayOptions {
  /** How long to wait for the bridge (default 10000 ms). */
  readyTimeoutMs?: number;
  /** How long to wait for WeChat's answer once the cashier is open (default 600000 ms). */
  timeoutMs?: number;
}
/** WeChat answered `get_brand_wcpay_request:ok`. Not proof of payment: confirm with your server. */
export interface PayResult {
  status: "ok";
  errMsg: string;
}
export interface CheckoutOptions extends PayOptions {
  /** Your server's origin and path prefix, e.g. `""` (same origin) or `"https://shop.example"`. */
  baseUrl: string;
  /** The combined order number (combine_out_trade_no). */
  order: string;
  /** How long to poll your server for a final state after `:ok` (default 20000 ms). */
  confirmTimeoutMs?: number;
}
export type OrderState = "NOTPAY" | "SUCCESS" | "CLOSED" | "PAYERROR" | "USERPAYING" | "REFUND";
export interface SubOrderStatus {
  mchid: string;
  out_trade_no: string;
  amount: number;
  trade_state: string;
  transaction_id?: string;
}
/** `GET {baseUrl}/api/combine-orders/{order}` as your server returns it. */
export interface OrderStatus {
  combine_out_trade_no: string;
  state: OrderState;
  total_amount: number;
  sub_orders: SubOrderStatus[];
}
/**
 * - `cancel`: the user closed the cashier.
 * - `fail`: WeChat refused (see `hint`), or the server reports the order CLOSED / PAYERROR / REFUND.
 * - `invalid_params`: the parameters would be rejected; `message` names the mistake.
 * - `not_wechat`: not inside WeChat's built-in browser.
 * - `timeout`: the bridge never became ready, or never answered.
 * - `bridge_error`: the bridge is missing `invoke`, threw, or answered something unknown.
 * - `busy`: another payment of this page is still open.
 * - `not_confirmed`: WeChat said ok but the server has not confirmed SUCCESS in time: say "not yet confirmed".
 * - `server_error`: your server failed or answered an error (`errMsg` = its `code`).
 */
export type PayErrorCode = "cancel" | "fail" | "invalid_params" | "not_wechat" | "timeout"
  | "bridge_error" | "busy" | "not_confirmed" | "server_error";
export declare class PayError extends Error {
  readonly name: "PayError";
  readonly code: PayErrorCode;
  /** WeChat's raw `err_msg` when there was one, e.g. `get_brand_wcpay_request:fail`. */
  readonly errMsg: string;
  /** For `fail` from WeChat: the usual causes. */
  readonly hint?: string;
}
"#;

/// Defaults, in milliseconds.
const READY_MS: f64 = 10_000.0;
const ANSWER_MS: f64 = 600_000.0;
const CONFIRM_MS: f64 = 20_000.0;
const REQUEST_MS: f64 = 15_000.0;

const NOT_WECHAT: &str = "JSAPI payment works only inside WeChat's built-in browser";
const FAIL_HINT: &str = "Usual causes: 1) this page's directory is not registered as a pay \
directory (支付授权目录) of the merchant (on iOS WeChat checks the URL the page was first \
opened with, not the route a single-page app moved to); 2) the order's payer openid is not of \
this appId; 3) the merchant has no JSAPI payment permission.";

const KEYS: [&str; 6] = [
    "appId",
    "timeStamp",
    "nonceStr",
    "package",
    "signType",
    "paySign",
];
const READY_EVENTS: [&str; 2] = ["WeixinJSBridgeReady", "onWeixinJSBridgeReady"];

/// Single-threaded interior mutability for statics (wasm32 without atomics).
struct Local<T>(T);
// SAFETY: wasm32 without `atomics` has one thread (see the compile_error above).
unsafe impl<T> Sync for Local<T> {}

/// A rejection value: a JS `PayError`.
fn error(code: &str, message: &str, err_msg: &str) -> JsValue {
    pay_error(code, message, "", "", "", err_msg, "")
}

/// A `PayError` whose message is the parts joined.
fn error4(code: &str, parts: [&str; 4], err_msg: &str) -> JsValue {
    let [a, b, c, d] = parts;
    pay_error(code, a, b, c, d, err_msg, "")
}

fn invalid(parts: [&str; 4]) -> JsValue {
    error4("invalid_params", parts, "")
}

fn cat(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
    }
    s
}

fn get(target: &JsValue, key: &str) -> JsValue {
    reflect_get(target, key).unwrap_or(JsValue::UNDEFINED)
}

fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = reflect_set(target, key, value);
}

fn set_str(target: &JsValue, key: &str, value: &str) {
    set(target, key, &JsValue::from_str(value));
}

fn bridge() -> JsValue {
    global("WeixinJSBridge")
}

/// Calls `f` with `this` and up to three arguments (pad with `UNDEFINED`).
fn call(
    f: &JsValue,
    this: &JsValue,
    a: &JsValue,
    b: &JsValue,
    c: &JsValue,
) -> Result<JsValue, JsValue> {
    f.unchecked_ref::<Callable>().call3(this, a, b, c)
}

const U: &JsValue = &JsValue::UNDEFINED;

/// A non-negative number of milliseconds from `options[key]`, else `default`.
/// Clamped to what `setTimeout` accepts.
fn millis(options: &JsValue, key: &str, default: f64) -> f64 {
    match get(options, key).as_f64() {
        Some(ms) if ms >= 0.0 => ms.min(2_147_483_647.0),
        _ => default,
    }
}

// ---------------------------------------------------------------------------
// User agent

fn user_agent() -> String {
    get(&global("navigator"), "userAgent")
        .as_string()
        .unwrap_or_default()
}

/// Byte offset just past `MicroMessenger` (any case) in the user agent.
fn after_micromessenger(ua: &str) -> Option<usize> {
    const NEEDLE: &[u8] = b"micromessenger";
    ua.as_bytes()
        .windows(NEEDLE.len())
        .position(|w| w.eq_ignore_ascii_case(NEEDLE))
        .map(|i| i + NEEDLE.len())
}

/// Whether the page runs in WeChat's built-in browser (`MicroMessenger` in
/// the user agent). JSAPI payment works only there.
#[wasm_bindgen(js_name = isWeChat)]
pub fn is_wechat() -> bool {
    after_micromessenger(&user_agent()).is_some()
}

fn version_of(ua: &str) -> Option<&str> {
    let start = after_micromessenger(ua)? + 1;
    if ua.as_bytes().get(start - 1) != Some(&b'/') {
        return None;
    }
    let rest = ua.as_bytes().get(start..)?;
    let n = rest
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .count();
    if !rest.first()?.is_ascii_digit() {
        return None;
    }
    ua.get(start..start + n)
}

/// WeChat's version from a `MicroMessenger/x.y.z` user agent, e.g. `"8.0.47"`;
/// `undefined` outside WeChat or when the agent carries no version.
#[wasm_bindgen(js_name = weChatVersion, unchecked_return_type = "string | undefined")]
pub fn wechat_version() -> JsValue {
    match version_of(&user_agent()) {
        Some(v) => JsValue::from_str(v),
        None => JsValue::UNDEFINED,
    }
}

// ---------------------------------------------------------------------------
// Bridge readiness

/// The one wait for `WeixinJSBridgeReady` that concurrent callers share.
struct Wait {
    /// Its `ok_fn` is the listener.
    signal: JsValue,
    /// `attachEvent` was used (old browsers) instead of `addEventListener`.
    legacy: bool,
    /// Callers still waiting; the last to time out removes the listeners.
    waiters: u32,
}

static WAIT: Local<Cell<Option<Wait>>> = Local(Cell::new(None));

/// Adds or removes the readiness listeners the way the official snippet
/// does: `addEventListener`, or `attachEvent` for both event names.
fn listen(signal: &Signal, legacy: bool, on: bool) {
    let doc = global("document");
    let method = get(
        &doc,
        match (legacy, on) {
            (false, true) => "addEventListener",
            (false, false) => "removeEventListener",
            (true, true) => "attachEvent",
            (true, false) => "detachEvent",
        },
    );
    let listener = signal.ok_fn();
    for name in if legacy {
        &READY_EVENTS[..]
    } else {
        &READY_EVENTS[..1]
    } {
        let _ = call(&method, &doc, &JsValue::from_str(name), &listener, U);
    }
}

fn join_wait() -> Signal {
    let mut wait = WAIT.0.take();
    let signal = match &mut wait {
        Some(w) => {
            w.waiters += 1;
            Signal(w.signal.clone())
        }
        None => {
            let doc = global("document");
            let legacy = !get(&doc, "addEventListener").is_function()
                && get(&doc, "attachEvent").is_function();
            let s = Signal::new();
            listen(&s, legacy, true);
            wait = Some(Wait {
                signal: s.0.clone(),
                legacy,
                waiters: 1,
            });
            s
        }
    };
    WAIT.0.set(wait);
    signal
}

/// One caller stops waiting on `signal`: the listeners go once the event
/// came, or once the last caller gave up.
fn leave_wait(signal: &Signal, fired: bool) {
    let mut wait = WAIT.0.take();
    if let Some(w) = &mut wait {
        if w.signal == signal.0 {
            w.waiters = w.waiters.saturating_sub(1);
            if fired || w.waiters == 0 {
                listen(signal, w.legacy, false);
                wait = None;
            }
        }
    }
    WAIT.0.set(wait);
}

async fn wait_ready(ms: f64) -> Result<(), JsValue> {
    if bridge().is_object() {
        return Ok(());
    }
    if !is_wechat() {
        return Err(error("not_wechat", NOT_WECHAT, ""));
    }
    let signal = join_wait();
    let fired = within(&signal, ms).await.is_some();
    leave_wait(&signal, fired);
    if fired || bridge().is_object() {
        Ok(())
    } else {
        Err(error(
            "timeout",
            "WeixinJSBridge did not become ready in time",
            "",
        ))
    }
}

/// Resolves when `window.WeixinJSBridge` can be used: at once when it exists,
/// else on the `WeixinJSBridgeReady` event. Rejects with a `PayError`:
/// `not_wechat` outside WeChat's browser, `timeout` after `timeoutMs`
/// (default 10000). Concurrent callers share one set of listeners, removed
/// once settled.
#[wasm_bindgen(unchecked_return_type = "Promise<void>")]
pub fn ready(
    #[wasm_bindgen(unchecked_optional_param_type = "ReadyOptions")] options: JsValue,
) -> JsValue {
    let ms = millis(&options, "timeoutMs", READY_MS);
    spawn(async move {
        wait_ready(ms).await?;
        Ok(JsValue::UNDEFINED)
    })
}

// ---------------------------------------------------------------------------
// Parameters

fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    !b.is_empty()
        && b.len() & 3 == 0
        && pad <= 2
        && b.iter()
            .rev()
            .skip(pad)
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// What is wrong with the string value of `KEYS[i]`, if anything.
fn check(i: usize, v: &str) -> Option<&'static str> {
    let digits = v.bytes().all(|c| c.is_ascii_digit());
    let (ok, problem) = match i {
        0 => (
            !v.is_empty() && v.len() <= 32,
            "appId must be the appid the order was placed with",
        ),
        1 if digits && v.len() == 13 => (
            false,
            "timeStamp is in milliseconds; WeChat wants Unix seconds (10 digits), \
             else 支付验证签名失败",
        ),
        1 => (
            digits && v.len() == 10,
            "timeStamp must be Unix seconds as a 10-digit string",
        ),
        2 => (
            !v.is_empty() && v.len() <= 32,
            "nonceStr must be 1 to 32 characters",
        ),
        3 => (
            v.len() > 10 && v.starts_with("prepay_id="),
            "package must be \"prepay_id=<prepay_id>\"",
        ),
        4 => (v == "RSA", "signType must be \"RSA\" (APIv3)"),
        _ => (is_base64(v), "paySign must be a base64 signature"),
    };
    if ok {
        None
    } else {
        Some(problem)
    }
}

/// Checks the parameters and copies them, in order, into a fresh object for
/// the bridge. Errors name the mistake.
#[inline(never)]
fn validate(params: &JsValue) -> Result<JsValue, JsValue> {
    if !params.is_object() {
        return Err(invalid([
            "params must be the object { appId, timeStamp, nonceStr, package, signType, paySign }",
            "",
            "",
            "",
        ]));
    }
    let keys = object_keys(params).unwrap_or_default();
    for i in 0..get(&keys, "length").as_f64().unwrap_or(0.0) as u32 {
        let key = get_index(&keys, i).as_string().unwrap_or_default();
        if KEYS.contains(&key.as_str()) {
            continue;
        }
        return Err(invalid(
            match KEYS.iter().find(|k| k.eq_ignore_ascii_case(&key)) {
                Some(right) => [
                    "params.",
                    &key,
                    ": keys are case-sensitive (a wrong one fails with 支付验证签名失败); use ",
                    right,
                ],
                None => [
                    "unexpected key params.",
                    &key,
                    ": pass exactly appId, timeStamp, nonceStr, package, signType, paySign",
                    "",
                ],
            },
        ));
    }
    let out = new_object();
    for (i, key) in KEYS.iter().enumerate() {
        let v = get(params, key);
        let problem = match v.as_string() {
            Some(s) => check(i, &s).map(|p| [p, "", ""]),
            None if v.is_undefined() => Some(["params.", key, " is missing"]),
            None if i == 1 && v.as_f64().is_some() => Some([
                "timeStamp must be a string of Unix seconds such as \"1700000000\", not a number",
                "",
                "",
            ]),
            None => Some(["params.", key, " must be a string"]),
        };
        if let Some([a, b, c]) = problem {
            return Err(invalid([a, b, c, ""]));
        }
        set(&out, key, &v);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Payment

static OPEN: Local<Cell<bool>> = Local(Cell::new(false));

/// Held while a payment of this page is open; a second one is refused.
struct Open;

impl Open {
    fn take() -> Result<Open, JsValue> {
        if OPEN.0.replace(true) {
            Err(error("busy", "a payment is already open on this page", ""))
        } else {
            Ok(Open)
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.0.set(false);
    }
}

/// What follows the last `:` of WeChat's `err_msg`.
fn outcome(err_msg: &str) -> &str {
    let b = err_msg.as_bytes();
    let at = b.iter().rposition(|c| *c == b':').map_or(0, |i| i + 1);
    err_msg.get(at..).unwrap_or_default()
}

/// Validates, waits for the bridge, opens the cashier: WeChat's `err_msg` on
/// `:ok`, else a `PayError`.
async fn pay(params: &JsValue, options: &JsValue) -> Result<String, JsValue> {
    let args = validate(params)?;
    wait_ready(millis(options, "readyTimeoutMs", READY_MS)).await?;
    let answer = Signal::new();
    let bridge = bridge();
    let invoked = call(
        &get(&bridge, "invoke"),
        &bridge,
        &JsValue::from_str("getBrandWCPayRequest"),
        &args,
        &answer.ok_fn(),
    );
    if invoked.is_err() {
        return Err(error("bridge_error", "WeixinJSBridge.invoke failed", ""));
    }
    let res = match within(&answer, millis(options, "timeoutMs", ANSWER_MS)).await {
        Some(Ok(res)) => res,
        Some(Err(_)) => return Err(error("bridge_error", "WeixinJSBridge.invoke failed", "")),
        None => {
            return Err(error(
                "timeout",
                "WeChat did not answer; ask your server for the order state",
                "",
            ))
        }
    };
    let err_msg = get(&res, "err_msg")
        .as_string()
        .or_else(|| get(&res, "errMsg").as_string())
        .unwrap_or_default();
    let outcome = outcome(&err_msg);
    if outcome == "ok" {
        return Ok(err_msg);
    }
    let desc = get(&res, "err_desc").as_string().unwrap_or_default();
    let sep = if desc.is_empty() { "" } else { ": " };
    Err(if outcome == "cancel" {
        error("cancel", "the user cancelled the payment", &err_msg)
    } else if outcome.starts_with("fail") {
        pay_error(
            "fail",
            "WeChat refused the payment",
            sep,
            &desc,
            ".",
            &err_msg,
            FAIL_HINT,
        )
    } else {
        error4(
            "bridge_error",
            ["unexpected answer from WeixinJSBridge: ", &err_msg, "", ""],
            &err_msg,
        )
    })
}

/// Opens WeChat's cashier with the parameters your server signed.
///
/// Validates them first (exact keys; `timeStamp` a 10-digit string of
/// seconds; `package` `prepay_id=…`; `signType` `RSA`; `paySign` base64),
/// waits for the bridge, then resolves `{ status: "ok", errMsg }` on
/// `get_brand_wcpay_request:ok`, which is **not** proof of payment. Rejects
/// with a `PayError` (`cancel`, `fail`, `invalid_params`, `not_wechat`,
/// `timeout`, `bridge_error`, or `busy` while another payment is open).
#[wasm_bindgen(js_name = requestPayment, unchecked_return_type = "Promise<PayResult>")]
pub fn request_payment(
    #[wasm_bindgen(unchecked_param_type = "PayParams")] params: JsValue,
    #[wasm_bindgen(unchecked_optional_param_type = "PayOptions")] options: JsValue,
) -> JsValue {
    spawn(async move {
        let _open = Open::take()?;
        let err_msg = pay(&params, &options).await?;
        let result = new_object();
        set_str(&result, "status", "ok");
        set_str(&result, "errMsg", &err_msg);
        Ok(result)
    })
}

// ---------------------------------------------------------------------------
// Checkout against the merchant's server

/// One JSON request to the merchant's server, with the session cookie.
/// A 2xx body, else a `server_error` `PayError`.
async fn request(url: &str, method: &str, ms: f64) -> Result<JsValue, JsValue> {
    let no_answer = || error4("server_error", ["no answer from ", url, "", ""], "");
    let sent = fetch_json(url, method).map_err(|_| no_answer())?;
    let answer = match within(&Signal::of(&sent), ms).await {
        Some(Ok(answer)) => answer,
        _ => return Err(no_answer()),
    };
    let response = get(&answer, "r");
    let body = get(&answer, "body");
    if get(&response, "ok").is_truthy() && body.is_object() {
        return Ok(body);
    }
    let status = js_string(&get(&response, "status"))
        .as_string()
        .unwrap_or_default();
    let detail = get(&body, "message").as_string().unwrap_or_default();
    let code = get(&body, "code").as_string().unwrap_or_default();
    Err(error4(
        "server_error",
        ["server answered ", &status, ": ", &detail],
        &code,
    ))
}

/// Polls the order until the server reports a final state: the body on
/// SUCCESS; `fail` on CLOSED, PAYERROR or REFUND; `not_confirmed` when `ms`
/// ran out first.
async fn confirm(url: &str, ms: f64, err_msg: &str) -> Result<JsValue, JsValue> {
    let end = now() + ms;
    let mut delay: f64 = 500.0;
    loop {
        let left = end - now();
        if let Ok(body) = request(url, "GET", left.max(REQUEST_MS / 5.0)).await {
            let state = get(&body, "state").as_string().unwrap_or_default();
            match state.as_str() {
                "SUCCESS" => return Ok(body),
                "CLOSED" | "PAYERROR" | "REFUND" => {
                    return Err(error4(
                        "fail",
                        [
                            "WeChat answered ok but the server reports the order ",
                            &state,
                            "",
                            "",
                        ],
                        err_msg,
                    ));
                }
                _ => {}
            }
        }
        let left = end - now();
        if left <= 0.0 {
            return Err(error(
                "not_confirmed",
                "payment not yet confirmed by the server; check the order again later",
                err_msg,
            ));
        }
        sleep(delay.min(left)).await;
        delay = (delay * 1.5).min(3000.0);
    }
}

async fn run_checkout(options: JsValue) -> Result<JsValue, JsValue> {
    let base = get(&options, "baseUrl").as_string();
    let order = get(&options, "order").as_string().unwrap_or_default();
    let Some(mut base) = base.filter(|_| !order.is_empty()) else {
        return Err(invalid([
            "checkout needs { baseUrl, order } as strings",
            "",
            "",
            "",
        ]));
    };
    let _open = Open::take()?;
    while base.as_bytes().last() == Some(&b'/') {
        base.pop();
    }
    let order = encode_uri_component(&order)
        .ok()
        .and_then(|o| o.as_string())
        .unwrap_or_default();
    let url = cat(&[&base, "/api/combine-orders/", &order]);
    let created = request(&cat(&[&url, "/pay-params"]), "POST", REQUEST_MS).await?;
    let err_msg = pay(&get(&created, "pay_params"), &options).await?;
    confirm(
        &url,
        millis(&options, "confirmTimeoutMs", CONFIRM_MS),
        &err_msg,
    )
    .await
}

/// Pays a combined order end to end: fetches fresh parameters from
/// `POST {baseUrl}/api/combine-orders/{order}/pay-params`, runs
/// `requestPayment`, and on `:ok` polls `GET {baseUrl}/api/combine-orders/{order}`
/// (with backoff, up to `confirmTimeoutMs`, default 20000) because `:ok` is
/// not proof of payment. Resolves with the order status only once the server
/// reports SUCCESS; rejects with a `PayError` otherwise (`not_confirmed` when
/// the server has not confirmed in time, `server_error` when it failed).
#[wasm_bindgen(unchecked_return_type = "Promise<OrderStatus>")]
pub fn checkout(
    #[wasm_bindgen(unchecked_param_type = "CheckoutOptions")] options: JsValue,
) -> JsValue {
    spawn(run_checkout(options))
}
