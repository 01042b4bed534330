//! Trade bills (reference §7): `GET /v3/bill/tradebill` builds the file from
//! the sub-orders paid (and refunds made) on a +08:00 day and hands out a
//! one-time download token valid 30 s; `GET /v3/billdownload/file` serves it
//! unsigned.
//!
//! The file follows the documented layout and the SDK fixture's bytes: a
//! UTF-8 BOM, CRLF line ends, every data field prefixed with a back-quote.
//! The fee rate is a fixed 0.60 %.

use super::api::{Caller, Reply};
use super::clock::{self, cst_date, cst_day_bounds};
use super::error::ApiError;
use super::state::{BillRefundRow, BillTokenRow, BillTradeRow};
use super::SimState;
use crate::apiv3::{generate_nonce, Clock};
use axum::http::StatusCode;
use serde_json::json;
use sha1::{Digest, Sha1};
use std::io::Write;

/// A download token's lifetime.
pub const TOKEN_TTL_SECS: i64 = 30;
/// The fee rate in basis points (0.60 %).
const FEE_RATE_BP: i64 = 60;

/// Which bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillType {
    All,
    Success,
    Refund,
}

const ALL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const REFUND_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUCCESS_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
const ALL_SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const SUCCESS_SUMMARY_HEADER: &str = "总交易单数,应结订单总金额,手续费总金额,订单总金额";

/// Fen as yuan with two decimals, exactly.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// A fee in fen, shown with five decimals as the bill does.
fn fee5(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

/// The fee of a trade, rounded half up to the fen.
fn fee(total_fen: i64) -> i64 {
    (total_fen * FEE_RATE_BP + 5_000) / 10_000
}

fn rate() -> String {
    format!("{}.{:02}%", FEE_RATE_BP / 100, FEE_RATE_BP % 100)
}

fn row(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("`{f}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Default)]
struct Totals {
    count: i64,
    settle: i64,
    refund: i64,
    fee: i64,
    order: i64,
    apply_refund: i64,
}

fn trade_fields(t: &BillTradeRow, kind: BillType, totals: &mut Totals) -> Vec<String> {
    let total = t.total_amount;
    let f = fee(total);
    totals.count += 1;
    totals.settle += total;
    totals.fee += f;
    totals.order += total;
    let mut v = vec![
        clock::bill_time(t.success_time.unwrap_or(0)),
        t.combine_appid.clone(),
        t.mchid.clone(),
        "0".into(),
        t.device_id.clone().unwrap_or_default(),
        t.transaction_id.clone().unwrap_or_default(),
        t.out_trade_no.clone(),
        t.openid.clone(),
        "JSAPI".into(),
        "SUCCESS".into(),
        t.bank_type.clone().unwrap_or_else(|| "OTHERS".into()),
        "CNY".into(),
        yuan(total),
        yuan(0),
    ];
    if kind == BillType::All {
        v.extend([
            "0".into(),
            "0".into(),
            yuan(0),
            yuan(0),
            String::new(),
            String::new(),
        ]);
    }
    v.extend([
        t.description.clone(),
        t.attach.clone(),
        fee5(f),
        rate(),
        yuan(total),
    ]);
    if kind == BillType::All {
        v.push(yuan(0));
    }
    v.push(String::new());
    v
}

fn refund_fields(r: &BillRefundRow, kind: BillType, totals: &mut Totals) -> Vec<String> {
    totals.count += 1;
    totals.refund += r.amount;
    totals.apply_refund += r.amount;
    let at = clock::bill_time(r.created_at);
    let mut v = vec![
        at.clone(),
        r.combine_appid.clone(),
        r.mchid.clone(),
        "0".into(),
        r.device_id.clone().unwrap_or_default(),
        r.transaction_id.clone().unwrap_or_default(),
        r.out_trade_no.clone(),
        r.openid.clone(),
        "JSAPI".into(),
        "REFUND".into(),
        r.bank_type.clone().unwrap_or_else(|| "OTHERS".into()),
        "CNY".into(),
        yuan(0),
        yuan(0),
    ];
    if kind == BillType::Refund {
        v.extend([at.clone(), at]);
    }
    v.extend([
        r.refund_id.clone(),
        r.out_refund_no.clone(),
        yuan(r.amount),
        yuan(0),
        "ORIGINAL".into(),
        "SUCCESS".into(),
        r.description.clone(),
        r.attach.clone(),
        fee5(0),
        rate(),
        yuan(0),
        yuan(r.amount),
        String::new(),
    ]);
    v
}

/// Renders a bill; `None` when it would have no rows.
pub fn render(
    kind: BillType,
    trades: &[BillTradeRow],
    refunds: &[BillRefundRow],
) -> Option<Vec<u8>> {
    let mut totals = Totals::default();
    let mut lines = Vec::new();
    match kind {
        BillType::All => {
            lines.push(ALL_HEADER.to_string());
            // Trades and refunds interleaved by time, as one day's activity.
            let mut rows: Vec<(String, String)> = Vec::new();
            for t in trades {
                rows.push((
                    clock::bill_time(t.success_time.unwrap_or(0)),
                    row(&trade_fields(t, kind, &mut totals)),
                ));
            }
            for r in refunds {
                rows.push((
                    clock::bill_time(r.created_at),
                    row(&refund_fields(r, kind, &mut totals)),
                ));
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            lines.extend(rows.into_iter().map(|(_, r)| r));
        }
        BillType::Success => {
            lines.push(SUCCESS_HEADER.to_string());
            lines.extend(
                trades
                    .iter()
                    .map(|t| row(&trade_fields(t, kind, &mut totals))),
            );
        }
        BillType::Refund => {
            lines.push(REFUND_HEADER.to_string());
            lines.extend(
                refunds
                    .iter()
                    .map(|r| row(&refund_fields(r, kind, &mut totals))),
            );
        }
    }
    if totals.count == 0 {
        return None;
    }
    if kind == BillType::Success {
        lines.push(SUCCESS_SUMMARY_HEADER.to_string());
        lines.push(row(&[
            totals.count.to_string(),
            yuan(totals.settle),
            fee5(totals.fee),
            yuan(totals.order),
        ]));
    } else {
        lines.push(ALL_SUMMARY_HEADER.to_string());
        lines.push(row(&[
            totals.count.to_string(),
            yuan(totals.settle),
            yuan(totals.refund),
            yuan(0),
            fee5(totals.fee),
            yuan(totals.order),
            yuan(totals.apply_refund),
        ]));
    }
    let mut out = "\u{feff}".as_bytes().to_vec();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
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
    let mut kind = BillType::All;
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
                    "ALL" => BillType::All,
                    "SUCCESS" => BillType::Success,
                    "REFUND" => BillType::Refund,
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
    let mchid = &caller.merchant.creds.mchid;
    let trades = if kind == BillType::Refund {
        Vec::new()
    } else {
        st.db.bill_trades(mchid, from, to).await?
    };
    let refunds = if kind == BillType::Success {
        Vec::new()
    } else {
        st.db.bill_refunds(mchid, from, to).await?
    };
    let file = render(kind, &trades, &refunds).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "请求的账单文件不存在",
        )
    })?;
    let mut hash = hex::encode(Sha1::digest(&file));
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

    #[test]
    fn money_is_exact() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(100), "1.00");
        assert_eq!(yuan(123_456_789), "1234567.89");
        assert_eq!(fee5(3), "0.03000");
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
            transaction_id: Some("4200".into()),
            success_time: Some(1_704_067_200),
            bank_type: Some("OTHERS".into()),
        };
        let text = String::from_utf8(render(BillType::Success, &[t], &[]).unwrap()).unwrap();
        let lines: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
        assert_eq!(lines[0], SUCCESS_HEADER);
        assert_eq!(lines[1].split(',').count(), 20);
        assert!(lines[1].starts_with("`2024-01-01 08:00:00,`wx1,`19,`0,`,`4200,`S000001"));
        assert_eq!(lines[2], SUCCESS_SUMMARY_HEADER);
        assert_eq!(lines[3], "`1,`12.34,`0.07000,`12.34");
        assert!(render(BillType::Refund, &[], &[]).is_none());
    }
}
