// The shop: catalog grouped by sub-merchant, a cart with per-merchant
// subtotals, and one combined payment for all of it.

import { announce, api, boot, byTestId, el, fatal, orderHref, pay, t, yuan } from "./common.js";

/** The cart survives the OAuth round trip and reloads (this tab only). */
const CART_KEY = "wxpay-demo:cart";
/**
 * The order made for the cart, while unpaid: a reload (even mid-payment)
 * pays the same order again instead of making a second one.
 */
const PENDING_KEY = "wxpay-demo:pending";
const MAX_QTY = 99;

const shop = {
  env: null,
  /** Catalog items by sku, in catalog order. */
  items: new Map(),
  /** sku → quantity (> 0). */
  cart: new Map(),
  /** The order created for the cart `key`, while not paid. */
  pending: null,
  busy: false,
};

main().catch(fatal);

async function main() {
  const [env, catalog] = await Promise.all([boot(), api("/api/catalog")]);
  shop.env = env;
  for (const item of catalog.items) shop.items.set(item.sku, item);
  restoreCart();
  renderCatalog();
  renderCart();
  if (env.signedIn) await restorePending();
  byTestId("pay-button").addEventListener("click", onPay);
  // "Pay again" in the status panel pays without this module.
  document.addEventListener("wxpay:busy", (e) => {
    shop.busy = e.detail;
    updatePayButton();
  });
}

// ---------------------------------------------------------------------------
// Cart

function restoreCart() {
  let saved;
  try {
    saved = JSON.parse(sessionStorage.getItem(CART_KEY) || "{}");
  } catch {
    saved = {};
  }
  for (const [sku, qty] of Object.entries(saved)) {
    // Only what the server still sells, in sane quantities.
    if (shop.items.has(sku) && Number.isSafeInteger(qty) && qty > 0) {
      shop.cart.set(sku, Math.min(qty, MAX_QTY));
    }
  }
}

function saveCart() {
  sessionStorage.setItem(CART_KEY, JSON.stringify(Object.fromEntries(shop.cart)));
}

function savePending() {
  if (shop.pending) sessionStorage.setItem(PENDING_KEY, JSON.stringify(shop.pending));
  else sessionStorage.removeItem(PENDING_KEY);
}

/**
 * The order of the cart from before a reload: still open, it is the one to
 * pay; paid meanwhile (the payment went through while the page was away),
 * the cart is done; closed or failed, a new order will be made.
 */
async function restorePending() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  } catch {
    // Unreadable: as if none.
  }
  if (!saved || typeof saved.order !== "string" || saved.key !== cartKey()) {
    shop.pending = null;
    savePending();
    return;
  }
  shop.pending = saved;
  let order;
  try {
    order = await api(`/api/combine-orders/${encodeURIComponent(saved.order)}`);
  } catch {
    // Unknown for now: kept, so paying reuses it (the server checks).
    return;
  }
  if (order.state === "SUCCESS") {
    const panel = byTestId("status");
    panel.hidden = false;
    panel.dataset.state = "success";
    panel.className = "status status-success";
    const title = t("这笔订单已支付", "This order is paid");
    panel.replaceChildren(
      el("h2", { "data-testid": "status-title", tabindex: "-1", text: title }),
      el("p", {}, el("a", { href: orderHref(saved.order), "data-testid": "order-link", text: t("查看订单", "Order details") })),
    );
    announce(title);
    onSettled("success");
  } else if (order.state !== "NOTPAY" && order.state !== "USERPAYING") {
    shop.pending = null;
    savePending();
  }
}

function change(sku, delta) {
  const qty = Math.max(0, Math.min(MAX_QTY, (shop.cart.get(sku) || 0) + delta));
  if (qty === 0) shop.cart.delete(sku);
  else shop.cart.set(sku, qty);
  saveCart();
  renderQty(sku);
  const total = renderCart();
  // One announcement per change (the numbers on screen are not live regions).
  const name = shop.items.get(sku).name;
  announce(t(`${name}：${qty} 件，合计 ${yuan(total)}`, `${name}: ${qty}, total ${yuan(total)}`));
}

/** Cart lines grouped by merchant, in catalog order, with subtotals in fen. */
function cartByMerchant() {
  const groups = new Map();
  for (const item of shop.items.values()) {
    const qty = shop.cart.get(item.sku);
    if (!qty) continue;
    const key = item.merchant.mchid;
    if (!groups.has(key)) groups.set(key, { merchant: item.merchant, lines: [], subtotal: 0 });
    const group = groups.get(key);
    group.lines.push({ item, qty });
    group.subtotal += item.price_fen * qty;
  }
  return [...groups.values()];
}

// ---------------------------------------------------------------------------
// Rendering

function renderCatalog() {
  const merchants = new Map();
  for (const item of shop.items.values()) {
    const key = item.merchant.mchid;
    if (!merchants.has(key)) merchants.set(key, { merchant: item.merchant, items: [] });
    merchants.get(key).items.push(item);
  }
  const root = byTestId("catalog");
  root.removeAttribute("aria-busy");
  root.replaceChildren(
    ...[...merchants.values()].map(({ merchant, items }) =>
      el(
        "section",
        {
          class: "card merchant",
          "data-testid": `merchant-${merchant.mchid}`,
          "aria-label": merchant.name,
        },
        el(
          "h2",
          { class: "merchant-title" },
          el("span", { text: merchant.name }),
          el("span", { class: "mchid", text: `${t("商户号", "mchid")} ${merchant.mchid}` }),
        ),
        el("ul", { class: "items" }, items.map(itemRow)),
      ),
    ),
  );
}

function itemRow(item) {
  return el(
    "li",
    { class: "item", "data-testid": `item-${item.sku}` },
    el(
      "div",
      { class: "item-info" },
      el("span", { class: "item-name", text: item.name }),
      el("span", { class: "price", text: yuan(item.price_fen) }),
    ),
    el(
      "div",
      { class: "stepper", role: "group", "aria-label": t(`${item.name} 数量`, `Quantity of ${item.name}`) },
      el("button", {
        type: "button",
        class: "step",
        "data-testid": `remove-${item.sku}`,
        "aria-label": t(`减少一件${item.name}`, `Remove one ${item.name}`),
        text: "−",
        onclick: () => change(item.sku, -1),
      }),
      el("span", {
        class: "qty",
        "data-testid": `qty-${item.sku}`,
        text: String(shop.cart.get(item.sku) || 0),
      }),
      el("button", {
        type: "button",
        class: "step step-add",
        "data-testid": `add-${item.sku}`,
        "aria-label": t(`添加一件${item.name}`, `Add one ${item.name}`),
        text: "+",
        onclick: () => change(item.sku, 1),
      }),
    ),
  );
}

function renderQty(sku) {
  const qty = shop.cart.get(sku) || 0;
  byTestId(`qty-${sku}`).textContent = String(qty);
  byTestId(`item-${sku}`).classList.toggle("in-cart", qty > 0);
}

function renderCart() {
  const groups = cartByMerchant();
  const total = groups.reduce((sum, g) => sum + g.subtotal, 0);
  const lines = document.getElementById("cart-lines");
  if (groups.length === 0) {
    lines.replaceChildren(
      el("p", { class: "muted", text: t("购物车是空的。从上面任意店铺添加商品。", "Nothing yet. Add items from any of the shops above.") }),
    );
  } else {
    lines.replaceChildren(
      ...groups.map((g) =>
        el(
          "div",
          { class: "cart-merchant", "data-testid": `cart-merchant-${g.merchant.mchid}` },
          el(
            "div",
            { class: "row strong" },
            el("span", { text: g.merchant.name }),
            el("span", { "data-testid": `subtotal-${g.merchant.mchid}`, text: yuan(g.subtotal) }),
          ),
          el(
            "ul",
            { class: "cart-lines" },
            g.lines.map(({ item, qty }) =>
              el(
                "li",
                { class: "row muted" },
                el("span", { text: `${qty} × ${item.name}` }),
                el("span", { text: yuan(item.price_fen * qty) }),
              ),
            ),
          ),
        ),
      ),
      el(
        "div",
        { class: "row total-row" },
        el("span", { text: t("合计", "Total") }),
        el("span", { text: yuan(total) }),
      ),
      el("p", {
        class: "note",
        "data-testid": "split-note",
        text:
          groups.length > 1
            ? t(
                `一次支付，${groups.length} 个商户：微信支付将其拆成 ${groups.length} 个子单，每家店铺一个。`,
                `One payment, ${groups.length} merchants: WeChat Pay splits it into ${groups.length} sub-orders, one per shop.`,
              )
            : t("一次支付，一个商户。", "One payment, one merchant."),
      }),
    );
  }
  byTestId("cart-total").textContent = yuan(total);
  updatePayButton();
  return total;
}

function updatePayButton() {
  const button = byTestId("pay-button");
  button.disabled = shop.busy || shop.cart.size === 0 || !(shop.env && shop.env.canPay);
  button.textContent = shop.busy ? t("支付中…", "Paying…") : t("微信支付", "Pay with WeChat");
}

// ---------------------------------------------------------------------------
// Paying

async function onPay() {
  if (shop.busy || shop.cart.size === 0) return;
  shop.busy = true;
  updatePayButton();
  const panel = byTestId("status");
  try {
    // The same cart pays the same order again (a cancelled or failed
    // payment): one order per purchase, never a second one to pay.
    const key = cartKey();
    let order = shop.pending && shop.pending.key === key ? shop.pending.order : null;
    if (!order) {
      try {
        const created = await api("/api/combine-orders", {
          method: "POST",
          body: { items: [...shop.cart].map(([sku, qty]) => ({ sku, qty })) },
        });
        order = created.combine_out_trade_no;
      } catch (e) {
        panel.hidden = false;
        panel.dataset.state = "error";
        panel.className = "status status-error";
        panel.replaceChildren(
          el("h2", { "data-testid": "status-title", text: t("订单未能创建", "The order was not created") }),
          el("p", { "data-testid": "status-message", text: e.message }),
        );
        return;
      }
      shop.pending = { key, order };
      savePending();
    }
    await pay(shop.env, order, panel, { onSettled });
  } finally {
    shop.busy = false;
    updatePayButton();
  }
}

/** The cart as a string, to tell whether it changed since the order. */
function cartKey() {
  return JSON.stringify([...shop.cart].sort());
}

/**
 * After a payment: once WeChat took the money (confirmed, or reported but
 * not yet confirmed) the cart is done and the order lives on its own page.
 */
function onSettled(state) {
  if (state !== "success" && state !== "not_confirmed") return;
  shop.pending = null;
  savePending();
  shop.cart.clear();
  saveCart();
  for (const sku of shop.items.keys()) renderQty(sku);
  renderCart();
}
