//! The combined-order (合单) API: the seam ([`CombineApi`]) to WeChat Pay
//! and its HTTP client. The order model and the wire format are the
//! protocol core's, re-exported here.

pub mod api;
pub mod client;
pub mod settings;

pub use api::{ApiError, CombineApi};
pub use wxpay_combine_core::combine::*;

use wire::{CloseRequest, CloseSubOrder};

/// The close request for a stored order: every sub-order of the original
/// order, exactly (the page's close and the reconciliation worker's).
pub fn close_request(order: &CombineOrder) -> CloseRequest {
    CloseRequest {
        combine_appid: order.combine_appid.clone(),
        sub_orders: order
            .sub_orders
            .iter()
            .map(|s| CloseSubOrder {
                mchid: s.mchid.clone(),
                out_trade_no: s.out_trade_no.clone(),
            })
            .collect(),
    }
}
