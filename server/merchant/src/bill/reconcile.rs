//! Reconciliation of a trade bill against the local order database: a pure
//! function from the parsed bill and the local sub-orders to a [`Report`].
//!
//! The bill of day D (a Beijing-time calendar day) lists the payments whose
//! 交易时间 falls in D. The local side is every sub-order whose payment
//! `success_time` falls in D, plus — for bill rows not among them — the
//! sub-order of the same `mchid` + `out_trade_no` wherever it is (paid on
//! another day, not paid, or unknown). Sub-orders are matched on
//! `(mchid, out_trade_no)`: in direct mode each sub-order is its own
//! merchant's trade, with its own merchant order number.

use super::{BillRecord, TradeBill};
pub use crate::store::LocalSubOrder;
use crate::store::RefundRecord;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use time::Date;

pub use wxpay_combine_core::timefmt::beijing_day_bounds;

/// What kind of disagreement a [`Discrepancy`] is. Serialised in
/// `snake_case`; the names are part of the report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// Paid locally on the bill's day, but no payment row in the bill.
    MissingFromBill,
    /// A payment row whose sub-order the local database does not know.
    UnknownLocally,
    /// A payment row whose sub-order exists locally but is not paid.
    UnpaidLocally,
    /// A payment row whose sub-order was paid locally on another day.
    PaidLocallyOnOtherDay,
    /// 订单金额 differs from the local sub-order amount.
    AmountMismatch,
    /// 订单金额 − 代金券金额 differs from the local payer amount.
    PayerAmountMismatch,
    /// 微信订单号 differs from the local transaction id.
    TransactionIdMismatch,
    /// The same sub-order has more than one payment row.
    DuplicateInBill,
    /// A payment row whose 交易状态 is not `SUCCESS`.
    UnexpectedTradeState,
    /// A refund row whose sub-order the local database does not know.
    RefundForUnknownOrder,
    /// A row whose 商户号 is not the merchant whose bill this is.
    OtherMerchantRow,
    /// A refund row whose 商户退款单号 no local refund has.
    RefundUnknownLocally,
    /// A refund row whose 退款金额 differs from the local refund.
    RefundAmountMismatch,
    /// A refund accepted locally on the bill's day, but no refund row.
    RefundMissingFromBill,
}

/// One disagreement between the bill and the local database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// What disagrees.
    pub kind: DiscrepancyKind,
    /// Sub-order merchant.
    pub mchid: String,
    /// Sub-order number.
    pub out_trade_no: String,
    /// The local combined order, when known.
    pub combine_out_trade_no: Option<String>,
    /// 微信订单号 of the bill row, or the local transaction id.
    pub transaction_id: Option<String>,
    /// The bill's amount for the compared field, fen.
    pub bill_amount_fen: Option<i64>,
    /// The local amount for the compared field, fen.
    pub local_amount_fen: Option<i64>,
    /// A short explanation.
    pub detail: String,
}

/// A summary total that disagrees with the detail rows (units: rows, fen,
/// or thousandths of a fen for the fee).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalCheck {
    /// The summary column (`订单总金额`, …).
    pub field: String,
    /// What the summary row says.
    pub summary: i128,
    /// What the detail rows add up to.
    pub details: i128,
}

/// Counts and sums of the bill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BillSide {
    /// Detail rows.
    pub detail_rows: usize,
    /// Payment rows (no refund id).
    pub payment_rows: usize,
    /// Refund rows.
    pub refund_rows: usize,
    /// 订单金额 over the payment rows, fen.
    pub payment_amount_fen: i64,
    /// 退款金额 over the refund rows, fen.
    pub refund_amount_fen: i64,
    /// The summary row's 订单总金额, fen.
    pub summary_order_total_fen: i64,
    /// The summary row's 总交易单数.
    pub summary_count: u64,
}

/// Counts and sums of the local side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LocalSide {
    /// Sub-orders paid locally on the bill's day.
    pub paid_sub_orders: usize,
    /// Their amounts, fen.
    pub paid_amount_fen: i64,
}

/// The reconciliation result (the `--report` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The merchant whose bill this is (absent when not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// The bill's day, `YYYY-MM-DD` (Beijing time).
    pub bill_date: String,
    /// `ALL`, `SUCCESS` or `REFUND`.
    pub bill_type: String,
    /// The day as Unix seconds `[from, to)`.
    pub window_from_unix: i64,
    /// End of the day (exclusive).
    pub window_to_unix: i64,
    /// The bill's side.
    pub bill: BillSide,
    /// The local side.
    pub local: LocalSide,
    /// Payment rows matched to a local sub-order paid that day with equal amounts.
    pub matched: usize,
    /// Their amounts, fen.
    pub matched_amount_fen: i64,
    /// Summary totals that disagree with the detail rows (empty: consistent).
    pub total_mismatches: Vec<TotalCheck>,
    /// Every disagreement, sorted by kind, mchid, out_trade_no.
    pub discrepancies: Vec<Discrepancy>,
    /// Number of discrepancies by kind.
    pub counts: BTreeMap<DiscrepancyKind, usize>,
    /// No discrepancy and consistent totals.
    pub ok: bool,
}

impl Report {
    /// A few lines for a terminal.
    pub fn human_summary(&self) -> String {
        let merchant = self
            .mchid
            .as_deref()
            .map(|m| format!(" of merchant {m}"))
            .unwrap_or_default();
        let mut s = format!(
            "bill{merchant} {} {}: {} rows ({} payments, {} refunds); local paid sub-orders: {} ({} fen); matched: {} ({} fen)\n",
            self.bill_date,
            self.bill_type,
            self.bill.detail_rows,
            self.bill.payment_rows,
            self.bill.refund_rows,
            self.local.paid_sub_orders,
            self.local.paid_amount_fen,
            self.matched,
            self.matched_amount_fen,
        );
        if self.total_mismatches.is_empty() {
            s.push_str("summary totals: consistent with the detail rows\n");
        } else {
            for t in &self.total_mismatches {
                s.push_str(&format!(
                    "summary total {}: summary {} but rows sum to {}\n",
                    t.field, t.summary, t.details
                ));
            }
        }
        if self.discrepancies.is_empty() {
            s.push_str("reconciled: no discrepancies\n");
        } else {
            let parts: Vec<String> = self
                .counts
                .iter()
                .map(|(k, n)| {
                    let name = serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    format!("{name}: {n}")
                })
                .collect();
            s.push_str(&format!(
                "DISCREPANCIES: {} ({})\n",
                self.discrepancies.len(),
                parts.join(", ")
            ));
        }
        s
    }
}

type Key = (String, String);

fn key_of(r: &BillRecord) -> Key {
    (r.mchid.clone(), r.out_trade_no.clone())
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A finding about the bill row `r`, attributed to the local sub-order `l`'s
/// combined order when there is one.
fn row_discrepancy(
    kind: DiscrepancyKind,
    r: &BillRecord,
    l: Option<&LocalSubOrder>,
    bill_amount_fen: Option<i64>,
    local_amount_fen: Option<i64>,
    detail: String,
) -> Discrepancy {
    Discrepancy {
        kind,
        mchid: r.mchid.clone(),
        out_trade_no: r.out_trade_no.clone(),
        combine_out_trade_no: l.map(|l| l.combine_out_trade_no.clone()),
        transaction_id: nonempty(&r.transaction_id),
        bill_amount_fen,
        local_amount_fen,
        detail,
    }
}

/// Reconciles `bill` (of Beijing day `date`) with the local sub-orders.
///
/// - `paid_in_day`: every local sub-order whose `success_time` falls in the
///   day (any order state: one not paid is ignored here).
/// - `others`: the local sub-orders (any day, any state) of bill rows that
///   are not in `paid_in_day`; a bill row found in neither is unknown.
pub fn reconcile(
    bill: &TradeBill,
    date: Date,
    paid_in_day: &[LocalSubOrder],
    others: &[LocalSubOrder],
) -> Report {
    reconcile_for(bill, date, None, paid_in_day, others, &[])
}

/// [`reconcile()`] of merchant `mchid`'s own bill: only its sub-orders are
/// expected in it (others' sub-orders are in their own merchants' bills),
/// and a row of another merchant is a discrepancy. `None`: every local
/// sub-order is expected (a bill of unknown owner). `refunds`: the local
/// refunds accepted on the day and those the bill's refund rows name; each
/// refund row must match one (number and amount), and each of the
/// merchant's refunds accepted that day must have a row (ALL and REFUND
/// bills).
pub fn reconcile_for(
    bill: &TradeBill,
    date: Date,
    mchid: Option<&str>,
    paid_in_day: &[LocalSubOrder],
    others: &[LocalSubOrder],
    refunds: &[RefundRecord],
) -> Report {
    let (from, to) = beijing_day_bounds(date);
    let in_day = |l: &LocalSubOrder| l.success_unix().is_some_and(|t| t >= from && t < to);
    let ours = |m: &str| mchid.is_none_or(|own| own == m);
    let local_day: HashMap<Key, &LocalSubOrder> = paid_in_day
        .iter()
        .filter(|l| ours(&l.mchid) && l.is_paid() && in_day(l))
        .map(|l| ((l.mchid.clone(), l.out_trade_no.clone()), l))
        .collect();
    let local_any: HashMap<Key, &LocalSubOrder> = others
        .iter()
        .chain(paid_in_day.iter())
        .map(|l| ((l.mchid.clone(), l.out_trade_no.clone()), l))
        .collect();

    let mut out = Vec::new();
    let mut side = BillSide {
        detail_rows: bill.details.len(),
        summary_order_total_fen: bill.summary.order_total_fen,
        summary_count: bill.summary.total_count,
        ..BillSide::default()
    };
    let local_refunds: HashMap<&str, &RefundRecord> = refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let mut refunds_seen: HashSet<&str> = HashSet::new();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    let mut matched = 0usize;
    let mut matched_amount = 0i64;
    let mismatch = |kind, r: &BillRecord, l: &LocalSubOrder, b, lo, detail: String| {
        row_discrepancy(kind, r, Some(l), b, lo, detail)
    };

    for r in &bill.details {
        let key = key_of(r);
        if !ours(&r.mchid) {
            // Counted below like any row, but matched with nothing.
            out.push(row_discrepancy(
                DiscrepancyKind::OtherMerchantRow,
                r,
                None,
                Some(r.order_amount_fen),
                None,
                format!(
                    "商户号 {} in the bill of merchant {}",
                    r.mchid,
                    mchid.unwrap_or_default()
                ),
            ));
        }
        if let Some(rf) = r.refund_id().and(r.refund.as_ref()) {
            side.refund_rows += 1;
            side.refund_amount_fen = side.refund_amount_fen.saturating_add(rf.refund_amount_fen);
            if ours(&r.mchid) && !local_any.contains_key(&key) {
                out.push(row_discrepancy(
                    DiscrepancyKind::RefundForUnknownOrder,
                    r,
                    None,
                    Some(rf.refund_amount_fen),
                    None,
                    format!("refund {} of an order unknown locally", rf.out_refund_no),
                ));
            } else if ours(&r.mchid) {
                refunds_seen.insert(rf.out_refund_no.as_str());
                match local_refunds.get(rf.out_refund_no.as_str()) {
                    None => out.push(row_discrepancy(
                        DiscrepancyKind::RefundUnknownLocally,
                        r,
                        local_any.get(&key).copied(),
                        Some(rf.refund_amount_fen),
                        None,
                        format!("refund {} is not a refund made here", rf.out_refund_no),
                    )),
                    Some(l) if l.amount != rf.refund_amount_fen => out.push(row_discrepancy(
                        DiscrepancyKind::RefundAmountMismatch,
                        r,
                        local_any.get(&key).copied(),
                        Some(rf.refund_amount_fen),
                        Some(l.amount),
                        format!(
                            "退款金额 of refund {} differs from the local refund",
                            rf.out_refund_no
                        ),
                    )),
                    Some(_) => {}
                }
            }
            continue;
        }
        side.payment_rows += 1;
        side.payment_amount_fen = side.payment_amount_fen.saturating_add(r.order_amount_fen);
        if !ours(&r.mchid) {
            continue;
        }
        let n = seen.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 2 {
            out.push(row_discrepancy(
                DiscrepancyKind::DuplicateInBill,
                r,
                local_any.get(&key).copied(),
                Some(r.order_amount_fen),
                None,
                "more than one payment row for this sub-order".into(),
            ));
        }
        if *n > 1 {
            continue;
        }
        if r.trade_state != "SUCCESS" {
            out.push(row_discrepancy(
                DiscrepancyKind::UnexpectedTradeState,
                r,
                local_any.get(&key).copied(),
                Some(r.order_amount_fen),
                None,
                format!("交易状态 {:?} on a payment row", r.trade_state),
            ));
        }
        let local = match local_day.get(&key) {
            Some(l) => *l,
            None => {
                let (kind, l, detail) = match local_any.get(&key) {
                    None => (
                        DiscrepancyKind::UnknownLocally,
                        None,
                        "no such sub-order in the local database".to_string(),
                    ),
                    Some(l) if l.is_paid() => (
                        DiscrepancyKind::PaidLocallyOnOtherDay,
                        Some(*l),
                        format!(
                            "paid locally at {}",
                            l.success_time.as_deref().unwrap_or_default()
                        ),
                    ),
                    Some(l) => (
                        DiscrepancyKind::UnpaidLocally,
                        Some(*l),
                        format!("local order state {}", l.order_state.as_str()),
                    ),
                };
                let local_amount = l.map(|l| l.amount_fen);
                let bill_amount = Some(r.order_amount_fen);
                out.push(row_discrepancy(
                    kind,
                    r,
                    l,
                    bill_amount,
                    local_amount,
                    detail,
                ));
                continue;
            }
        };
        let mut equal = true;
        if r.order_amount_fen != local.amount_fen {
            equal = false;
            out.push(mismatch(
                DiscrepancyKind::AmountMismatch,
                r,
                local,
                Some(r.order_amount_fen),
                Some(local.amount_fen),
                "订单金额 differs from the local amount".into(),
            ));
        }
        if let Some(payer) = local.payer_amount_fen {
            let bill_payer = r.order_amount_fen.saturating_sub(r.coupon_amount_fen);
            if bill_payer != payer {
                equal = false;
                out.push(mismatch(
                    DiscrepancyKind::PayerAmountMismatch,
                    r,
                    local,
                    Some(bill_payer),
                    Some(payer),
                    "订单金额 − 代金券金额 differs from the local payer amount".into(),
                ));
            }
        }
        if let Some(tx) = &local.transaction_id {
            if !r.transaction_id.is_empty() && *tx != r.transaction_id {
                equal = false;
                out.push(mismatch(
                    DiscrepancyKind::TransactionIdMismatch,
                    r,
                    local,
                    None,
                    None,
                    format!("local transaction id {tx}"),
                ));
            }
        }
        if equal {
            matched += 1;
            matched_amount = matched_amount.saturating_add(r.order_amount_fen);
        }
    }

    // A REFUND bill lists no payments: nothing can be missing from it.
    if bill.kind != super::BillKind::Refund {
        for (key, l) in &local_day {
            if !seen.contains_key(key) {
                out.push(Discrepancy {
                    kind: DiscrepancyKind::MissingFromBill,
                    mchid: l.mchid.clone(),
                    out_trade_no: l.out_trade_no.clone(),
                    combine_out_trade_no: Some(l.combine_out_trade_no.clone()),
                    transaction_id: l.transaction_id.clone(),
                    bill_amount_fen: None,
                    local_amount_fen: Some(l.amount_fen),
                    detail: format!(
                        "paid locally at {} but not in the bill",
                        l.success_time.as_deref().unwrap_or_default()
                    ),
                });
            }
        }
    }
    // A SUCCESS bill lists no refunds: nothing can be missing from it.
    if bill.kind != super::BillKind::Success {
        for l in refunds {
            let accepted_in_day =
                l.refund_id.is_some() && l.created_at >= from && l.created_at < to;
            if accepted_in_day && ours(&l.mchid) && !refunds_seen.contains(l.out_refund_no.as_str())
            {
                out.push(Discrepancy {
                    kind: DiscrepancyKind::RefundMissingFromBill,
                    mchid: l.mchid.clone(),
                    out_trade_no: l.out_trade_no.clone(),
                    combine_out_trade_no: Some(l.combine_out_trade_no.clone()),
                    transaction_id: Some(l.transaction_id.clone()),
                    bill_amount_fen: None,
                    local_amount_fen: Some(l.amount),
                    detail: format!(
                        "refund {} accepted locally but not in the bill",
                        l.out_refund_no
                    ),
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (a.kind, &a.mchid, &a.out_trade_no).cmp(&(b.kind, &b.mchid, &b.out_trade_no))
    });
    let mut counts = BTreeMap::new();
    for d in &out {
        *counts.entry(d.kind).or_insert(0) += 1;
    }
    let total_mismatches: Vec<TotalCheck> = bill
        .check_totals()
        .into_iter()
        .map(|m| TotalCheck {
            field: m.field.header().to_string(),
            summary: m.summary,
            details: m.details,
        })
        .collect();
    let local = LocalSide {
        paid_sub_orders: local_day.len(),
        paid_amount_fen: local_day.values().map(|l| l.amount_fen).sum(),
    };
    Report {
        mchid: mchid.map(str::to_string),
        bill_date: date.to_string(),
        bill_type: bill.kind.as_str().to_string(),
        window_from_unix: from,
        window_to_unix: to,
        bill: side,
        local,
        matched,
        matched_amount_fen: matched_amount,
        ok: out.is_empty() && total_mismatches.is_empty(),
        total_mismatches,
        discrepancies: out,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bill::BEIJING;
    use crate::bill::{BillKind, Openid, RefundColumns};
    use crate::combine::TradeState;
    use time::macros::date;
    use time::OffsetDateTime;

    fn row(mchid: &str, no: &str, amount: i64, at: i64) -> BillRecord {
        BillRecord {
            trade_time: OffsetDateTime::from_unix_timestamp(at)
                .unwrap()
                .to_offset(BEIJING),
            appid: "wx1".into(),
            mchid: mchid.into(),
            sub_mchid: "0".into(),
            device_info: String::new(),
            transaction_id: format!("42{no}"),
            out_trade_no: no.into(),
            openid: Openid::new("o1"),
            trade_type: "JSAPI".into(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_amount_fen: amount,
            coupon_amount_fen: 0,
            refund: Some(RefundColumns::of_payment_row()),
            goods_name: "g".into(),
            attach: String::new(),
            fee_milli_fen: 0,
            rate: "0.60%".into(),
            order_amount_fen: amount,
            rate_remark: String::new(),
        }
    }

    fn local(mchid: &str, no: &str, amount: i64, at: Option<&str>) -> LocalSubOrder {
        LocalSubOrder {
            combine_out_trade_no: format!("C{no}"),
            combine_mchid: "1900".into(),
            order_state: if at.is_some() {
                TradeState::Success
            } else {
                TradeState::NotPay
            },
            mchid: mchid.into(),
            out_trade_no: no.into(),
            amount_fen: amount,
            payer_amount_fen: at.map(|_| amount),
            transaction_id: at.map(|_| format!("42{no}")),
            success_time: at.map(str::to_string),
        }
    }

    #[test]
    fn day_bounds_are_beijing_midnights() {
        // 2024-01-01 00:00 +08:00 = 2023-12-31T16:00:00Z.
        assert_eq!(
            beijing_day_bounds(date!(2024 - 01 - 01)),
            (1_704_038_400, 1_704_124_800)
        );
    }

    #[test]
    fn every_kind_of_discrepancy_is_found() {
        let d = date!(2024 - 01 - 01);
        let noon = 1_704_081_600; // 2024-01-01 12:00 +08:00
        let in_day = "2024-01-01T12:00:00+08:00";
        // Just before midnight UTC+8 on the 1st, written in UTC.
        let late_utc = "2024-01-01T15:59:59Z";
        let bill = TradeBill::from_details(
            BillKind::All,
            vec![
                row("A", "ok", 100, noon),
                row("A", "amount", 200, noon),
                row("A", "unknown", 300, noon),
                row("A", "unpaid", 400, noon),
                row("A", "otherday", 500, noon),
                row("B", "late", 600, noon),
                row("A", "ok", 100, noon),
            ],
        )
        .unwrap();
        let paid = vec![
            local("A", "ok", 100, Some(in_day)),
            local("A", "amount", 201, Some(in_day)),
            local("A", "missing", 700, Some(in_day)),
            local("B", "late", 600, Some(late_utc)),
        ];
        let others = vec![
            local("A", "unpaid", 400, None),
            local("A", "otherday", 500, Some("2023-12-31T23:59:59+08:00")),
        ];
        let r = reconcile(&bill, d, &paid, &others);
        let kinds: Vec<(DiscrepancyKind, &str)> = r
            .discrepancies
            .iter()
            .map(|x| (x.kind, x.out_trade_no.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DiscrepancyKind::MissingFromBill, "missing"),
                (DiscrepancyKind::UnknownLocally, "unknown"),
                (DiscrepancyKind::UnpaidLocally, "unpaid"),
                (DiscrepancyKind::PaidLocallyOnOtherDay, "otherday"),
                (DiscrepancyKind::AmountMismatch, "amount"),
                (DiscrepancyKind::PayerAmountMismatch, "amount"),
                (DiscrepancyKind::DuplicateInBill, "ok"),
            ]
        );
        let amount = &r.discrepancies[4];
        assert_eq!(
            (amount.bill_amount_fen, amount.local_amount_fen),
            (Some(200), Some(201))
        );
        assert_eq!((r.matched, r.matched_amount_fen), (2, 700));
        assert_eq!(r.local.paid_sub_orders, 4);
        assert!(r.total_mismatches.is_empty());
        assert!(!r.ok);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["counts"]["missing_from_bill"], 1);
        assert_eq!(json["discrepancies"][0]["kind"], "missing_from_bill");
    }

    #[test]
    fn a_clean_day_is_ok_and_bad_totals_are_reported() {
        let d = date!(2024 - 01 - 01);
        let mut bill =
            TradeBill::from_details(BillKind::Success, vec![row("A", "x", 100, 1_704_081_600)])
                .unwrap();
        bill.details[0].refund = None;
        let paid = vec![local("A", "x", 100, Some("2024-01-01T04:00:00Z"))];
        let r = reconcile(&bill, d, &paid, &[]);
        assert!(r.ok, "{r:#?}");
        assert!(r.human_summary().contains("no discrepancies"));
        bill.summary.order_total_fen = 99;
        let r = reconcile(&bill, d, &paid, &[]);
        assert!(!r.ok);
        assert_eq!(r.total_mismatches[0].field, "订单总金额");
        assert_eq!(
            (r.total_mismatches[0].summary, r.total_mismatches[0].details),
            (99, 100)
        );
    }

    #[test]
    fn a_merchants_bill_is_reconciled_against_its_own_sub_orders_only() {
        let d = date!(2024 - 01 - 01);
        let noon = 1_704_081_600;
        let in_day = "2024-01-01T12:00:00+08:00";
        let mut refund = row("A", "ok", 100, noon);
        refund.refund = Some(RefundColumns {
            refund_id: "50R1".into(),
            out_refund_no: "RF1".into(),
            refund_amount_fen: 30,
            ..RefundColumns::of_payment_row()
        });
        let mut unknown_refund = refund.clone();
        unknown_refund.out_trade_no = "gone".into();
        let bill = TradeBill::from_details(
            BillKind::All,
            vec![
                row("A", "ok", 100, noon),
                row("B", "b1", 200, noon),
                refund,
                unknown_refund,
            ],
        )
        .unwrap();
        // B's sub-orders are in B's bill: neither expected nor matched here.
        let paid = vec![
            local("A", "ok", 100, Some(in_day)),
            local("B", "b1", 200, Some(in_day)),
            local("B", "b2", 300, Some(in_day)),
        ];
        let r = reconcile_for(
            &bill,
            d,
            Some("A"),
            &paid,
            &[],
            &[local_refund("RF1", "ok", 30, noon)],
        );
        let kinds: Vec<(DiscrepancyKind, &str)> = r
            .discrepancies
            .iter()
            .map(|x| (x.kind, x.out_trade_no.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DiscrepancyKind::RefundForUnknownOrder, "gone"),
                (DiscrepancyKind::OtherMerchantRow, "b1"),
            ]
        );
        assert_eq!((r.matched, r.local.paid_sub_orders), (1, 1));
        assert_eq!(r.mchid.as_deref(), Some("A"));
        assert_eq!(serde_json::to_value(&r).unwrap()["mchid"], "A");
        // Without a merchant every local sub-order is expected.
        let all = reconcile(&bill, d, &paid, &[]);
        assert_eq!(all.counts[&DiscrepancyKind::MissingFromBill], 1);
        assert!(serde_json::to_value(&all).unwrap().get("mchid").is_none());
    }

    fn local_refund(no: &str, out_trade_no: &str, amount: i64, at: i64) -> RefundRecord {
        RefundRecord {
            out_refund_no: no.into(),
            combine_out_trade_no: "C1".into(),
            mchid: "A".into(),
            out_trade_no: out_trade_no.into(),
            transaction_id: "4200".into(),
            amount,
            total: 100,
            reason: None,
            status: crate::refund::RefundStatus::Success,
            refund_id: Some(format!("50{no}")),
            user_received_account: None,
            success_time: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn refund_rows_are_matched_with_the_local_refunds() {
        let d = date!(2024 - 05 - 20);
        let (from, _) = beijing_day_bounds(d);
        let noon = from + 12 * 3600;
        let in_day = "2024-05-20T12:00:00+08:00";
        let refund_row = |no: &str, amount| {
            let mut r = row("A", "ok", 100, noon);
            r.refund = Some(RefundColumns {
                refund_id: format!("50{no}"),
                out_refund_no: no.into(),
                refund_amount_fen: amount,
                ..RefundColumns::of_payment_row()
            });
            r
        };
        let bill = TradeBill::from_details(
            BillKind::All,
            vec![
                row("A", "ok", 100, noon),
                refund_row("RF1", 30),
                refund_row("RF2", 20),
                refund_row("RF9", 5),
            ],
        )
        .unwrap();
        let paid = vec![local("A", "ok", 100, Some(in_day))];
        let refunds = vec![
            local_refund("RF1", "ok", 30, noon),
            local_refund("RF2", "ok", 25, noon),
            local_refund("RF3", "ok", 10, noon),
            // Accepted the day before: not expected in this bill.
            local_refund("RF4", "ok", 10, from - 60),
        ];
        let r = reconcile_for(&bill, d, Some("A"), &paid, &[], &refunds);
        let kinds: Vec<(DiscrepancyKind, Option<i64>, Option<i64>)> = r
            .discrepancies
            .iter()
            .map(|x| (x.kind, x.bill_amount_fen, x.local_amount_fen))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DiscrepancyKind::RefundUnknownLocally, Some(5), None),
                (DiscrepancyKind::RefundAmountMismatch, Some(20), Some(25)),
                (DiscrepancyKind::RefundMissingFromBill, None, Some(10)),
            ]
        );
        assert!(!r.ok);
        assert_eq!(r.bill.refund_rows, 3);
    }
}
