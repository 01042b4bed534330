//! Starting the merchant server's parts from a validated configuration:
//! the WeChat Pay client (in certificate mode with its first certificate
//! download), the listener, and the one error type for everything that can
//! refuse a start.

use crate::apiv3::{Clock, RequestSigner, Verifier};
use crate::bill::fetch::BillFetcher;
use crate::catalog::CatalogError;
use crate::combine::client::{ClientBuildError, ClientOptions, RefreshOutcome, WechatPayClient};
use crate::combine::settings::{ApiSettings, MerchantCredentials};
use crate::combine::ApiError;
use crate::config::{Config, ConfigErrors};
use crate::refund::{MerchantClients, RefundService};
use crate::store::{Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The catalog is invalid.
    #[error("catalog_file: {0}")]
    Catalog(#[from] CatalogError),
    /// The database could not be opened.
    #[error("database_url {url}: {source}")]
    Store {
        /// The URL with any password removed.
        url: String,
        /// The error.
        source: StoreError,
    },
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(#[from] ClientBuildError),
    /// Certificate mode: the first certificate download failed.
    #[error("cannot download WeChat Pay platform certificates: {0}")]
    Certificates(ApiError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        detail: String,
    },
    /// Anything else at start (file writes in demo, the simulator).
    #[error("{0}")]
    Other(String),
}

/// What `serve --check` adds to the configuration's own validation: the
/// start-up refusals that need a file or a server — the catalog
/// (`catalog_file`) and the database (`database_url`) — found without
/// creating or migrating anything. Returns notes worth printing.
pub async fn check(config: &Config) -> Result<Vec<String>, StartError> {
    let mut notes = Vec::new();
    match config.catalog_file.as_deref() {
        Some(path) => {
            crate::catalog::Catalog::load(path)?;
        }
        None => return Err(StartError::Other("catalog_file is not set".into())),
    }
    let url = &config.store.database_url;
    match crate::store::check(url).await {
        Ok(note) => notes.extend(note.map(|n| format!("database_url: {n}"))),
        Err(source) => {
            return Err(StartError::Store {
                url: redact_database_url(url),
                source,
            })
        }
    }
    Ok(notes)
}

/// Removes the password from a database URL for messages.
pub fn redact_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The WeChat Pay client of a configuration's initiator (not yet holding
/// platform certificates; see [`prepare_client`]).
pub fn build_client(config: &Config, clock: Arc<dyn Clock>) -> Result<WechatPayClient, StartError> {
    build_merchant_client(&config.wechatpay.merchant, &config.wechatpay.api, clock)
}

/// A WeChat Pay client signing as `merchant` and verifying answers with
/// that merchant's WeChat Pay key (each merchant's answers are signed with
/// its own key), on the hosts and timeouts of `api`.
pub fn build_merchant_client(
    merchant: &MerchantCredentials,
    api: &ApiSettings,
    clock: Arc<dyn Clock>,
) -> Result<WechatPayClient, StartError> {
    let mut verifier = Verifier::new(clock);
    if let Some((id, key)) = &merchant.verification.public_key {
        verifier = verifier.with_public_key(id.clone(), key.clone());
    }
    let signer = RequestSigner::new(
        merchant.mchid.clone(),
        merchant.serial_no.clone(),
        merchant.private_key.clone(),
    );
    let mut opts = ClientOptions::new(api.base_url.clone());
    opts.backup_url = api.backup_url.clone();
    opts.connect_timeout = api.connect_timeout;
    opts.request_timeout = api.request_timeout;
    opts.max_attempts = api.max_attempts;
    let client = WechatPayClient::new(opts, signer, Arc::new(verifier))?;
    Ok(if merchant.verification.platform_certificates {
        client.with_platform_certificates(merchant.apiv3_key.clone())
    } else {
        client
    })
}

/// [`build_client`], then, in certificate mode, the first certificate
/// download (a failure refuses to start: nothing could be verified).
pub async fn prepare_client(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Arc<WechatPayClient>, StartError> {
    prepare_merchant_client(&config.wechatpay.merchant, &config.wechatpay.api, clock).await
}

/// [`build_merchant_client`], then, in certificate mode, the merchant's
/// first certificate download.
pub async fn prepare_merchant_client(
    merchant: &MerchantCredentials,
    api: &ApiSettings,
    clock: Arc<dyn Clock>,
) -> Result<Arc<WechatPayClient>, StartError> {
    let client = build_merchant_client(merchant, api, clock)?;
    if client.certificate_mode() {
        match client.refresh_certificates(true).await {
            Ok(RefreshOutcome::Refreshed(_)) | Ok(_) => {}
            Err(e) if merchant.verification.public_key.is_some() => {
                // Migration mode: the public key still verifies responses.
                tracing::warn!(mchid = %merchant.mchid, error = %e, "platform certificates unavailable; continuing with the WeChat Pay public key");
            }
            Err(e) => return Err(StartError::Certificates(e)),
        }
    }
    Ok(Arc::new(client))
}

/// Each merchant with credentials and its prepared client, the initiator
/// first (with `initiator`, its already prepared client). Refunds and bills
/// share them: each merchant acts with its own credentials.
pub type MerchantClientList = Vec<(MerchantCredentials, Arc<WechatPayClient>)>;

/// [`MerchantClientList`] of a configuration.
pub async fn prepare_merchant_clients(
    config: &Config,
    initiator: Arc<WechatPayClient>,
    clock: Arc<dyn Clock>,
) -> Result<MerchantClientList, StartError> {
    let mut clients = vec![(config.wechatpay.merchant.clone(), initiator)];
    for creds in config.wechatpay.credentialed().skip(1) {
        let c = prepare_merchant_client(creds, &config.wechatpay.api, clock.clone()).await?;
        clients.push((creds.clone(), c));
    }
    Ok(clients)
}

/// One bill fetcher per merchant with credentials, in `clients` order, for
/// the scheduled bill run.
pub fn bill_fetchers(
    config: &Config,
    clients: &MerchantClientList,
    store: Arc<dyn Store>,
) -> Result<Vec<BillFetcher>, StartError> {
    clients
        .iter()
        .map(|(_, client)| {
            BillFetcher::new(&config.wechatpay.api, client.clone(), store.clone())
                .map_err(StartError::Other)
        })
        .collect()
}

/// The refund service over `clients`: each sub-order is refunded by its
/// own merchant; a merchant without a client has no credentials here.
pub fn refund_service(
    config: &Config,
    clients: &MerchantClientList,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Arc<RefundService> {
    Arc::new(RefundService::new(
        store,
        Arc::new(MerchantClients::new(
            clients
                .iter()
                .map(|(c, client)| (c.mchid.clone(), client.clone())),
        )),
        config.notify.refund_notify_url.to_string(),
        clock,
        config.reconcile.after_secs,
    ))
}

/// The `[[merchants]]` listed without credentials (their bills are skipped).
pub fn merchants_without_credentials(config: &Config) -> Vec<String> {
    config
        .wechatpay
        .merchants
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(m, _)| m.clone())
        .collect()
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        addr: addr.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_database_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_database_url("sqlite:/x.db"), "sqlite:/x.db");
    }
}
