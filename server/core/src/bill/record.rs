//! Typed trade-bill records. Amounts are integer fen; 手续费 is integer
//! thousandths of a fen (the file gives it to 0.00001 yuan); times are the
//! file's Beijing times as `OffsetDateTime` at +08:00.

use super::layout::{BillKind, TotalField};
use crate::redact::mask_openid;
use std::fmt;
use time::OffsetDateTime;

/// A payer's openid. Personal data: `Debug` and `Display` print it masked
/// (`oHkL***CY`), so a logged record never carries it whole; read it with
/// [`Openid::as_str`] where the full value is needed (matching orders).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Openid(String);

impl Openid {
    /// Wraps an openid.
    pub fn new(value: impl Into<String>) -> Self {
        Openid(value.into())
    }

    /// The full openid.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Openid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Openid({})", mask_openid(&self.0))
    }
}

impl fmt::Display for Openid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_openid(&self.0))
    }
}

/// A parsed trade bill: its layout, its detail rows and its summary row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBill {
    /// The layout (`bill_type`).
    pub kind: BillKind,
    /// Detail rows, in file order.
    pub details: Vec<BillRecord>,
    /// The summary row.
    pub summary: BillSummary,
}

/// One detail row. Text columns are kept exactly as the file has them
/// (empty stays empty; `0` in 特约商户号 or the refund ids stays `0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRecord {
    /// 交易时间 (payment time; for refund rows of ALL bills too).
    pub trade_time: OffsetDateTime,
    /// 公众账号ID.
    pub appid: String,
    /// 商户号.
    pub mchid: String,
    /// 特约商户号 (`0` for 普通商户 trades).
    pub sub_mchid: String,
    /// 设备号.
    pub device_info: String,
    /// 微信订单号.
    pub transaction_id: String,
    /// 商户订单号.
    pub out_trade_no: String,
    /// 用户标识 (masked in `Debug`).
    pub openid: Openid,
    /// 交易类型 (`JSAPI`, `NATIVE`, …).
    pub trade_type: String,
    /// 交易状态 (`SUCCESS`, `REFUND`, `REVOKED`, …), kept as text so an
    /// unexpected value is reported by reconciliation, not a parse failure.
    pub trade_state: String,
    /// 付款银行.
    pub bank_type: String,
    /// 货币种类.
    pub currency: String,
    /// 应结订单金额, fen.
    pub settlement_amount_fen: i64,
    /// 代金券金额, fen.
    pub coupon_amount_fen: i64,
    /// The refund columns: present in ALL and REFUND bills (in ALL bills a
    /// payment row has them too, with `0` ids and zero amounts), absent in
    /// SUCCESS bills.
    pub refund: Option<RefundColumns>,
    /// 商品名称.
    pub goods_name: String,
    /// 商户数据包 (the order's `attach`).
    pub attach: String,
    /// 手续费 in thousandths of a fen (the file's 5 decimals of a yuan:
    /// `0.01000` → 1000). May be negative on refund rows.
    pub fee_milli_fen: i64,
    /// 费率, as written (`0.60%`).
    pub rate: String,
    /// 订单金额, fen.
    pub order_amount_fen: i64,
    /// 费率备注.
    pub rate_remark: String,
}

/// The refund columns of ALL and REFUND bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundColumns {
    /// 退款申请时间 — REFUND bills only (`None` in ALL bills, or empty).
    pub refund_apply_time: Option<OffsetDateTime>,
    /// 退款成功时间 — REFUND bills only (`None` in ALL bills, or empty).
    pub refund_success_time: Option<OffsetDateTime>,
    /// 微信退款单号 (`0` on payment rows of ALL bills).
    pub refund_id: String,
    /// 商户退款单号 (`0` on payment rows of ALL bills).
    pub out_refund_no: String,
    /// 退款金额, fen.
    pub refund_amount_fen: i64,
    /// 充值券退款金额, fen.
    pub recharge_coupon_refund_amount_fen: i64,
    /// 退款类型 (`ORIGINAL`, `BALANCE`, …).
    pub refund_type: String,
    /// 退款状态 (`SUCCESS`, `PROCESSING`, …).
    pub refund_status: String,
    /// 申请退款金额, fen.
    pub requested_refund_amount_fen: i64,
}

impl RefundColumns {
    /// The refund columns of a payment row in an ALL bill: ids `0`,
    /// amounts zero, type and status empty.
    pub fn of_payment_row() -> Self {
        Self {
            refund_apply_time: None,
            refund_success_time: None,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            refund_amount_fen: 0,
            recharge_coupon_refund_amount_fen: 0,
            refund_type: String::new(),
            refund_status: String::new(),
            requested_refund_amount_fen: 0,
        }
    }
}

impl BillRecord {
    /// 微信退款单号 when this row is a refund (not empty and not `0`).
    pub fn refund_id(&self) -> Option<&str> {
        self.refund
            .as_ref()
            .map(|r| r.refund_id.as_str())
            .filter(|id| !id.is_empty() && *id != "0")
    }
}

/// The summary row. Totals absent from the SUCCESS layout are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillSummary {
    /// 总交易单数.
    pub total_count: u64,
    /// 应结订单总金额, fen.
    pub settlement_total_fen: i64,
    /// 退款总金额, fen (ALL/REFUND).
    pub refund_total_fen: Option<i64>,
    /// 充值券退款总金额, fen (ALL/REFUND).
    pub recharge_coupon_refund_total_fen: Option<i64>,
    /// 手续费总金额, thousandths of a fen.
    pub fee_total_milli_fen: i64,
    /// 订单总金额, fen.
    pub order_total_fen: i64,
    /// 申请退款总金额, fen (ALL/REFUND).
    pub requested_refund_total_fen: Option<i64>,
}

/// A summary total that disagrees with the sum over the detail rows.
/// Values are in the total's unit (rows, fen, or thousandths of a fen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalMismatch {
    /// Which total.
    pub field: TotalField,
    /// What the summary row says.
    pub summary: i128,
    /// What the detail rows add up to.
    pub details: i128,
}

impl fmt::Display for TotalMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: summary {} but detail rows sum to {}",
            self.field.header(),
            self.summary,
            self.details
        )
    }
}

/// Column sums over detail rows, in i128 so no file can overflow them.
#[derive(Default)]
struct Sums {
    count: i128,
    settlement: i128,
    refund: i128,
    recharge_coupon_refund: i128,
    fee: i128,
    order: i128,
    requested_refund: i128,
}

impl Sums {
    fn of(details: &[BillRecord]) -> Sums {
        let mut s = Sums::default();
        for r in details {
            s.count += 1;
            s.settlement += i128::from(r.settlement_amount_fen);
            s.fee += i128::from(r.fee_milli_fen);
            s.order += i128::from(r.order_amount_fen);
            if let Some(rf) = &r.refund {
                s.refund += i128::from(rf.refund_amount_fen);
                s.recharge_coupon_refund += i128::from(rf.recharge_coupon_refund_amount_fen);
                s.requested_refund += i128::from(rf.requested_refund_amount_fen);
            }
        }
        s
    }
}

impl TradeBill {
    /// Builds a bill whose summary is computed from `details` (what the
    /// simulator needs). Fails only if a total does not fit in an `i64`.
    pub fn from_details(
        kind: BillKind,
        details: Vec<BillRecord>,
    ) -> Result<TradeBill, super::FormatError> {
        let s = Sums::of(&details);
        let fit = |v: i128, name: &'static str| {
            i64::try_from(v).map_err(|_| super::FormatError::TotalOverflow(name))
        };
        let refund_totals = kind.has_refund_columns();
        let summary = BillSummary {
            total_count: details.len() as u64,
            settlement_total_fen: fit(s.settlement, "应结订单总金额")?,
            refund_total_fen: refund_totals
                .then(|| fit(s.refund, "退款总金额"))
                .transpose()?,
            recharge_coupon_refund_total_fen: refund_totals
                .then(|| fit(s.recharge_coupon_refund, "充值券退款总金额"))
                .transpose()?,
            fee_total_milli_fen: fit(s.fee, "手续费总金额")?,
            order_total_fen: fit(s.order, "订单总金额")?,
            requested_refund_total_fen: refund_totals
                .then(|| fit(s.requested_refund, "申请退款总金额"))
                .transpose()?,
        };
        Ok(TradeBill {
            kind,
            details,
            summary,
        })
    }

    /// Compares every summary total with the sum over the detail rows and
    /// returns the disagreements (empty: the bill is self-consistent).
    ///
    /// Fees are compared exactly in thousandths of a fen: a summary that
    /// states fees with two decimals still has to equal the 5-decimal sum.
    pub fn check_totals(&self) -> Vec<TotalMismatch> {
        let s = Sums::of(&self.details);
        let sm = &self.summary;
        let mut checks: Vec<(TotalField, i128, i128)> = vec![
            (TotalField::Count, i128::from(sm.total_count), s.count),
            (
                TotalField::SettlementTotal,
                i128::from(sm.settlement_total_fen),
                s.settlement,
            ),
        ];
        if let Some(v) = sm.refund_total_fen {
            checks.push((TotalField::RefundTotal, i128::from(v), s.refund));
        }
        if let Some(v) = sm.recharge_coupon_refund_total_fen {
            checks.push((
                TotalField::RechargeCouponRefundTotal,
                i128::from(v),
                s.recharge_coupon_refund,
            ));
        }
        checks.push((
            TotalField::FeeTotal,
            i128::from(sm.fee_total_milli_fen),
            s.fee,
        ));
        checks.push((
            TotalField::OrderTotal,
            i128::from(sm.order_total_fen),
            s.order,
        ));
        if let Some(v) = sm.requested_refund_total_fen {
            checks.push((
                TotalField::RequestedRefundTotal,
                i128::from(v),
                s.requested_refund,
            ));
        }
        checks
            .into_iter()
            .filter(|(_, summary, details)| summary != details)
            .map(|(field, summary, details)| TotalMismatch {
                field,
                summary,
                details,
            })
            .collect()
    }
}
