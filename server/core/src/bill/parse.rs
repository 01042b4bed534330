//! Reading a trade-bill file into a [`TradeBill`].
//!
//! Accepted input: UTF-8 with or without BOM; CRLF or LF line ends; each
//! data field with or without its one leading back-quote; blank lines
//! anywhere (they carry nothing). Everything else that deviates is refused
//! with the line number: wrong column count, an amount with more places
//! than its column has, a bad time, a stray CR, a missing summary, anything
//! after the summary row.
//!
//! Written by hand rather than on a CSV crate: the bill is not RFC 4180 CSV
//! (no quoting or escaping; fields carry a back-quote prefix instead; two
//! header rows of different layouts in one file), and every refusal must
//! name its line and column, which a generic reader's errors do not. The
//! parser also runs in one pass without copying field text (see
//! BENCHMARKS.md "Trade-bill parsing and formatting").

use super::amount::{parse_count, parse_scaled, AMOUNT_SCALE, FEE_SCALE};
use super::error::{BillError, MalformedReason};
use super::layout::{
    match_header, summary_header_matches, BillKind, Col, HeaderMatch, TotalField, COL_COUNT,
    SUMMARY_FIRST_HEADER,
};
use super::record::{BillRecord, BillSummary, Openid, RefundColumns, TradeBill};
use crate::timefmt::parse_bill_time as parse_time;

/// A detail row that lenient parsing skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Its line number (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub reason: MalformedReason,
}

/// Result of [`parse_lenient`]: the rows that parsed, and the ones that did
/// not. `bill.check_totals()` then shows what the skipped rows amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientBill {
    /// Header, good detail rows and summary.
    pub bill: TradeBill,
    /// Detail rows that were refused, in file order.
    pub row_errors: Vec<RowError>,
}

/// Parses a whole bill file. Any malformed line fails the parse with
/// [`BillError::Malformed`] naming the line; money is never half-read.
pub fn parse(input: &[u8]) -> Result<TradeBill, BillError> {
    let (bill, errors) = parse_inner(input, false)?;
    debug_assert!(errors.is_empty());
    Ok(bill)
}

/// Parses a bill file, collecting malformed *detail* rows instead of
/// failing on the first one. The header and the summary must still be
/// well-formed (without them nothing can be checked). For operators who
/// want to see every bad row of a damaged file at once; reconciliation
/// should treat any `row_errors` as a failed bill.
pub fn parse_lenient(input: &[u8]) -> Result<LenientBill, BillError> {
    let (bill, row_errors) = parse_inner(input, true)?;
    Ok(LenientBill { bill, row_errors })
}

/// Reads a bill file from disk and parses it strictly.
pub fn parse_file(path: &std::path::Path) -> Result<TradeBill, BillError> {
    let bytes = std::fs::read(path).map_err(|e| BillError::Io {
        op: "read",
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    parse(&bytes)
}

enum Part {
    Details,
    SummaryHeader,
    Done,
}

fn parse_inner(input: &[u8], lenient: bool) -> Result<(TradeBill, Vec<RowError>), BillError> {
    let text = std::str::from_utf8(input).map_err(|e| BillError::Malformed {
        line: 1 + input[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        reason: MalformedReason::InvalidUtf8,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(BillError::Empty);
    }

    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));

    let (_, header) = lines.next().ok_or(BillError::Empty)?;
    let kind = read_header(header)?;
    let columns = kind.columns();

    // One record per line at most; the estimate avoids regrowth.
    let mut details = Vec::with_capacity(text.bytes().filter(|&b| b == b'\n').count());
    let mut row_errors = Vec::new();
    let mut summary = None;
    let mut part = Part::Details;
    let mut last_line = 1;
    let mut cells: Vec<&str> = Vec::with_capacity(COL_COUNT);

    for (line, raw) in lines {
        if raw.trim().is_empty() {
            continue;
        }
        last_line = line;
        let malformed = |reason| BillError::Malformed { line, reason };
        cells.clear();
        cells.extend(raw.split(','));
        match part {
            Part::Details if header_cell(cells[0]) == SUMMARY_FIRST_HEADER => {
                let trimmed: Vec<&str> = cells.iter().map(|c| header_cell(c)).collect();
                if !summary_header_matches(kind, &trimmed) {
                    return Err(malformed(MalformedReason::SummaryHeader {
                        kind: kind.as_str(),
                    }));
                }
                part = Part::SummaryHeader;
            }
            Part::Details => {
                let row = if raw.contains('\r') {
                    Err(MalformedReason::StrayCarriageReturn)
                } else {
                    read_detail(kind, columns, &cells)
                };
                match row {
                    Ok(record) => details.push(record),
                    Err(reason) if lenient => row_errors.push(RowError { line, reason }),
                    Err(reason) => return Err(malformed(reason)),
                }
            }
            Part::SummaryHeader => {
                if raw.contains('\r') {
                    return Err(malformed(MalformedReason::StrayCarriageReturn));
                }
                summary = Some(read_summary(kind, &cells).map_err(malformed)?);
                part = Part::Done;
            }
            Part::Done => return Err(malformed(MalformedReason::AfterSummary)),
        }
    }

    let summary = summary.ok_or(BillError::MissingSummary {
        missing: match part {
            Part::Details => "header",
            _ => "row",
        },
        last_line,
    })?;
    Ok((
        TradeBill {
            kind,
            details,
            summary,
        },
        row_errors,
    ))
}

/// A header cell: back-quote (if any) and surrounding blanks removed.
fn header_cell(cell: &str) -> &str {
    unquote(cell.trim()).trim()
}

/// A data cell without its one leading back-quote. Nothing else is
/// trimmed: text columns are kept exactly.
fn unquote(cell: &str) -> &str {
    cell.strip_prefix('`').unwrap_or(cell)
}

fn read_header(line: &str) -> Result<BillKind, BillError> {
    let cells: Vec<&str> = line.split(',').map(header_cell).collect();
    match match_header(&cells) {
        HeaderMatch::Known(kind) => Ok(kind),
        HeaderMatch::Legacy => Err(BillError::LegacyLayout { line: 1 }),
        HeaderMatch::Unknown => Err(BillError::UnknownHeader {
            line: 1,
            found: line.chars().take(120).collect(),
        }),
    }
}

/// At most 32 characters of a refused cell, for the error message.
fn clip(value: &str) -> String {
    value.chars().take(32).collect()
}

fn number(col_name: &'static str, value: &str, scale: u32) -> Result<i64, MalformedReason> {
    parse_scaled(value, scale).map_err(|problem| MalformedReason::Number {
        column: col_name,
        value: clip(value),
        problem,
    })
}

fn read_detail(
    kind: BillKind,
    columns: &[Col],
    cells: &[&str],
) -> Result<BillRecord, MalformedReason> {
    if cells.len() != columns.len() {
        return Err(MalformedReason::ColumnCount {
            expected: columns.len(),
            found: cells.len(),
        });
    }
    let mut f = [""; COL_COUNT];
    for (col, cell) in columns.iter().zip(cells) {
        f[*col as usize] = unquote(cell);
    }
    let text = |c: Col| f[c as usize].to_owned();
    let amount = |c: Col| number(c.header(), f[c as usize], AMOUNT_SCALE);
    let time = |c: Col| {
        parse_time(f[c as usize]).ok_or_else(|| MalformedReason::Time {
            column: c.header(),
            value: clip(f[c as usize]),
        })
    };
    // Refund times may be empty (a refund still processing has no 成功时间).
    let optional_time = |c: Col| {
        if f[c as usize].is_empty() {
            Ok(None)
        } else {
            time(c).map(Some)
        }
    };

    let refund = if kind.has_refund_columns() {
        let (refund_apply_time, refund_success_time) = if kind == BillKind::Refund {
            (
                optional_time(Col::RefundApplyTime)?,
                optional_time(Col::RefundSuccessTime)?,
            )
        } else {
            (None, None)
        };
        Some(RefundColumns {
            refund_apply_time,
            refund_success_time,
            refund_id: text(Col::RefundId),
            out_refund_no: text(Col::OutRefundNo),
            refund_amount_fen: amount(Col::RefundAmount)?,
            recharge_coupon_refund_amount_fen: amount(Col::RechargeCouponRefundAmount)?,
            refund_type: text(Col::RefundType),
            refund_status: text(Col::RefundStatus),
            requested_refund_amount_fen: amount(Col::RequestedRefundAmount)?,
        })
    } else {
        None
    };

    Ok(BillRecord {
        trade_time: time(Col::TradeTime)?,
        appid: text(Col::Appid),
        mchid: text(Col::Mchid),
        sub_mchid: text(Col::SubMchid),
        device_info: text(Col::DeviceInfo),
        transaction_id: text(Col::TransactionId),
        out_trade_no: text(Col::OutTradeNo),
        openid: Openid::new(text(Col::Openid)),
        trade_type: text(Col::TradeType),
        trade_state: text(Col::TradeState),
        bank_type: text(Col::BankType),
        currency: text(Col::Currency),
        settlement_amount_fen: amount(Col::SettlementAmount)?,
        coupon_amount_fen: amount(Col::CouponAmount)?,
        refund,
        goods_name: text(Col::GoodsName),
        attach: text(Col::Attach),
        fee_milli_fen: number(Col::Fee.header(), f[Col::Fee as usize], FEE_SCALE)?,
        rate: text(Col::Rate),
        order_amount_fen: amount(Col::OrderAmount)?,
        rate_remark: text(Col::RateRemark),
    })
}

fn read_summary(kind: BillKind, cells: &[&str]) -> Result<BillSummary, MalformedReason> {
    let columns = kind.summary_columns();
    if cells.len() != columns.len() {
        return Err(MalformedReason::ColumnCount {
            expected: columns.len(),
            found: cells.len(),
        });
    }
    let mut summary = BillSummary {
        total_count: 0,
        settlement_total_fen: 0,
        refund_total_fen: None,
        recharge_coupon_refund_total_fen: None,
        fee_total_milli_fen: 0,
        order_total_fen: 0,
        requested_refund_total_fen: None,
    };
    for (col, cell) in columns.iter().zip(cells) {
        let value = unquote(cell);
        let amount = || number(col.header(), value, AMOUNT_SCALE);
        match col {
            TotalField::Count => {
                summary.total_count =
                    parse_count(value).map_err(|problem| MalformedReason::Number {
                        column: col.header(),
                        value: clip(value),
                        problem,
                    })?
            }
            TotalField::SettlementTotal => summary.settlement_total_fen = amount()?,
            TotalField::RefundTotal => summary.refund_total_fen = Some(amount()?),
            TotalField::RechargeCouponRefundTotal => {
                summary.recharge_coupon_refund_total_fen = Some(amount()?)
            }
            // The real service writes 5 places, SDK fixtures 2: both exact.
            TotalField::FeeTotal => {
                summary.fee_total_milli_fen = number(col.header(), value, FEE_SCALE)?
            }
            TotalField::OrderTotal => summary.order_total_fen = amount()?,
            TotalField::RequestedRefundTotal => {
                summary.requested_refund_total_fen = Some(amount()?)
            }
        }
    }
    Ok(summary)
}
