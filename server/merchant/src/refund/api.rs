//! The seam between the refund service and WeChat Pay: each call is made
//! by the sub-order's own merchant, with its own credentials.

use crate::combine::client::{encode_path_segment, Repeat, WechatPayClient};
use crate::combine::ApiError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;
use wxpay_combine_core::refund::wire::{Refund, RefundRequest};

/// A refund call that could not be made or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefundCallError {
    /// The merchant has no API credentials in this configuration.
    #[error("merchant {0} has no API credentials here (add them under [[merchants]])")]
    NoCredentials(String),
    /// WeChat Pay refused, or the call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Refund operations on WeChat Pay, per merchant.
#[async_trait]
pub trait RefundApi: Send + Sync {
    /// Whether `mchid` has credentials here (checked before anything is
    /// stored).
    fn can_refund(&self, mchid: &str) -> bool;

    /// `POST /v3/refund/domestic/refunds`, signed by `mchid`. Idempotent on
    /// `out_refund_no` with the same body.
    async fn create(&self, mchid: &str, request: &RefundRequest)
        -> Result<Refund, RefundCallError>;

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`, signed by `mchid`.
    async fn query(&self, mchid: &str, out_refund_no: &str) -> Result<Refund, RefundCallError>;
}

/// One WeChat Pay client per merchant with credentials.
#[derive(Debug, Clone, Default)]
pub struct MerchantClients {
    clients: HashMap<String, Arc<WechatPayClient>>,
}

impl MerchantClients {
    /// From `(mchid, client)` pairs.
    pub fn new(clients: impl IntoIterator<Item = (String, Arc<WechatPayClient>)>) -> Self {
        Self {
            clients: clients.into_iter().collect(),
        }
    }

    /// The client signing as `mchid`.
    pub fn client(&self, mchid: &str) -> Result<&Arc<WechatPayClient>, RefundCallError> {
        self.clients
            .get(mchid)
            .ok_or_else(|| RefundCallError::NoCredentials(mchid.to_string()))
    }

    /// The merchants with a client.
    pub fn mchids(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }
}

fn check_answer(endpoint: &'static str, asked: &str, got: &Refund) -> Result<(), ApiError> {
    if got.out_refund_no != asked {
        return Err(ApiError::Decode {
            endpoint,
            detail: format!(
                "asked for refund {asked} but the answer is about {}",
                got.out_refund_no
            ),
        });
    }
    Ok(())
}

#[async_trait]
impl RefundApi for MerchantClients {
    fn can_refund(&self, mchid: &str) -> bool {
        self.clients.contains_key(mchid)
    }

    async fn create(
        &self,
        mchid: &str,
        request: &RefundRequest,
    ) -> Result<Refund, RefundCallError> {
        const ENDPOINT: &str = "refund create";
        let client = self.client(mchid)?;
        let body = serde_json::to_vec(request).map_err(|e| ApiError::Decode {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })?;
        let span = tracing::info_span!("wechatpay", endpoint = ENDPOINT, mchid = %mchid, out_refund_no = %request.out_refund_no);
        // Safe to repeat: the same out_refund_no with the same body refunds once.
        let resp = client
            .post_json(ENDPOINT, "/v3/refund/domestic/refunds", body, Repeat::Safe)
            .instrument(span)
            .await?;
        let refund: Refund = resp.json(ENDPOINT)?;
        check_answer(ENDPOINT, &request.out_refund_no, &refund)?;
        Ok(refund)
    }

    async fn query(&self, mchid: &str, out_refund_no: &str) -> Result<Refund, RefundCallError> {
        const ENDPOINT: &str = "refund query";
        let client = self.client(mchid)?;
        let path = format!(
            "/v3/refund/domestic/refunds/{}",
            encode_path_segment(out_refund_no)
        );
        let span = tracing::info_span!("wechatpay", endpoint = ENDPOINT, mchid = %mchid, out_refund_no = %out_refund_no);
        let resp = client
            .get(ENDPOINT, &path, Repeat::Safe)
            .instrument(span)
            .await?;
        let refund: Refund = resp.json(ENDPOINT)?;
        check_answer(ENDPOINT, out_refund_no, &refund)?;
        Ok(refund)
    }
}
