//! Trade bills (交易账单): the file format.
//!
//! - [`parse`] / [`parse_lenient`] read a bill file (ALL, SUCCESS or REFUND
//!   layout, detected from the header) into a typed [`TradeBill`].
//! - [`format()`] writes one back in WeChat Pay's format (the simulator's
//!   bills; `parse(format(b)) == b` is property-tested).
//! - [`TradeBill::check_totals`] compares the summary row with the rows.
//! - [`sha1_hex`] / [`HashingWriter`]: the SHA-1 `hash_value` of a bill.
//!
//! Downloading and reconciling bills is the merchant library's job
//! (`wxpay_combine::bill`); this module is pure and synchronous.
//!
//! Decisions (see the tests for each):
//! - Money is integer fen, read from the decimal text without floats.
//!   Amounts take at most 2 places (`45.0`, `12`, `-0.50` are fine;
//!   `1.234` is refused with its line), and may be negative (refund-row
//!   fees are). 手续费 has 5 places, kept exactly as thousandths of a fen
//!   (`fee_milli_fen`: `0.01000` → 1000). 费率 stays text (`0.60%`).
//! - 总交易单数 must be whole; `45.0` is read as 45 because SDK-made bills
//!   write it so, `45.5` is refused.
//! - Times are `yyyy-MM-dd HH:mm:ss` in Beijing time (+08:00).
//! - Data fields are read with or without their back-quote; text is kept
//!   verbatim (a `0` stays `0`). [`format()`] always back-quotes.
//! - The format cannot escape `,`, CR or LF, so [`format()`] refuses a text
//!   field holding one instead of writing a file that reads back wrong.
//! - The legacy layout (总金额/企业红包金额) is refused with
//!   [`BillError::LegacyLayout`]: its amounts mean something else, and no
//!   source gives its exact columns.
//! - Openids are personal data: [`Openid`] prints masked in `Debug` and
//!   `Display`, and no error message quotes a text column.

mod amount;
mod error;
mod format;
mod hash;
mod layout;
mod parse;
mod record;

#[cfg(test)]
mod tests;

pub use crate::timefmt::{parse_bill_time as parse_time, BEIJING};
pub use amount::{fen_to_yuan, parse_count, parse_scaled, AMOUNT_SCALE, FEE_SCALE};
pub use error::{AmountError, BillError, FormatError, MalformedReason};
pub use format::{format, FormatOptions, LineEnding};
pub use hash::{sha1_hex, HashingWriter};
pub use layout::{BillKind, TotalField, UnknownBillKind};
pub use parse::{parse, parse_file, parse_lenient, LenientBill, RowError};
pub use record::{BillRecord, BillSummary, Openid, RefundColumns, TotalMismatch, TradeBill};
