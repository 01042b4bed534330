// Shared by the shop (shop.js) and the order page (order.js): money
// formatting, the JSON API with the OAuth session, the payment package, the
// demo simulator's bridge, and the payment status panel.
//
// No framework and no CDN: everything here is served by the merchant's own
// server from the pay directory (/pay/).

/** The npm package built by `cargo xtask wasm`, served at /pay/pkg/. */
const PACKAGE_URL = new URL("./pkg/index.js", import.meta.url);

/** A guard against OAuth redirect loops (the session cookie did not stick). */
const LOGIN_MARK = "wxpay-demo:login-at";
const LOGIN_LOOP_MS = 15000;

// ---------------------------------------------------------------------------
// Money: integer fen in, "¥12.30" out. No floating point touches an amount.

/** Formats integer fen as yuan, e.g. 1230 → "¥12.30". */
export function yuan(fen) {
  if (!Number.isSafeInteger(fen)) return "¥—";
  const abs = Math.abs(fen);
  const cents = abs % 100;
  // (abs - cents) is a multiple of 100, so the division is exact.
  const whole = (abs - cents) / 100;
  return `${fen < 0 ? "-" : ""}¥${whole}.${String(cents).padStart(2, "0")}`;
}

// ---------------------------------------------------------------------------
// DOM

/**
 * Creates an element. `attrs` keys are attributes, except `text` (text
 * content) and `on<event>` (listeners). Children are nodes or strings;
 * server strings only ever become text, never HTML.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** `document.querySelector('[data-testid="…"]')`. */
export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${CSS.escape(id)}"]`);
}

// ---------------------------------------------------------------------------
// Server API (same origin, session cookie)

/** An error answer of the server: `{ code, message }` and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `server answered ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code || `HTTP_${status}`;
  }
}

/** The path and query of this page: where OAuth brings the payer back. */
function herePath() {
  return location.pathname + location.search;
}

/** Set once this page is on its way to the login. */
let redirecting = null;

/**
 * Sends the payer through the server's OAuth (in the demo: the simulator's
 * authorize page), back to this page. Returns a Promise that never settles
 * (the page is navigating away), or throws on a redirect loop.
 */
export function login(loginUrl) {
  // Several requests may learn at once that there is no session.
  if (redirecting) return redirecting;
  const last = Number(sessionStorage.getItem(LOGIN_MARK) || 0);
  if (Date.now() - last < LOGIN_LOOP_MS) {
    sessionStorage.removeItem(LOGIN_MARK);
    throw new ApiError(
      401,
      "NO_SESSION",
      "Signing in did not stick (is the session cookie blocked?). Reload the page to try again.",
    );
  }
  sessionStorage.setItem(LOGIN_MARK, String(Date.now()));
  const url = new URL(loginUrl || "/oauth/start", location.href);
  url.searchParams.set("return", herePath());
  location.assign(url.href);
  redirecting = new Promise(() => {});
  return redirecting;
}

/**
 * One JSON request. A 401 NO_SESSION starts OAuth (the payer comes back to
 * this page); any other non-2xx answer throws an `ApiError`.
 */
export async function api(path, { method = "GET", body } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "NETWORK", `The server did not answer (${e.message}).`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: reported below with the status.
  }
  if (response.status === 401 && (!data || data.code === "NO_SESSION")) {
    return login(data && data.login_url);
  }
  if (!response.ok || data === null || typeof data !== "object") {
    throw new ApiError(response.status, data && data.code, data && data.message);
  }
  return data;
}

// ---------------------------------------------------------------------------
// Environment: the package, WeChat or the demo simulator

/**
 * Signs the payer in (OAuth) when needed, loads the server config and the
 * payment package, shows the demo banner or the not-in-WeChat notice, and
 * (demo) starts loading the simulator's bridge. Resolves
 * `{ config, pkg, canPay }`.
 */
export async function boot() {
  // The session first: without one the payer goes through OAuth (silent
  // snsapi_base; in the demo the simulator's authorize page) and comes back.
  const [config, pkg, session] = await Promise.all([
    api("/api/config"),
    loadPackage(),
    api("/api/session"),
  ]);
  // Signed in: a later 401 (session expired) may log in again at once.
  sessionStorage.removeItem(LOGIN_MARK);
  const demo = config.demo === true;
  const inWeChat = pkg.isWeChat();
  const env = byTestId("environment");
  if (demo) {
    env.append(
      el(
        "div",
        { class: "banner banner-demo", role: "note", "data-testid": "banner-demo" },
        el("strong", { text: "Simulation — no real money." }),
        " WeChat and WeChat Pay are simulated by the local simulator; no payment leaves this machine.",
      ),
    );
    bridge = loadBridge(config.simulator_bridge_url);
    // Reported now for a visible failure; awaited again before paying.
    bridge.catch(() => {});
  } else if (!inWeChat) {
    env.append(
      el(
        "div",
        { class: "banner banner-warn", role: "alert", "data-testid": "notice-not-wechat" },
        el("strong", { text: "Open this page in WeChat to pay." }),
        " WeChat Pay JSAPI payment works only inside WeChat's built-in browser.",
      ),
    );
  }
  const version = pkg.weChatVersion();
  const where = demo
    ? "Demo mode: simulated WeChat"
    : inWeChat
      ? `WeChat ${version || ""}`.trim()
      : "Not in WeChat";
  const who = session.openid_masked ? ` · payer ${session.openid_masked}` : "";
  byTestId("runtime").textContent = where + who;
  return { config, pkg, canPay: demo || inWeChat };
}

async function loadPackage() {
  let pkg;
  try {
    pkg = await import(PACKAGE_URL.href);
    // Instantiates the WebAssembly module; isWeChat() needs it.
    await pkg.load();
  } catch (e) {
    throw new Error(
      `The payment package did not load from ${PACKAGE_URL.pathname} (${e.message}). ` +
        "Build it with `cargo xtask wasm`.",
    );
  }
  return pkg;
}

let bridge = null;

/**
 * Inserts the simulator's bridge.js and resolves once `WeixinJSBridge`
 * exists. The package checks the user agent only while the bridge is
 * missing, so in demo mode the page waits for it before paying.
 */
function loadBridge(src) {
  return new Promise((resolve, reject) => {
    if (!src) {
      reject(new Error("The server is in demo mode but names no simulator bridge."));
      return;
    }
    const done = () => {
      if (typeof window.WeixinJSBridge === "object" && window.WeixinJSBridge) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve();
      }
    };
    document.addEventListener("WeixinJSBridgeReady", done);
    const poll = setInterval(done, 100);
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`The simulator bridge (${src}) did not become ready.`));
    }, 10000);
    const script = el("script", { src, async: true });
    script.addEventListener("error", () => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`The simulator bridge did not load from ${src}.`));
    });
    document.head.append(script);
  });
}

// ---------------------------------------------------------------------------
// Orders

/** Human words for the server's trade states. */
export const STATE_TEXT = {
  NOTPAY: "Not paid",
  USERPAYING: "Paying",
  SUCCESS: "Paid",
  CLOSED: "Closed",
  PAYERROR: "Payment failed",
  REFUND: "Refunded",
};

/**
 * A refund's status in words, Chinese first (the payer's WeChat bill uses
 * the same terms); the words carry the status, never the colour alone.
 */
export const REFUND_TEXT = {
  PROCESSING: ["退款处理中", "Refund in progress"],
  SUCCESS: ["已退款", "Refunded"],
  CLOSED: ["退款关闭", "Refund closed"],
  ABNORMAL: ["退款异常", "Refund needs attention"],
};

/** An RFC 3339 time of the server (China time) in the payer's locale. */
function localTime(t) {
  const date = typeof t === "string" ? new Date(t) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleString() : "";
}

/**
 * The refunds of one sub-order (made by the merchant; the page only shows
 * them and never offers one).
 */
function refundList(s) {
  if (!Array.isArray(s.refunds) || s.refunds.length === 0) return null;
  return el(
    "section",
    { class: "refunds", "data-testid": "refunds", "aria-label": "退款 Refunds" },
    el("h3", { class: "refunds-title", text: "退款 Refunds" }),
    el(
      "ul",
      { class: "refund-list" },
      s.refunds.map((r) => {
        const [zh, en] = REFUND_TEXT[r.status] || [r.status, ""];
        const received = r.status === "SUCCESS" && localTime(r.success_time);
        return el(
          "li",
          { class: "refund", "data-testid": "refund", "data-status": r.status },
          el(
            "div",
            { class: "row" },
            el(
              "span",
              { class: `refund-status refund-${r.status}`, "data-testid": "refund-status" },
              zh,
              en && el("span", { class: "refund-en", text: ` ${en}` }),
            ),
            el("span", { class: "refund-amount", "data-testid": "refund-amount", text: yuan(r.amount) }),
          ),
          received && el("div", { class: "muted", text: `到账时间 Received ${received}` }),
        );
      }),
    ),
  );
}

/** The sub-orders of a server order: merchant, amount, transaction id, refunds. */
export function subOrderList(order) {
  return el(
    "ul",
    { class: "suborders", "data-testid": "sub-orders" },
    order.sub_orders.map((s) =>
      el(
        "li",
        { class: "suborder", "data-testid": "sub-order", "data-mchid": s.mchid },
        el(
          "div",
          { class: "row" },
          el("span", { class: "merchant-name", text: s.merchant_name || s.mchid }),
          el("span", { class: "amount", text: yuan(s.amount) }),
        ),
        el("div", { class: "muted", text: s.description }),
        el(
          "dl",
          { class: "facts" },
          el("dt", { text: "Merchant no." }),
          el("dd", { text: s.mchid }),
          el("dt", { text: "Sub-order" }),
          el("dd", { class: "mono", text: s.out_trade_no }),
          // A coupon: the payer paid less than the sub-order's amount.
          s.payer_amount != null && el("dt", { text: "You paid" }),
          s.payer_amount != null &&
            el("dd", {
              "data-testid": "payer-amount",
              text: `${yuan(s.payer_amount)} (coupon ${yuan(s.amount - s.payer_amount)})`,
            }),
          el("dt", { text: "State" }),
          el("dd", { "data-testid": "trade-state", text: s.trade_state }),
          s.transaction_id && el("dt", { text: "Transaction" }),
          s.transaction_id &&
            el("dd", { class: "mono", "data-testid": "transaction-id", text: s.transaction_id }),
        ),
        refundList(s),
      ),
    ),
  );
}

/** The link to an order's own page (it survives reloads). */
export function orderHref(no) {
  return `order.html?no=${encodeURIComponent(no)}`;
}

// ---------------------------------------------------------------------------
// Payment

/**
 * Pays `order` (its combine_out_trade_no) with the package's `checkout` and
 * shows every outcome in `panel` (`data-state` tells tests and styles which):
 * waiting, cancelled (pay again on the same order), failed (with the hint),
 * confirmed by the server (sub-orders, transaction ids), or not yet
 * confirmed. Resolves with that state (the panel's `data-state`), after
 * `onSettled(state, order)` (also called when "Pay again" in the panel
 * settles). A `wxpay:busy` event on `document` (detail true / false)
 * brackets the payment.
 */
export async function pay(env, order, panel, { onSettled } = {}) {
  let settled = "error";
  let confirmed = null;
  const show = (state, title, ...body) => {
    settled = state;
    panel.hidden = false;
    panel.dataset.state = state;
    panel.className = `status status-${state}`;
    panel.replaceChildren(el("h2", { "data-testid": "status-title", text: title }), ...body);
    if (state !== "waiting") panel.scrollIntoView({ block: "start" });
  };
  const againButton = (label) =>
    el("button", {
      type: "button",
      class: "button",
      "data-testid": "pay-again",
      text: label,
      onclick: () => pay(env, order, panel, { onSettled }),
    });
  const orderLink = el("a", {
    href: orderHref(order),
    "data-testid": "order-link",
    text: "Order details",
  });

  const busy = (on) => document.dispatchEvent(new CustomEvent("wxpay:busy", { detail: on }));
  busy(true);
  show(
    "waiting",
    "Waiting for WeChat…",
    el("p", {
      text: "Complete the payment in WeChat's cashier. This page then waits for the server to confirm it.",
    }),
    el("div", { class: "spinner", "aria-hidden": "true" }),
  );
  try {
    if (bridge) await bridge;
    confirmed = await env.pkg.checkout({ baseUrl: "", order });
    show(
      "success",
      "Paid — confirmed by the server",
      el("p", {
        text: `${yuan(confirmed.total_amount)} in one payment, split across ${confirmed.sub_orders.length} merchants:`,
      }),
      subOrderList(confirmed),
      el("p", {}, orderLink),
    );
  } catch (e) {
    const code = e instanceof env.pkg.PayError ? e.code : "error";
    const message = (e && e.message) || String(e);
    switch (code) {
      case "cancel":
        show(
          "cancelled",
          "Payment cancelled",
          el("p", { text: "Nothing was charged. The order is kept; you can pay it now or later." }),
          el("div", { class: "actions" }, againButton("Pay again"), orderLink),
        );
        break;
      case "fail": {
        // The message ends with the hint, shown apart.
        const detail =
          e.hint && message.endsWith(e.hint) ? message.slice(0, -e.hint.length).trim() : message;
        show(
          "failed",
          "Payment failed",
          el("p", { "data-testid": "status-message", text: detail }),
          e.errMsg && el("p", { class: "mono muted", text: e.errMsg }),
          e.hint && el("p", { class: "hint", "data-testid": "status-hint", text: e.hint }),
          el("div", { class: "actions" }, againButton("Try again"), orderLink),
        );
        break;
      }
      case "not_confirmed":
        show(
          "not_confirmed",
          "Payment not yet confirmed",
          el("p", {
            text: "WeChat reported the payment, but the server has not confirmed it yet. Do not pay twice: check the order in a moment.",
          }),
          el("div", { class: "actions" }, orderLink),
        );
        break;
      default:
        show(
          "error",
          code === "not_wechat" ? "Open this page in WeChat to pay" : "The payment did not start",
          el("p", { "data-testid": "status-message", text: message }),
          el("div", { class: "actions" }, againButton("Try again"), orderLink),
        );
    }
  } finally {
    busy(false);
  }
  if (onSettled) onSettled(settled, confirmed);
  return settled;
}

/** Shows a page-level error (the page could not load). */
export function fatal(e) {
  const box = byTestId("fatal");
  box.hidden = false;
  box.textContent = (e && e.message) || String(e);
  console.error(e);
}
