//! `wxpay-combine-jsapi`: WeChat Pay JSAPI payment (`getBrandWCPayRequest`)
//! as a typed Promise, for the page that pays a combined order (合单支付).
//!
//! It exists to stop the mistakes merchants keep making with the callback
//! snippet from the docs:
//! * calling before `WeixinJSBridge` is injected ([`ready`] waits for it);
//! * a millisecond `timeStamp`, a number, or a lower-case `timestamp` key
//!   (→ 支付验证签名失败): [`request_payment`] validates the parameters first;
//! * treating `get_brand_wcpay_request:ok` as proof of payment: `checkout`
//!   (in `js/support.js`, around [`request_payment`]) resolves only once the
//!   merchant's server confirms SUCCESS;
//! * an unexplained `:fail` or `system:access_denied`: the `PayError` carries
//!   a hint with the usual causes (the signature first, then the pay
//!   directory), and `payDirectory` checks the page's URL before paying;
//! * giving up after a cancel, fail or timeout although the money went:
//!   `checkout` asks the server once before rejecting.
//!
//! The JavaScript half (`js/support.js`) holds what must work without the
//! module (environment detection), what JavaScript does in fewer bytes than
//! an async state machine in wasm (`checkout`'s HTTP and polling around
//! `requestPayment`, URL matching; see BENCHMARKS.md), and the `PayError`
//! class; `js/index.js` loads the module and turns load failures into
//! `PayError`s.
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
use task::{spawn, within, Signal};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

// The JS this crate calls, declared here rather than through js-sys/web-sys
// to keep the generated glue and the .wasm small (see BENCHMARKS.md). Every
// call that can throw is `catch`: an exception unwinding through wasm would
// skip Rust's cleanup and could leave the executor (src/task.rs) stuck.
#[wasm_bindgen(module = "/js/support.js")]
extern "C" {
    /// `new PayError(code, a + b + c + d (+ " " + hint), errMsg, hint, cause)`
    #[wasm_bindgen(js_name = payError)]
    fn pay_error(
        code: &str,
        a: &str,
        b: &str,
        c: &str,
        d: &str,
        err_msg: &str,
        hint: &str,
        cause: &JsValue,
    ) -> JsValue;
    /// `globalThis[key]`
    fn global(key: &str) -> JsValue;
    /// `"wechat" | "miniprogram-webview" | "other"`
    fn environment() -> String;
    /// What is wrong with paying from this page given the registered pay
    /// directories (`""` when nothing, or when none are given).
    #[wasm_bindgen(js_name = payDirectoryProblem, catch)]
    fn pay_directory_problem(dirs: &JsValue, landing: &JsValue) -> Result<String, JsValue>;
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
  /** Stops waiting: the Promise rejects with `aborted`. */
  signal?: AbortSignal;
}
export interface PayOptions {
  /** How long to wait for the bridge (default 10000 ms). */
  readyTimeoutMs?: number;
  /** How long to wait for WeChat's answer once the cashier is open (default 600000 ms). */
  timeoutMs?: number;
  /**
   * Your registered pay directories (支付授权目录, 1 to 5, each ending in `/`). When given, the
   * page's URL (and on iOS the landing URL) is checked against WeChat's rule before the cashier
   * opens: `invalid_params` names the mismatch instead of WeChat's 当前页面的URL未注册.
   */
  payDirectory?: string | string[];
  /** The URL the page was first opened with (default: `location.href` when the package was imported). */
  landingUrl?: string;
  /** Stops waiting: the Promise rejects with `aborted` (an open cashier stays open: ask your server). */
  signal?: AbortSignal;
}
/** WeChat answered `get_brand_wcpay_request:ok`. Not proof of payment: confirm with your server. */
export interface PayResult {
  status: "ok";
  errMsg: string;
}
export interface CheckoutOptions extends PayOptions {
  /** The order number (combine_out_trade_no), passed to the hooks. */
  order: string;
  /**
   * Your server's origin and path prefix, e.g. `""` (same origin) or `"https://shop.example"`, for
   * the routes `POST {baseUrl}/api/combine-orders/{order}/pay-params` and
   * `GET {baseUrl}/api/combine-orders/{order}`. Not needed when both hooks are given.
   */
  baseUrl?: string;
  /** Extra request headers for those routes, e.g. a CSRF token or `Authorization: Bearer …`. */
  headers?: Record<string, string>;
  /** `fetch`'s credentials for those routes (default `"include"`: the session cookie). */
  credentials?: RequestCredentials;
  /** Your own call for the signed parameters (instead of the pay-params route). */
  getPayParams?: (order: string, timeoutMs: number, signal?: AbortSignal) => PayParams | Promise<PayParams>;
  /** Your own call for the order's state (instead of the order route): an object with `state`. */
  getOrderState?: (order: string, timeoutMs: number, signal?: AbortSignal) => OrderStatus | Promise<OrderStatus>;
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
/** `GET {baseUrl}/api/combine-orders/{order}` as your server returns it (or `getOrderState`). */
export interface OrderStatus {
  combine_out_trade_no?: string;
  state: OrderState;
  total_amount?: number;
  sub_orders?: SubOrderStatus[];
}
/**
 * - `cancel`: the user closed the cashier.
 * - `fail`: WeChat refused (see `hint`), or the server reports the order CLOSED / PAYERROR / REFUND.
 * - `invalid_params`: the parameters (or the pay directory) would be rejected; `message` names the mistake.
 * - `not_wechat`: not inside WeChat's built-in browser, or inside a mini program's web-view (see `hint`).
 * - `timeout`: the bridge never became ready, or never answered.
 * - `bridge_error`: the bridge is missing `invoke`, threw, or answered something unknown.
 * - `busy`: another payment of this page is still open.
 * - `not_confirmed`: WeChat said ok but the server has not confirmed SUCCESS in time: say "not yet confirmed".
 * - `server_error`: your server (or hook) failed or answered an error (`errMsg` = its `code`).
 * - `aborted`: the `signal` fired.
 * - `load_failed`: the `.wasm` could not be fetched or was refused (`cause`; see `message`).
 * - `unsupported`: this browser cannot run the module (no WebAssembly, it does not compile, or it ran out of memory).
 */
export type PayErrorCode = "cancel" | "fail" | "invalid_params" | "not_wechat" | "timeout"
  | "bridge_error" | "busy" | "not_confirmed" | "server_error" | "aborted" | "load_failed"
  | "unsupported";
export declare class PayError extends Error {
  readonly name: "PayError";
  readonly code: PayErrorCode;
  /** WeChat's raw `err_msg` when there was one, e.g. `get_brand_wcpay_request:fail`. */
  readonly errMsg: string;
  /** For `fail` and `not_wechat`: the usual causes, what to do. */
  readonly hint?: string;
  /** The error this one stands for (a failed fetch, a compile error, the abort reason…). */
  readonly cause?: unknown;
}
"#;

/// Defaults, in milliseconds.
const READY_MS: f64 = 10_000.0;
const ANSWER_MS: f64 = 600_000.0;

const NOT_WECHAT: &str = "JSAPI payment works only inside WeChat's built-in browser";
const WEB_VIEW: &str = "JSAPI payment does not work in a mini program's <web-view>";
const WEB_VIEW_HINT: &str = "Pay in the mini program with wx.requestPayment \
(wx.miniProgram.navigateTo a page of it that does).";
const FAIL_HINT: &str = "Usual causes: 1) the signature (支付验证签名失败): paySign not by the \
ordering merchant's API key, appId not the order's (combined: combine_appid), or timeStamp, \
nonceStr, package changed after signing; 2) this page's directory is not a registered pay \
directory (支付授权目录; on iOS WeChat checks the URL the page was first opened with, not later \
single-page-app routes); 3) the payer's openid is not of this appId; 4) no JSAPI payment \
permission.";
const SYSTEM_HINT: &str = "access_denied: this page may not pay (a mini program web-view, a \
frame, a domain the 公众号 has not set up); function_not_exist: WeChat is too old.";

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
    pay_error(code, message, "", "", "", err_msg, "", U)
}

/// A `PayError` whose message is the parts joined.
fn error4(code: &str, parts: [&str; 4], err_msg: &str) -> JsValue {
    let [a, b, c, d] = parts;
    pay_error(code, a, b, c, d, err_msg, "", U)
}

fn invalid(parts: [&str; 4]) -> JsValue {
    error4("invalid_params", parts, "")
}

/// The rejection of a task whose `signal` fired (see src/task.rs).
fn aborted(reason: &JsValue) -> JsValue {
    pay_error("aborted", "aborted", "", "", "", "", "", reason)
}

fn get(target: &JsValue, key: &str) -> JsValue {
    reflect_get(target, key).unwrap_or(JsValue::UNDEFINED)
}

fn get_str(target: &JsValue, key: &str) -> String {
    get(target, key).as_string().unwrap_or_default()
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

/// Whether this page may use JSAPI payment, given whether the bridge is
/// there (the demo's simulated bridge counts, outside WeChat too).
fn check_environment(bridge_present: bool) -> Result<(), JsValue> {
    match environment().as_str() {
        "miniprogram-webview" => Err(pay_error(
            "not_wechat",
            WEB_VIEW,
            "",
            "",
            ".",
            "",
            WEB_VIEW_HINT,
            U,
        )),
        "other" if !bridge_present => Err(error("not_wechat", NOT_WECHAT, "")),
        _ => Ok(()),
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

/// A caller waiting for the bridge; leaving (also when its task is dropped
/// on abort) removes the listeners once the event came or the last caller
/// gave up.
struct Waiting {
    signal: Signal,
    fired: bool,
}

fn join_wait() -> Waiting {
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
    Waiting {
        signal,
        fired: false,
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut wait = WAIT.0.take();
        if let Some(w) = &mut wait {
            if w.signal == self.signal.0 {
                w.waiters = w.waiters.saturating_sub(1);
                if self.fired || w.waiters == 0 {
                    listen(&self.signal, w.legacy, false);
                    wait = None;
                }
            }
        }
        WAIT.0.set(wait);
    }
}

async fn wait_ready(ms: f64) -> Result<(), JsValue> {
    if bridge().is_object() {
        return check_environment(true);
    }
    check_environment(false)?;
    let mut waiting = join_wait();
    waiting.fired = within(&waiting.signal, ms).await.is_some();
    let fired = waiting.fired;
    drop(waiting);
    if fired || bridge().is_object() {
        // A mini program's web-view says so once the bridge is ready.
        check_environment(true)
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
/// `not_wechat` outside WeChat's browser or in a mini program's web-view,
/// `timeout` after `timeoutMs` (default 10000), `aborted` when `signal`
/// fires. Concurrent callers share one set of listeners, removed once settled.
#[wasm_bindgen(unchecked_return_type = "Promise<void>")]
pub fn ready(
    #[wasm_bindgen(unchecked_optional_param_type = "ReadyOptions")] options: JsValue,
) -> JsValue {
    let ms = millis(&options, "timeoutMs", READY_MS);
    spawn(
        async move {
            wait_ready(ms).await?;
            Ok(JsValue::UNDEFINED)
        },
        &get(&options, "signal"),
    )
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

/// What WeChat's answer means: its `err_msg` on `get_brand_wcpay_request:ok`,
/// else the `PayError`. The key is `err_msg`, or `errMsg` in some versions.
fn classify(res: &JsValue) -> Result<String, JsValue> {
    let mut err_msg = get_str(res, "err_msg");
    if err_msg.is_empty() {
        err_msg = get_str(res, "errMsg");
    }
    let desc = get_str(res, "err_desc");
    let sep = if desc.is_empty() { "" } else { ": " };
    let (what, hint) = match err_msg.strip_prefix("get_brand_wcpay_request:") {
        Some("ok") => return Ok(err_msg.clone()),
        Some("cancel") => return Err(error("cancel", "the user cancelled the payment", &err_msg)),
        Some(rest) if rest.starts_with("fail") => ("WeChat refused the payment", FAIL_HINT),
        _ if err_msg.starts_with("system:") => ("WeChat refused the call", SYSTEM_HINT),
        _ => {
            return Err(error4(
                "bridge_error",
                ["unexpected answer from WeixinJSBridge: ", &err_msg, "", ""],
                &err_msg,
            ))
        }
    };
    Err(pay_error("fail", what, sep, &desc, ".", &err_msg, hint, U))
}

/// Validates, checks the pay directory, waits for the bridge, opens the
/// cashier: WeChat's `err_msg` on `:ok`, else a `PayError`. `opened` tells
/// whether the cashier was opened (then the payment may have gone through
/// whatever the answer).
async fn pay(params: &JsValue, options: &JsValue, opened: &mut bool) -> Result<String, JsValue> {
    let args = validate(params)?;
    let problem = pay_directory_problem(&get(options, "payDirectory"), &get(options, "landingUrl"))
        .unwrap_or_else(|_| "payDirectory and landingUrl must be URLs".into());
    if !problem.is_empty() {
        return Err(invalid([&problem, "", "", ""]));
    }
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
    *opened = true;
    match within(&answer, millis(options, "timeoutMs", ANSWER_MS)).await {
        Some(Ok(res)) => classify(&res),
        Some(Err(_)) => Err(error("bridge_error", "WeixinJSBridge.invoke failed", "")),
        None => Err(error(
            "timeout",
            "WeChat did not answer; ask your server for the order state",
            "",
        )),
    }
}

/// Opens WeChat's cashier with the parameters your server signed.
///
/// Validates them first (exact keys; `timeStamp` a 10-digit string of
/// seconds; `package` `prepay_id=…`; `signType` `RSA`; `paySign` base64) and,
/// given `payDirectory`, this page's URL; waits for the bridge, then resolves
/// `{ status: "ok", errMsg }` on `get_brand_wcpay_request:ok`, which is
/// **not** proof of payment. Rejects with a `PayError` (`cancel`, `fail`,
/// `invalid_params`, `not_wechat`, `timeout`, `bridge_error`, `aborted`, or
/// `busy` while another payment is open).
#[wasm_bindgen(js_name = requestPayment, unchecked_return_type = "Promise<PayResult>")]
pub fn request_payment(
    #[wasm_bindgen(unchecked_param_type = "PayParams")] params: JsValue,
    #[wasm_bindgen(unchecked_optional_param_type = "PayOptions")] options: JsValue,
) -> JsValue {
    let signal = get(&options, "signal");
    spawn(
        async move {
            let _open = Open::take()?;
            let mut opened = false;
            let err_msg = pay(&params, &options, &mut opened).await.inspect_err(|e| {
                // For checkout (js/support.js): the payment may have gone
                // through, ask the server.
                if opened {
                    set(e, "opened", &JsValue::TRUE);
                }
            })?;
            let result = new_object();
            set_str(&result, "status", "ok");
            set_str(&result, "errMsg", &err_msg);
            Ok(result)
        },
        &signal,
    )
}
