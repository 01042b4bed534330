//! The three trade-bill layouts: which columns, in which order, under which
//! header text. Parser and formatter both walk these tables, so a column can
//! only be added in one place.

use std::fmt;
use std::str::FromStr;

/// `bill_type` of a trade bill, which fixes its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BillKind {
    /// `ALL`: successful payments and refunds, 27 columns.
    All,
    /// `SUCCESS`: successful payments only, 20 columns, no refund columns.
    Success,
    /// `REFUND`: refunds only, 29 columns (ALL plus the two refund times).
    Refund,
}

impl BillKind {
    /// Every layout, for tests and tools.
    pub const ALL_KINDS: [BillKind; 3] = [BillKind::All, BillKind::Success, BillKind::Refund];

    /// The `bill_type` query value (`ALL`, `SUCCESS`, `REFUND`).
    pub fn as_str(self) -> &'static str {
        match self {
            BillKind::All => "ALL",
            BillKind::Success => "SUCCESS",
            BillKind::Refund => "REFUND",
        }
    }

    /// Whether detail rows carry the refund columns.
    pub fn has_refund_columns(self) -> bool {
        self != BillKind::Success
    }

    /// The detail columns, in file order.
    pub(crate) fn columns(self) -> &'static [Col] {
        match self {
            BillKind::All => &ALL_COLUMNS,
            BillKind::Success => &SUCCESS_COLUMNS,
            BillKind::Refund => &REFUND_COLUMNS,
        }
    }

    /// The summary columns, in file order.
    pub(crate) fn summary_columns(self) -> &'static [TotalField] {
        match self {
            BillKind::Success => &SUCCESS_SUMMARY,
            BillKind::All | BillKind::Refund => &FULL_SUMMARY,
        }
    }
}

impl fmt::Display for BillKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `bill_type` this module does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported bill_type {0:?} (ALL, SUCCESS or REFUND)")]
pub struct UnknownBillKind(pub String);

impl FromStr for BillKind {
    type Err = UnknownBillKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ALL" => Ok(BillKind::All),
            "SUCCESS" => Ok(BillKind::Success),
            "REFUND" => Ok(BillKind::Refund),
            other => Err(UnknownBillKind(other.chars().take(32).collect())),
        }
    }
}

/// One detail column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    TradeTime,
    Appid,
    Mchid,
    SubMchid,
    DeviceInfo,
    TransactionId,
    OutTradeNo,
    Openid,
    TradeType,
    TradeState,
    BankType,
    Currency,
    SettlementAmount,
    CouponAmount,
    RefundApplyTime,
    RefundSuccessTime,
    RefundId,
    OutRefundNo,
    RefundAmount,
    RechargeCouponRefundAmount,
    RefundType,
    RefundStatus,
    GoodsName,
    Attach,
    Fee,
    Rate,
    OrderAmount,
    RequestedRefundAmount,
    RateRemark,
}

/// Number of [`Col`] variants (size of a row's field table).
pub(crate) const COL_COUNT: usize = 29;

impl Col {
    /// The header text WeChat Pay uses for the column.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Col::TradeTime => "交易时间",
            Col::Appid => "公众账号ID",
            Col::Mchid => "商户号",
            Col::SubMchid => "特约商户号",
            Col::DeviceInfo => "设备号",
            Col::TransactionId => "微信订单号",
            Col::OutTradeNo => "商户订单号",
            Col::Openid => "用户标识",
            Col::TradeType => "交易类型",
            Col::TradeState => "交易状态",
            Col::BankType => "付款银行",
            Col::Currency => "货币种类",
            Col::SettlementAmount => "应结订单金额",
            Col::CouponAmount => "代金券金额",
            Col::RefundApplyTime => "退款申请时间",
            Col::RefundSuccessTime => "退款成功时间",
            Col::RefundId => "微信退款单号",
            Col::OutRefundNo => "商户退款单号",
            Col::RefundAmount => "退款金额",
            Col::RechargeCouponRefundAmount => "充值券退款金额",
            Col::RefundType => "退款类型",
            Col::RefundStatus => "退款状态",
            Col::GoodsName => "商品名称",
            Col::Attach => "商户数据包",
            Col::Fee => "手续费",
            Col::Rate => "费率",
            Col::OrderAmount => "订单金额",
            Col::RequestedRefundAmount => "申请退款金额",
            Col::RateRemark => "费率备注",
        }
    }
}

const ALL_COLUMNS: [Col; 27] = [
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceInfo,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementAmount,
    Col::CouponAmount,
    Col::RefundId,
    Col::OutRefundNo,
    Col::RefundAmount,
    Col::RechargeCouponRefundAmount,
    Col::RefundType,
    Col::RefundStatus,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::Rate,
    Col::OrderAmount,
    Col::RequestedRefundAmount,
    Col::RateRemark,
];

const SUCCESS_COLUMNS: [Col; 20] = [
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceInfo,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementAmount,
    Col::CouponAmount,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::Rate,
    Col::OrderAmount,
    Col::RateRemark,
];

// ALL's columns with the two refund times after 代金券金额.
const REFUND_COLUMNS: [Col; 29] = [
    Col::TradeTime,
    Col::Appid,
    Col::Mchid,
    Col::SubMchid,
    Col::DeviceInfo,
    Col::TransactionId,
    Col::OutTradeNo,
    Col::Openid,
    Col::TradeType,
    Col::TradeState,
    Col::BankType,
    Col::Currency,
    Col::SettlementAmount,
    Col::CouponAmount,
    Col::RefundApplyTime,
    Col::RefundSuccessTime,
    Col::RefundId,
    Col::OutRefundNo,
    Col::RefundAmount,
    Col::RechargeCouponRefundAmount,
    Col::RefundType,
    Col::RefundStatus,
    Col::GoodsName,
    Col::Attach,
    Col::Fee,
    Col::Rate,
    Col::OrderAmount,
    Col::RequestedRefundAmount,
    Col::RateRemark,
];

/// A summary total (a column of the summary part), as named by
/// [`TotalMismatch`](super::TotalMismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TotalField {
    /// 总交易单数 vs the number of detail rows.
    Count,
    /// 应结订单总金额.
    SettlementTotal,
    /// 退款总金额.
    RefundTotal,
    /// 充值券退款总金额.
    RechargeCouponRefundTotal,
    /// 手续费总金额 (thousandths of a fen).
    FeeTotal,
    /// 订单总金额.
    OrderTotal,
    /// 申请退款总金额.
    RequestedRefundTotal,
}

impl TotalField {
    /// The summary header text of the total.
    pub fn header(self) -> &'static str {
        match self {
            TotalField::Count => "总交易单数",
            TotalField::SettlementTotal => "应结订单总金额",
            TotalField::RefundTotal => "退款总金额",
            TotalField::RechargeCouponRefundTotal => "充值券退款总金额",
            TotalField::FeeTotal => "手续费总金额",
            TotalField::OrderTotal => "订单总金额",
            TotalField::RequestedRefundTotal => "申请退款总金额",
        }
    }
}

const FULL_SUMMARY: [TotalField; 7] = [
    TotalField::Count,
    TotalField::SettlementTotal,
    TotalField::RefundTotal,
    TotalField::RechargeCouponRefundTotal,
    TotalField::FeeTotal,
    TotalField::OrderTotal,
    TotalField::RequestedRefundTotal,
];

const SUCCESS_SUMMARY: [TotalField; 4] = [
    TotalField::Count,
    TotalField::SettlementTotal,
    TotalField::FeeTotal,
    TotalField::OrderTotal,
];

/// The first header cell of the summary part.
pub(crate) const SUMMARY_FIRST_HEADER: &str = "总交易单数";

/// Header cells that only the legacy layout has.
const LEGACY_MARKERS: [&str; 2] = ["总金额", "企业红包金额"];

/// Which layout a detail header row announces.
pub(crate) enum HeaderMatch {
    Known(BillKind),
    Legacy,
    Unknown,
}

/// Matches header cells (already unquoted and trimmed) against the layouts.
pub(crate) fn match_header(cells: &[&str]) -> HeaderMatch {
    for kind in BillKind::ALL_KINDS {
        let cols = kind.columns();
        if cells.len() == cols.len() && cells.iter().zip(cols).all(|(c, col)| *c == col.header()) {
            return HeaderMatch::Known(kind);
        }
    }
    if cells.first() == Some(&Col::TradeTime.header())
        && LEGACY_MARKERS.iter().all(|m| cells.contains(m))
    {
        return HeaderMatch::Legacy;
    }
    HeaderMatch::Unknown
}

/// Whether summary header cells are the summary header of `kind`.
pub(crate) fn summary_header_matches(kind: BillKind, cells: &[&str]) -> bool {
    let cols = kind.summary_columns();
    cells.len() == cols.len() && cells.iter().zip(cols).all(|(c, col)| *c == col.header())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_the_documented_ones() {
        let joined = |k: BillKind| {
            k.columns()
                .iter()
                .map(|c| c.header())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            joined(BillKind::All),
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
        );
        assert_eq!(
            joined(BillKind::Success),
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注"
        );
        assert_eq!(
            joined(BillKind::Refund),
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
        );
        let sum = |k: BillKind| {
            k.summary_columns()
                .iter()
                .map(|c| c.header())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            sum(BillKind::All),
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
        );
        assert_eq!(sum(BillKind::Refund), sum(BillKind::All));
        assert_eq!(
            sum(BillKind::Success),
            "总交易单数,应结订单总金额,手续费总金额,订单总金额"
        );
        assert_eq!(REFUND_COLUMNS.len(), COL_COUNT);
    }

    #[test]
    fn kinds_round_trip_through_strings() {
        for k in BillKind::ALL_KINDS {
            assert_eq!(k.as_str().parse::<BillKind>(), Ok(k));
        }
        assert!("RECHARGE_REFUND".parse::<BillKind>().is_err());
    }
}
