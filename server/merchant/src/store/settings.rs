//! The store's one key, `database_url`: `sqlite:PATH` (a relative path is
//! resolved against the configuration file's directory) or `postgres://…`.

use super::{classify_url, Backend};
use crate::settings::{FieldKind, FieldTable, Validator};
use std::path::Path;

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[("database_url", FieldKind::Str)];

/// Where the orders are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Database URL (a relative SQLite path already resolved).
    pub database_url: String,
}

/// Validates `database_url`.
pub fn validate(database_url: Option<&str>, v: &mut Validator<'_>) -> Option<StoreSettings> {
    let url = v.required_str(
        database_url,
        "database_url",
        "sqlite:/var/lib/wxpay/wxpay.db or postgres://user@host/db",
    )?;
    match database_scheme(url) {
        Ok(()) => Some(StoreSettings {
            database_url: resolve_sqlite_path(url, v.base_dir()),
        }),
        Err(detail) => v.invalid("database_url", detail),
    }
}

fn database_scheme(url: &str) -> Result<(), String> {
    classify_url(url).map(|_| ()).map_err(|_| {
        format!(
            "unknown database URL scheme {:?}; use sqlite:PATH (embedded) or postgres://user@host/db",
            url.split(':').next().unwrap_or_default()
        )
    })
}

/// Resolves a relative SQLite file path against the config file's directory
/// (other URLs are returned unchanged).
fn resolve_sqlite_path(url: &str, base_dir: &Path) -> String {
    if !matches!(classify_url(url), Ok(Backend::Sqlite)) {
        return url.to_string();
    }
    let (prefix, rest) = if let Some(r) = url.strip_prefix("sqlite://") {
        ("sqlite://", r)
    } else if let Some(r) = url.strip_prefix("sqlite:") {
        ("sqlite:", r)
    } else {
        ("", url)
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let joined = base_dir.join(path);
    match query {
        Some(q) => format!("{prefix}{}?{q}", joined.display()),
        None => format!("{prefix}{}", joined.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_schemes() {
        assert!(database_scheme("sqlite:/tmp/x.db").is_ok());
        assert!(database_scheme("postgres://u@h/db").is_ok());
        assert!(database_scheme("mysql://u@h/db")
            .unwrap_err()
            .contains("unknown database URL scheme"));
        let base = Path::new("/etc/wxpay");
        assert_eq!(
            resolve_sqlite_path("sqlite:wxpay.db", base),
            "sqlite:/etc/wxpay/wxpay.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite:/var/x.db", base),
            "sqlite:/var/x.db"
        );
        assert_eq!(
            resolve_sqlite_path("sqlite::memory:", base),
            "sqlite::memory:"
        );
        assert_eq!(
            resolve_sqlite_path("postgres://u@h/db", base),
            "postgres://u@h/db"
        );
    }
}
