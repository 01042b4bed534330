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
// Language: Chinese by default, English when the payer chose it (kept in
// localStorage; `?lang=en` / `?lang=zh` also sets it).

const LANG_KEY = "wxpay-demo:lang";

function chosenLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (asked === "en" || asked === "zh") {
    try {
      localStorage.setItem(LANG_KEY, asked);
    } catch {
      // Storage blocked: this page view only.
    }
    return asked;
  }
  try {
    return localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
  } catch {
    return "zh";
  }
}

/** `"zh"` or `"en"`. */
export const lang = chosenLanguage();

/** The text in the page's language. */
export function t(zh, en) {
  return lang === "en" ? en : zh;
}

/**
 * Puts the static text of the page in its language (elements carry the
 * English in `data-en`, `data-en-label` for aria-label), and adds the
 * language switch to the top bar.
 */
function applyLanguage() {
  document.documentElement.lang = t("zh-CN", "en");
  if (lang === "en") {
    for (const node of document.querySelectorAll("[data-en]")) node.textContent = node.dataset.en;
    for (const node of document.querySelectorAll("[data-en-label]")) {
      node.setAttribute("aria-label", node.dataset.enLabel);
    }
    if (document.body.dataset.enTitle) document.title = document.body.dataset.enTitle;
  }
  const other = lang === "en" ? "zh" : "en";
  document.querySelector(".topbar").append(
    el("button", {
      type: "button",
      class: "lang-switch",
      lang: other === "en" ? "en" : "zh-CN",
      "data-testid": "lang-switch",
      text: other === "en" ? "English" : "中文",
      onclick: () => {
        try {
          localStorage.setItem(LANG_KEY, other);
        } catch {
          // Storage blocked: the address carries it.
        }
        const url = new URL(location.href);
        url.searchParams.set("lang", other);
        location.assign(url.href);
      },
    }),
  );
}

/** Times of the server, shown in China time (the merchant's and WeChat Pay's). */
export function chinaTime(t) {
  const date = typeof t === "string" ? new Date(t) : null;
  if (!date || Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(lang === "en" ? "en-GB" : "zh-CN", {
    timeZone: "Asia/Shanghai",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

// ---------------------------------------------------------------------------
// Announcements for screen readers: one polite live region, in the page
// from the start (a region added or unhidden together with its text is
// often not read).

/** Says `text` through the page's live region. */
export function announce(text) {
  const region = byTestId("announcer");
  if (!region) return;
  // Cleared first, so the same words twice are read twice.
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

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
/** Set by `boot()` outside WeChat in production: no OAuth redirect. */
let cannotSignIn = false;

/**
 * Sends the payer through the server's OAuth (in the demo: the simulator's
 * authorize page), back to this page. Returns a Promise that never settles
 * (the page is navigating away), or throws on a redirect loop.
 */
export function login(loginUrl) {
  // Several requests may learn at once that there is no session.
  if (redirecting) return redirecting;
  // Outside WeChat (production) signing in cannot work: the page says so
  // instead of sending the payer to WeChat's authorization.
  if (cannotSignIn) {
    throw new ApiError(401, "NOT_IN_WECHAT", t("请在微信中打开此页面。", "Open this page in WeChat."));
  }
  const last = Number(sessionStorage.getItem(LOGIN_MARK) || 0);
  if (Date.now() - last < LOGIN_LOOP_MS) {
    sessionStorage.removeItem(LOGIN_MARK);
    throw new ApiError(
      401,
      "NO_SESSION",
      t(
        "登录未能保持（会话 Cookie 是否被阻止？）。请刷新页面重试。",
        "Signing in did not stick (is the session cookie blocked?). Reload the page to try again.",
      ),
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
    throw new ApiError(0, "NETWORK", t(`服务器没有响应（${e.message}）。`, `The server did not answer (${e.message}).`));
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
 * Loads the server config and the payment package, and shows where the page
 * runs: the demo banner (the simulator's bridge pays, in any browser), or
 * outside WeChat the "open in WeChat" notice — before any sign-in, as
 * signing in (OAuth) works only inside WeChat. Then signs the payer in
 * (OAuth) when the page can pay. Resolves `{ config, pkg, canPay, signedIn }`.
 */
export async function boot() {
  applyLanguage();
  const [config, pkg] = await Promise.all([api("/api/config"), loadPackage()]);
  const demo = config.demo === true;
  // Synchronous, without the WebAssembly module.
  const where = pkg.environment();
  const env = byTestId("environment");
  const runtime = byTestId("runtime");
  if (demo) {
    env.append(
      el(
        "div",
        { class: "banner banner-demo", role: "note", "data-testid": "banner-demo" },
        el("strong", { text: t("模拟环境，不涉及真实资金。", "Simulation — no real money.") }),
        t(
          " 微信与微信支付由本地模拟器模拟，支付不会离开本机。",
          " WeChat and WeChat Pay are simulated by the local simulator; no payment leaves this machine.",
        ),
      ),
    );
    bridge = loadBridge(config.simulator_bridge_url);
    // Reported now for a visible failure; awaited again before paying.
    bridge.catch(() => {});
  } else if (where !== "wechat") {
    cannotSignIn = true;
    const webView = where === "miniprogram-webview";
    env.append(
      el(
        "div",
        { class: "banner banner-warn", role: "alert", "data-testid": "notice-not-wechat" },
        el("strong", {
          text: webView
            ? t("请在小程序中支付。", "Pay in the mini program.")
            : t("请在微信中打开此页面以支付。", "Open this page in WeChat to pay."),
        }),
        webView
          ? t(
              " 小程序的网页视图（web-view）中无法使用微信支付 JSAPI，请返回小程序完成支付。",
              " WeChat Pay JSAPI cannot run in a mini program's web-view: go back to the mini program to pay.",
            )
          : t(
              " 微信支付 JSAPI 只能在微信内置浏览器中使用：请复制链接，在微信中打开。",
              " WeChat Pay JSAPI payment works only inside WeChat's built-in browser: copy the link and open it in WeChat.",
            ),
      ),
    );
    runtime.textContent = webView ? t("小程序网页视图", "Mini program web-view") : t("不在微信中", "Not in WeChat");
    return { config, pkg, canPay: false, signedIn: false };
  }
  // The session: without one the payer goes through OAuth (silent
  // snsapi_base; in the demo the simulator's authorize page) and comes back.
  const session = await api("/api/session");
  // Signed in: a later 401 (session expired) may log in again at once.
  sessionStorage.removeItem(LOGIN_MARK);
  const version = pkg.weChatVersion();
  const here = demo ? t("演示模式：模拟微信", "Demo mode: simulated WeChat") : `${t("微信", "WeChat")} ${version || ""}`.trim();
  const who = session.openid_masked ? ` · ${t("付款人", "payer")} ${session.openid_masked}` : "";
  runtime.textContent = here + who;
  return { config, pkg, canPay: true, signedIn: true };
}

/** The package, its WebAssembly module loading meanwhile. */
async function loadPackage() {
  let pkg;
  try {
    pkg = await import(PACKAGE_URL.href);
  } catch (e) {
    throw new Error(
      t(
        `支付组件未能从 ${PACKAGE_URL.pathname} 加载（${e.message}）。请先运行 \`cargo xtask wasm\` 构建。`,
        `The payment package did not load from ${PACKAGE_URL.pathname} (${e.message}). Build it with \`cargo xtask wasm\`.`,
      ),
    );
  }
  // A load failure is a PayError (load_failed / unsupported) that the
  // payment reports; started now so paying does not wait for it.
  pkg.load().catch(() => {});
  return pkg;
}

let bridge = null;

/** sessionStorage key: in demo mode, the package's `timeoutMs` for the cashier's answer. */
const DEMO_ANSWER_TIMEOUT_KEY = "wxpay-demo-answer-timeout-ms";

/**
 * Inserts the simulator's bridge.js and resolves once `WeixinJSBridge`
 * exists. The package checks the user agent only while the bridge is
 * missing, so in demo mode the page waits for it before paying.
 */
function loadBridge(src) {
  return new Promise((resolve, reject) => {
    if (!src) {
      reject(new Error(t("服务器处于演示模式，却未提供模拟器的 bridge。", "The server is in demo mode but names no simulator bridge.")));
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
      reject(new Error(t(`模拟器的 bridge（${src}）未能就绪。`, `The simulator bridge (${src}) did not become ready.`)));
    }, 10000);
    const script = el("script", { src, async: true });
    script.addEventListener("error", () => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(t(`模拟器的 bridge 未能从 ${src} 加载。`, `The simulator bridge did not load from ${src}.`)));
    });
    document.head.append(script);
  });
}

// ---------------------------------------------------------------------------
// Orders

/** Words for the server's trade states. */
export const STATE_TEXT = {
  NOTPAY: ["未支付", "Not paid"],
  USERPAYING: ["支付中", "Paying"],
  SUCCESS: ["已支付", "Paid"],
  CLOSED: ["已关闭", "Closed"],
  PAYERROR: ["支付失败", "Payment failed"],
  REFUND: ["已退款", "Refunded"],
};

/** A trade state in the page's language. */
export function stateText(state) {
  const words = STATE_TEXT[state];
  return words ? t(...words) : state;
}

/** A refund's status in words (never the colour alone). */
export const REFUND_TEXT = {
  PROCESSING: ["退款处理中", "Refund in progress"],
  SUCCESS: ["已退款", "Refunded"],
  CLOSED: ["退款关闭", "Refund closed"],
  ABNORMAL: ["退款异常", "Refund needs attention"],
};

/**
 * The refunds of one sub-order (made by the merchant; the page only shows
 * them and never offers one).
 */
function refundList(s) {
  if (!Array.isArray(s.refunds) || s.refunds.length === 0) return null;
  const title = t("退款", "Refunds");
  return el(
    "section",
    { class: "refunds", "data-testid": "refunds", "aria-label": title },
    el("h3", { class: "refunds-title", text: title }),
    el(
      "ul",
      { class: "refund-list" },
      s.refunds.map((r) => {
        const words = REFUND_TEXT[r.status];
        const received = r.status === "SUCCESS" && chinaTime(r.success_time);
        return el(
          "li",
          { class: "refund", "data-testid": "refund", "data-status": r.status },
          el(
            "div",
            { class: "row" },
            el("span", {
              class: `refund-status refund-${r.status}`,
              "data-testid": "refund-status",
              text: words ? t(...words) : r.status,
            }),
            el("span", { class: "refund-amount", "data-testid": "refund-amount", text: yuan(r.amount) }),
          ),
          received &&
            el("div", { class: "muted", text: `${t("到账时间（北京时间）", "Received (China time)")} ${received}` }),
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
          el("dt", { text: t("商户号", "Merchant no.") }),
          el("dd", { text: s.mchid }),
          el("dt", { text: t("子单号", "Sub-order") }),
          el("dd", { class: "mono", text: s.out_trade_no }),
          // A coupon: the payer paid less than the sub-order's amount.
          s.payer_amount != null && el("dt", { text: t("实付", "You paid") }),
          s.payer_amount != null &&
            el("dd", {
              "data-testid": "payer-amount",
              text: `${yuan(s.payer_amount)}（${t("优惠券", "coupon")} ${yuan(s.amount - s.payer_amount)}）`,
            }),
          el("dt", { text: t("状态", "State") }),
          // The state code itself (tests and support read it), its words beside.
          el(
            "dd",
            {},
            el("span", { "data-testid": "trade-state", text: s.trade_state }),
            STATE_TEXT[s.trade_state] && ` · ${stateText(s.trade_state)}`,
          ),
          s.transaction_id && el("dt", { text: t("微信支付单号", "Transaction") }),
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
 * timed out or not yet confirmed (check the order; do not pay twice),
 * confirmed by the server (sub-orders, transaction ids), or an error. Each
 * change is announced through the live region, and a final one takes the
 * focus to the panel's title. Resolves with that state (the panel's
 * `data-state`), after `onSettled(state, order)` (also called when "Pay
 * again" in the panel settles). A `wxpay:busy` event on `document` (detail
 * true / false) brackets the payment.
 */
export async function pay(env, order, panel, { onSettled } = {}) {
  let settled = "error";
  let confirmed = null;
  const show = (state, title, ...body) => {
    settled = state;
    panel.hidden = false;
    panel.dataset.state = state;
    panel.className = `status status-${state}`;
    const heading = el("h2", { "data-testid": "status-title", tabindex: "-1", text: title });
    panel.replaceChildren(heading, ...body);
    announce(title);
    if (state !== "waiting") {
      panel.scrollIntoView({ block: "start" });
      heading.focus({ preventScroll: true });
    }
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
    text: t("查看订单", "Order details"),
  });
  const message = (e) => el("p", { "data-testid": "status-message", text: (e && e.message) || String(e) });

  const busy = (on) => document.dispatchEvent(new CustomEvent("wxpay:busy", { detail: on }));
  busy(true);
  show(
    "waiting",
    t("等待微信支付…", "Waiting for WeChat…"),
    el("p", {
      text: t(
        "请在微信收银台完成支付，之后本页等待服务器确认。",
        "Complete the payment in WeChat's cashier. This page then waits for the server to confirm it.",
      ),
    }),
    el("div", { class: "spinner", "aria-hidden": "true" }),
  );
  try {
    const options = { baseUrl: "", order };
    if (bridge) {
      await bridge;
      // Demo only (production pages never read it): the e2e tests shorten
      // how long the package waits for the cashier's answer.
      const answerMs = Number(sessionStorage.getItem(DEMO_ANSWER_TIMEOUT_KEY));
      if (answerMs > 0) options.timeoutMs = answerMs;
    }
    confirmed = await env.pkg.checkout(options);
    show(
      "success",
      t("支付成功，服务器已确认", "Paid — confirmed by the server"),
      el("p", {
        text: t(
          `一次支付 ${yuan(confirmed.total_amount)}，分给 ${confirmed.sub_orders.length} 个商户：`,
          `${yuan(confirmed.total_amount)} in one payment, split across ${confirmed.sub_orders.length} merchants:`,
        ),
      }),
      subOrderList(confirmed),
      el("p", {}, orderLink),
    );
  } catch (e) {
    const code = e instanceof env.pkg.PayError ? e.code : "error";
    switch (code) {
      case "cancel":
        show(
          "cancelled",
          t("已取消支付", "Payment cancelled"),
          el("p", {
            text: t(
              "没有扣款。订单已保留，可以现在或稍后支付。",
              "Nothing was charged. The order is kept; you can pay it now or later.",
            ),
          }),
          el("div", { class: "actions" }, againButton(t("重新支付", "Pay again")), orderLink),
        );
        break;
      case "fail": {
        // The message ends with the hint, shown apart.
        const text = e.message || "";
        const detail = e.hint && text.endsWith(e.hint) ? text.slice(0, -e.hint.length).trim() : text;
        show(
          "failed",
          t("支付失败", "Payment failed"),
          el("p", { "data-testid": "status-message", text: detail }),
          e.errMsg && el("p", { class: "mono muted", text: e.errMsg }),
          e.hint && el("p", { class: "hint", "data-testid": "status-hint", lang: "en", text: e.hint }),
          el("div", { class: "actions" }, againButton(t("再试一次", "Try again")), orderLink),
        );
        break;
      }
      case "timeout":
      case "not_confirmed":
        // The payment may have gone through: never invite a second one here.
        show(
          code,
          code === "timeout"
            ? t("微信没有回应", "WeChat did not answer")
            : t("支付结果尚未确认", "Payment not yet confirmed"),
          el("p", {
            text:
              code === "timeout"
                ? t(
                    "微信收银台没有返回结果，服务器也未确认付款。请不要重复支付：稍后在订单页查看结果。",
                    "WeChat's cashier did not answer and the server has not confirmed a payment. Do not pay twice: check the order in a moment.",
                  )
                : t(
                    "微信已报告支付，但服务器尚未确认。请不要重复支付：稍后在订单页查看结果。",
                    "WeChat reported the payment, but the server has not confirmed it yet. Do not pay twice: check the order in a moment.",
                  ),
          }),
          code === "timeout" && message(e),
          el("div", { class: "actions" }, orderLink),
        );
        break;
      default:
        show(
          "error",
          code === "not_wechat"
            ? t("请在微信中打开此页面以支付", "Open this page in WeChat to pay")
            : t("支付未能开始", "The payment did not start"),
          message(e),
          e.hint && el("p", { class: "hint", "data-testid": "status-hint", lang: "en", text: e.hint }),
          el("div", { class: "actions" }, againButton(t("再试一次", "Try again")), orderLink),
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
