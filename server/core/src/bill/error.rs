//! Typed errors of the bill module, one small enum per concern.

use thiserror::Error;

/// Why a decimal amount or count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AmountError {
    /// The field is empty where a number is required.
    #[error("empty")]
    Empty,
    /// Something other than an optional `-`, digits and one `.`.
    #[error("not a decimal number")]
    NotDecimal,
    /// More digits after the point than the column carries.
    #[error("more than {max} decimal places")]
    TooManyDecimals {
        /// Decimal places the column allows (2 for amounts, 5 for fees).
        max: u32,
    },
    /// More integer digits than any real bill carries (guards overflow).
    #[error("too large")]
    TooLarge,
    /// A count with a non-zero fractional part or a sign.
    #[error("not a whole non-negative number")]
    NotWhole,
}

/// What is wrong with one line of a bill file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MalformedReason {
    /// The row has the wrong number of comma-separated fields.
    #[error("expected {expected} columns, found {found}")]
    ColumnCount {
        /// Columns of the layout.
        expected: usize,
        /// Columns in the row.
        found: usize,
    },
    /// An amount, fee or count column does not hold an acceptable number.
    #[error("column {column}: {problem} ({value:?})")]
    Number {
        /// The column's header name.
        column: &'static str,
        /// The offending text, cut to 32 characters.
        value: String,
        /// Why it was refused.
        problem: AmountError,
    },
    /// A time column is not `yyyy-MM-dd HH:mm:ss` or not a real date/time.
    #[error("column {column}: not a yyyy-MM-dd HH:mm:ss time ({value:?})")]
    Time {
        /// The column's header name.
        column: &'static str,
        /// The offending text, cut to 32 characters.
        value: String,
    },
    /// A carriage return inside a line (only a CR right before LF ends a line).
    #[error("carriage return inside a line")]
    StrayCarriageReturn,
    /// The summary header does not belong to the detail header's layout.
    #[error("summary header does not match the {kind} layout")]
    SummaryHeader {
        /// The layout the detail header announced.
        kind: &'static str,
    },
    /// A non-blank line after the summary row.
    #[error("unexpected line after the summary row")]
    AfterSummary,
    /// Bytes that are not UTF-8 (bills are UTF-8).
    #[error("invalid UTF-8")]
    InvalidUtf8,
}

/// Parsing or downloading a trade bill failed.
///
/// Line numbers are 1-based and count every line of the file, including the
/// header and blank lines. Error text never carries an openid: only number,
/// time and header cells are ever quoted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BillError {
    /// The file has no header row.
    #[error("the bill file is empty")]
    Empty,
    /// The first line is not the header of a known trade-bill layout.
    #[error("line {line}: unknown bill header {found:?}")]
    UnknownHeader {
        /// Line of the header (1).
        line: usize,
        /// The header text, cut to 120 characters.
        found: String,
    },
    /// The header is the legacy layout (总金额/企业红包金额 columns).
    #[error(
        "line {line}: legacy trade-bill layout (总金额/企业红包金额 columns) is not supported; \
         its amounts do not mean the same as 应结订单金额/代金券金额"
    )]
    LegacyLayout {
        /// Line of the header (1).
        line: usize,
    },
    /// A row does not follow the format.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The offending line.
        line: usize,
        /// What is wrong with it.
        reason: MalformedReason,
    },
    /// The file ends before the summary header and its row (truncated file).
    #[error("no summary {missing} after line {last_line} (truncated bill?)")]
    MissingSummary {
        /// `header` or `row`: which part is absent.
        missing: &'static str,
        /// The last line of the file.
        last_line: usize,
    },
    /// `hash_value` given to the download is not 40 hex digits.
    #[error("expected SHA-1 is not 40 hex digits ({0:?})")]
    InvalidExpectedHash(String),
    /// The downloaded (decompressed) file's SHA-1 is not `hash_value`.
    #[error("SHA-1 mismatch: hash_value {expected}, downloaded file {actual}")]
    HashMismatch {
        /// `hash_value` from 申请交易账单, lower case.
        expected: String,
        /// SHA-1 of what was received, lower case.
        actual: String,
    },
    /// The body is not valid gzip (corrupt, truncated or trailing garbage).
    #[error("gzip body is corrupt: {0}")]
    Gzip(String),
    /// The body stream reported an error.
    #[error("reading the bill body failed: {0}")]
    Body(String),
    /// The decompressed body exceeds the size limit (gzip bomb guard).
    #[error("bill larger than the {limit} byte limit")]
    TooLarge {
        /// The limit, in decompressed bytes.
        limit: u64,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {detail}")]
    Io {
        /// What was being done (`create`, `write`, `rename`, …).
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The OS error.
        detail: String,
    },
}

impl BillError {
    /// The line this error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            BillError::UnknownHeader { line, .. }
            | BillError::LegacyLayout { line }
            | BillError::Malformed { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Formatting records into a bill file failed: the records cannot be
/// represented in the format without changing their meaning.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// A text field holds `,`, CR or LF, which the format cannot escape.
    #[error(
        "record {index}, column {column}: contains {found:?}, which the bill format cannot carry"
    )]
    ForbiddenCharacter {
        /// Index of the record in `details`.
        index: usize,
        /// The column's header name.
        column: &'static str,
        /// The offending character.
        found: char,
    },
    /// A record's refund columns do not fit the bill's layout.
    #[error("record {index}: {problem}")]
    LayoutMismatch {
        /// Index of the record in `details`.
        index: usize,
        /// What does not fit.
        problem: &'static str,
    },
    /// The summary's optional totals do not fit the bill's layout.
    #[error("summary: {0}")]
    SummaryLayout(&'static str),
    /// A time outside the years 0000–9999 (the format has four digits).
    #[error("record {index}, column {column}: year outside 0000-9999")]
    TimeOutOfRange {
        /// Index of the record in `details`.
        index: usize,
        /// The column's header name.
        column: &'static str,
    },
    /// A computed total does not fit in an `i64`.
    #[error("total of {0} overflows")]
    TotalOverflow(&'static str),
}
