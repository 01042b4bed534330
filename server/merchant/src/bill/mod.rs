//! Trade bills (交易账单) for the merchant: the verified download, the
//! reconciliation against the order database, the scheduled daily run and
//! the fetch-and-reconcile job that `wxpay-combine bill` and the schedule
//! share.
//!
//! The file format itself (parse, format, SHA-1) is the protocol core's
//! [`wxpay_combine_core::bill`], re-exported here so callers find every bill
//! type in one place.
//!
//! - [`download_to`] streams a 下载账单 body to disk, gunzipping it and
//!   checking the SHA-1 `hash_value` before the file appears.
//! - [`reconcile()`] compares a bill with the stored sub-orders.
//! - [`fetch::BillFetcher`] applies for, downloads and reconciles one day.

mod download;
pub mod fetch;
pub mod reconcile;
pub mod schedule;

pub use download::{
    download_reader_to, download_to, download_to_with_limit, VerifiedFile, DEFAULT_MAX_BILL_BYTES,
};
pub use reconcile::{reconcile, LocalSubOrder, Report};
pub use wxpay_combine_core::bill::*;
