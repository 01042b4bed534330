//! The combined order (合单): the order model as the merchant keeps it and
//! the APIv3 wire format of the combined-order APIs.

mod model;
pub mod wire;

pub use model::*;
