//! Exact decimal ↔ integer conversion for bill amounts. No floating point:
//! `"0.47"` is read as the digits it is made of and becomes `47` fen.

use super::error::AmountError;
use std::fmt::Write as _;

/// Decimal places of amount columns (yuan → fen).
pub const AMOUNT_SCALE: u32 = 2;
/// Decimal places of 手续费 columns (yuan → units of 0.00001 yuan, i.e.
/// thousandths of a fen).
pub const FEE_SCALE: u32 = 5;

/// Reads a decimal string with at most `scale` places as an integer count of
/// `10^-scale` units: `parse_scaled("45.0", 2) == Ok(4500)`.
///
/// Accepted: optional leading `-`, at least one integer digit, optionally a
/// `.` followed by 1..=`scale` digits (`12`, `0.01`, `45.0`, `-0.50`).
/// Refused: `+`, spaces, exponents, `.5`, `12.`, more than `scale` places.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i64, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotDecimal);
    }
    let frac = frac_part.unwrap_or("");
    if frac_part.is_some() && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotDecimal);
    }
    if frac.len() > scale as usize {
        return Err(AmountError::TooManyDecimals { max: scale });
    }
    // Leading zeros carry nothing; past 19 significant digits the value
    // cannot fit in an i64 (and the i128 accumulator cannot overflow).
    let significant = int_part.trim_start_matches('0');
    if significant.len() > 19 {
        return Err(AmountError::TooLarge);
    }
    let mut value: i128 = 0;
    for b in significant.bytes().chain(frac.bytes()) {
        value = value * 10 + i128::from(b - b'0');
    }
    // Pad the missing decimal places: "0.5" at scale 2 is 50.
    value *= 10i128.pow(scale - frac.len() as u32);
    i64::try_from(if negative { -value } else { value }).map_err(|_| AmountError::TooLarge)
}

/// Reads 总交易单数. Whole numbers only; a fractional part of zeros is
/// accepted because SDK-produced bills write the count as `45.0`.
pub fn parse_count(text: &str) -> Result<u64, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if int_part.starts_with('-') {
            AmountError::NotWhole
        } else {
            AmountError::NotDecimal
        });
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::NotDecimal);
        }
        if f.bytes().any(|b| b != b'0') {
            return Err(AmountError::NotWhole);
        }
    }
    let significant = int_part.trim_start_matches('0');
    if significant.len() > 20 {
        return Err(AmountError::TooLarge);
    }
    let value = significant
        .bytes()
        .fold(0u128, |n, b| n * 10 + u128::from(b - b'0'));
    u64::try_from(value).map_err(|_| AmountError::TooLarge)
}

/// Appends `value` (in `10^-scale` units) as a decimal with exactly `scale`
/// places: `write_scaled(&mut s, -50, 2)` appends `-0.50`.
pub fn write_scaled(out: &mut String, value: i64, scale: u32) {
    let unit = 10u64.pow(scale);
    let magnitude = value.unsigned_abs();
    if value < 0 {
        out.push('-');
    }
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{}.{:0width$}",
        magnitude / unit,
        magnitude % unit,
        width = scale as usize
    );
}

/// `value` fen as a yuan string with two places (`47` → `"0.47"`).
pub fn fen_to_yuan(value: i64) -> String {
    let mut s = String::with_capacity(8);
    write_scaled(&mut s, value, AMOUNT_SCALE);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_scaled("0.01", 2), Ok(1));
        assert_eq!(parse_scaled("12", 2), Ok(1200));
        assert_eq!(parse_scaled("45.0", 2), Ok(4500));
        assert_eq!(parse_scaled("0.47", 2), Ok(47));
        assert_eq!(parse_scaled("-0.50", 2), Ok(-50));
        assert_eq!(parse_scaled("-0", 2), Ok(0));
        assert_eq!(parse_scaled("007.10", 2), Ok(710));
        assert_eq!(parse_scaled("0.01000", 5), Ok(1000));
        assert_eq!(parse_scaled("0.08", 5), Ok(8000));
        assert_eq!(parse_scaled("-0.00600", 5), Ok(-600));
        assert_eq!(
            parse_scaled("999999999999999.99", 2),
            Ok(99_999_999_999_999_999)
        );
        assert_eq!(parse_scaled("-92233720368547758.08", 2), Ok(i64::MIN));
        assert_eq!(parse_scaled("92233720368547758.07", 2), Ok(i64::MAX));
    }

    #[test]
    fn bad_amounts_are_refused() {
        assert_eq!(parse_scaled("", 2), Err(AmountError::Empty));
        assert_eq!(
            parse_scaled("1.234", 2),
            Err(AmountError::TooManyDecimals { max: 2 })
        );
        assert_eq!(
            parse_scaled("0.000001", 5),
            Err(AmountError::TooManyDecimals { max: 5 })
        );
        for bad in [
            "+1", " 1", "1 ", ".5", "1.", "1.2.3", "1e3", "-", "--1", "1,00", "０.01", "NaN", "-.5",
        ] {
            assert_eq!(
                parse_scaled(bad, 2),
                Err(AmountError::NotDecimal),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_scaled("92233720368547758.08", 2),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            parse_scaled("99999999999999999999999999999", 5),
            Err(AmountError::TooLarge)
        );
        // Leading zeros do not count towards the size bound.
        assert_eq!(parse_scaled("0000000000000000001", 2), Ok(100));
    }

    #[test]
    fn counts_accept_zero_fractions_only() {
        assert_eq!(parse_count("45"), Ok(45));
        assert_eq!(parse_count("45.0"), Ok(45));
        assert_eq!(parse_count("45.00"), Ok(45));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("45.5"), Err(AmountError::NotWhole));
        assert_eq!(parse_count("-1"), Err(AmountError::NotWhole));
        assert_eq!(parse_count("45."), Err(AmountError::NotDecimal));
        assert_eq!(parse_count(""), Err(AmountError::Empty));
        assert_eq!(parse_count("4a"), Err(AmountError::NotDecimal));
        assert_eq!(parse_count("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_count("18446744073709551616"),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn amounts_format_with_fixed_places() {
        assert_eq!(fen_to_yuan(47), "0.47");
        assert_eq!(fen_to_yuan(4500), "45.00");
        assert_eq!(fen_to_yuan(-50), "-0.50");
        assert_eq!(fen_to_yuan(0), "0.00");
        assert_eq!(fen_to_yuan(i64::MIN), "-92233720368547758.08");
        let mut s = String::new();
        write_scaled(&mut s, 1000, FEE_SCALE);
        assert_eq!(s, "0.01000");
    }

    #[test]
    fn format_then_parse_is_identity() {
        for v in [0, 1, -1, 99, 100, -12345, i64::MAX, i64::MIN] {
            for scale in [AMOUNT_SCALE, FEE_SCALE] {
                let mut s = String::new();
                write_scaled(&mut s, v, scale);
                assert_eq!(parse_scaled(&s, scale), Ok(v), "{s}");
            }
        }
    }
}
