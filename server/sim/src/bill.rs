//! Trade bills (reference §7): `GET /v3/bill/tradebill` builds the file from
//! the requesting merchant's own sub-orders paid (and its refunds accepted)
//! on a +08:00 day and hands out a one-time download token valid 5 minutes
//! (the current pages; older ones said 30 s); `GET /v3/billdownload/file`
//! serves it unsigned. A day's bill is `STATEMENT_CREATING` until 10:00 the
//! next day unless bills are set ready immediately.
//!
//! A payment with a coupon shows it in 代金券金额 (total − payer amount);
//! the coupon is a CASH one funded by WeChat Pay, so 应结订单金额 stays the
//! order amount.
//!
//! The file follows the documented layout and the SDK fixture's bytes: a
//! UTF-8 BOM, CRLF line ends, every data field prefixed with a back-quote.
//! The fee rate is a fixed 0.60 %.

use super::auth::Caller;
use super::clock::{self, cst_date, cst_day_bounds};
use super::error::ApiError;
use super::reply::Reply;
use super::state::{BillRefundRow, BillTokenRow, BillTradeRow};
use super::SimState;
use axum::http::StatusCode;
use serde_json::json;
use std::io::Write;
use time::OffsetDateTime;
use wxpay_combine_core::apiv3::{generate_nonce, Clock};
use wxpay_combine_core::bill::{
    format, BillKind, BillRecord, FormatError, FormatOptions, LineEnding, Openid, RefundColumns,
    TradeBill, BEIJING,
};

/// A download token's lifetime ("该地址5min内有效", current pages).
pub const TOKEN_TTL_SECS: i64 = 5 * 60;
/// When a day's bill becomes available: 10:00 the next day (+08:00).
pub const READY_AFTER_DAY_END_SECS: i64 = 10 * 3600;
/// The fee rate in basis points (0.60 %).
const FEE_RATE_BP: i64 = 60;

/// The fee of a trade in fen, rounded half up.
fn fee(total_fen: i64) -> i64 {
    (total_fen * FEE_RATE_BP + 5_000) / 10_000
}

fn rate() -> String {
    format!("{}.{:02}%", FEE_RATE_BP / 100, FEE_RATE_BP % 100)
}

/// A Unix time as the bill's +08:00 time.
fn bill_time(unix: i64) -> OffsetDateTime {
    wxpay_combine_core::timefmt::beijing(unix)
        .unwrap_or_else(|| OffsetDateTime::UNIX_EPOCH.to_offset(BEIJING))
}

fn trade_record(t: &BillTradeRow, kind: BillKind) -> BillRecord {
    let total = t.total_amount;
    BillRecord {
        trade_time: bill_time(t.success_time.unwrap_or(0)),
        appid: t.combine_appid.clone(),
        mchid: t.mchid.clone(),
        sub_mchid: "0".into(),
        device_info: t.device_id.clone().unwrap_or_default(),
        transaction_id: t.transaction_id.clone().unwrap_or_default(),
        out_trade_no: t.out_trade_no.clone(),
        openid: Openid::new(t.openid.clone()),
        trade_type: "JSAPI".into(),
        trade_state: "SUCCESS".into(),
        bank_type: t.bank_type.clone().unwrap_or_else(|| "OTHERS".into()),
        currency: "CNY".into(),
        settlement_amount_fen: total,
        coupon_amount_fen: t.payer_amount.map_or(0, |p| total - p),
        // A payment row of an ALL bill has the refund columns, zeroed.
        refund: kind
            .has_refund_columns()
            .then(RefundColumns::of_payment_row),
        goods_name: t.description.clone(),
        attach: t.attach.clone(),
        fee_milli_fen: fee(total) * 1000,
        rate: rate(),
        order_amount_fen: total,
        rate_remark: String::new(),
    }
}

/// A refund row: 交易时间 is the acceptance time; 退款状态 is the refund's
/// status when the bill is made (a real bill is made the next day and then
/// never updated), with 退款成功时间 once it succeeded.
fn refund_record(r: &BillRefundRow, kind: BillKind) -> BillRecord {
    let at = bill_time(r.created_at);
    let refund_bill = kind == BillKind::Refund;
    let success = r
        .success_time
        .filter(|_| refund_bill && r.status == "SUCCESS")
        .map(bill_time);
    BillRecord {
        trade_time: at,
        appid: r.combine_appid.clone(),
        mchid: r.mchid.clone(),
        sub_mchid: "0".into(),
        device_info: r.device_id.clone().unwrap_or_default(),
        transaction_id: r.transaction_id.clone().unwrap_or_default(),
        out_trade_no: r.out_trade_no.clone(),
        openid: Openid::new(r.openid.clone()),
        trade_type: "JSAPI".into(),
        trade_state: "REFUND".into(),
        bank_type: r.bank_type.clone().unwrap_or_else(|| "OTHERS".into()),
        currency: "CNY".into(),
        settlement_amount_fen: 0,
        coupon_amount_fen: 0,
        refund: Some(RefundColumns {
            refund_apply_time: refund_bill.then_some(at),
            refund_success_time: success,
            refund_id: r.refund_id.clone(),
            out_refund_no: r.out_refund_no.clone(),
            refund_amount_fen: r.amount,
            recharge_coupon_refund_amount_fen: 0,
            refund_type: "ORIGINAL".into(),
            refund_status: r.status.clone(),
            requested_refund_amount_fen: r.amount,
        }),
        goods_name: r.description.clone(),
        attach: r.attach.clone(),
        fee_milli_fen: 0,
        rate: rate(),
        order_amount_fen: 0,
        rate_remark: String::new(),
    }
}

/// Renders a bill (UTF-8 BOM, CRLF, as the SDK fixture) with the bill
/// module's formatter; `None` when it would have no rows.
pub fn render(
    kind: BillKind,
    trades: &[BillTradeRow],
    refunds: &[BillRefundRow],
) -> Result<Option<Vec<u8>>, FormatError> {
    let mut rows: Vec<BillRecord> = Vec::new();
    if kind != BillKind::Refund {
        rows.extend(trades.iter().map(|t| trade_record(t, kind)));
    }
    if kind != BillKind::Success {
        rows.extend(refunds.iter().map(|r| refund_record(r, kind)));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    // One day's activity in time order (stable: a payment before a refund
    // of the same second).
    rows.sort_by_key(|r| r.trade_time);
    let bill = TradeBill::from_details(kind, rows)?;
    let text = format(
        &bill,
        FormatOptions {
            line_ending: LineEnding::CrLf,
            bom: true,
        },
    )?;
    Ok(Some(text.into_bytes()))
}

fn query_param_error(name: &str, issue: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "PARAM_ERROR",
        format!("参数{name}错误：{issue}"),
    )
    .with_detail(json!({"field": name, "location": "query", "issue": issue}))
}

/// `GET /v3/bill/tradebill`.
pub async fn trade_bill(st: &SimState, caller: &Caller, query: &str) -> Result<Reply, ApiError> {
    let mut date = None;
    let mut kind = BillKind::All;
    let mut gzip = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "bill_date" => {
                date = Some(
                    clock::parse_date(&v)
                        .ok_or_else(|| query_param_error("bill_date", "格式应为yyyy-MM-DD"))?,
                )
            }
            "bill_type" => {
                kind = match v.as_ref() {
                    "ALL" => BillKind::All,
                    "SUCCESS" => BillKind::Success,
                    "REFUND" => BillKind::Refund,
                    _ => {
                        return Err(query_param_error(
                            "bill_type",
                            "模拟器支持ALL、SUCCESS、REFUND",
                        ))
                    }
                }
            }
            "tar_type" => {
                if v != "GZIP" {
                    return Err(query_param_error("tar_type", "只支持GZIP"));
                }
                gzip = true;
            }
            _ => {}
        }
    }
    let date = date.ok_or_else(|| query_param_error("bill_date", "必填"))?;
    let now = st.clock.now();
    let today = cst_date(now);
    if date > today {
        return Err(query_param_error("bill_date", "不能晚于今天"));
    }
    if (today - date).whole_days() > 92 {
        return Err(query_param_error("bill_date", "只能下载三个月以内的账单"));
    }
    let (from, to) = cst_day_bounds(date);
    if now < to + READY_AFTER_DAY_END_SECS
        && !st
            .bills_ready_immediately
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "STATEMENT_CREATING",
            "账单生成中，请在次日10点后再试",
        ));
    }
    let mchid = &caller.merchant.creds.mchid;
    let trades = if kind == BillKind::Refund {
        Vec::new()
    } else {
        st.db.bill_trades(mchid, from, to).await?
    };
    let refunds = if kind == BillKind::Success {
        Vec::new()
    } else {
        st.db.bill_refunds(mchid, from, to).await?
    };
    let file = render(kind, &trades, &refunds)
        .map_err(|e| ApiError::system(e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "NO_STATEMENT_EXIST",
                "请求的账单文件不存在",
            )
        })?;
    let mut hash = wxpay_combine_core::bill::sha1_hex(&file);
    if st.faults.effective(Some(mchid), None).corrupt_bill_hash == Some(true) {
        // Flip the first hex digit: a hash of the right shape that does not match.
        let first = if hash.starts_with('0') { "1" } else { "0" };
        hash.replace_range(0..1, first);
    }
    let content = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&file)
            .map_err(|e| ApiError::system(e.to_string()))?;
        enc.finish().map_err(|e| ApiError::system(e.to_string()))?
    } else {
        file
    };
    let token = generate_nonce();
    st.db
        .insert_bill_token(&BillTokenRow {
            token: token.clone(),
            mchid: mchid.clone(),
            created_at: now,
            used: 0,
            gzip: i64::from(gzip),
            content,
        })
        .await?;
    let mut url = format!("{}/v3/billdownload/file?token={token}", st.base_url);
    if gzip {
        url.push_str("&tartype=gzip");
    }
    Ok(Reply::json(
        &json!({"hash_type": "SHA1", "hash_value": hash, "download_url": url}),
    ))
}

/// `GET /v3/billdownload/file?token=…`.
pub async fn download(st: &SimState, caller: &Caller, query: &str) -> Result<Reply, ApiError> {
    let token = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::invalid_request("缺少token参数"))?;
    let _guard = st.write_lock.lock().await;
    let row = st
        .db
        .bill_token(&token)
        .await?
        .ok_or_else(|| ApiError::invalid_request("下载链接无效，请重新申请"))?;
    if row.mchid != caller.merchant.creds.mchid {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "NO_AUTH",
            "无权下载该账单：下载商户与申请商户不一致",
        ));
    }
    if row.used != 0 {
        return Err(ApiError::invalid_request("下载链接已使用，请重新申请"));
    }
    if st.clock.now() - row.created_at > TOKEN_TTL_SECS {
        return Err(ApiError::invalid_request("下载链接已过期，请重新申请"));
    }
    st.db.use_bill_token(&token).await?;
    Ok(Reply::File(row.content))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
    const SUCCESS_SUMMARY_HEADER: &str = "总交易单数,应结订单总金额,手续费总金额,订单总金额";

    #[test]
    fn fees_round_half_up() {
        assert_eq!(fee(100), 1); // 0.6 fen rounds to 1
        assert_eq!(fee(83), 0); // 0.498 fen rounds to 0
        assert_eq!(rate(), "0.60%");
    }

    #[test]
    fn success_bill_layout() {
        let t = BillTradeRow {
            combine_appid: "wx1".into(),
            openid: "o1".into(),
            device_id: None,
            mchid: "19".into(),
            out_trade_no: "S000001".into(),
            attach: "a".into(),
            description: "d".into(),
            total_amount: 1234,
            payer_amount: Some(1234),
            transaction_id: Some("4200".into()),
            success_time: Some(1_704_067_200),
            bank_type: Some("OTHERS".into()),
        };
        let bytes = render(BillKind::Success, &[t], &[]).unwrap().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let lines: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
        assert_eq!(lines[0], SUCCESS_HEADER);
        assert_eq!(lines[1].split(',').count(), 20);
        assert!(lines[1].starts_with("`2024-01-01 08:00:00,`wx1,`19,`0,`,`4200,`S000001"));
        assert_eq!(lines[2], SUCCESS_SUMMARY_HEADER);
        assert_eq!(lines[3], "`1,`12.34,`0.07000,`12.34");
        // The bill module reads it back, totals consistent.
        let bill = wxpay_combine_core::bill::parse(&bytes).unwrap();
        assert_eq!(bill.details[0].order_amount_fen, 1234);
        assert!(bill.check_totals().is_empty());
        assert!(render(BillKind::Refund, &[], &[]).unwrap().is_none());
    }

    #[test]
    fn a_coupon_shows_in_its_column() {
        let t = BillTradeRow {
            combine_appid: "wx1".into(),
            openid: "o1".into(),
            device_id: None,
            mchid: "19".into(),
            out_trade_no: "S000001".into(),
            attach: "a".into(),
            description: "d".into(),
            total_amount: 1234,
            payer_amount: Some(1034),
            transaction_id: Some("4200".into()),
            success_time: Some(1_704_067_200),
            bank_type: Some("OTHERS".into()),
        };
        let bytes = render(BillKind::Success, &[t], &[]).unwrap().unwrap();
        let bill = wxpay_combine_core::bill::parse(&bytes).unwrap();
        let d = &bill.details[0];
        assert_eq!(
            (
                d.order_amount_fen,
                d.coupon_amount_fen,
                d.settlement_amount_fen
            ),
            (1234, 200, 1234)
        );
        assert!(bill.check_totals().is_empty());
    }
}
