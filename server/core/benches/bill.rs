//! Criterion benchmarks of the trade-bill format: parse and format of ALL
//! bills of 1,000, 10,000 and 100,000 rows (the per-row cost should stay
//! flat: both directions are linear), and SHA-1 + gunzip of the download.
//!
//! ```text
//! cargo bench -p wxpay-combine --bench bill
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::io::Write;
use wxpay_combine_core::bill::{
    format, parse, parse_time, sha1_hex, BillKind, BillRecord, FormatOptions, Openid,
    RefundColumns, TradeBill,
};

/// A realistic ALL bill: every fifth row a refund, Chinese goods names.
fn bill(rows: usize) -> TradeBill {
    let t = parse_time("2024-05-01 10:00:00").unwrap();
    let details = (0..rows)
        .map(|i| {
            let refund = i % 5 == 4;
            BillRecord {
                trade_time: t + time::Duration::seconds(i as i64),
                appid: "wx1234567890abcdef".into(),
                mchid: "1900000109".into(),
                sub_mchid: "0".into(),
                device_info: String::new(),
                transaction_id: format!("42000012342024050{i:011}"),
                out_trade_no: format!("combine-{i}-a"),
                openid: Openid::new(format!("oUpF8uMuAJO_M2pxb1Q9zN{i:06}")),
                trade_type: "JSAPI".into(),
                trade_state: if refund { "REFUND" } else { "SUCCESS" }.into(),
                bank_type: "CMB_DEBIT".into(),
                currency: "CNY".into(),
                settlement_amount_fen: if refund { 0 } else { 100 + i as i64 },
                coupon_amount_fen: 0,
                refund: Some(RefundColumns {
                    refund_apply_time: None,
                    refund_success_time: None,
                    refund_id: if refund {
                        format!("503000{i:023}")
                    } else {
                        "0".into()
                    },
                    out_refund_no: if refund {
                        format!("refund-{i}")
                    } else {
                        "0".into()
                    },
                    refund_amount_fen: if refund { 100 } else { 0 },
                    recharge_coupon_refund_amount_fen: 0,
                    refund_type: if refund { "ORIGINAL" } else { "" }.into(),
                    refund_status: if refund { "SUCCESS" } else { "" }.into(),
                    requested_refund_amount_fen: if refund { 100 } else { 0 },
                }),
                goods_name: "合单商品-测试".into(),
                attach: format!("order={i}"),
                fee_milli_fen: if refund { -600 } else { 600 },
                rate: "0.60%".into(),
                order_amount_fen: if refund { 0 } else { 100 + i as i64 },
                rate_remark: String::new(),
            }
        })
        .collect();
    TradeBill::from_details(BillKind::All, details).unwrap()
}

fn bills(c: &mut Criterion) {
    let mut group = c.benchmark_group("bill");
    group.sample_size(20);
    for rows in [1_000usize, 10_000, 100_000] {
        let b = bill(rows);
        let text = format(&b, FormatOptions::default()).unwrap();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("parse", rows), &text, |bench, text| {
            bench.iter(|| parse(black_box(text.as_bytes())).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("format", rows), &b, |bench, b| {
            bench.iter(|| format(black_box(b), FormatOptions::default()).unwrap())
        });
    }
    // Download-side work on a 10,000-row file: SHA-1, and gunzip + SHA-1.
    let text = format(&bill(10_000), FormatOptions::default()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("sha1/10000", |bench| {
        bench.iter(|| sha1_hex(black_box(text.as_bytes())))
    });
    group.bench_function("gunzip+sha1/10000", |bench| {
        bench.iter(|| {
            let mut d = flate2::write::GzDecoder::new(
                wxpay_combine_core::bill::HashingWriter::new(std::io::sink()),
            );
            d.write_all(black_box(&gz)).unwrap();
            d.finish().unwrap().sha1_hex()
        })
    });
    group.finish();
}

criterion_group!(benches, bills);
criterion_main!(benches);
