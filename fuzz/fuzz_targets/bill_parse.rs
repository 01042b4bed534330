//! Fuzzes the trade-bill parser with arbitrary bytes.
//!
//! Beyond "never panics", it checks the parser's contracts:
//! - strict and lenient parsing agree: a strictly accepted file is accepted
//!   leniently with no skipped rows and the same records; a file refused
//!   strictly on a detail row is either refused leniently too or has that
//!   row among the lenient row errors;
//! - every accepted bill can be written back, and reading that back gives
//!   the same bill, in every line-ending/BOM combination;
//! - summary checking and error messages work on whatever was accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_combine_core::bill::{format, parse, parse_lenient, BillError, FormatOptions, LineEnding};

fuzz_target!(|data: &[u8]| {
    let strict = parse(data);
    let lenient = parse_lenient(data);
    match (&strict, &lenient) {
        (Ok(bill), Ok(l)) => {
            assert!(
                l.row_errors.is_empty(),
                "lenient skipped rows strict accepted"
            );
            assert_eq!(&l.bill, bill);
        }
        (Ok(_), Err(e)) => panic!("strict accepted, lenient refused: {e}"),
        (Err(BillError::Malformed { line, .. }), Ok(l)) => {
            assert!(
                l.row_errors.iter().any(|r| r.line == *line),
                "strict refused line {line}, lenient neither refused nor skipped it"
            );
        }
        (Err(e), Ok(_)) => panic!("strict refused without a malformed row, lenient accepted: {e}"),
        (Err(a), Err(b)) => {
            let _ = (a.to_string(), b.to_string(), a.line());
        }
    }
    if let Ok(l) = &lenient {
        for r in &l.row_errors {
            let _ = r.reason.to_string();
        }
        let _ = l.bill.check_totals();
    }

    let Ok(bill) = strict else { return };
    for mismatch in bill.check_totals() {
        let _ = mismatch.to_string();
    }
    for (line_ending, bom) in [
        (LineEnding::CrLf, false),
        (LineEnding::Lf, false),
        (LineEnding::CrLf, true),
        (LineEnding::Lf, true),
    ] {
        let text = format(&bill, FormatOptions { line_ending, bom })
            .unwrap_or_else(|e| panic!("a parsed bill must be writable: {e}"));
        let again =
            parse(text.as_bytes()).unwrap_or_else(|e| panic!("a written bill must parse: {e}"));
        assert_eq!(again, bill);
    }
});
