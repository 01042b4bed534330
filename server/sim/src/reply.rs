//! A successful APIv3 answer, before the front door ([`crate::api`]) signs
//! and sends it.

use serde_json::Value;

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    /// 200 with a JSON body (signed).
    Json(Vec<u8>),
    /// 204 (signed over the empty body).
    NoContent,
    /// A bill file: 200, unsigned, as the real download is.
    File(Vec<u8>),
}

impl Reply {
    /// 200 with `v` serialised compactly.
    pub fn json(v: &Value) -> Self {
        Self::Json(serde_json::to_vec(v).unwrap_or_default())
    }
}
