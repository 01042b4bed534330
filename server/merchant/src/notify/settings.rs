//! The notification endpoint's key, `notify_url`: sent with every order,
//! and its path is where the handler is mounted.

use crate::settings::{FieldKind, FieldTable, Validator};
use url::Url;

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("notify_url", FieldKind::Str),
    ("refund_notify_url", FieldKind::Str),
];

/// Where WeChat Pay posts payment results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// notify_url.
    pub notify_url: Url,
    /// The path part of notify_url, where the notification handler is mounted.
    pub notify_path: String,
    /// The `notify_url` sent with every refund (default: `notify_url`'s
    /// origin with the path `/wxpay/refund-notify`).
    pub refund_notify_url: Url,
    /// Its path: where the refund-notification handler is mounted.
    pub refund_notify_path: String,
}

/// Validates `notify_url` (plain http only in `demo`). Its path must not
/// fall under `pay_directory` (when that is valid) nor the API or OAuth
/// routes.
pub fn validate(
    notify_url: Option<&str>,
    refund_notify_url: Option<&str>,
    demo: bool,
    pay_directory: Option<&str>,
    v: &mut Validator<'_>,
) -> Option<NotifySettings> {
    let url = v
        .required_str(
            notify_url,
            "notify_url",
            "the public https URL WeChat Pay posts results to, e.g. https://shop.example.com/wxpay/notify",
        )
        .and_then(|s| match check_notify_url(s, demo) {
            Ok(u) => Some(u),
            Err(detail) => v.invalid("notify_url", detail),
        })?;
    let path = url.path().to_string();
    if let Some(dir) = pay_directory {
        if path.starts_with(dir) || path.starts_with("/api/") || path.starts_with("/oauth/") {
            return v.invalid(
                "notify_url",
                format!(
                    "its path {path} collides with the page or API routes; use e.g. /wxpay/notify"
                ),
            );
        }
    }
    let refund_url = match refund_notify_url {
        Some(s) => match check_notify_url(s, demo) {
            Ok(u) => u,
            Err(detail) => return v.invalid("refund_notify_url", detail),
        },
        None => {
            let mut u = url.clone();
            u.set_path(super::refund::DEFAULT_REFUND_PATH);
            u
        }
    };
    let refund_path = refund_url.path().to_string();
    if refund_path == path
        || pay_directory.is_some_and(|dir| refund_path.starts_with(dir))
        || refund_path.starts_with("/api/")
        || refund_path.starts_with("/oauth/")
    {
        return v.invalid(
            "refund_notify_url",
            format!("its path {refund_path} collides with notify_url or the page/API routes; use e.g. /wxpay/refund-notify"),
        );
    }
    Some(NotifySettings {
        notify_url: url,
        notify_path: path,
        refund_notify_url: refund_url,
        refund_notify_path: refund_path,
    })
}

/// notify_url rules: absolute, https outside demo, no query string (the
/// service refuses one), no fragment, at most 255 bytes.
pub fn check_notify_url(s: &str, demo: bool) -> Result<Url, String> {
    if s.len() > 255 {
        return Err(format!("{} bytes; WeChat Pay accepts at most 255", s.len()));
    }
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URL: {e}"))?;
    if s.contains('?') || url.query().is_some() {
        return Err(format!(
            "{s:?} has a query string; WeChat Pay refuses notify URLs with query parameters"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{s:?} has a fragment"));
    }
    match url.scheme() {
        "https" => {}
        "http" if demo => {}
        "http" => {
            return Err(format!(
                "{s:?} must use https (plain http is allowed only in demo mode)"
            ))
        }
        other => return Err(format!("{s:?}: unsupported scheme {other:?}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if url.path() == "/" {
        return Err(format!("{s:?} needs a path, e.g. /wxpay/notify"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_url_rules() {
        assert!(check_notify_url("https://a.example/wxpay/notify", false).is_ok());
        assert!(check_notify_url("https://a.example/n?x=1", false)
            .unwrap_err()
            .contains("query"));
        assert!(check_notify_url("http://a.example/n", false)
            .unwrap_err()
            .contains("https"));
        assert!(check_notify_url("http://127.0.0.1:8080/wxpay/notify", true).is_ok());
        assert!(
            check_notify_url(&format!("https://a.example/{}", "n".repeat(260)), false)
                .unwrap_err()
                .contains("255")
        );
    }
}
