//! The combined-order (合单) API: the seam ([`CombineApi`]) to WeChat Pay
//! and its HTTP client. The order model and the wire format are the
//! protocol core's, re-exported here.

pub mod api;
pub mod client;
pub mod settings;

pub use api::{ApiError, CombineApi};
pub use wxpay_combine_core::combine::*;
