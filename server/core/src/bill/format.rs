//! Writing a [`TradeBill`] in WeChat Pay's file format: header row, detail
//! rows and the summary row with every field back-quoted, the summary
//! header unquoted, amounts with 2 places, fees with 5, counts whole.
//!
//! The format has no escaping, so a text field holding `,`, CR or LF cannot
//! be written faithfully: [`format()`] refuses it rather than emit a file that
//! would parse into different records.

use super::amount::{write_scaled, AMOUNT_SCALE, FEE_SCALE};
use super::error::FormatError;
use super::layout::{BillKind, Col, TotalField};
use super::record::{BillRecord, TradeBill};
use crate::timefmt::write_bill_time;

/// Line terminator of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEnding {
    /// `\r\n`, as in the SDK sample bill.
    #[default]
    CrLf,
    /// `\n`.
    Lf,
}

impl LineEnding {
    fn as_str(self) -> &'static str {
        match self {
            LineEnding::CrLf => "\r\n",
            LineEnding::Lf => "\n",
        }
    }
}

/// How [`format()`] lays the file out. The default is CRLF without a BOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatOptions {
    /// Line terminator (also after the last line).
    pub line_ending: LineEnding,
    /// Start with a UTF-8 byte-order mark.
    pub bom: bool,
}

/// Writes `bill` as a bill file. Fails, writing nothing, when a record
/// cannot be represented (see [`FormatError`]).
pub fn format(bill: &TradeBill, options: FormatOptions) -> Result<String, FormatError> {
    check_summary_layout(bill)?;
    let eol = options.line_ending.as_str();
    let columns = bill.kind.columns();
    // Real rows average under 12 bytes per column: usually one allocation.
    let mut out = String::with_capacity(512 + bill.details.len() * columns.len() * 12);
    if options.bom {
        out.push('\u{feff}');
    }
    join_headers(&mut out, columns.iter().map(|c| c.header()));
    out.push_str(eol);

    for (index, record) in bill.details.iter().enumerate() {
        write_record(&mut out, bill.kind, columns, index, record)?;
        out.push_str(eol);
    }

    let sum_columns = bill.kind.summary_columns();
    join_headers(&mut out, sum_columns.iter().map(|c| c.header()));
    out.push_str(eol);
    let s = &bill.summary;
    for (i, col) in sum_columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        // check_summary_layout made every present column Some.
        match col {
            TotalField::Count => out.push_str(&s.total_count.to_string()),
            TotalField::SettlementTotal => {
                write_scaled(&mut out, s.settlement_total_fen, AMOUNT_SCALE)
            }
            TotalField::RefundTotal => {
                write_scaled(&mut out, s.refund_total_fen.unwrap_or(0), AMOUNT_SCALE)
            }
            TotalField::RechargeCouponRefundTotal => write_scaled(
                &mut out,
                s.recharge_coupon_refund_total_fen.unwrap_or(0),
                AMOUNT_SCALE,
            ),
            TotalField::FeeTotal => write_scaled(&mut out, s.fee_total_milli_fen, FEE_SCALE),
            TotalField::OrderTotal => write_scaled(&mut out, s.order_total_fen, AMOUNT_SCALE),
            TotalField::RequestedRefundTotal => write_scaled(
                &mut out,
                s.requested_refund_total_fen.unwrap_or(0),
                AMOUNT_SCALE,
            ),
        }
    }
    out.push_str(eol);
    Ok(out)
}

fn join_headers<'a>(out: &mut String, headers: impl Iterator<Item = &'a str>) {
    for (i, h) in headers.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(h);
    }
}

fn check_summary_layout(bill: &TradeBill) -> Result<(), FormatError> {
    let s = &bill.summary;
    let present = [
        s.refund_total_fen.is_some(),
        s.recharge_coupon_refund_total_fen.is_some(),
        s.requested_refund_total_fen.is_some(),
    ];
    match (bill.kind.has_refund_columns(), present) {
        (true, [true, true, true]) | (false, [false, false, false]) => Ok(()),
        (true, _) => Err(FormatError::SummaryLayout(
            "ALL and REFUND summaries need every refund total",
        )),
        (false, _) => Err(FormatError::SummaryLayout(
            "a SUCCESS summary has no refund totals",
        )),
    }
}

fn write_record(
    out: &mut String,
    kind: BillKind,
    columns: &[Col],
    index: usize,
    r: &BillRecord,
) -> Result<(), FormatError> {
    let refund = match (&r.refund, kind) {
        (None, BillKind::Success) => None,
        (Some(_), BillKind::Success) => {
            return Err(FormatError::LayoutMismatch {
                index,
                problem: "SUCCESS bills have no refund columns",
            })
        }
        (None, _) => {
            return Err(FormatError::LayoutMismatch {
                index,
                problem: "ALL and REFUND bills need the refund columns",
            })
        }
        (Some(rf), BillKind::All)
            if rf.refund_apply_time.is_some() || rf.refund_success_time.is_some() =>
        {
            return Err(FormatError::LayoutMismatch {
                index,
                problem: "ALL bills have no refund application/success times",
            })
        }
        (Some(rf), _) => Some(rf),
    };

    for (i, &col) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        let text = |out: &mut String, value: &str| -> Result<(), FormatError> {
            if let Some(found) = value.chars().find(|c| matches!(c, ',' | '\r' | '\n')) {
                return Err(FormatError::ForbiddenCharacter {
                    index,
                    column: col.header(),
                    found,
                });
            }
            out.push_str(value);
            Ok(())
        };
        let time = |out: &mut String, t| {
            write_bill_time(out, t).ok_or(FormatError::TimeOutOfRange {
                index,
                column: col.header(),
            })
        };
        // `refund` is Some exactly when the layout has refund columns.
        let rf = || refund.expect("layout with refund columns");
        match col {
            Col::TradeTime => time(out, r.trade_time)?,
            Col::Appid => text(out, &r.appid)?,
            Col::Mchid => text(out, &r.mchid)?,
            Col::SubMchid => text(out, &r.sub_mchid)?,
            Col::DeviceInfo => text(out, &r.device_info)?,
            Col::TransactionId => text(out, &r.transaction_id)?,
            Col::OutTradeNo => text(out, &r.out_trade_no)?,
            Col::Openid => text(out, r.openid.as_str())?,
            Col::TradeType => text(out, &r.trade_type)?,
            Col::TradeState => text(out, &r.trade_state)?,
            Col::BankType => text(out, &r.bank_type)?,
            Col::Currency => text(out, &r.currency)?,
            Col::SettlementAmount => write_scaled(out, r.settlement_amount_fen, AMOUNT_SCALE),
            Col::CouponAmount => write_scaled(out, r.coupon_amount_fen, AMOUNT_SCALE),
            Col::RefundApplyTime => {
                if let Some(t) = rf().refund_apply_time {
                    time(out, t)?
                }
            }
            Col::RefundSuccessTime => {
                if let Some(t) = rf().refund_success_time {
                    time(out, t)?
                }
            }
            Col::RefundId => text(out, &rf().refund_id)?,
            Col::OutRefundNo => text(out, &rf().out_refund_no)?,
            Col::RefundAmount => write_scaled(out, rf().refund_amount_fen, AMOUNT_SCALE),
            Col::RechargeCouponRefundAmount => {
                write_scaled(out, rf().recharge_coupon_refund_amount_fen, AMOUNT_SCALE)
            }
            Col::RefundType => text(out, &rf().refund_type)?,
            Col::RefundStatus => text(out, &rf().refund_status)?,
            Col::GoodsName => text(out, &r.goods_name)?,
            Col::Attach => text(out, &r.attach)?,
            Col::Fee => write_scaled(out, r.fee_milli_fen, FEE_SCALE),
            Col::Rate => text(out, &r.rate)?,
            Col::OrderAmount => write_scaled(out, r.order_amount_fen, AMOUNT_SCALE),
            Col::RequestedRefundAmount => {
                write_scaled(out, rf().requested_refund_amount_fen, AMOUNT_SCALE)
            }
            Col::RateRemark => text(out, &r.rate_remark)?,
        }
    }
    Ok(())
}
