//! End to end: the demo shop (`www/`, served at `/pay/`) in headless
//! Chromium with a phone viewport, against `wxpay-combine demo` and its
//! embedded WeChat Pay simulator. See `wxpay_combine_tests::chromium`
//! (`src/chromium.rs`) for the harness, its prerequisites and its
//! environment variables.

use anyhow::{bail, ensure, Result};
use serde_json::json;
use wxpay_combine_tests::chromium::{self, check_paid, Ctx, STEP};

/// Fills the cart and pays from the shop: the status panel must reach
/// "success" with the server-confirmed sub-orders of the three merchants.
async fn pay_in_shop(ctx: &Ctx) -> Result<chromium::Cart> {
    let cart = ctx.fill_cart().await?;
    pay_cart(ctx, &cart).await?;
    Ok(cart)
}

async fn pay_cart(ctx: &Ctx, cart: &chromium::Cart) -> Result<()> {
    ctx.tap("pay-button").await?;
    ctx.cashier("wxsim-pay").await?;
    ctx.outcome("success").await?;
    check_paid(&ctx.sub_orders("status").await?, cart)
}

/// Opens the order page from the status panel's link and checks it.
async fn order_page_paid(ctx: &Ctx, cart: &chromium::Cart) -> Result<()> {
    ctx.tap("order-link").await?;
    ctx.state("order-state", &["SUCCESS"], STEP).await?;
    check_paid(&ctx.sub_orders("order").await?, cart)?;
    let total = ctx.text("order-total").await?;
    ensure!(
        total == cart.total,
        "order total {total}, cart total was {}",
        cart.total
    );
    Ok(())
}

#[test]
fn e2e_pay_three_merchants() {
    chromium::run("pay_three_merchants", |ctx| async move {
        let cart = ctx.fill_cart().await?;
        // Not WeChat's browser, but the demo says it simulates WeChat Pay.
        ctx.visible("banner-demo").await?;
        let notice = ctx.text("notice-not-wechat").await?;
        ensure!(notice.is_empty(), "demo mode shows {notice:?}");
        pay_cart(&ctx, &cart).await?;
        // The cart empties once the server confirmed the payment.
        let total = ctx.text("cart-total").await?;
        ensure!(
            total == "¥0.00",
            "the cart still shows {total} after paying"
        );
        order_page_paid(&ctx, &cart).await?;
        chromium::readme_screenshot(&ctx).await
    });
}

#[test]
fn e2e_cancel_then_pay_same_order() {
    chromium::run("cancel_then_pay_same_order", |ctx| async move {
        let cart = ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-cancel").await?;
        ctx.outcome("cancelled").await?;
        // "Pay again" in the status panel pays the same order…
        ctx.tap("pay-again").await?;
        ctx.cashier("wxsim-cancel").await?;
        ctx.outcome("cancelled").await?;
        // …and so does the Pay button while the cart is unchanged.
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await?;
        check_paid(&ctx.sub_orders("status").await?, &cart)?;
        let prepays = prepay_calls(&ctx).await?;
        ensure!(
            prepays == 1,
            "the simulator saw {prepays} prepay calls; paying again must reuse the order and its prepay_id"
        );
        Ok(())
    });
}

#[test]
fn e2e_dropped_notification_confirmed_by_query() {
    chromium::run(
        "dropped_notification_confirmed_by_query",
        |ctx| async move {
            ctx.sim_control(json!({ "drop_notifications": true }))
                .await?;
            pay_in_shop(&ctx).await?;
            // The payment was confirmed without any notification: by the
            // server's query of the order.
            let (statuses, queries) = notifications_and_queries(&ctx).await?;
            ensure!(
                !statuses.is_empty() && statuses.iter().all(|s| s == "dropped"),
                "notifications should all be dropped: {statuses:?}"
            );
            ensure!(queries >= 1, "the server never queried the order");
            Ok(())
        },
    );
}

#[test]
fn e2e_tampered_pay_sign_shows_hint() {
    chromium::run("tampered_pay_sign_shows_hint", |ctx| async move {
        ctx.sim_control(json!({ "tamper_pay_sign": true })).await?;
        ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        // The cashier alters paySign when the payer confirms; WeChat's check
        // of the signature fails.
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("failed").await?;
        let hint = ctx.text("status-hint").await?;
        ensure!(
            hint.contains("pay directory"),
            "the failure shows no hint about the usual causes: {hint:?}"
        );
        // Nothing was paid.
        let stats = ctx.sim("GET", "/sim/stats", None).await?;
        ensure!(
            stats["paid_orders"] == json!(0),
            "the simulator paid an order: {stats}"
        );
        Ok(())
    });
}

#[test]
fn e2e_page_outside_the_pay_directory_is_refused() {
    chromium::run("page_outside_the_pay_directory", |ctx| async move {
        // The merchant platform now registers another directory of the
        // same site: the shop at /pay/ lies outside it.
        let elsewhere = ctx.page.replacen("/pay/", "/shop/", 1);
        ensure!(
            elsewhere != ctx.page,
            "the page is not under /pay/: {}",
            ctx.page
        );
        ctx.sim_control(json!({ "pay_directories": [elsewhere] }))
            .await?;
        ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        // WeChat refuses before the cashier opens, with its own words.
        ctx.outcome("failed").await?;
        let message = ctx.text("status-message").await?;
        ensure!(
            message.contains("当前页面的URL未注册"),
            "the failure does not say the page URL is not registered: {message:?}"
        );
        let stats = ctx.sim("GET", "/sim/stats", None).await?;
        ensure!(
            stats["paid_orders"] == json!(0),
            "the simulator paid an order: {stats}"
        );
        // Registered as the demo registers it, the same page pays.
        ctx.sim_control(json!({ "pay_directories": [ctx.page] }))
            .await?;
        ctx.tap("pay-again").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await
    });
}

#[test]
fn e2e_order_page_survives_reload() {
    chromium::run("order_page_survives_reload", |ctx| async move {
        // Cancelled in the shop, then paid on the order page itself.
        let cart = ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-cancel").await?;
        ctx.outcome("cancelled").await?;
        ctx.tap("order-link").await?;
        ctx.state("order-state", &["NOTPAY"], STEP).await?;
        ctx.tap("order-pay").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await?;
        ctx.state("order-state", &["SUCCESS"], STEP).await?;
        check_paid(&ctx.sub_orders("order").await?, &cart)?;
        let url = ctx.client.current_url().await?;
        ensure!(
            url.path().ends_with("/pay/order.html"),
            "the order page is at {url}"
        );
        ctx.client.refresh().await?;
        ctx.state("order-state", &["SUCCESS"], STEP).await?;
        check_paid(&ctx.sub_orders("order").await?, &cart)?;
        // Opened afresh from its address, it still reads SUCCESS.
        ctx.client.goto(url.as_str()).await?;
        ctx.state("order-state", &["SUCCESS"], STEP).await?;
        check_paid(&ctx.sub_orders("order").await?, &cart)?;
        Ok(())
    });
}

/// How many combined-order prepay calls the simulator received, all orders.
async fn prepay_calls(ctx: &Ctx) -> Result<i64> {
    let stats = ctx.sim("GET", "/sim/stats", None).await?;
    match stats["prepay_calls"].as_object() {
        Some(by_order) => Ok(by_order.values().filter_map(|n| n.as_i64()).sum()),
        None => bail!("no prepay_calls in the simulator's stats: {stats}"),
    }
}

/// The simulator's pay notifications by delivery status, and how many
/// order queries it answered.
async fn notifications_and_queries(ctx: &Ctx) -> Result<(Vec<String>, i64)> {
    let log = ctx.sim("GET", "/sim/notifications", None).await?;
    let statuses = log["notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|n| n["status"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    let stats = ctx.sim("GET", "/sim/stats", None).await?;
    Ok((statuses, stats["api_calls"]["query"].as_i64().unwrap_or(0)))
}
