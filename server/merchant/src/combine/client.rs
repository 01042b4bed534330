//! The outbound WeChat Pay client: signs every request, verifies every
//! response before anything reads it, retries only what is safe to repeat,
//! fails over to the backup host, and keeps platform certificates fresh.
//!
//! Generic signed calls ([`WechatPayClient::get`], [`WechatPayClient::post_json`],
//! [`WechatPayClient::download`]) are public so other APIs (bills) reuse the
//! same path; [`CombineApi`] is implemented on top of them.

use super::api::{ApiError, CombineApi};
use super::wire::{CloseRequest, CombineTransaction, ErrorBody, PrepayRequest, PrepayResponse};
use crate::apiv3::{
    ApiV3Key, Certificate, Clock, EncryptedResource, RequestSigner, SignatureHeaders, Verifier,
    VerifyError,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use url::Url;

/// `User-Agent` of every request (WeChat Pay refuses requests without one).
pub fn user_agent() -> String {
    format!(
        "wxpay-combine/{} ({}; {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Percent-encodes one path segment the way the official samples do (Java
/// `URLEncoder`): letters, digits and `*-_.` stay, every other byte becomes
/// `%XX` (so `|` → `%7C`).
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"*-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a call may be sent again after a failure that leaves its effect
/// unknown (timeout, 5xx, 429).
///
/// `Safe` calls are retried on a transport error, a 5xx or a 429
/// `FREQUENCY_LIMITED`, up to [`ClientOptions::max_attempts`], each wait
/// doubling from [`ClientOptions::backoff_base`] with jitter (a 5xx also
/// fails over to the backup host); a 4xx other than 429 is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Idempotent: query, prepay with an identical body, close, a refund
    /// with the same `out_refund_no`, bill requests.
    Safe,
    /// Sent at most once, whatever the answer (a 429 or a 5xx included);
    /// only a connection that never opened is retried.
    Once,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Primary base URL (scheme + host [+ port]).
    pub base_url: Url,
    /// Failover base URL.
    pub backup_url: Option<Url>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts for [`Repeat::Safe`] calls (≥ 1).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Largest API response body accepted.
    pub max_body_bytes: usize,
    /// Least time between two certificate downloads triggered by an unknown serial.
    pub certificate_refresh_min_interval: Duration,
}

impl ClientOptions {
    /// Defaults around `base_url`: 5 s connect, 15 s request, 3 attempts.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            backup_url: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            max_body_bytes: 4 << 20,
            certificate_refresh_min_interval: Duration::from_secs(60),
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// A verified 2xx response.
#[derive(Debug, Clone)]
pub struct SignedResponse {
    /// HTTP status (2xx).
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Raw body, exactly as received (and verified).
    pub body: Bytes,
    /// `Request-ID`.
    pub request_id: Option<String>,
}

impl SignedResponse {
    /// Parses the body as JSON.
    pub fn json<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            endpoint,
            detail: e.to_string(),
        })
    }
}

/// What [`WechatPayClient::refresh_certificates`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The certificates were downloaded; their serials.
    Refreshed(Vec<String>),
    /// Skipped: the last download was less than the minimum interval ago.
    TooSoon,
    /// Not in certificate mode.
    Disabled,
}

struct CertificateMode {
    apiv3_key: ApiV3Key,
    /// Time of the last download attempt; the lock also serialises downloads.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

/// Raw answer of one exchange.
#[derive(Clone)]
struct RawResponse {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl RawResponse {
    fn request_id(&self) -> Option<String> {
        self.headers
            .get("Request-ID")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

enum Attempt {
    /// Received an answer.
    Answer(RawResponse),
    /// Failed before or during the exchange.
    Failed {
        /// The connection never opened: nothing reached the server.
        not_sent: bool,
        detail: String,
    },
}

/// The WeChat Pay APIv3 client.
pub struct WechatPayClient {
    http: reqwest::Client,
    bases: Vec<Url>,
    signer: RequestSigner,
    verifier: Arc<Verifier>,
    certificates: Option<CertificateMode>,
    clock: Arc<dyn Clock>,
    opts: ClientOptions,
}

impl std::fmt::Debug for WechatPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayClient")
            .field(
                "bases",
                &self.bases.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .field("mchid", &self.signer.mchid())
            .field("certificate_mode", &self.certificates.is_some())
            .finish()
    }
}

impl WechatPayClient {
    /// A client signing with `signer` and verifying with `verifier`
    /// (public-key mode; call [`Self::with_platform_certificates`] for
    /// certificate mode). Reads time from the verifier's clock.
    pub fn new(
        opts: ClientOptions,
        signer: RequestSigner,
        verifier: Arc<Verifier>,
    ) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent())
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            // The API never redirects; following one would re-send the
            // Authorization header somewhere unsigned-for.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        let mut bases = vec![trim_base(&opts.base_url)];
        if let Some(b) = &opts.backup_url {
            bases.push(trim_base(b));
        }
        Ok(Self {
            http,
            bases,
            signer,
            clock: verifier.clock().clone(),
            verifier,
            certificates: None,
            opts,
        })
    }

    /// Enables certificate mode: platform certificates are downloaded with
    /// [`Self::refresh_certificates`] and again when a response names an
    /// unknown serial (at most once per `certificate_refresh_min_interval`).
    pub fn with_platform_certificates(mut self, apiv3_key: ApiV3Key) -> Self {
        self.certificates = Some(CertificateMode {
            apiv3_key,
            last_attempt: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// The verifier shared with the notification handler.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The request signer (its key also signs `paySign`).
    pub fn signer(&self) -> &RequestSigner {
        &self.signer
    }

    /// Whether platform certificates are managed by this client.
    pub fn certificate_mode(&self) -> bool {
        self.certificates.is_some()
    }

    /// Signed `GET` of `path_and_query` (already percent-encoded), verified.
    pub async fn get(
        &self,
        endpoint: &'static str,
        path_and_query: &str,
        repeat: Repeat,
    ) -> Result<SignedResponse, ApiError> {
        let started = Instant::now();
        let result = match self
            .exchange(endpoint, Method::GET, path_and_query, None, repeat)
            .await
        {
            Ok(raw) => self.verified(endpoint, raw).await,
            Err(e) => Err(e),
        };
        record_api_call(endpoint, &result, started);
        result
    }

    /// Signed `POST` of a JSON body (sent byte-for-byte as signed), verified.
    pub async fn post_json(
        &self,
        endpoint: &'static str,
        path: &str,
        body: Vec<u8>,
        repeat: Repeat,
    ) -> Result<SignedResponse, ApiError> {
        let started = Instant::now();
        let result = match self
            .exchange(
                endpoint,
                Method::POST,
                path,
                Some(Bytes::from(body)),
                repeat,
            )
            .await
        {
            Ok(raw) => self.verified(endpoint, raw).await,
            Err(e) => Err(e),
        };
        record_api_call(endpoint, &result, started);
        result
    }

    /// Signed `GET` of an absolute `download_url` (bill files). The answer is
    /// not signed — the caller must compare the file's digest with the one
    /// the signed bill API returned. The URL must point at a configured API
    /// host, so the Authorization header never goes elsewhere.
    pub async fn download(&self, download_url: &str, max_bytes: usize) -> Result<Bytes, ApiError> {
        let started = Instant::now();
        let result = self.download_inner(download_url, max_bytes).await;
        record_api_call("download", &result, started);
        result
    }

    async fn download_inner(
        &self,
        download_url: &str,
        max_bytes: usize,
    ) -> Result<Bytes, ApiError> {
        const ENDPOINT: &str = "download";
        let url = Url::parse(download_url).map_err(|e| ApiError::Decode {
            endpoint: ENDPOINT,
            detail: format!("download_url is not a URL: {e}"),
        })?;
        if !self.bases.iter().any(|b| b.origin() == url.origin()) {
            return Err(ApiError::Decode {
                endpoint: ENDPOINT,
                detail: format!(
                    "download_url host {} is not a configured API host; refusing to send credentials there",
                    url.origin().ascii_serialization()
                ),
            });
        }
        let mut last = None;
        for attempt in 1..=self.opts.max_attempts.max(1) {
            match self
                .send_once(ENDPOINT, &Method::GET, url.clone(), None, max_bytes)
                .await
            {
                Attempt::Answer(raw) if (200..300).contains(&raw.status) => return Ok(raw.body),
                Attempt::Answer(raw) => {
                    let err = service_error(raw);
                    if !err.is_retryable() {
                        return Err(err);
                    }
                    last = Some(err);
                }
                Attempt::Failed { detail, .. } => {
                    last = Some(ApiError::Transport {
                        endpoint: ENDPOINT,
                        detail,
                    })
                }
            }
            if attempt < self.opts.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Downloads `GET /v3/certificates`, decrypts every certificate with the
    /// APIv3 key, verifies the response with the certificate it names (the
    /// first download can only be verified after decrypting), and replaces
    /// the verifier's certificates. Unless `force`, skipped when the last
    /// attempt was less than the minimum interval ago.
    pub async fn refresh_certificates(&self, force: bool) -> Result<RefreshOutcome, ApiError> {
        const ENDPOINT: &str = "certificates";
        let Some(mode) = &self.certificates else {
            return Ok(RefreshOutcome::Disabled);
        };
        let mut last = mode.last_attempt.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.opts.certificate_refresh_min_interval)
        {
            return Ok(RefreshOutcome::TooSoon);
        }
        *last = Some(Instant::now());
        let raw = self
            .exchange(
                ENDPOINT,
                Method::GET,
                "/v3/certificates",
                None,
                Repeat::Safe,
            )
            .await?;
        let headers = signature_headers(&raw.headers)?;
        #[derive(Deserialize)]
        struct Entry {
            serial_no: String,
            encrypt_certificate: EncryptedResource,
        }
        #[derive(Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        let list: List = serde_json::from_slice(&raw.body).map_err(|e| ApiError::Decode {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })?;
        let mut certs = Vec::with_capacity(list.data.len());
        for entry in list.data {
            let pem = entry.encrypt_certificate.open(&mode.apiv3_key).map_err(|e| ApiError::Decode {
                endpoint: ENDPOINT,
                detail: format!(
                    "cannot decrypt certificate {} ({e}); is apiv3_key_file the key set in the merchant platform?",
                    entry.serial_no
                ),
            })?;
            let cert = std::str::from_utf8(&pem)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|p| Certificate::from_pem(p).map_err(|e| e.to_string()))
                .map_err(|detail| ApiError::Decode {
                    endpoint: ENDPOINT,
                    detail: format!("certificate {}: {detail}", entry.serial_no),
                })?;
            if !cert.serial_no.eq_ignore_ascii_case(&entry.serial_no) {
                return Err(ApiError::Decode {
                    endpoint: ENDPOINT,
                    detail: format!(
                        "listed serial {} but the certificate's serial is {}",
                        entry.serial_no, cert.serial_no
                    ),
                });
            }
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(ApiError::Decode {
                endpoint: ENDPOINT,
                detail: "the certificate list is empty".into(),
            });
        }
        if certs.iter().any(|c| c.serial_no == headers.serial) {
            Verifier::new(self.clock.clone())
                .with_certificates(certs.iter().cloned())
                .verify(&headers, &raw.body)?;
        } else {
            // Signed with a key we already hold (public key, or an older certificate).
            self.verifier.verify(&headers, &raw.body)?;
        }
        let serials: Vec<String> = certs.iter().map(|c| c.serial_no.clone()).collect();
        self.verifier.replace_certificates(certs);
        tracing::info!(serials = ?serials, "platform certificates refreshed");
        Ok(RefreshOutcome::Refreshed(serials))
    }

    async fn verified(
        &self,
        endpoint: &'static str,
        raw: RawResponse,
    ) -> Result<SignedResponse, ApiError> {
        let headers = signature_headers(&raw.headers)?;
        match self.verifier.verify(&headers, &raw.body) {
            Ok(()) => {}
            Err(VerifyError::UnknownSerial(serial)) if self.certificates.is_some() => {
                tracing::info!(endpoint, serial = %serial, "response signed with an unknown serial; refreshing platform certificates");
                if let Err(e) = self.refresh_certificates(false).await {
                    tracing::warn!(error = %e, "platform certificate refresh failed");
                }
                self.verifier.verify(&headers, &raw.body)?;
            }
            Err(e) => {
                tracing::warn!(endpoint, error = %e, request_id = ?raw.request_id(), "response signature refused");
                return Err(e.into());
            }
        }
        Ok(SignedResponse {
            status: raw.status,
            request_id: raw.request_id(),
            headers: raw.headers,
            body: raw.body,
        })
    }

    /// Sends with retries and failover; returns a 2xx answer (unverified) or
    /// the typed error.
    ///
    /// A loop of our own rather than a retry middleware (tower's `Retry`,
    /// reqwest-middleware): every attempt must be signed anew (the
    /// `Authorization` header carries a timestamp and a nonce), a request
    /// that is not safe to repeat may only be re-sent when its connection
    /// never opened, and failing over switches the base URL mid-loop.
    async fn exchange(
        &self,
        endpoint: &'static str,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        repeat: Repeat,
    ) -> Result<RawResponse, ApiError> {
        if !path_and_query.starts_with('/') {
            return Err(ApiError::Transport {
                endpoint,
                detail: format!("path {path_and_query:?} must start with /"),
            });
        }
        let attempts = match repeat {
            Repeat::Safe => self.opts.max_attempts.max(1),
            // One real attempt, plus one more per base when the connection
            // never opened (nothing can have happened).
            Repeat::Once => self.bases.len() as u32,
        };
        let mut base = 0usize;
        let mut last: Option<ApiError> = None;
        // The last error answer, verified only once the loop gives up.
        let mut last_answer: Option<RawResponse> = None;
        for attempt in 1..=attempts {
            let url = join(&self.bases[base], path_and_query)
                .map_err(|detail| ApiError::Transport { endpoint, detail })?;
            let (retry, failover) = match self
                .send_once(
                    endpoint,
                    &method,
                    url,
                    body.clone(),
                    self.opts.max_body_bytes,
                )
                .await
            {
                Attempt::Answer(raw) if (200..300).contains(&raw.status) => return Ok(raw),
                Attempt::Answer(raw) => {
                    let status = raw.status;
                    let err = service_error(raw.clone());
                    tracing::debug!(endpoint, status, error = %err, "WeChat Pay answered with an error");
                    let retry = repeat == Repeat::Safe && err.is_retryable();
                    last = Some(err);
                    last_answer = Some(raw);
                    (retry, status >= 500)
                }
                Attempt::Failed { not_sent, detail } => {
                    last = Some(ApiError::Transport { endpoint, detail });
                    last_answer = None;
                    (repeat == Repeat::Safe || not_sent, true)
                }
            };
            if !retry || attempt == attempts {
                break;
            }
            if failover && self.bases.len() > 1 {
                base = (base + 1) % self.bases.len();
                tracing::warn!(endpoint, next = %self.bases[base], "failing over to the other API host");
            }
            tokio::time::sleep(self.backoff(attempt)).await;
        }
        match last_answer {
            Some(raw) => Err(self.verified_error(endpoint, raw)),
            None => Err(last.expect("at least one attempt")),
        }
    }

    /// The typed error of an error answer, trusted only when its signature
    /// verifies (the real service signs error answers with the same
    /// headers). An unsigned or unverifiable body becomes
    /// [`ApiError::Unverified`], whose code nothing decides on: a forged
    /// `ORDER_NOT_EXIST` must not close an order.
    fn verified_error(&self, endpoint: &'static str, raw: RawResponse) -> ApiError {
        let status = raw.status;
        let request_id = raw.request_id();
        let claimed = match service_error(raw.clone()) {
            ApiError::Service { code, .. } => code,
            _ => String::new(),
        };
        let unverified = |reason: String| {
            tracing::warn!(endpoint, status, claimed_code = %claimed, %reason, request_id = ?request_id, "error answer not verified; its code is ignored");
            ApiError::Unverified {
                status,
                claimed_code: claimed.clone(),
                reason,
                request_id: request_id.clone(),
            }
        };
        let Ok(headers) =
            SignatureHeaders::from_lookup(|n| raw.headers.get(n).and_then(|v| v.to_str().ok()))
        else {
            return unverified("no signature headers".into());
        };
        // No certificate refresh here: the certificate download itself ends
        // up here, and an error left unverified changes nothing anyway.
        match self.verifier.verify(&headers, &raw.body) {
            Ok(()) => service_error(raw),
            Err(e) => unverified(e.to_string()),
        }
    }

    async fn send_once(
        &self,
        endpoint: &'static str,
        method: &Method,
        url: Url,
        body: Option<Bytes>,
        max_bytes: usize,
    ) -> Attempt {
        // Sign exactly what is sent: the path and query of the final URL.
        let signed_target = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        let body_bytes = body.clone().unwrap_or_default();
        let authorization = match self.signer.authorization(
            self.clock.as_ref(),
            method.as_str(),
            &signed_target,
            &body_bytes,
        ) {
            Ok(a) => a,
            Err(e) => {
                return Attempt::Failed {
                    not_sent: true,
                    detail: format!("signing failed: {e}"),
                }
            }
        };
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/json");
        if let Some(serial) = self.verifier.preferred_serial() {
            req = req.header("Wechatpay-Serial", serial);
        }
        if let Some(b) = body {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let not_sent = e.is_connect();
                tracing::warn!(endpoint, error = %e, not_sent, "WeChat Pay request failed");
                return Attempt::Failed {
                    not_sent,
                    detail: error_chain(&e),
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match read_limited(resp, max_bytes).await {
            Ok(b) => b,
            Err(detail) => {
                return Attempt::Failed {
                    not_sent: false,
                    detail,
                }
            }
        };
        tracing::debug!(
            endpoint,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            request_id = ?headers.get("Request-ID"),
            "WeChat Pay answered"
        );
        Attempt::Answer(RawResponse {
            status,
            headers,
            body,
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.opts.backoff_max);
        // Full jitter in [50 %, 100 %] keeps retries of many clients apart.
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Counts one completed API call (after retries) in the metrics:
/// endpoint names are fixed strings (`combine prepay` → `combine_prepay`).
fn record_api_call<T>(endpoint: &'static str, result: &Result<T, ApiError>, started: Instant) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(ApiError::Service { status: 429, .. }) => "rate_limited",
        Err(ApiError::Service { status, .. }) if *status >= 500 => "server_error",
        Err(ApiError::Service { .. }) => "business_error",
        Err(ApiError::Verify(_)) => "bad_signature",
        Err(ApiError::Unverified { .. }) => "unverified_error",
        Err(ApiError::Sign(_)) => "sign_error",
        Err(ApiError::Transport { .. }) => "transport_error",
        Err(ApiError::Decode { .. }) => "decode_error",
    };
    crate::metrics::metrics().api_call(&endpoint.replace(' ', "_"), outcome, started.elapsed());
}

fn trim_base(u: &Url) -> Url {
    let mut u = u.clone();
    let path = u.path().trim_end_matches('/').to_string();
    u.set_path(&path);
    u
}

fn join(base: &Url, path_and_query: &str) -> Result<Url, String> {
    let s = format!("{}{}", base.as_str().trim_end_matches('/'), path_and_query);
    Url::parse(&s).map_err(|e| format!("bad URL {s:?}: {e}"))
}

fn signature_headers(headers: &HeaderMap) -> Result<SignatureHeaders, ApiError> {
    SignatureHeaders::from_lookup(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .map_err(ApiError::from)
}

fn service_error(raw: RawResponse) -> ApiError {
    let request_id = raw.request_id();
    match serde_json::from_slice::<ErrorBody>(&raw.body) {
        Ok(b) => ApiError::Service {
            status: raw.status,
            code: b.code,
            message: b.message,
            detail: b.detail,
            request_id,
        },
        Err(_) => ApiError::Service {
            status: raw.status,
            code: format!("HTTP_{}", raw.status),
            message: String::from_utf8_lossy(&raw.body)
                .chars()
                .take(200)
                .collect(),
            detail: None,
            request_id,
        },
    }
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("response body larger than {max} bytes"));
    }
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(format!("response body larger than {max} bytes"));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(format!("reading the response body: {}", error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[async_trait]
impl CombineApi for WechatPayClient {
    async fn prepay(&self, request: &PrepayRequest) -> Result<String, ApiError> {
        const ENDPOINT: &str = "combine prepay";
        let body = serde_json::to_vec(request).map_err(|e| ApiError::Decode {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })?;
        // Idempotent on combine_out_trade_no with an identical body.
        let span = tracing::info_span!("wechatpay", endpoint = ENDPOINT, combine_out_trade_no = %request.combine_out_trade_no);
        let resp = self
            .post_json(
                ENDPOINT,
                "/v3/combine-transactions/jsapi",
                body,
                Repeat::Safe,
            )
            .instrument(span)
            .await?;
        let parsed: PrepayResponse = resp.json(ENDPOINT)?;
        if parsed.prepay_id.is_empty() || parsed.prepay_id.len() > 64 {
            return Err(ApiError::Decode {
                endpoint: ENDPOINT,
                detail: "prepay_id is empty or longer than 64 characters".into(),
            });
        }
        Ok(parsed.prepay_id)
    }

    async fn query(&self, combine_out_trade_no: &str) -> Result<CombineTransaction, ApiError> {
        const ENDPOINT: &str = "combine query";
        let path = format!(
            "/v3/combine-transactions/out-trade-no/{}",
            encode_path_segment(combine_out_trade_no)
        );
        let span = tracing::info_span!("wechatpay", endpoint = ENDPOINT, combine_out_trade_no = %combine_out_trade_no);
        let resp = self
            .get(ENDPOINT, &path, Repeat::Safe)
            .instrument(span)
            .await?;
        let tx: CombineTransaction = resp.json(ENDPOINT)?;
        if tx.combine_out_trade_no != combine_out_trade_no {
            return Err(ApiError::Decode {
                endpoint: ENDPOINT,
                detail: format!(
                    "asked for {combine_out_trade_no} but the answer is about {}",
                    tx.combine_out_trade_no
                ),
            });
        }
        Ok(tx)
    }

    async fn close(
        &self,
        combine_out_trade_no: &str,
        request: &CloseRequest,
    ) -> Result<(), ApiError> {
        const ENDPOINT: &str = "combine close";
        let path = format!(
            "/v3/combine-transactions/out-trade-no/{}/close",
            encode_path_segment(combine_out_trade_no)
        );
        let body = serde_json::to_vec(request).map_err(|e| ApiError::Decode {
            endpoint: ENDPOINT,
            detail: e.to_string(),
        })?;
        // Re-entrant: closing twice is harmless.
        let span = tracing::info_span!("wechatpay", endpoint = ENDPOINT, combine_out_trade_no = %combine_out_trade_no);
        let resp = self
            .post_json(ENDPOINT, &path, body, Repeat::Safe)
            .instrument(span)
            .await?;
        match resp.status {
            200 | 204 => Ok(()),
            // 202 USERPAYING: the payer is entering the password; not closed.
            status => {
                let body: Option<ErrorBody> = serde_json::from_slice(&resp.body).ok();
                Err(ApiError::Service {
                    status,
                    code: body
                        .as_ref()
                        .map_or_else(|| "USERPAYING".into(), |b| b.code.clone()),
                    message: body.map_or_else(
                        || "the payer is paying; query again shortly".into(),
                        |b| b.message,
                    ),
                    detail: None,
                    request_id: resp.request_id,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_like_the_official_samples() {
        assert_eq!(encode_path_segment("P2015_08-06*1.x"), "P2015_08-06*1.x");
        assert_eq!(encode_path_segment("a|b"), "a%7Cb");
        assert_eq!(encode_path_segment("a b/c?d#"), "a%20b%2Fc%3Fd%23");
        assert_eq!(encode_path_segment("单"), "%E5%8D%95");
    }

    #[test]
    fn join_keeps_the_encoded_path_verbatim() {
        let base = trim_base(&Url::parse("http://127.0.0.1:9/").unwrap());
        let u = join(&base, "/v3/combine-transactions/out-trade-no/a%7Cb").unwrap();
        assert_eq!(u.path(), "/v3/combine-transactions/out-trade-no/a%7Cb");
        let u = join(
            &base,
            "/v3/bill/tradebill?bill_date=2024-01-01&bill_type=ALL",
        )
        .unwrap();
        assert_eq!(u.query(), Some("bill_date=2024-01-01&bill_type=ALL"));
    }

    #[test]
    fn user_agent_names_the_product_and_version() {
        assert!(user_agent().starts_with(&format!("wxpay-combine/{}", env!("CARGO_PKG_VERSION"))));
    }
}
