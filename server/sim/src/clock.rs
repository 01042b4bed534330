//! The simulator's clock and the service's time formats.
//!
//! WeChat Pay runs on China Standard Time: every timestamp it writes is RFC
//! 3339 with `+08:00`, and bill dates are +08:00 calendar days. The clock can
//! be shifted through the control API so tests can cross expiries (prepay_id
//! 2 h, OAuth code 5 min, bill token 30 s) without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use time::{Date, OffsetDateTime};
use wxpay_combine_core::apiv3::Clock;
use wxpay_combine_core::timefmt;

/// System time plus an adjustable offset, in seconds.
#[derive(Debug, Default)]
pub struct SimClock {
    offset_secs: AtomicI64,
}

impl SimClock {
    /// A clock shifted by `offset_secs`.
    pub fn with_offset(offset_secs: i64) -> Self {
        Self {
            offset_secs: AtomicI64::new(offset_secs),
        }
    }

    /// The current shift.
    pub fn offset(&self) -> i64 {
        self.offset_secs.load(Ordering::SeqCst)
    }

    /// Sets the shift.
    pub fn set_offset(&self, secs: i64) {
        self.offset_secs.store(secs, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> i64 {
        wall_secs() + self.offset()
    }
}

/// Unix seconds from the operating system.
pub fn wall_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds from the operating system (the delivery schedule runs on
/// real elapsed time, never on the shifted clock).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub use timefmt::{beijing_day_bounds as cst_day_bounds, parse_date, parse_rfc3339};

/// `unix` in +08:00, or the epoch when it has no such time (the clock can
/// be shifted arbitrarily far).
fn cst(unix: i64) -> OffsetDateTime {
    timefmt::beijing(unix).unwrap_or_else(|| OffsetDateTime::UNIX_EPOCH.to_offset(timefmt::BEIJING))
}

/// `2024-05-20T13:29:35+08:00`; empty before the year 0000.
pub fn rfc3339(unix: i64) -> String {
    timefmt::rfc3339_beijing(cst(unix).unix_timestamp()).unwrap_or_default()
}

/// `yyyyMMddHHmmss` (embedded in prepay ids).
pub fn compact(unix: i64) -> String {
    timefmt::compact_beijing(cst(unix).unix_timestamp()).unwrap_or_default()
}

/// The +08:00 calendar day of `unix`.
pub fn cst_date(unix: i64) -> Date {
    cst(unix).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_china_standard_time() {
        // 2024-01-01T00:00:00Z is 08:00 in Beijing.
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T08:00:00+08:00");
        assert_eq!(compact(1_704_067_200), "20240101080000");
        assert_eq!(
            parse_rfc3339("2024-01-01T08:00:00+08:00"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T00:00:00.120Z"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("2024-01-01 08:00:00"), None);
        // Out of range: the epoch, as before (and no panic at the top end).
        for far in [i64::MAX, i64::MIN, 253_402_300_799] {
            assert_eq!(rfc3339(far), "1970-01-01T08:00:00+08:00");
            assert_eq!(compact(far), "19700101080000");
        }
    }

    #[test]
    fn day_bounds_are_cst_days() {
        let d = parse_date("2024-01-01").unwrap();
        let (start, end) = cst_day_bounds(d);
        assert_eq!(start, 1_704_067_200 - 8 * 3600);
        assert_eq!(end - start, 86_400);
        assert_eq!(cst_date(start), d);
        assert_eq!(cst_date(end - 1), d);
        assert!(parse_date("2024-1-01").is_none());
    }
}
