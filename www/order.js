// The order page: /pay/order.html?no=<combine_out_trade_no>. Everything it
// shows comes from the server, so it survives reloads and is the place to
// come back to when a payment was not confirmed in time.

import {
  api,
  boot,
  byTestId,
  chinaTime,
  el,
  fatal,
  orderHref,
  pay,
  stateText,
  subOrderList,
  t,
  yuan,
} from "./common.js";

const params = new URLSearchParams(location.search);
let no = params.get("no");
let env = null;

main().catch(fatal);

async function main() {
  // A pay link from the merchant (order.html?claim=TOKEN): sign in first
  // (boot() runs OAuth), then claim it, which creates the order for this
  // payer; the token leaves the address bar at once.
  const claim = params.get("claim");
  if (claim && !no) {
    env = await boot();
    if (!env.signedIn) return notSignedIn();
    const claimed = await api("/api/pay-links/claim", { method: "POST", body: { token: claim } });
    no = claimed.combine_out_trade_no;
    history.replaceState(null, "", orderHref(no));
    document.title = title(no);
    render(claimed.order);
    return;
  }
  if (!no) {
    throw new Error(
      t("地址中没有订单号：请打开 order.html?no=<订单号>。", "No order number in the address: open order.html?no=<order number>."),
    );
  }
  document.title = title(no);
  // The order needs the session: read after boot(), which signs in only
  // where the page can pay (outside WeChat it shows the notice instead).
  env = await boot();
  if (!env.signedIn) return notSignedIn();
  render(await load());
}

function title(no) {
  return t(`订单 ${no} · wxpay-combine 演示`, `Order ${no} · wxpay-combine demo`);
}

function notSignedIn() {
  const root = byTestId("order");
  root.removeAttribute("aria-busy");
  root.replaceChildren(
    el("p", { class: "muted", text: t("在微信中打开此页面即可查看并支付订单。", "Open this page in WeChat to see and pay the order.") }),
  );
}

function load() {
  return api(`/api/combine-orders/${encodeURIComponent(no)}`);
}

async function refresh() {
  try {
    render(await load());
  } catch (e) {
    fatal(e);
  }
}

function render(order) {
  const open = order.state === "NOTPAY" || order.state === "USERPAYING";
  const root = byTestId("order");
  root.removeAttribute("aria-busy");
  root.replaceChildren(
    el(
      "div",
      { class: "order-head" },
      el("span", {
        class: `badge badge-${order.state}`,
        "data-testid": "order-state",
        "data-state": order.state,
        text: stateText(order.state),
      }),
      el("span", { class: "total", "data-testid": "order-total", text: yuan(order.total_amount) }),
    ),
    el(
      "dl",
      { class: "facts" },
      el("dt", { text: t("订单号", "Order no.") }),
      el("dd", { class: "mono", "data-testid": "order-no", text: order.combine_out_trade_no }),
      chinaTime(order.created_at) && el("dt", { text: t("下单时间（北京时间）", "Created (China time)") }),
      chinaTime(order.created_at) &&
        el("dd", { "data-testid": "order-created", text: chinaTime(order.created_at) }),
      el("dt", { text: t("收款方", "Paid to") }),
      el("dd", {
        text: t(`${order.sub_orders.length} 个商户，一次支付`, `${order.sub_orders.length} merchants, in one payment`),
      }),
    ),
    el("h2", { class: "section-title", text: t("子单", "Sub-orders") }),
    subOrderList(order),
    el(
      "div",
      { class: "actions" },
      open &&
        el("button", {
          type: "button",
          class: "button button-pay",
          "data-testid": "order-pay",
          disabled: !(env && env.canPay),
          text: `${t("重新支付", "Pay again")} · ${yuan(order.total_amount)}`,
          onclick: onPay,
        }),
      el("button", {
        type: "button",
        class: "button button-quiet",
        "data-testid": "refresh",
        text: t("刷新状态", "Refresh status"),
        onclick: refresh,
      }),
    ),
  );
}

async function onPay(event) {
  event.currentTarget.disabled = true;
  await pay(env, no, byTestId("status"));
  await refresh();
}
