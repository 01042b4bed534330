//! The combined-order (合单) API: the order model, the wire format, and the
//! seam ([`CombineApi`]) to WeChat Pay.

pub mod api;
pub mod client;
pub mod model;
pub mod wire;

pub use api::{ApiError, CombineApi};
pub use model::*;
