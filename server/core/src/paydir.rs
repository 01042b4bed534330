//! The 支付授权目录 (pay directory) rule: which page URLs may invoke
//! `getBrandWCPayRequest` for a registered directory.
//!
//! From the product document (JSAPI支付场景 §2.2.1):
//! - a registered top-level domain (`https://www.weixin.com/`) is checked by
//!   domain only — any page on that host matches;
//! - a registered multi-level directory must equal the page's directory
//!   exactly: `https://www.weixin.com/abc/123/` accepts
//!   `https://www.weixin.com/abc/123/pay.html` but neither a page in `/abc/`
//!   nor one in `/abc/123/pay/`.
//!
//! The page's directory is its path up to and including the last `/`; query
//! and fragment do not count.

use std::fmt;
use url::Url;

/// A URL that cannot take part in the check at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayDirError {
    /// Not an absolute URL.
    #[error("{what} {url:?} is not an absolute URL: {detail}")]
    NotAUrl {
        /// `registered directory` or `page URL`.
        what: &'static str,
        /// The input.
        url: String,
        /// Parser message.
        detail: String,
    },
    /// Not http or https.
    #[error("{what} {url:?} must be an http(s) URL")]
    Scheme {
        /// Which input.
        what: &'static str,
        /// The input.
        url: String,
    },
    /// The registered value does not end with `/` (the merchant platform
    /// only accepts directories).
    #[error("registered directory {0:?} must end with / (the merchant platform registers directories, not pages)")]
    NotADirectory(String),
    /// The registered value has a query string or fragment.
    #[error("registered directory {0:?} must not have a query string or fragment")]
    HasQuery(String),
}

/// How a page matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayDirMatch {
    /// The registered value is a top-level domain; the host matched.
    TopLevelDomain,
    /// The page's directory equals the registered directory.
    ExactDirectory,
}

/// Why a page does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MismatchKind {
    /// An input is unusable.
    Invalid(PayDirError),
    /// Scheme, host or port differ.
    Origin,
    /// The page lives in a parent of the registered directory.
    PageAbove,
    /// The page lives in a subdirectory of the registered directory.
    PageBelow,
    /// The directories are unrelated.
    Different,
}

/// A failed check, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayDirMismatch {
    /// The kind.
    pub kind: MismatchKind,
    /// Registered value as given.
    pub registered: String,
    /// Page URL as given.
    pub page: String,
    /// The page's directory (`scheme://host[:port]/dir/`), when parseable.
    pub page_directory: Option<String>,
}

/// What WeChat on iOS checks for single-page apps.
pub const IOS_NOTE: &str = "WeChat on iOS checks the URL the page was first opened with (the \
single-page app's landing URL), not the current URL after history.pushState/replaceState; \
Android checks the current URL. Make the landing URL itself lie in the registered directory \
(e.g. open …/pay/ and keep the app's routes in the fragment or the query string), or register \
the landing URL's directory as well.";

impl PayDirMismatch {
    /// A human explanation, ending with the iOS single-page-app note.
    pub fn explain(&self) -> String {
        let dir = self.page_directory.as_deref().unwrap_or("?");
        let what = match &self.kind {
            MismatchKind::Invalid(e) => e.to_string(),
            MismatchKind::Origin => format!(
                "the page's scheme, host or port differs from the registered {}; \
                 the registered value must name the exact origin the page is served from",
                self.registered
            ),
            MismatchKind::PageAbove => format!(
                "the page's directory {dir} is a parent of the registered directory {}; \
                 a multi-level directory is matched exactly, so register {dir} or move the page into {}",
                self.registered, self.registered
            ),
            MismatchKind::PageBelow => format!(
                "the page's directory {dir} is below the registered directory {}; \
                 subdirectories are not covered (exact match), so register {dir} or serve the page from {}",
                self.registered, self.registered
            ),
            MismatchKind::Different => format!(
                "the page's directory {dir} is not the registered directory {}; register {dir} \
                 (WeChat shows \"当前页面的URL未注册\" otherwise)",
                self.registered
            ),
        };
        let slash_hint = if !self.page.contains('?')
            && !self.page.contains('#')
            && !self.page.ends_with('/')
            && self.kind != MismatchKind::Origin
        {
            " Note: a page URL without a trailing slash names a file, so its directory is its parent."
        } else {
            ""
        };
        format!("{what}.{slash_hint} {IOS_NOTE}")
    }
}

impl fmt::Display for PayDirMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "page {} does not match registered {}: {}",
            self.page,
            self.registered,
            self.explain()
        )
    }
}

impl std::error::Error for PayDirMismatch {}

fn parse_http(what: &'static str, s: &str) -> Result<Url, PayDirError> {
    let url = Url::parse(s.trim()).map_err(|e| PayDirError::NotAUrl {
        what,
        url: s.to_string(),
        detail: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(PayDirError::Scheme {
            what,
            url: s.to_string(),
        });
    }
    Ok(url)
}

/// Parses and checks a registered directory value.
pub fn parse_registered(s: &str) -> Result<Url, PayDirError> {
    let url = parse_http("registered directory", s)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(PayDirError::HasQuery(s.to_string()));
    }
    if !url.path().ends_with('/') {
        return Err(PayDirError::NotADirectory(s.to_string()));
    }
    Ok(url)
}

/// The directory of a page URL: origin + path up to the last `/`.
pub fn page_directory(page: &Url) -> String {
    let path = page.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{}{}", page.origin().ascii_serialization(), dir)
}

/// Applies the rule: does `page` lie in the registered pay directory?
pub fn check(registered: &str, page: &str) -> Result<PayDirMatch, Box<PayDirMismatch>> {
    let fail = |kind, page_directory| {
        Box::new(PayDirMismatch {
            kind,
            registered: registered.to_string(),
            page: page.to_string(),
            page_directory,
        })
    };
    let reg = parse_registered(registered).map_err(|e| fail(MismatchKind::Invalid(e), None))?;
    let page_url =
        parse_http("page URL", page).map_err(|e| fail(MismatchKind::Invalid(e), None))?;
    let page_dir = page_directory(&page_url);
    if reg.origin() != page_url.origin() {
        return Err(fail(MismatchKind::Origin, Some(page_dir)));
    }
    if reg.path() == "/" {
        return Ok(PayDirMatch::TopLevelDomain);
    }
    let reg_dir = page_directory(&reg);
    if page_dir == reg_dir {
        Ok(PayDirMatch::ExactDirectory)
    } else if reg_dir.starts_with(&page_dir) {
        Err(fail(MismatchKind::PageAbove, Some(page_dir)))
    } else if page_dir.starts_with(&reg_dir) {
        Err(fail(MismatchKind::PageBelow, Some(page_dir)))
    } else {
        Err(fail(MismatchKind::Different, Some(page_dir)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_document_examples() {
        let reg = "https://www.weixin.com/abc/123/";
        assert_eq!(
            check(reg, "https://www.weixin.com/abc/123/pay.html"),
            Ok(PayDirMatch::ExactDirectory)
        );
        assert_eq!(
            check(reg, "https://www.weixin.com/abc/123/"),
            Ok(PayDirMatch::ExactDirectory)
        );
        assert_eq!(
            check(reg, "https://www.weixin.com/abc/pay.html")
                .unwrap_err()
                .kind,
            MismatchKind::PageAbove
        );
        assert_eq!(
            check(reg, "https://www.weixin.com/abc/123/pay/index.html")
                .unwrap_err()
                .kind,
            MismatchKind::PageBelow
        );
        assert_eq!(
            check(reg, "https://www.weixin.com/abc/123/pay/")
                .unwrap_err()
                .kind,
            MismatchKind::PageBelow
        );
        // A top-level domain covers every path on the host.
        let top = "https://www.weixin.com/";
        assert_eq!(
            check(top, "https://www.weixin.com/pay.php"),
            Ok(PayDirMatch::TopLevelDomain)
        );
        assert_eq!(
            check(top, "https://www.weixin.com/a/b/c/d.html?x=1"),
            Ok(PayDirMatch::TopLevelDomain)
        );
    }

    #[test]
    fn query_and_fragment_do_not_count() {
        let reg = "https://shop.example/pay/";
        assert!(check(reg, "https://shop.example/pay/?order=1#/cart").is_ok());
        assert!(check(reg, "https://shop.example/pay/index.html#/orders/7").is_ok());
    }

    #[test]
    fn origin_must_match() {
        let reg = "https://shop.example/pay/";
        for page in [
            "http://shop.example/pay/",
            "https://www.shop.example/pay/",
            "https://shop.example:8443/pay/",
        ] {
            assert_eq!(
                check(reg, page).unwrap_err().kind,
                MismatchKind::Origin,
                "{page}"
            );
        }
        assert!(check("https://SHOP.example/pay/", "https://shop.example/pay/").is_ok());
    }

    #[test]
    fn file_like_page_url_uses_its_parent_and_says_so() {
        let e = check("https://shop.example/pay/", "https://shop.example/pay").unwrap_err();
        assert_eq!(e.kind, MismatchKind::PageAbove);
        assert!(e.explain().contains("trailing slash"));
        assert!(e.explain().contains("iOS"));
    }

    #[test]
    fn registered_value_must_be_a_directory() {
        let e = check("https://shop.example/pay", "https://shop.example/pay/").unwrap_err();
        assert!(matches!(
            e.kind,
            MismatchKind::Invalid(PayDirError::NotADirectory(_))
        ));
        assert!(check("ftp://shop.example/", "https://shop.example/").is_err());
        assert!(check("https://shop.example/", "not a url").is_err());
    }

    #[test]
    fn unrelated_directories() {
        let e = check("https://shop.example/a/b/", "https://shop.example/c/d.html").unwrap_err();
        assert_eq!(e.kind, MismatchKind::Different);
        assert!(e.explain().contains("https://shop.example/c/"));
    }
}
