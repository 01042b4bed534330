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

#[test]
fn e2e_outside_wechat_in_production_shows_the_notice_without_oauth() {
    chromium::run("outside_wechat_in_production", |ctx| async move {
        ctx.production_page().await?;
        ctx.open("").await?;
        ctx.visible("notice-not-wechat").await?;
        let notice = ctx.text("notice-not-wechat").await?;
        ensure!(
            notice.contains("微信"),
            "the notice is not in Chinese: {notice:?}"
        );
        // The shop is still there to look at, but nothing sends the payer
        // to WeChat's authorization (which works only inside WeChat).
        ctx.until("the catalog", STEP, || async {
            let n = ctx.catalog().await?.len();
            Ok(((n > 0).then_some(()), format!("{n} merchants")))
        })
        .await?;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let url = ctx.client.current_url().await?;
        ensure!(
            url.path().starts_with("/pay/") && !url.as_str().contains("oauth"),
            "the page went to {url}"
        );
        let disabled = ctx
            .js(
                "return document.querySelector('[data-testid=\"pay-button\"]').disabled",
                json!(null),
            )
            .await?;
        ensure!(
            disabled == json!(true),
            "the pay button is enabled outside WeChat"
        );
        // The order page too.
        ctx.open("order.html?no=C1").await?;
        ctx.visible("notice-not-wechat").await?;
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let url = ctx.client.current_url().await?;
        ensure!(
            url.path().ends_with("/pay/order.html"),
            "the order page went to {url}"
        );
        Ok(())
    });
}

#[test]
fn e2e_mini_program_web_view_is_sent_back_to_the_mini_program() {
    chromium::run("mini_program_web_view", |ctx| async move {
        ctx.production_page().await?;
        ctx.as_mini_program_web_view().await?;
        ctx.open("").await?;
        ctx.visible("notice-not-wechat").await?;
        let notice = ctx.text("notice-not-wechat").await?;
        ensure!(
            notice.contains("小程序"),
            "the notice does not send the payer to the mini program: {notice:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let url = ctx.client.current_url().await?;
        ensure!(!url.as_str().contains("oauth"), "the page went to {url}");
        Ok(())
    });
}

#[test]
fn e2e_bridge_timeout_in_wechat_without_bridge() {
    chromium::run("bridge_timeout", |ctx| async move {
        // WeChat's browser on a production server whose page never gets
        // WeixinJSBridge: the package gives up after its ready timeout.
        ctx.production_page().await?;
        ctx.as_wechat().await?;
        ctx.fill_cart().await?;
        let notice = ctx.text("notice-not-wechat").await?;
        ensure!(notice.is_empty(), "inside WeChat the page says {notice:?}");
        ctx.tap("pay-button").await?;
        ctx.outcome("timeout").await?;
        let text = ctx.text("status").await?;
        ensure!(
            text.contains("不要重复支付"),
            "no warning against paying twice: {text}"
        );
        let again = ctx.text("pay-again").await?;
        ensure!(again.is_empty(), "a timed-out payment offers to pay again");
        ctx.tap("order-link").await?;
        ctx.state("order-state", &["NOTPAY"], STEP).await?;
        Ok(())
    });
}

#[test]
fn e2e_lost_cashier_answer_confirmed_by_the_server() {
    chromium::run("lost_cashier_answer", |ctx| async move {
        // The payer pays, but WeChat's answer never reaches the page (a lost
        // callback): after its answer timeout the package asks the server
        // once, and the server knows the order is paid.
        ctx.sim_control(json!({ "lose_bridge_answer": true }))
            .await?;
        let cart = ctx.fill_cart().await?;
        ctx.js(
            "sessionStorage.setItem('wxpay-demo-answer-timeout-ms', '6000')",
            serde_json::Value::Null,
        )
        .await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        let started = std::time::Instant::now();
        ctx.outcome("success").await?;
        // Not before the timeout: nothing else could have ended the wait.
        ensure!(
            started.elapsed() >= std::time::Duration::from_secs(3),
            "the payment succeeded {:?} after paying, before the answer timeout",
            started.elapsed()
        );
        check_paid(&ctx.sub_orders("status").await?, &cart)
    });
}

#[test]
fn e2e_payment_not_confirmed_then_confirmed_on_the_order_page() {
    chromium::run("not_confirmed", |ctx| async move {
        // The server learns nothing: no notification, its queries refused.
        ctx.sim_control(
            json!({ "drop_notifications": true, "api_faults": { "query": "SYSTEM_ERROR" } }),
        )
        .await?;
        let cart = ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("not_confirmed").await?;
        let again = ctx.text("pay-again").await?;
        ensure!(
            again.is_empty(),
            "an unconfirmed payment offers to pay again"
        );
        // WeChat took the money: the cart is done.
        let total = ctx.text("cart-total").await?;
        ensure!(total == "¥0.00", "the cart still shows {total}");
        // Once the server can ask WeChat Pay, the order page shows it paid.
        ctx.sim_control(json!({ "api_faults": null })).await?;
        ctx.tap("order-link").await?;
        ctx.until("the order to read SUCCESS", chromium::OUTCOME, || async {
            ctx.client.refresh().await?;
            let state = ctx
                .state("order-state", &["NOTPAY", "USERPAYING", "SUCCESS"], STEP)
                .await?;
            Ok(((state == "SUCCESS").then_some(()), state))
        })
        .await?;
        check_paid(&ctx.sub_orders("order").await?, &cart)
    });
}

#[test]
fn e2e_reload_mid_payment_pays_the_same_order() {
    chromium::run("reload_mid_payment", |ctx| async move {
        let cart = ctx.fill_cart().await?;
        ctx.tap("pay-button").await?;
        // The cashier is open; the payer reloads the page.
        ctx.visible_css("#wxsim-pay").await?;
        ctx.client.refresh().await?;
        ctx.until("the cart after reload", STEP, || async {
            let total = ctx.text("cart-total").await?;
            Ok(((total == cart.total).then_some(()), total))
        })
        .await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await?;
        check_paid(&ctx.sub_orders("status").await?, &cart)?;
        let prepays = prepay_calls(&ctx).await?;
        ensure!(
            prepays == 1,
            "the simulator saw {prepays} prepay calls: the reload made a second order"
        );
        Ok(())
    });
}

#[test]
fn e2e_accessible_in_chinese_and_english() {
    chromium::run("accessibility", |ctx| async move {
        ctx.fill_cart().await?;
        let lang = ctx
            .js("return document.documentElement.lang", json!(null))
            .await?;
        ensure!(lang == json!("zh-CN"), "the page's language is {lang}");
        // The live region is in the page from the start; the quantities on
        // screen are not live regions themselves (no double announcement).
        let live = ctx
            .js(
                "return [...document.querySelectorAll('[aria-live], output, [role=status]')]
                   .map(e => e.dataset.testid || e.id || e.tagName)",
                json!(null),
            )
            .await?;
        ensure!(live == json!(["announcer"]), "live regions: {live}");
        ctx.until("the announcement of the cart", STEP, || async {
            let said = ctx.text("announcer").await?;
            Ok((said.contains('2').then_some(()), said))
        })
        .await?;
        ctx.accessibility("the shop with a cart (Chinese)").await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-cancel").await?;
        ctx.outcome("cancelled").await?;
        // The result takes the focus and is announced.
        let focused = ctx
            .js(
                "return document.activeElement.dataset.testid || ''",
                json!(null),
            )
            .await?;
        ensure!(focused == json!("status-title"), "focus is on {focused}");
        let title = ctx.text("status-title").await?;
        ctx.until("the announcement of the result", STEP, || async {
            let said = ctx.text("announcer").await?;
            Ok(((said == title).then_some(()), said))
        })
        .await?;
        ctx.accessibility("the cancelled payment (Chinese)").await?;
        // English on request, kept across pages.
        ctx.tap("lang-switch").await?;
        ctx.until("the page in English", STEP, || async {
            let lang = ctx
                .js("return document.documentElement.lang", json!(null))
                .await?;
            Ok(((lang == json!("en")).then_some(()), format!("{lang}")))
        })
        .await?;
        ctx.until("the English pay button", STEP, || async {
            let label = ctx.text("pay-button").await?;
            Ok(((label == "Pay with WeChat").then_some(()), label))
        })
        .await?;
        ctx.accessibility("the shop (English)").await?;
        ctx.tap("pay-button").await?;
        ctx.cashier("wxsim-pay").await?;
        ctx.outcome("success").await?;
        ctx.tap("order-link").await?;
        ctx.state("order-state", &["SUCCESS"], STEP).await?;
        let created = ctx.text("order-created").await?;
        ensure!(!created.is_empty(), "the order page shows no creation time");
        ctx.accessibility("the paid order page (English)").await
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
