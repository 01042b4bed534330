//! Every timestamp form the project reads or writes, on `time`'s format
//! descriptions (no hand-rolled digit writing or parsing elsewhere).
//!
//! WeChat Pay runs on Beijing time: it writes RFC 3339 with `+08:00`
//! (`2024-05-01T12:00:00+08:00`), bill rows as `yyyy-MM-dd HH:mm:ss`
//! without a zone, and order numbers and prepay ids embed
//! `yyyyMMddHHmmss`. The project's own outputs (webhook events, CLI) are
//! in UTC.
//!
//! The writers take Unix seconds and return `None` for an instant the form
//! cannot hold (outside `time`'s range, or outside years 0000–9999 for the
//! RFC 3339 and bill forms): each caller keeps its own fallback.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Beijing time (+08:00), the offset of every WeChat Pay timestamp and bill
/// day.
pub const BEIJING: UtcOffset = offset!(+8);

/// `yyyy-MM-dd HH:mm:ss`, the bill's time columns.
const BILL_TIME: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// `yyyyMMddHHmmss`.
const COMPACT: &[BorrowedFormatItem<'_>] =
    format_description!("[year][month][day][hour][minute][second]");

/// `yyyy-MM-dd HH:mm:ssZ`.
const UTC_TABLE: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");

/// `yyyy-MM-dd`.
const DATE: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");

/// Unix seconds as an instant at `offset`; `None` when the instant or its
/// local date is outside `time`'s range.
fn at(unix: i64, offset: UtcOffset) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .checked_to_offset(offset)
}

/// Unix seconds as a Beijing-time instant; `None` outside `time`'s range.
pub fn beijing(unix: i64) -> Option<OffsetDateTime> {
    at(unix, BEIJING)
}

/// Unix seconds as RFC 3339 in UTC: `2024-05-01T04:00:00Z`. `None` outside
/// years 0000–9999.
pub fn rfc3339_utc(unix: i64) -> Option<String> {
    at(unix, UtcOffset::UTC)?.format(&Rfc3339).ok()
}

/// Unix seconds as RFC 3339 in Beijing time, the form WeChat Pay writes:
/// `2024-05-01T12:00:00+08:00`. `None` outside Beijing years 0000–9999.
pub fn rfc3339_beijing(unix: i64) -> Option<String> {
    beijing(unix)?.format(&Rfc3339).ok()
}

/// Reads an RFC 3339 time (any offset, optional fraction, which is
/// dropped) as Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Unix seconds as Beijing `yyyyMMddHHmmss` (order numbers, prepay ids).
/// A year before 0000 is written with its sign, as `time` writes `[year]`.
pub fn compact_beijing(unix: i64) -> Option<String> {
    beijing(unix)?.format(COMPACT).ok()
}

/// Unix seconds as `yyyy-MM-dd HH:mm:ssZ` in UTC (the CLI's tables). A year
/// before 0000 is written with its sign.
pub fn utc_table(unix: i64) -> Option<String> {
    at(unix, UtcOffset::UTC)?.format(UTC_TABLE).ok()
}

/// Reads a bill time: exactly `yyyy-MM-dd HH:mm:ss` (19 ASCII characters,
/// a real calendar date and time) as a Beijing-time instant.
pub fn parse_bill_time(text: &str) -> Option<OffsetDateTime> {
    // The length check refuses a signed year (`+2019-…`), which `[year]`
    // would otherwise read.
    if text.len() != 19 {
        return None;
    }
    PrimitiveDateTime::parse(text, BILL_TIME)
        .ok()
        .map(|t| t.assume_offset(BEIJING))
}

/// Appends `t` in Beijing time as a bill time, `yyyy-MM-dd HH:mm:ss`
/// (sub-second parts dropped: bills have whole seconds). `None` when the
/// Beijing year is outside 0000–9999, which four digits cannot hold.
pub fn write_bill_time(out: &mut String, t: OffsetDateTime) -> Option<()> {
    let t = t.checked_to_offset(BEIJING)?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    // Formatted on the stack: this runs once per time column of every bill
    // row.
    let mut buf = [0u8; 19];
    let n = t.format_into(&mut &mut buf[..], BILL_TIME).ok()?;
    out.push_str(std::str::from_utf8(&buf[..n]).ok()?);
    Some(())
}

/// Reads exactly `yyyy-MM-dd` (bill days).
pub fn parse_date(text: &str) -> Option<Date> {
    // As in `parse_bill_time`: no signed years.
    if text.len() != 10 {
        return None;
    }
    Date::parse(text, DATE).ok()
}

/// The Unix range `[start, end)` of the Beijing-time day `date`.
pub fn beijing_day_bounds(date: Date) -> (i64, i64) {
    let start = date.midnight().assume_offset(BEIJING).unix_timestamp();
    (start, start + 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    /// 2024-05-01T12:00:00+08:00.
    const NOON: i64 = 1_714_536_000;
    /// 0000-01-01T00:00:00Z, the first second RFC 3339 can write in UTC.
    const YEAR0_UTC: i64 = -62_167_219_200;
    /// 0000-01-01T00:00:00+08:00, the first it can write in Beijing time.
    const YEAR0_BEIJING: i64 = -62_167_248_000;
    /// 9999-12-31T23:59:59Z, the last second `time` holds.
    const LAST: i64 = 253_402_300_799;
    /// 9999-12-31T23:59:59+08:00, the last second it holds in Beijing time.
    const LAST_BEIJING: i64 = 253_402_271_999;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_beijing(NOON).unwrap(), "2024-05-01T12:00:00+08:00");
        assert_eq!(rfc3339_utc(NOON).unwrap(), "2024-05-01T04:00:00Z");
        assert_eq!(rfc3339_beijing(0).unwrap(), "1970-01-01T08:00:00+08:00");
        assert_eq!(rfc3339_utc(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_beijing(-1).unwrap(), "1970-01-01T07:59:59+08:00");
        assert_eq!(rfc3339_utc(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_beijing(YEAR0_BEIJING).unwrap(),
            "0000-01-01T00:00:00+08:00"
        );
        assert_eq!(rfc3339_beijing(YEAR0_BEIJING - 1), None);
        assert_eq!(rfc3339_utc(YEAR0_UTC).unwrap(), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(YEAR0_UTC - 1), None);
        assert_eq!(
            rfc3339_beijing(LAST_BEIJING).unwrap(),
            "9999-12-31T23:59:59+08:00"
        );
        assert_eq!(rfc3339_beijing(LAST_BEIJING + 1), None);
        assert_eq!(rfc3339_utc(LAST).unwrap(), "9999-12-31T23:59:59Z");
        for out_of_range in [LAST + 1, i64::MAX, i64::MIN] {
            assert_eq!(rfc3339_utc(out_of_range), None);
            assert_eq!(rfc3339_beijing(out_of_range), None);
        }
    }

    #[test]
    fn rfc3339_reads_any_offset() {
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+08:00"), Some(NOON));
        assert_eq!(parse_rfc3339("2024-05-01T04:00:00Z"), Some(NOON));
        assert_eq!(parse_rfc3339("2024-05-01T04:00:00.120Z"), Some(NOON));
        assert_eq!(parse_rfc3339("2024-05-01 12:00:00"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn compact_and_table_forms() {
        assert_eq!(compact_beijing(NOON).unwrap(), "20240501120000");
        assert_eq!(compact_beijing(0).unwrap(), "19700101080000");
        assert_eq!(compact_beijing(-1).unwrap(), "19700101075959");
        assert_eq!(compact_beijing(YEAR0_BEIJING).unwrap(), "00000101000000");
        assert_eq!(
            compact_beijing(YEAR0_BEIJING - 1).unwrap(),
            "-00011231235959"
        );
        assert_eq!(compact_beijing(LAST_BEIJING).unwrap(), "99991231235959");
        assert_eq!(compact_beijing(LAST_BEIJING + 1), None);
        assert_eq!(compact_beijing(i64::MIN), None);

        assert_eq!(utc_table(NOON).unwrap(), "2024-05-01 04:00:00Z");
        assert_eq!(utc_table(0).unwrap(), "1970-01-01 00:00:00Z");
        assert_eq!(utc_table(YEAR0_UTC - 1).unwrap(), "-0001-12-31 23:59:59Z");
        assert_eq!(utc_table(LAST).unwrap(), "9999-12-31 23:59:59Z");
        assert_eq!(utc_table(LAST + 1), None);
    }

    #[test]
    fn bill_times_are_beijing_time() {
        let t = parse_bill_time("2019-02-19 05:01:46").unwrap();
        assert_eq!(t.offset(), BEIJING);
        assert_eq!(t.unix_timestamp(), 1_550_523_706);
        let mut s = String::from("x,");
        write_bill_time(&mut s, t.to_offset(UtcOffset::UTC)).unwrap();
        assert_eq!(s, "x,2019-02-19 05:01:46");

        let mut s = String::new();
        let nanos = t.replace_nanosecond(999_999_999).unwrap();
        write_bill_time(&mut s, nanos).unwrap();
        assert_eq!(s, "2019-02-19 05:01:46", "sub-seconds are dropped");

        let mut s = String::new();
        write_bill_time(&mut s, beijing(YEAR0_BEIJING).unwrap()).unwrap();
        assert_eq!(s, "0000-01-01 00:00:00");
        assert_eq!(
            write_bill_time(&mut s, beijing(YEAR0_BEIJING - 1).unwrap()),
            None
        );
        assert_eq!(
            write_bill_time(&mut s, OffsetDateTime::from_unix_timestamp(LAST).unwrap()),
            None
        );
        assert_eq!(s, "0000-01-01 00:00:00", "nothing appended on refusal");
    }

    #[test]
    fn bad_bill_times_are_refused() {
        for bad in [
            "",
            "2019-02-19",
            "2019-02-19T05:01:46",
            "2019-02-19 05:01:46+08:00",
            "2019-02-30 05:01:46",
            "2019-13-01 05:01:46",
            "2019-02-19 24:00:00",
            "2019-02-19 05:60:00",
            "2019-02-19 05:01:60",
            "2019-02-19 5:01:46 ",
            "2019-0２-19 05:01:46",
            "+019-02-19 05:01:46",
            "-019-02-19 05:01:46",
            "+2019-02-19 05:01:46",
        ] {
            assert!(parse_bill_time(bad).is_none(), "{bad:?}");
        }
        assert!(parse_bill_time("2020-02-29 23:59:59").is_some());
        assert!(parse_bill_time("0000-01-01 00:00:00").is_some());
    }

    #[test]
    fn dates_and_day_bounds() {
        let d = parse_date("2024-01-01").unwrap();
        assert_eq!(d, date!(2024 - 01 - 01));
        for bad in ["2024-1-01", "2024-01-1", "+024-01-01", "2024-02-30", ""] {
            assert!(parse_date(bad).is_none(), "{bad:?}");
        }
        let (start, end) = beijing_day_bounds(d);
        assert_eq!(start, 1_704_067_200 - 8 * 3600);
        assert_eq!(end - start, 86_400);
        assert_eq!(beijing(start).unwrap().date(), d);
        assert_eq!(beijing(end - 1).unwrap().date(), d);
        assert_eq!(beijing(end).unwrap().date(), date!(2024 - 01 - 02));
    }
}
