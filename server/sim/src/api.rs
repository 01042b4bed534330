//! The APIv3 front door: routing, authentication, faults, the request log
//! and response signing, around the handlers of `order`, `bill` and the
//! certificate list.

use super::auth;
pub use super::auth::Caller;
use super::clock::{self, wall_ms};
use super::error::ApiError;
use super::faults::ApiFault;
use super::reply::Reply;
use super::state::ApiCallRecord;
use super::{bill, ids, order, refund, SimState};
use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use wxpay_combine_core::apiv3::{Clock, EncryptedResource};

/// The APIv3 endpoints the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Prepay,
    Query(String),
    Close(String),
    Certificates,
    TradeBill,
    BillDownload,
    RefundCreate,
    RefundQuery(String),
    Unknown,
}

impl Endpoint {
    fn parse(method: &Method, path: &str) -> Self {
        const ORDER: &str = "/v3/combine-transactions/out-trade-no/";
        const REFUNDS: &str = "/v3/refund/domestic/refunds";
        let get = method == Method::GET;
        let post = method == Method::POST;
        match path {
            "/v3/combine-transactions/jsapi" if post => Self::Prepay,
            "/v3/certificates" if get => Self::Certificates,
            "/v3/bill/tradebill" if get => Self::TradeBill,
            "/v3/billdownload/file" if get => Self::BillDownload,
            REFUNDS if post => Self::RefundCreate,
            p if get
                && p.starts_with(REFUNDS)
                && p.as_bytes().get(REFUNDS.len()) == Some(&b'/') =>
            {
                let rest = &p[REFUNDS.len() + 1..];
                match percent_decode(rest) {
                    Some(no) if !no.is_empty() && !rest.contains('/') => Self::RefundQuery(no),
                    _ => Self::Unknown,
                }
            }
            p if p.starts_with(ORDER) => {
                let rest = &p[ORDER.len()..];
                match (rest.strip_suffix("/close"), percent_decode(rest)) {
                    (Some(no), _) if post && !no.contains('/') => {
                        percent_decode(no).map(Self::Close).unwrap_or(Self::Unknown)
                    }
                    (None, Some(no)) if get && !no.is_empty() && !rest.contains('/') => {
                        Self::Query(no)
                    }
                    _ => Self::Unknown,
                }
            }
            _ => Self::Unknown,
        }
    }

    /// The request-log label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Prepay => "prepay",
            Self::Query(_) => "query",
            Self::Close(_) => "close",
            Self::Certificates => "certificates",
            Self::TradeBill => "tradebill",
            Self::BillDownload => "billdownload",
            Self::RefundCreate => "refund",
            Self::RefundQuery(_) => "refund_query",
            Self::Unknown => "unknown",
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every `/v3/…` request enters here.
pub async fn v3_entry(
    State(st): State<Arc<SimState>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let endpoint = Endpoint::parse(&method, uri.path());
    let order_no = match &endpoint {
        Endpoint::Query(n) | Endpoint::Close(n) => Some(n.clone()),
        Endpoint::Prepay => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("combine_out_trade_no")?.as_str().map(str::to_string)),
        _ => None,
    };
    let claimed = auth::claimed_merchant(&st, &headers);
    let requested_serial = auth::requested_serial(&headers);

    let mut hold = None;
    let result = async {
        if endpoint == Endpoint::Unknown {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "请求的资源不存在",
            ));
        }
        auth::check_required_headers(&headers)?;
        if method == Method::POST && !body.is_empty() {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.to_ascii_lowercase().starts_with("application/json") {
                return Err(ApiError::invalid_request(
                    "Content-Type应为application/json",
                ));
            }
        }
        let caller = auth::authenticate(&st, method.as_str(), &path_and_query, &headers, &body)?;
        let faults = st
            .faults
            .effective(Some(&caller.merchant.creds.mchid), order_no.as_deref());
        match st.faults.api_call(&faults, endpoint.label()) {
            ApiFault::Error => return Err(ApiError::system("系统繁忙，请稍后重试")),
            ApiFault::FrequencyLimited => return Err(ApiError::frequency_limited()),
            ApiFault::Timeout(ms) => hold = Some(ms),
            ApiFault::None => {}
        }
        let reply = match &endpoint {
            Endpoint::Prepay => order::prepay(&st, &caller, &body).await,
            Endpoint::Query(no) => order::query(&st, &caller, no).await,
            Endpoint::Close(no) => order::close(&st, &caller, no, &body).await,
            Endpoint::Certificates => certificates(&st, &caller),
            Endpoint::TradeBill => bill::trade_bill(&st, &caller, uri.query().unwrap_or("")).await,
            Endpoint::BillDownload => bill::download(&st, &caller, uri.query().unwrap_or("")).await,
            Endpoint::RefundCreate => refund::create(&st, &caller, &body).await,
            Endpoint::RefundQuery(no) => refund::query(&st, &caller, no).await,
            Endpoint::Unknown => unreachable!("answered above"),
        }?;
        Ok((caller, reply))
    }
    .await;

    let (status, code) = match &result {
        Ok((_, Reply::NoContent)) => (StatusCode::NO_CONTENT, None),
        Ok(_) => (StatusCode::OK, None),
        Err(e) => (e.status, Some(e.code.to_string())),
    };
    let record = ApiCallRecord {
        at_ms: wall_ms(),
        method: method.to_string(),
        path: path_and_query.clone(),
        endpoint: endpoint.label().into(),
        mchid: claimed.as_ref().map(|m| m.creds.mchid.clone()),
        combine_out_trade_no: order_no,
        status: i64::from(status.as_u16()),
        code,
    };
    st.db.log_call(record);
    if let Some(ms) = hold {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    match result {
        Ok((caller, reply)) => {
            let (bytes, signed, content_type) = match reply {
                Reply::Json(b) => (b, true, "application/json"),
                Reply::NoContent => (Vec::new(), true, ""),
                Reply::File(b) => (b, false, "application/octet-stream"),
            };
            let mut resp = Response::builder().status(status);
            if !content_type.is_empty() {
                resp = resp.header(header::CONTENT_TYPE, content_type);
            }
            if signed {
                for (k, v) in auth::response_signature(
                    &st,
                    &caller.merchant,
                    caller.requested_serial.as_deref(),
                    &bytes,
                ) {
                    resp = resp.header(k, v);
                }
            }
            resp.header("request-id", ids::request_id(0))
                .body(Body::from(bytes))
                .unwrap_or_default()
        }
        Err(e) => error_response(&st, claimed.as_deref(), requested_serial.as_deref(), &e),
    }
}

/// An error answer, signed when the merchant is known.
pub fn error_response(
    st: &SimState,
    merchant: Option<&super::credentials::Merchant>,
    requested_serial: Option<&str>,
    e: &ApiError,
) -> Response {
    let body = e.body();
    let mut resp = Response::builder()
        .status(e.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("request-id", ids::request_id(e.internal));
    if let Some(m) = merchant {
        for (k, v) in auth::response_signature(st, m, requested_serial, &body) {
            resp = resp.header(k, v);
        }
    }
    resp.body(Body::from(body)).unwrap_or_default()
}

/// `GET /v3/certificates`' 404 `RESOURCE_NOT_EXISTS` message for a merchant
/// on the WeChat Pay public key, as the real service words it.
pub const NO_PLATFORM_CERTIFICATES_MESSAGE: &str = "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide.html";

/// `GET /v3/certificates`: the valid platform certificates, each encrypted
/// with the APIv3 key.
fn certificates(st: &SimState, caller: &Caller) -> Result<Reply, ApiError> {
    let m = &caller.merchant;
    if !m.platform.mode().has_certificates() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            NO_PLATFORM_CERTIFICATES_MESSAGE,
        ));
    }
    let now = st.clock.now();
    let data: Vec<Value> = m
        .platform
        .valid_certificates(now)
        .into_iter()
        .map(|c| {
            let enc = EncryptedResource::seal(
                &m.apiv3_key,
                "certificate",
                None,
                c.cert.to_pem().as_bytes(),
            );
            json!({
                "serial_no": c.cert.serial_no,
                "effective_time": clock::rfc3339(c.cert.not_before),
                "expire_time": clock::rfc3339(c.cert.not_after),
                "encrypt_certificate": enc,
            })
        })
        .collect();
    Ok(Reply::json(&json!({ "data": data })))
}

/// Adds `Request-ID` to answers that have none (OAuth, `/sim/…`).
pub async fn ensure_request_id(mut resp: Response) -> Response {
    if !resp.headers().contains_key("request-id") {
        if let Ok(v) = HeaderValue::from_str(&ids::request_id(0)) {
            resp.headers_mut().insert("request-id", v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_decodes_order_numbers() {
        let p = |m: Method, path: &str| Endpoint::parse(&m, path);
        assert_eq!(
            p(Method::GET, "/v3/combine-transactions/out-trade-no/A%7CB"),
            Endpoint::Query("A|B".into())
        );
        assert_eq!(
            p(
                Method::POST,
                "/v3/combine-transactions/out-trade-no/A1/close"
            ),
            Endpoint::Close("A1".into())
        );
        assert_eq!(
            p(
                Method::GET,
                "/v3/combine-transactions/out-trade-no/A1/close"
            ),
            Endpoint::Unknown
        );
        assert_eq!(
            p(Method::GET, "/v3/combine-transactions/jsapi"),
            Endpoint::Unknown
        );
        assert_eq!(
            p(Method::POST, "/v3/combine-transactions/jsapi"),
            Endpoint::Prepay
        );
        assert_eq!(
            p(Method::POST, "/v3/refund/domestic/refunds"),
            Endpoint::RefundCreate
        );
        assert_eq!(
            p(Method::GET, "/v3/refund/domestic/refunds/R%7C1"),
            Endpoint::RefundQuery("R|1".into())
        );
        assert_eq!(
            p(Method::GET, "/v3/refund/domestic/refundsX"),
            Endpoint::Unknown
        );
        assert_eq!(percent_decode("%E4%B8%AD"), Some("中".into()));
        assert_eq!(percent_decode("%ZZ"), None);
    }
}
