// JavaScript half of wxpay-combine-jsapi: the error class, what must work
// before the WebAssembly module is loaded (environment detection), what the
// browser does in fewer bytes than Rust (HTTP, URL matching), and the few
// lines of Promise plumbing that let the Rust side (src/task.rs) await JS
// without a general-purpose futures runtime (see BENCHMARKS.md: size).

// Every rejection of this package is a PayError: `e instanceof PayError` and
// `e instanceof Error` both hold, and consoles print `PayError: <message>`.
export class PayError extends Error {
  constructor(code, message, errMsg = "", hint, cause) {
    super(message);
    this.name = "PayError";
    this.code = code;
    this.errMsg = errMsg;
    if (hint) this.hint = hint;
    if (cause !== undefined) this.cause = cause;
  }
}

// The message comes in parts (joining them here saves string code in wasm).
export const payError = (code, a, b, c, d, errMsg, hint, cause) =>
  new PayError(code, a + b + c + d + (hint ? " " + hint : ""), errMsg, hint, cause);

// ---------------------------------------------------------------------------
// Environment (synchronous, no wasm needed)

const W = globalThis;
const ua = () => (W.navigator && navigator.userAgent) || "";

/** "MicroMessenger" in the user agent: WeChat's built-in browser. */
export const isWeChat = () => /micromessenger/i.test(ua());

/** "8.0.47" from "MicroMessenger/8.0.47(0x18002f2c)"; undefined without one. */
export const weChatVersion = () => (/micromessenger\/(\d[\d.]*)/i.exec(ua()) || [])[1];

/**
 * "miniprogram-webview" inside a mini program's <web-view> (WeChat sets
 * `window.__wxjs_environment`, and "miniProgram" in the user agent since
 * 7.0.0), "wechat" in WeChat's browser, else "other".
 */
export const environment = () =>
  W.__wxjs_environment === "miniprogram" || /miniprogram/i.test(ua())
    ? "miniprogram-webview"
    : isWeChat()
      ? "wechat"
      : "other";

// The URL the page was first opened with: on iOS WeChat checks the pay
// directory against it, not the route a single-page app moved to since.
// The package is imported by the page's start-up code, so this is as early
// as it can be read; `landingUrl` overrides it.
const LANDING = W.location && location.href;

/** The directory of a URL: origin and path up to the last "/". */
const directory = (u) => {
  u = new URL(u);
  return u.origin + u.pathname.slice(0, u.pathname.lastIndexOf("/") + 1);
};

/**
 * What is wrong with paying from here given the registered pay directories
 * (支付授权目录), or "" when WeChat's rule matches: a directory that is just
 * the domain ("https://shop.example/") covers every page of it; any other
 * must equal the page's directory exactly (https://shop.example/pay/ covers
 * neither https://shop.example/ nor https://shop.example/pay/sub/).
 */
export const payDirectoryProblem = (dirs, landing) => {
  if (dirs === undefined) return "";
  dirs = [].concat(dirs);
  if (!dirs.length || dirs.length > 5) return "payDirectory: give 1 to 5 registered directories";
  const pages = [location.href];
  if (/iphone|ipad|ipod/i.test(ua())) pages.push(landing || LANDING);
  for (const page of pages) {
    const here = directory(page);
    let ok = false;
    for (const d of dirs) {
      let u;
      try {
        u = new URL(d);
      } catch {}
      if (!u || !/^https?:$/.test(u.protocol) || !d.endsWith("/") || u.search || u.hash) {
        return "payDirectory " + d + " must be an absolute http(s) URL ending in /";
      }
      ok ||= u.pathname === "/" ? u.origin === new URL(page).origin : directory(u) === here;
    }
    if (!ok) {
      return (
        (page === location.href ? "this page's directory " : "on iOS WeChat checks the landing URL " + page + ", whose directory ") +
        here +
        " is not a registered pay directory (" +
        dirs.join(", ") +
        "): WeChat would refuse with 当前页面的URL未注册"
      );
    }
  }
  return "";
};

// ---------------------------------------------------------------------------
// checkout: the server's side of a payment, around requestPayment

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const millis = (v, d) => (v >= 0 ? Math.min(v, 2147483647) : d);

/** The default hooks: the wxpay-combine server's two routes under `o.baseUrl`. */
const serverHooks = (o) => {
  const base =
    String(o.baseUrl).replace(/\/+$/, "") + "/api/combine-orders/" + encodeURIComponent(o.order);
  // One JSON request, aborted after `ms` or when `abort` fires.
  const request = (url, method, ms, abort) => {
    const control = new AbortController();
    const stop = () => control.abort();
    const timer = setTimeout(stop, ms);
    if (abort) abort.addEventListener("abort", stop);
    return fetch(url, {
      method,
      credentials: o.credentials || "include",
      cache: "no-store",
      headers: { Accept: "application/json", ...o.headers },
      signal: control.signal,
    })
      .then(
        (r) => r.json().then((body) => [r, body], () => [r, {}]),
        (e) => {
          throw new PayError("server_error", "no answer from " + url, "", "", e);
        },
      )
      .then(([r, body]) => {
        if (r.ok && body && typeof body == "object") return body;
        throw new PayError(
          "server_error",
          "server answered " + r.status + ": " + (body.message || ""),
          body.code || "",
        );
      })
      .finally(() => {
        clearTimeout(timer);
        if (abort) abort.removeEventListener("abort", stop);
      });
  };
  return [
    (_, ms, abort) => request(base + "/pay-params", "POST", ms, abort).then((b) => b.pay_params),
    (_, ms, abort) => request(base, "GET", ms, abort),
  ];
};

let checkingOut;

/**
 * `checkout(options)` of the package (see its README), `pay` being the
 * module's `requestPayment`: parameters from `getPayParams` (or the server's
 * route), `pay`, then the order's state from `getOrderState` (or the route)
 * until SUCCESS, a final failure, or `confirmTimeoutMs`. After a failure of
 * the open cashier (cancel, fail, timeout) the server is asked once: the
 * money may have gone.
 */
export async function checkout(o, pay) {
  o = o || {};
  const { order, signal } = o;
  let [getPayParams, getOrderState] = [o.getPayParams, o.getOrderState].map(
    (f) => typeof f == "function" && f,
  );
  if (
    typeof order != "string" ||
    !order ||
    !((getPayParams && getOrderState) || typeof o.baseUrl == "string")
  ) {
    throw new PayError(
      "invalid_params",
      "checkout needs { order } and baseUrl, or getPayParams and getOrderState",
    );
  }
  const server = serverHooks(o);
  getPayParams ||= server[0];
  getOrderState ||= server[1];
  if (checkingOut) throw new PayError("busy", "a payment is already open on this page");
  checkingOut = 1;
  let stop;
  const aborted = new Promise((_, e) => {
    stop = () => e(new PayError("aborted", "aborted", "", "", signal.reason));
  });
  aborted.catch(() => {});
  if (signal) signal.aborted ? stop() : signal.addEventListener("abort", stop);
  const step = (p) => Promise.race([p, aborted]);
  // A hook's answer within `ms`; a throw that is not a PayError becomes one.
  const ask = (f, ms, what) =>
    step(
      Promise.race([
        new Promise((r) => r(f(order, ms, signal))),
        sleep(ms + 1000).then(() => {
          throw Error("timeout");
        }),
      ]).catch((e) => {
        throw e instanceof PayError
          ? e
          : new PayError("server_error", what + " failed: " + ((e && e.message) || e), "", "", e);
      }),
    );
  // The order as the server reports it ({} when it did not).
  const state = (ms) =>
    ask(getOrderState, ms, "getOrderState").then(
      (b) => (b && typeof b == "object" ? b : {}),
      (e) => {
        if (e.code == "aborted") throw e;
        return {};
      },
    );
  try {
    const params = await ask(getPayParams, 15000, "getPayParams");
    let paid;
    try {
      paid = await step(pay(params, o));
    } catch (e) {
      if (e.opened) {
        const b = await state(5000);
        if (b.state == "SUCCESS") return b;
      }
      throw e;
    }
    const end = Date.now() + millis(o.confirmTimeoutMs, 20000);
    for (let delay = 500; ; delay = Math.min(delay * 1.5, 3000)) {
      const b = await state(Math.max(end - Date.now(), 3000));
      if (b.state == "SUCCESS") return b;
      if (/^(CLOSED|PAYERROR|REFUND)$/.test(b.state)) {
        throw new PayError("fail", "WeChat said ok but the server reports the order " + b.state, paid.errMsg);
      }
      const left = end - Date.now();
      if (left <= 0) {
        throw new PayError(
          "not_confirmed",
          "payment not yet confirmed by the server; check the order later",
          paid.errMsg,
        );
      }
      await step(sleep(Math.min(delay, left)));
    }
  } finally {
    checkingOut = 0;
    if (signal) signal.removeEventListener("abort", stop);
  }
}

// ---------------------------------------------------------------------------
// Promise plumbing for src/task.rs

// The wasm instance's exports; `wxpay_wake()` polls the Rust tasks.
let wasm;
export const setWake = (exports) => {
  wasm = exports;
};
const wake = () => wasm.wxpay_wake();

// A one-shot signal: `f` settles it ok, `e` settles it failed (first call
// wins), then `ok` and `v` tell how. Rust passes `f` / `e` as callbacks,
// listeners and `then` handlers, and reads the outcome when polled.
export function signal() {
  const s = {};
  const settle = (ok) => (v) => {
    if (s.ok === undefined) {
      s.ok = ok;
      s.v = v;
      wake();
    }
  };
  s.f = settle(true);
  s.e = settle(false);
  return s;
}

/** A signal settled (ok, with the reason) once `abort` (an AbortSignal) fires. */
export function aborted(abort) {
  const s = signal();
  if (abort) {
    if (abort.aborted) {
      s.ok = true;
      s.v = abort.reason;
    } else abort.addEventListener("abort", () => s.f(abort.reason), { once: true });
  }
  return s;
}

// A Promise with its settle functions, for the Promises Rust returns.
export function deferred() {
  const d = {};
  d.p = new Promise((f, e) => {
    d.f = f;
    d.e = e;
  });
  return d;
}

export const global = (key) => W[key];
