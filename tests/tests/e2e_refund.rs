//! End to end: a refund of one sub-order, made by the merchant through the
//! demo's internal API, reaches the payer's order page in headless
//! Chromium. The harness (`wxpay_combine_tests::chromium`) runs
//! `wxpay-combine demo` with its simulator; see `e2e_demo.rs`.

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::{json, Value};
use std::time::Duration;
use wxpay_combine_tests::chromium::{self, check_paid, tid, Ctx, STEP};

/// Fen refunded: part of the sub-order, so the page's refund amount cannot
/// be mistaken for the sub-order's own.
const REFUND_FEN: i64 = 100;
/// The simulator completes refunds after this many seconds (its default
/// is 60 simulated seconds; the demo runs at time scale 1).
const REFUND_DELAY_SECS: u64 = 2;

/// One sub-order's refunds as the page shows them.
#[derive(Debug, serde::Deserialize)]
struct PageSub {
    mchid: String,
    refunds: Vec<PageRefund>,
}

#[derive(Debug, serde::Deserialize)]
struct PageRefund {
    status: String,
    status_text: String,
    amount: String,
}

async fn page_refunds(ctx: &Ctx) -> Result<Vec<PageSub>> {
    let v = ctx
        .js(
            "const root = document.querySelector(arguments[0]);
             if (!root) return [];
             return [...root.querySelectorAll('[data-testid=\"sub-order\"]')].map(s => ({
               mchid: s.dataset.mchid,
               refunds: [...s.querySelectorAll('[data-testid=\"refund\"]')].map(r => ({
                 status: r.dataset.status || '',
                 status_text: r.querySelector('[data-testid=\"refund-status\"]').innerText.trim(),
                 amount: r.querySelector('[data-testid=\"refund-amount\"]').innerText.trim(),
               })),
             }));",
            json!(tid("order")),
        )
        .await?;
    serde_json::from_value(v).context("reading the refunds from the page")
}

/// Reloads the order page and waits until the sub-order of `mchid` shows
/// a refund with a status in `wanted`.
async fn reload_until(ctx: &Ctx, mchid: &str, wanted: &[&str]) -> Result<Vec<PageSub>> {
    ctx.client.refresh().await?;
    ctx.state("order-state", &["SUCCESS"], STEP).await?;
    ctx.until(
        &format!("a refund of {mchid} in {wanted:?} on the page"),
        STEP,
        || async {
            let subs = page_refunds(ctx).await?;
            let shown = subs
                .iter()
                .find(|s| s.mchid == mchid)
                .and_then(|s| s.refunds.first())
                .is_some_and(|r| wanted.contains(&r.status.as_str()));
            let seen = format!("{subs:?}");
            Ok((shown.then_some(subs), seen))
        },
    )
    .await
}

/// The sub-order of `mchid` in an internal API order answer.
fn sub_of<'a>(order: &'a Value, mchid: &str) -> Result<&'a Value> {
    order["sub_orders"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["mchid"] == json!(mchid)))
        .ok_or_else(|| anyhow!("no sub-order of {mchid} in {order}"))
}

#[test]
fn e2e_refund_one_sub_order_shows_on_the_order_page() {
    chromium::run("refund_one_sub_order", |ctx| async move {
        // Pay an order with sub-orders of three merchants.
        let cart = ctx.fill_cart().await?;
        ensure!(cart.subtotals.len() == 3, "cart: {cart:?}");
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await?;
        ctx.tap("order-link").await?;
        ctx.state("order-state", &["SUCCESS"], STEP).await?;
        check_paid(&ctx.sub_orders("order").await?, &cart)?;
        let no = ctx.text("order-no").await?;
        ensure!(!no.is_empty(), "the order page shows no order number");
        // Nothing refunded yet: no refund anywhere on the page.
        let before = page_refunds(&ctx).await?;
        ensure!(
            before.iter().all(|s| s.refunds.is_empty()),
            "refunds shown before any was made: {before:?}"
        );

        // The merchant refunds part of the second merchant's sub-order.
        let (status, order) = ctx
            .internal("GET", &format!("/internal/combine-orders/{no}"), None, None)
            .await?;
        ensure!(status == 200, "GET order answered {status}: {order}");
        let mchid = cart.subtotals[1].0.clone();
        let sub = sub_of(&order, &mchid)?;
        let out_trade_no = sub["out_trade_no"]
            .as_str()
            .ok_or_else(|| anyhow!("no out_trade_no: {sub}"))?
            .to_string();
        ensure!(
            sub["amount"].as_i64().is_some_and(|a| a > REFUND_FEN),
            "the sub-order is too small for a partial refund: {sub}"
        );
        ctx.sim_control(json!({ "refund_delay_secs": REFUND_DELAY_SECS }))
            .await?;
        let (status, refund) = ctx
            .internal(
                "POST",
                &format!("/internal/combine-orders/{no}/refunds"),
                Some(json!({
                    "out_trade_no": out_trade_no,
                    "amount": REFUND_FEN,
                    "reason": "退货",
                })),
                Some("e2e-refund-1"),
            )
            .await?;
        ensure!(status == 201, "the refund answered {status}: {refund}");
        ensure!(
            refund["status"] == json!("PROCESSING") && refund["mchid"] == json!(mchid),
            "the new refund: {refund}"
        );

        // While it is pending the page may already say so (or, on a slow
        // machine, already show it done).
        let subs = reload_until(&ctx, &mchid, &["PROCESSING", "SUCCESS"]).await?;
        let first = &subs.iter().find(|s| s.mchid == mchid).unwrap().refunds[0];
        if first.status == "PROCESSING" {
            ensure!(
                first.status_text.starts_with("退款处理中"),
                "a pending refund reads {:?}",
                first.status_text
            );
        }

        // The simulator completes it and notifies the demo's refund
        // endpoint; the internal API then lists it as SUCCESS.
        let limit = Duration::from_secs(REFUND_DELAY_SECS + 20);
        let listed = ctx
            .until("the refund to be SUCCESS", limit, || async {
                let (status, order) = ctx
                    .internal("GET", &format!("/internal/combine-orders/{no}"), None, None)
                    .await?;
                if status != 200 {
                    bail!("GET order answered {status}: {order}");
                }
                let refunds = sub_of(&order, &mchid)?["refunds"].clone();
                let done = refunds[0]["status"] == json!("SUCCESS");
                Ok((done.then(|| order.clone()), format!("{refunds}")))
            })
            .await?;
        let refunds = sub_of(&listed, &mchid)?["refunds"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure!(
            refunds.len() == 1
                && refunds[0]["out_refund_no"] == refund["out_refund_no"]
                && refunds[0]["amount"] == json!(REFUND_FEN),
            "the refunded sub-order lists {refunds:?}"
        );
        for (other, _) in cart.subtotals.iter().filter(|(m, _)| *m != mchid) {
            let sub = sub_of(&listed, other)?;
            ensure!(
                sub.get("refunds").is_none(),
                "sub-order of {other} lists refunds: {sub}"
            );
        }
        // SUCCESS came by the refund notification, delivered to the demo.
        let log = ctx.sim("GET", "/sim/notifications", None).await?;
        let delivered = log["notifications"].as_array().is_some_and(|all| {
            all.iter().any(|n| {
                n["notify_url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/wxpay/refund-notify"))
                    && n["status"] == json!("delivered")
                    && n["combine_mchid"] == json!(mchid)
            })
        });
        ensure!(delivered, "no refund notification was delivered: {log}");

        // The payer's page shows it under that sub-order only.
        let subs = reload_until(&ctx, &mchid, &["SUCCESS"]).await?;
        for s in &subs {
            if s.mchid == mchid {
                ensure!(s.refunds.len() == 1, "{mchid} shows {:?}", s.refunds);
                let r = &s.refunds[0];
                ensure!(r.amount == "¥1.00", "the refund shows {:?}", r.amount);
                ensure!(
                    r.status_text.starts_with("已退款"),
                    "the refund reads {:?}",
                    r.status_text
                );
            } else {
                ensure!(
                    s.refunds.is_empty(),
                    "sub-order of {} shows refunds: {:?}",
                    s.mchid,
                    s.refunds
                );
            }
        }
        // The paid order and its sub-orders read as before.
        check_paid(&ctx.sub_orders("order").await?, &cart)?;
        // The payer is never offered a refund.
        let offers = ctx
            .js(
                "return [...document.querySelectorAll('button, a, [role=\"button\"]')]
                   .map(e => e.innerText.trim())
                   .filter(t => /退款|refund/i.test(t));",
                Value::Null,
            )
            .await?;
        ensure!(
            offers.as_array().is_some_and(|a| a.is_empty()),
            "the page offers a refund: {offers}"
        );
        Ok(())
    });
}
