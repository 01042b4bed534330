// The order page: /pay/order.html?no=<combine_out_trade_no>. Everything it
// shows comes from the server, so it survives reloads and is the place to
// come back to when a payment was not confirmed in time.

import {
  api,
  boot,
  byTestId,
  el,
  fatal,
  orderHref,
  pay,
  STATE_TEXT,
  subOrderList,
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
    const claimed = await api("/api/pay-links/claim", { method: "POST", body: { token: claim } });
    no = claimed.combine_out_trade_no;
    history.replaceState(null, "", orderHref(no));
    document.title = `Order ${no} · wxpay-combine demo`;
    render(claimed.order);
    return;
  }
  if (!no) throw new Error("No order number in the address: open order.html?no=<order number>.");
  document.title = `Order ${no} · wxpay-combine demo`;
  const [booted, order] = await Promise.all([boot(), load()]);
  env = booted;
  render(order);
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

/** An RFC 3339 time of the server (China time) in the payer's locale. */
function when(t) {
  const date = typeof t === "string" ? new Date(t) : null;
  return date && !Number.isNaN(date.getTime()) ? date.toLocaleString() : "";
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
        text: STATE_TEXT[order.state] || order.state,
      }),
      el("span", { class: "total", "data-testid": "order-total", text: yuan(order.total_amount) }),
    ),
    el(
      "dl",
      { class: "facts" },
      el("dt", { text: "Order no." }),
      el("dd", { class: "mono", "data-testid": "order-no", text: order.combine_out_trade_no }),
      when(order.created_at) && el("dt", { text: "Created" }),
      when(order.created_at) && el("dd", { text: when(order.created_at) }),
      el("dt", { text: "Paid to" }),
      el("dd", { text: `${order.sub_orders.length} merchants, in one payment` }),
    ),
    el("h2", { class: "section-title", text: "Sub-orders" }),
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
          text: `Pay again · ${yuan(order.total_amount)}`,
          onclick: onPay,
        }),
      el("button", {
        type: "button",
        class: "button button-quiet",
        "data-testid": "refresh",
        text: "Refresh status",
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
