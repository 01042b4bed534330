//! Tests of the bill module against the SDK sample bill, hand-written
//! SUCCESS/REFUND bills, damaged files, and the download path.

use super::*;

/// The SDK sample ALL bill, byte-exact: UTF-8 BOM, CRLF, 45 rows, and a
/// summary row written `45.0,…,0.0,…` by the SDK.
const SAMPLE: &[u8] = include_bytes!("testdata/sample-trade-bill-ALL.csv");

fn sample_text() -> &'static str {
    std::str::from_utf8(SAMPLE).unwrap()
}

/// The sample with its BOM removed and LF line ends.
fn sample_lf_no_bom() -> String {
    sample_text()
        .strip_prefix('\u{feff}')
        .unwrap()
        .replace("\r\n", "\n")
}

/// Replaces line `n` (1-based) of an LF bill.
fn with_line(text: &str, n: usize, new: &str) -> String {
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines[n - 1] = new;
    lines.join("\n")
}

fn line(text: &str, n: usize) -> &str {
    text.split('\n').nth(n - 1).unwrap()
}

fn t(s: &str) -> time::OffsetDateTime {
    parse_time(s).unwrap()
}

fn malformed(err: BillError) -> (usize, MalformedReason) {
    match err {
        BillError::Malformed { line, reason } => (line, reason),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// ---------------------------------------------------------------- sample --

#[test]
fn sample_bill_parses_strictly_and_is_consistent() {
    // Every one of the 45 detail rows has 27 fields, valid times and
    // amounts; the summary row (`45.0`, `0.0`) adds up. Nothing in the
    // sample is malformed, so the strict parser accepts it as it is.
    let bill = parse(SAMPLE).unwrap();
    assert_eq!(bill.kind, BillKind::All);
    assert_eq!(bill.details.len(), 45);
    assert_eq!(
        bill.summary,
        BillSummary {
            total_count: 45,
            settlement_total_fen: 47,
            refund_total_fen: Some(14),
            recharge_coupon_refund_total_fen: Some(0),
            fee_total_milli_fen: 8000,
            order_total_fen: 47,
            requested_refund_total_fen: Some(14),
        }
    );
    assert_eq!(bill.check_totals(), vec![]);

    let first = &bill.details[0];
    assert_eq!(first.trade_time, t("2019-02-19 05:01:46"));
    assert_eq!(first.trade_time.unix_timestamp(), 1_550_523_706);
    assert_eq!(first.appid, "wxab8acd895ab1638a");
    assert_eq!(first.mchid, "1921000401");
    assert_eq!(first.sub_mchid, "0");
    assert_eq!(first.device_info, "harryma007");
    assert_eq!(first.transaction_id, "4200000263201902167700134212");
    assert_eq!(first.out_trade_no, "autotest_20190216081946_82335");
    assert_eq!(first.openid.as_str(), "oHkLxtx0vUqe-18p_AXTZ1innxkCY");
    assert_eq!(first.trade_type, "JSAPI");
    assert_eq!(first.trade_state, "REFUND");
    assert_eq!(first.bank_type, "OTHERS");
    assert_eq!(first.currency, "CNY");
    assert_eq!(first.settlement_amount_fen, 0);
    assert_eq!(first.coupon_amount_fen, 0);
    assert_eq!(
        first.refund,
        Some(RefundColumns {
            refund_apply_time: None,
            refund_success_time: None,
            refund_id: "50000709672019011908420787722".into(),
            out_refund_no: "REF4200000263201902167700963919".into(),
            refund_amount_fen: 1,
            recharge_coupon_refund_amount_fen: 0,
            refund_type: "ORIGINAL".into(),
            refund_status: "SUCCESS".into(),
            requested_refund_amount_fen: 1,
        })
    );
    assert_eq!(first.refund_id(), Some("50000709672019011908420787722"));
    assert_eq!(first.goods_name, "系统拨测-cheeryin-test_micropay_succ");
    assert_eq!(first.attach, "");
    assert_eq!(first.fee_milli_fen, 0);
    assert_eq!(first.rate, "39.00%");
    assert_eq!(first.order_amount_fen, 0);
    assert_eq!(first.rate_remark, "");

    // Line 4: a NATIVE payment with a 0.01000 fee and `0` refund ids.
    let native = &bill.details[2];
    assert_eq!(native.trade_type, "NATIVE");
    assert_eq!(native.trade_state, "SUCCESS");
    assert_eq!(native.settlement_amount_fen, 3);
    assert_eq!(native.fee_milli_fen, 1000);
    assert_eq!(native.device_info, "");
    assert_eq!(native.refund_id(), None);
    assert_eq!(native.refund.as_ref().unwrap().refund_id, "0");
}

#[test]
fn sample_parses_the_same_without_bom_with_lf_and_without_back_quotes() {
    let reference = parse(SAMPLE).unwrap();
    let lf = sample_lf_no_bom();
    assert_eq!(parse(lf.as_bytes()).unwrap(), reference);
    // Without the trailing newline, too.
    assert_eq!(parse(lf.trim_end().as_bytes()).unwrap(), reference);
    // Back-quotes are optional on input.
    assert_eq!(parse(lf.replace('`', "").as_bytes()).unwrap(), reference);
    // Blank lines carry nothing.
    assert_eq!(
        parse(
            lf.replace("\n`2019-02-19 13:51:50", "\n\n \n`2019-02-19 13:51:50")
                .as_bytes()
        )
        .unwrap(),
        reference
    );
}

#[test]
fn formatting_the_sample_reproduces_it_except_the_sdk_summary_style() {
    let bill = parse(SAMPLE).unwrap();
    let out = format(
        &bill,
        FormatOptions {
            line_ending: LineEnding::CrLf,
            bom: true,
        },
    )
    .unwrap();
    // The only difference: the service's summary style (whole count, 2
    // places, 5 for fees) instead of the SDK's `45.0`/`0.0`.
    let expected = sample_text().replace(
        "`45.0,`0.47,`0.14,`0.0,`0.08,`0.47,`0.14\r\n",
        "`45,`0.47,`0.14,`0.00,`0.08000,`0.47,`0.14\r\n",
    );
    assert_ne!(expected, sample_text());
    assert_eq!(out, expected);

    // Default: CRLF, no BOM. LF on request.
    let plain = format(&bill, FormatOptions::default()).unwrap();
    assert_eq!(plain, expected.strip_prefix('\u{feff}').unwrap());
    let lf = format(
        &bill,
        FormatOptions {
            line_ending: LineEnding::Lf,
            bom: false,
        },
    )
    .unwrap();
    assert!(!lf.contains('\r'));
    assert_eq!(parse(lf.as_bytes()).unwrap(), bill);
}

#[test]
fn a_truncated_sample_row_fails_strictly_and_is_collected_leniently() {
    // Cut line 20 after its 22nd field, as a broken transfer would.
    let text = sample_lf_no_bom();
    let row20 = line(&text, 20);
    let cut: String = row20.split(',').take(22).collect::<Vec<_>>().join(",");
    let damaged = with_line(&text, 20, &cut);

    let (line_no, reason) = malformed(parse(damaged.as_bytes()).unwrap_err());
    assert_eq!(line_no, 20);
    assert_eq!(
        reason,
        MalformedReason::ColumnCount {
            expected: 27,
            found: 22
        }
    );

    let lenient = parse_lenient(damaged.as_bytes()).unwrap();
    assert_eq!(
        lenient.row_errors,
        vec![RowError {
            line: 20,
            reason: MalformedReason::ColumnCount {
                expected: 27,
                found: 22
            }
        }]
    );
    assert_eq!(lenient.bill.details.len(), 44);
    // The summary still describes 45 rows: the skipped row shows up.
    let fields: Vec<TotalField> = lenient
        .bill
        .check_totals()
        .iter()
        .map(|m| m.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            TotalField::Count,
            TotalField::SettlementTotal,
            TotalField::OrderTotal
        ]
    );

    // A clean file parses leniently with no row errors.
    let clean = parse_lenient(SAMPLE).unwrap();
    assert!(clean.row_errors.is_empty());
    assert_eq!(clean.bill, parse(SAMPLE).unwrap());
}

#[test]
fn lenient_parsing_still_requires_header_and_summary() {
    let text = sample_lf_no_bom();
    let no_summary: Vec<&str> = text.split('\n').take(46).collect();
    assert!(matches!(
        parse_lenient(no_summary.join("\n").as_bytes()),
        Err(BillError::MissingSummary { .. })
    ));
    let bad_summary = with_line(&text, 48, "`45.0,`0.47,`0.14,`0.0,`0.08,`0.471,`0.14");
    let (line_no, _) = malformed(parse_lenient(bad_summary.as_bytes()).unwrap_err());
    assert_eq!(line_no, 48);
}

// ---------------------------------------------------------- other layouts --

const SUCCESS_BILL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\n\
`2024-05-01 10:00:00,`wx1234567890abcdef,`1900000109,`0,`,`4200001234202405011234567890,`combine-1-a,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`CMB_DEBIT,`CNY,`100.00,`0.00,`商品A,`order=1,`0.60000,`0.60%,`100.00,`\n\
`2024-05-01 23:59:59,`wx1234567890abcdef,`1900000109,`0,`,`4200001234202405011234567891,`combine-1-b,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.99,`0.01,`商品B,`,`0.00600,`0.60%,`1.00,`\n\
总交易单数,应结订单总金额,手续费总金额,订单总金额\n\
`2,`100.99,`0.60600,`101.00\n";

#[test]
fn success_layout_parses() {
    let bill = parse(SUCCESS_BILL.as_bytes()).unwrap();
    assert_eq!(bill.kind, BillKind::Success);
    assert_eq!(bill.details.len(), 2);
    let a = &bill.details[0];
    assert_eq!(a.refund, None);
    assert_eq!(a.settlement_amount_fen, 10_000);
    assert_eq!(a.fee_milli_fen, 60_000);
    assert_eq!(a.attach, "order=1");
    assert_eq!(a.goods_name, "商品A");
    assert_eq!(a.bank_type, "CMB_DEBIT");
    let b = &bill.details[1];
    assert_eq!(b.trade_time, t("2024-05-01 23:59:59"));
    assert_eq!(b.coupon_amount_fen, 1);
    assert_eq!(b.order_amount_fen, 100);
    assert_eq!(
        bill.summary,
        BillSummary {
            total_count: 2,
            settlement_total_fen: 10_099,
            refund_total_fen: None,
            recharge_coupon_refund_total_fen: None,
            fee_total_milli_fen: 60_600,
            order_total_fen: 10_100,
            requested_refund_total_fen: None,
        }
    );
    assert_eq!(bill.check_totals(), vec![]);
    let again = format(
        &bill,
        FormatOptions {
            line_ending: LineEnding::Lf,
            bom: false,
        },
    )
    .unwrap();
    assert_eq!(again, SUCCESS_BILL);
}

const REFUND_BILL: &str = "\u{feff}交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
`2024-05-01 10:00:00,`wx1234567890abcdef,`1900000109,`0,`,`4200001234202405011234567890,`combine-1-a,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`CMB_DEBIT,`CNY,`0.00,`0.00,`2024-05-02 11:00:00,`2024-05-02 11:00:05,`50300000012024050200000000001,`refund-1,`100.00,`0.00,`ORIGINAL,`SUCCESS,`商品A,`order=1,`-0.60000,`0.60%,`0.00,`100.00,`\r\n\
`2024-05-01 10:00:00,`wx1234567890abcdef,`1900000109,`0,`,`4200001234202405011234567891,`combine-1-b,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`2024-05-02 12:30:00,`,`50300000012024050200000000002,`refund-2,`0.50,`0.00,`ORIGINAL,`PROCESSING,`商品B,`,`-0.00300,`0.60%,`0.00,`0.50,`\r\n\
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
`2,`0.00,`100.50,`0.00,`-0.60300,`0.00,`100.50\r\n";

#[test]
fn refund_layout_parses_with_refund_times() {
    let bill = parse(REFUND_BILL.as_bytes()).unwrap();
    assert_eq!(bill.kind, BillKind::Refund);
    let a = bill.details[0].refund.as_ref().unwrap();
    assert_eq!(a.refund_apply_time, Some(t("2024-05-02 11:00:00")));
    assert_eq!(a.refund_success_time, Some(t("2024-05-02 11:00:05")));
    assert_eq!(a.refund_amount_fen, 10_000);
    assert_eq!(a.out_refund_no, "refund-1");
    assert_eq!(bill.details[0].fee_milli_fen, -60_000);
    let b = bill.details[1].refund.as_ref().unwrap();
    assert_eq!(b.refund_success_time, None);
    assert_eq!(b.refund_status, "PROCESSING");
    assert_eq!(b.requested_refund_amount_fen, 50);
    assert_eq!(bill.summary.fee_total_milli_fen, -60_300);
    assert_eq!(bill.summary.refund_total_fen, Some(10_050));
    assert_eq!(bill.check_totals(), vec![]);
    let again = format(
        &bill,
        FormatOptions {
            line_ending: LineEnding::CrLf,
            bom: true,
        },
    )
    .unwrap();
    assert_eq!(again, REFUND_BILL);
}

#[test]
fn the_documented_real_all_row_parses() {
    // The ALL row and summary quoted in the reference notes (§7.4).
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        line(&sample_lf_no_bom(), 1),
        "`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`176531292,`,`420000612032130748613220688,`2021WERUN1647840687637,`oZWaCKXip5njeEiloC4oeOV1TTsk,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`微信云托管支付测试,`,`0.00000,`0.90%,`0.01,`0.00,`",
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
        "`12,`0.06,`0.06,`0.00,`0.00000,`0.06,`0.06",
    );
    let bill = parse(text.as_bytes()).unwrap();
    let r = &bill.details[0];
    assert_eq!(r.sub_mchid, "176531292");
    assert_eq!(r.settlement_amount_fen, 1);
    assert_eq!(r.rate, "0.90%");
    assert_eq!(r.refund_id(), None);
    assert_eq!(bill.summary.total_count, 12);
    assert_eq!(bill.summary.settlement_total_fen, 6);
    // An excerpt: one row against a 12-row summary.
    let fields: Vec<TotalField> = bill.check_totals().iter().map(|m| m.field).collect();
    assert_eq!(
        fields,
        vec![
            TotalField::Count,
            TotalField::SettlementTotal,
            TotalField::RefundTotal,
            TotalField::OrderTotal,
            TotalField::RequestedRefundTotal
        ]
    );
}

// ------------------------------------------------------------- rejections --

#[test]
fn wrong_column_count_names_the_line() {
    let text = sample_lf_no_bom();
    let extra = with_line(&text, 7, &format!("{},`extra", line(&text, 7)));
    assert_eq!(
        malformed(parse(extra.as_bytes()).unwrap_err()),
        (
            7,
            MalformedReason::ColumnCount {
                expected: 27,
                found: 28
            }
        )
    );
    // A comma inside a goods name shifts every column: refused, not misread.
    let comma = with_line(
        &text,
        6,
        &line(&text, 6).replace("shanehou-avrilchen", "shanehou,avrilchen"),
    );
    let err = parse(comma.as_bytes()).unwrap_err();
    assert_eq!(err.line(), Some(6));
}

#[test]
fn an_amount_with_three_places_is_refused_with_its_line() {
    let text = sample_lf_no_bom();
    let bad = with_line(&text, 5, &line(&text, 5).replacen("`0.01,", "`1.234,", 1));
    let err = parse(bad.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 5: column 应结订单金额: more than 2 decimal places (\"1.234\")"
    );
    assert_eq!(
        malformed(err),
        (
            5,
            MalformedReason::Number {
                column: "应结订单金额",
                value: "1.234".into(),
                problem: AmountError::TooManyDecimals { max: 2 }
            }
        )
    );
    // Fees take five places, not six.
    let fee = with_line(&text, 4, &line(&text, 4).replace("`0.01000,", "`0.010001,"));
    let (n, reason) = malformed(parse(fee.as_bytes()).unwrap_err());
    assert_eq!(n, 4);
    assert!(matches!(
        reason,
        MalformedReason::Number {
            column: "手续费",
            problem: AmountError::TooManyDecimals { max: 5 },
            ..
        }
    ));
    // Empty amounts are refused too (money is never guessed).
    let empty = with_line(&text, 9, &line(&text, 9).replacen("`0.00,", "`,", 1));
    assert_eq!(parse(empty.as_bytes()).unwrap_err().line(), Some(9));
}

#[test]
fn a_bad_time_is_refused_with_its_line() {
    let text = sample_lf_no_bom();
    for bad_time in [
        "2019-02-30 05:01:46",
        "2019/02/19 05:01:46",
        "",
        "2019-02-19T05:01:46",
    ] {
        let bad = with_line(
            &text,
            3,
            &line(&text, 3).replace("2019-02-19 05:01:46", bad_time),
        );
        let (n, reason) = malformed(parse(bad.as_bytes()).unwrap_err());
        assert_eq!(n, 3);
        assert_eq!(
            reason,
            MalformedReason::Time {
                column: "交易时间",
                value: bad_time.into()
            }
        );
    }
}

#[test]
fn a_missing_summary_is_a_truncated_bill() {
    let text = sample_lf_no_bom();
    let lines: Vec<&str> = text.split('\n').collect();
    // Header row of the summary missing.
    assert_eq!(
        parse(lines[..46].join("\n").as_bytes()).unwrap_err(),
        BillError::MissingSummary {
            missing: "header",
            last_line: 46
        }
    );
    // Summary header present, summary row missing.
    assert_eq!(
        parse(format!("{}\n", lines[..47].join("\n")).as_bytes()).unwrap_err(),
        BillError::MissingSummary {
            missing: "row",
            last_line: 47
        }
    );
    // A file cut in the middle of a row fails on that row.
    let cut = &text[..text.find("`2019-02-19 13:51:50").unwrap() + 30];
    assert_eq!(parse(cut.as_bytes()).unwrap_err().line(), Some(44));
    assert_eq!(parse(b"").unwrap_err(), BillError::Empty);
    assert_eq!(
        parse("\u{feff}\r\n".as_bytes()).unwrap_err(),
        BillError::Empty
    );
}

#[test]
fn unknown_and_legacy_headers_are_refused() {
    let text = sample_lf_no_bom();
    let unknown = with_line(&text, 1, &line(&text, 1).replace("费率备注", "备注"));
    assert!(matches!(
        parse(unknown.as_bytes()).unwrap_err(),
        BillError::UnknownHeader { line: 1, .. }
    ));
    assert!(matches!(
        parse(b"hello,world\n").unwrap_err(),
        BillError::UnknownHeader { line: 1, found } if found == "hello,world"
    ));
    let legacy = with_line(
        &text,
        1,
        &line(&text, 1)
            .replace("应结订单金额", "总金额")
            .replace("代金券金额", "企业红包金额"),
    );
    let err = parse(legacy.as_bytes()).unwrap_err();
    assert_eq!(err, BillError::LegacyLayout { line: 1 });
    assert!(err.to_string().contains("legacy"));
}

#[test]
fn summary_problems_are_refused() {
    let text = sample_lf_no_bom();
    // A SUCCESS summary header under an ALL detail header.
    let wrong = with_line(
        &text,
        47,
        "总交易单数,应结订单总金额,手续费总金额,订单总金额",
    );
    assert_eq!(
        malformed(parse(wrong.as_bytes()).unwrap_err()),
        (47, MalformedReason::SummaryHeader { kind: "ALL" })
    );
    // 45.5 transactions.
    let half = with_line(&text, 48, "`45.5,`0.47,`0.14,`0.0,`0.08,`0.47,`0.14");
    let (n, reason) = malformed(parse(half.as_bytes()).unwrap_err());
    assert_eq!(n, 48);
    assert!(matches!(
        reason,
        MalformedReason::Number {
            column: "总交易单数",
            problem: AmountError::NotWhole,
            ..
        }
    ));
    // Anything after the summary row.
    let after = format!("{text}`1,`2\n");
    assert_eq!(
        malformed(parse(after.as_bytes()).unwrap_err()),
        (49, MalformedReason::AfterSummary)
    );
    // Summary with too few columns.
    let short = with_line(&text, 48, "`45,`0.47");
    assert_eq!(
        malformed(parse(short.as_bytes()).unwrap_err()),
        (
            48,
            MalformedReason::ColumnCount {
                expected: 7,
                found: 2
            }
        )
    );
}

#[test]
fn stray_carriage_returns_and_invalid_utf8_are_refused() {
    let text = sample_lf_no_bom();
    let cr = with_line(
        &text,
        10,
        &line(&text, 10).replace("autotest", "auto\rtest"),
    );
    assert_eq!(
        malformed(parse(cr.as_bytes()).unwrap_err()),
        (10, MalformedReason::StrayCarriageReturn)
    );
    let mut bytes = text.into_bytes();
    // The first goods name `autotest` is on line 4.
    let at = bytes.windows(10).position(|w| w == b"`autotest,").unwrap();
    bytes[at + 1] = 0xff;
    assert_eq!(
        malformed(parse(&bytes).unwrap_err()),
        (4, MalformedReason::InvalidUtf8)
    );
}

#[test]
fn summary_mismatches_are_reported_per_total() {
    let text = sample_lf_no_bom();
    let off = with_line(&text, 48, "`46,`0.48,`0.14,`0.00,`0.08001,`0.47,`0.15");
    let bill = parse(off.as_bytes()).unwrap();
    assert_eq!(
        bill.check_totals(),
        vec![
            TotalMismatch {
                field: TotalField::Count,
                summary: 46,
                details: 45
            },
            TotalMismatch {
                field: TotalField::SettlementTotal,
                summary: 48,
                details: 47
            },
            TotalMismatch {
                field: TotalField::FeeTotal,
                summary: 8001,
                details: 8000
            },
            TotalMismatch {
                field: TotalField::RequestedRefundTotal,
                summary: 15,
                details: 14
            },
        ]
    );
    assert_eq!(
        bill.check_totals()[0].to_string(),
        "总交易单数: summary 46 but detail rows sum to 45"
    );
    // A refund row whose amount was altered.
    let text2 = with_line(
        &text,
        2,
        &line(&text, 2).replacen("`0.01,`0.00,`ORIGINAL", "`0.02,`0.00,`ORIGINAL", 1),
    );
    let fields: Vec<TotalField> = parse(text2.as_bytes())
        .unwrap()
        .check_totals()
        .iter()
        .map(|m| m.field)
        .collect();
    assert_eq!(fields, vec![TotalField::RefundTotal]);
}

// ------------------------------------------------------------- formatting --

fn sample_record() -> BillRecord {
    parse(SAMPLE).unwrap().details[3].clone()
}

#[test]
fn format_refuses_what_the_format_cannot_carry() {
    let mut r = sample_record();
    r.goods_name = "苹果,香蕉".into();
    let bill = TradeBill::from_details(BillKind::All, vec![sample_record(), r]).unwrap();
    assert_eq!(
        format(&bill, FormatOptions::default()).unwrap_err(),
        FormatError::ForbiddenCharacter {
            index: 1,
            column: "商品名称",
            found: ','
        }
    );
    let mut r = sample_record();
    r.attach = "a\nb".into();
    let bill = TradeBill::from_details(BillKind::All, vec![r]).unwrap();
    assert!(matches!(
        format(&bill, FormatOptions::default()),
        Err(FormatError::ForbiddenCharacter { found: '\n', .. })
    ));

    // Refund columns must fit the layout.
    let bill = TradeBill::from_details(BillKind::Success, vec![sample_record()]).unwrap();
    assert!(matches!(
        format(&bill, FormatOptions::default()),
        Err(FormatError::LayoutMismatch { index: 0, .. })
    ));
    let mut r = sample_record();
    r.refund.as_mut().unwrap().refund_apply_time = Some(r.trade_time);
    let bill = TradeBill::from_details(BillKind::All, vec![r]).unwrap();
    assert!(matches!(
        format(&bill, FormatOptions::default()),
        Err(FormatError::LayoutMismatch { .. })
    ));
    let mut bill = TradeBill::from_details(BillKind::All, vec![sample_record()]).unwrap();
    bill.summary.refund_total_fen = None;
    assert!(matches!(
        format(&bill, FormatOptions::default()),
        Err(FormatError::SummaryLayout(_))
    ));
}

#[test]
fn from_details_computes_a_consistent_summary() {
    let reference = parse(SAMPLE).unwrap();
    let rebuilt = TradeBill::from_details(BillKind::All, reference.details.clone()).unwrap();
    assert_eq!(rebuilt.summary, reference.summary);
    assert_eq!(rebuilt.check_totals(), vec![]);
    let mut r = sample_record();
    r.refund = None;
    let success = TradeBill::from_details(BillKind::Success, vec![r.clone(), r]).unwrap();
    assert_eq!(success.summary.refund_total_fen, None);
    assert_eq!(success.summary.total_count, 2);
    let text = format(&success, FormatOptions::default()).unwrap();
    assert_eq!(parse(text.as_bytes()).unwrap(), success);
}

#[test]
fn openids_are_masked_in_debug_and_display() {
    let bill = parse(SAMPLE).unwrap();
    let debug = format!("{bill:?}");
    for r in &bill.details {
        assert!(!debug.contains(r.openid.as_str()), "{}", r.openid);
    }
    assert!(debug.contains("Openid(oHkL***CY)"));
    assert_eq!(bill.details[0].openid.to_string(), "oHkL***CY");
}

#[test]
fn a_large_bill_round_trips() {
    // 10,000 rows (correctness only; speed is measured in benches/).
    let one = sample_record();
    let details: Vec<BillRecord> = (0..10_000)
        .map(|i| {
            let mut r = one.clone();
            r.out_trade_no = format!("order-{i}");
            r.settlement_amount_fen = i;
            r
        })
        .collect();
    let bill = TradeBill::from_details(BillKind::All, details).unwrap();
    let text = format(&bill, FormatOptions::default()).unwrap();
    assert_eq!(text.matches('\n').count(), 10_003);
    let back = parse(text.as_bytes()).unwrap();
    assert_eq!(back.summary.settlement_total_fen, 49_995_000);
    assert_eq!(back, bill);
}

// ---------------------------------------------------------- property test --

mod roundtrip {
    use super::super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;

    /// Text the real format can carry: anything but `,`, CR and LF
    /// (including back-quotes, blanks, CJK and control characters).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex("[^,\r\n]{0,12}").unwrap(),
            proptest::string::string_regex("[`0 a-zA-Z_%.-]{0,6}").unwrap(),
        ]
    }

    fn instant() -> impl Strategy<Value = OffsetDateTime> {
        // Years 0000–9999 in Beijing time, whole seconds.
        (-62_167_190_400i64..253_402_271_999).prop_map(|s| {
            OffsetDateTime::from_unix_timestamp(s)
                .unwrap()
                .to_offset(BEIJING)
        })
    }

    fn amount() -> impl Strategy<Value = i64> {
        prop_oneof![-1_000_000i64..1_000_000, any::<i64>()]
    }

    fn refund_columns(kind: BillKind) -> impl Strategy<Value = RefundColumns> {
        let times = kind == BillKind::Refund;
        (
            proptest::option::of(instant()),
            proptest::option::of(instant()),
            (text(), text(), text(), text()),
            (amount(), amount(), amount()),
        )
            .prop_map(
                move |(apply, success, (id, no, ty, st), (a, c, q))| RefundColumns {
                    refund_apply_time: apply.filter(|_| times),
                    refund_success_time: success.filter(|_| times),
                    refund_id: id,
                    out_refund_no: no,
                    refund_amount_fen: a,
                    recharge_coupon_refund_amount_fen: c,
                    refund_type: ty,
                    refund_status: st,
                    requested_refund_amount_fen: q,
                },
            )
    }

    fn record(kind: BillKind) -> impl Strategy<Value = BillRecord> {
        let refund = if kind.has_refund_columns() {
            refund_columns(kind).prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        };
        (
            instant(),
            (text(), text(), text(), text(), text(), text()),
            (text(), text(), text(), text(), text(), text()),
            (amount(), amount(), amount(), amount()),
            refund,
            (text(), text(), text()),
        )
            .prop_map(
                |(
                    trade_time,
                    (appid, mchid, sub_mchid, device_info, transaction_id, out_trade_no),
                    (openid, trade_type, trade_state, bank_type, currency, goods_name),
                    (settlement, coupon, fee, order),
                    refund,
                    (attach, rate, rate_remark),
                )| BillRecord {
                    trade_time,
                    appid,
                    mchid,
                    sub_mchid,
                    device_info,
                    transaction_id,
                    out_trade_no,
                    openid: Openid::new(openid),
                    trade_type,
                    trade_state,
                    bank_type,
                    currency,
                    settlement_amount_fen: settlement,
                    coupon_amount_fen: coupon,
                    refund,
                    goods_name,
                    attach,
                    fee_milli_fen: fee,
                    rate,
                    order_amount_fen: order,
                    rate_remark,
                },
            )
    }

    fn summary(kind: BillKind) -> impl Strategy<Value = BillSummary> {
        let has = kind.has_refund_columns();
        (
            any::<u64>(),
            amount(),
            amount(),
            amount(),
            amount(),
            amount(),
            amount(),
        )
            .prop_map(move |(count, s, r, rc, f, o, q)| BillSummary {
                total_count: count,
                settlement_total_fen: s,
                refund_total_fen: has.then_some(r),
                recharge_coupon_refund_total_fen: has.then_some(rc),
                fee_total_milli_fen: f,
                order_total_fen: o,
                requested_refund_total_fen: has.then_some(q),
            })
    }

    fn bill() -> impl Strategy<Value = TradeBill> {
        prop_oneof![
            Just(BillKind::All),
            Just(BillKind::Success),
            Just(BillKind::Refund)
        ]
        .prop_flat_map(|kind| {
            (proptest::collection::vec(record(kind), 0..8), summary(kind)).prop_map(
                move |(details, summary)| TradeBill {
                    kind,
                    details,
                    summary,
                },
            )
        })
    }

    fn options() -> impl Strategy<Value = FormatOptions> {
        (any::<bool>(), any::<bool>()).prop_map(|(crlf, bom)| FormatOptions {
            line_ending: if crlf {
                LineEnding::CrLf
            } else {
                LineEnding::Lf
            },
            bom,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_inverts_format(bill in bill(), opts in options()) {
            let text = format(&bill, opts).unwrap();
            prop_assert_eq!(parse(text.as_bytes()).unwrap(), bill.clone());
            // Lenient parsing agrees and finds nothing to skip.
            let lenient = parse_lenient(text.as_bytes()).unwrap();
            prop_assert!(lenient.row_errors.is_empty());
            prop_assert_eq!(lenient.bill, bill);
        }

        #[test]
        fn computed_summaries_always_check_out(
            kind in prop_oneof![Just(BillKind::All), Just(BillKind::Success), Just(BillKind::Refund)],
            n in 0usize..6,
            seed in any::<u64>(),
        ) {
            // Small amounts so totals fit; the generator varies them by seed.
            let mut details = Vec::new();
            for i in 0..n {
                let mut r = super::sample_record();
                let v = ((seed >> (i * 8)) & 0xff) as i64 - 64;
                r.settlement_amount_fen = v;
                r.fee_milli_fen = v * 7;
                r.order_amount_fen = v + 1;
                if kind == BillKind::Success {
                    r.refund = None;
                } else if let Some(rf) = r.refund.as_mut() {
                    rf.refund_amount_fen = -v;
                }
                details.push(r);
            }
            let bill = TradeBill::from_details(kind, details).unwrap();
            prop_assert!(bill.check_totals().is_empty());
            let text = format(&bill, FormatOptions::default()).unwrap();
            prop_assert_eq!(parse(text.as_bytes()).unwrap(), bill);
        }
    }
}
