//! Bill times: `yyyy-MM-dd HH:mm:ss`, Beijing time (+08:00), no zone marker.

use std::fmt::Write as _;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The offset every bill time is in.
pub const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => panic!("+08:00 is a valid offset"),
};

/// Reads exactly `yyyy-MM-dd HH:mm:ss` (19 ASCII characters, a real
/// calendar date and time) as a +08:00 instant.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let b = text.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u16> {
        b[range].iter().try_fold(0u16, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
        })
    };
    let year = num(0..4)?;
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    let hour = u8::try_from(num(11..13)?).ok()?;
    let minute = u8::try_from(num(14..16)?).ok()?;
    let second = u8::try_from(num(17..19)?).ok()?;
    let date = Date::from_calendar_date(i32::from(year), month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(BEIJING))
}

/// Appends `t` in Beijing time as `yyyy-MM-dd HH:mm:ss` (sub-second parts
/// dropped: bills have whole seconds). `None` when the Beijing year is
/// outside 0000–9999, which four digits cannot hold.
pub fn write_time(out: &mut String, t: OffsetDateTime) -> Option<()> {
    let t = t.checked_to_offset(BEIJING)?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_beijing_time() {
        let t = parse_time("2019-02-19 05:01:46").unwrap();
        assert_eq!(t.offset(), BEIJING);
        assert_eq!(t.unix_timestamp(), 1_550_523_706);
        let mut s = String::new();
        write_time(&mut s, t.to_offset(UtcOffset::UTC)).unwrap();
        assert_eq!(s, "2019-02-19 05:01:46");
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in [
            "",
            "2019-02-19",
            "2019-02-19T05:01:46",
            "2019-02-19 05:01:46+08:00",
            "2019-02-30 05:01:46",
            "2019-13-01 05:01:46",
            "2019-02-19 24:00:00",
            "2019-02-19 05:60:00",
            "2019-02-19 5:01:46 ",
            "2019-0２-19 05:01:46",
            "+019-02-19 05:01:46",
        ] {
            assert!(parse_time(bad).is_none(), "{bad:?}");
        }
        assert!(parse_time("2020-02-29 23:59:59").is_some());
    }
}
