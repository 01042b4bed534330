//! The machinery every subsystem's settings share: the validator that
//! collects every problem (each naming its key) instead of stopping at the
//! first, the error types, reading secret files, and the field tables that
//! drive `WXPAY_<KEY>` environment overrides.
//!
//! Each subsystem owns its `…Settings` type, its part of the (flat) file's
//! keys as a [`FieldTable`], and a `validate` function built on
//! [`Validator`]; the top-level configuration only assembles them.

use secrecy::{SecretSlice, SecretString};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;
use zeroize::Zeroizing;

/// How an environment value for a key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Taken as it is (strings and paths).
    Str,
    /// A decimal integer.
    Int,
    /// `true`/`1`/`yes` or `false`/`0`/`no`.
    Bool,
}

/// A subsystem's keys and how an environment override of each is read.
pub type FieldTable = &'static [(&'static str, FieldKind)];

/// The environment variable that overrides `key`.
pub fn env_var_name(key: &str) -> String {
    format!("WXPAY_{}", key.to_ascii_uppercase())
}

/// A numeric key's default and accepted range, declared once next to the
/// subsystem that reads it (see [`Validator::bounded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded {
    /// The key.
    pub key: &'static str,
    /// The value when the key is unset.
    pub default: u64,
    /// The smallest accepted value.
    pub min: u64,
    /// The largest accepted value.
    pub max: u64,
}

impl Bounded {
    /// `key` defaulting to `default`, accepted within `min..=max`.
    pub const fn new(key: &'static str, default: u64, min: u64, max: u64) -> Self {
        Self {
            key,
            default,
            min,
            max,
        }
    }

    /// The same key and range with another default (e.g. the demo's).
    pub const fn default_to(self, default: u64) -> Self {
        Self { default, ..self }
    }
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        detail: String,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        detail: String,
    },
    /// An environment override does not parse.
    #[error("environment variable {var}: {detail}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        detail: String,
    },
    /// A required key is absent.
    #[error("{key} is required ({hint})")]
    Missing {
        /// The key.
        key: &'static str,
        /// What to put there.
        hint: &'static str,
    },
    /// A key has an unacceptable value.
    #[error("{key}: {detail}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong and what would be right.
        detail: String,
    },
}

impl ConfigError {
    /// The configuration key concerned, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Every problem found, so one start attempt reports them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Collects the problems and start-up warnings of one validation pass.
///
/// Every check records its problem and returns `None` (or a clamped value)
/// so validation goes on: one start attempt reports everything at once. A
/// subsystem's `validate` returns `None` only after recording an error.
#[derive(Debug)]
pub struct Validator<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    base_dir: &'a Path,
}

impl<'a> Validator<'a> {
    /// A validator resolving relative paths against `base_dir` (the
    /// configuration file's directory).
    pub fn new(base_dir: &'a Path) -> Self {
        Self {
            errors: Vec::new(),
            warnings: Vec::new(),
            base_dir,
        }
    }

    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> &'a Path {
        self.base_dir
    }

    /// Whether a problem has been recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The warnings when there was no problem, else every problem.
    pub fn finish(self) -> Result<Vec<String>, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    /// Records a non-fatal finding, logged at start.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Records a problem found elsewhere (e.g. by a `from_raw` helper).
    pub fn error(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Records that `key` has an unacceptable value.
    pub fn invalid<T>(&mut self, key: &'static str, detail: String) -> Option<T> {
        self.errors.push(ConfigError::Invalid { key, detail });
        None
    }

    /// Records that a required `key` is absent.
    pub fn missing<T>(&mut self, key: &'static str, hint: &'static str) -> Option<T> {
        self.errors.push(ConfigError::Missing { key, hint });
        None
    }

    /// A required, non-blank string (trimmed).
    pub fn required_str<'s>(
        &mut self,
        value: Option<&'s str>,
        key: &'static str,
        hint: &'static str,
    ) -> Option<&'s str> {
        match value.map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => self.missing(key, hint),
        }
    }

    /// A required, non-empty path, resolved.
    pub fn required_path(
        &mut self,
        value: Option<&Path>,
        key: &'static str,
        hint: &'static str,
    ) -> Option<PathBuf> {
        match value {
            Some(p) if !p.as_os_str().is_empty() => Some(self.path(p)),
            _ => self.missing(key, hint),
        }
    }

    /// `p` resolved against the configuration file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// An identifier of 1–32 ASCII letters, digits or `_` (appid, mchid).
    pub fn ident(&mut self, key: &'static str, s: &str) -> Option<String> {
        if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Some(s.to_string())
        } else {
            self.invalid(key, format!("{s:?} must be 1–32 ASCII letters or digits"))
        }
    }

    /// `value` within `min..=max`; out of range is recorded and clamped.
    pub fn range(&mut self, key: &'static str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.invalid::<()>(key, format!("{value} is outside {min}..={max}"));
        }
        value.clamp(min, max)
    }

    /// The value of the numeric key `b` (its default when unset), checked
    /// like [`Validator::range`].
    pub fn bounded(&mut self, value: Option<u64>, b: Bounded) -> u64 {
        self.range(b.key, value.unwrap_or(b.default), b.min, b.max)
    }

    /// An optional socket address (unset or empty: `None`); `example` shows
    /// the expected form in the message.
    pub fn socket_addr(
        &mut self,
        key: &'static str,
        value: Option<&str>,
        example: &str,
    ) -> Option<SocketAddr> {
        let a = value.filter(|s| !s.is_empty())?;
        match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => self.invalid(
                key,
                format!("{a:?} is not a socket address (e.g. {example})"),
            ),
        }
    }

    /// An origin (scheme + host + port, no path). Plain http only in demo.
    pub fn origin(&mut self, key: &'static str, s: &str, demo: bool) -> Option<String> {
        let url = self.base_url(key, s, demo)?;
        if url.path() != "/" {
            return self.invalid(
                key,
                format!("{s:?} must be an origin without a path, e.g. https://shop.example.com"),
            );
        }
        Some(url.origin().ascii_serialization())
    }

    /// An http(s) base URL without query or fragment; plain http only in
    /// demo or towards the loopback interface.
    pub fn base_url(&mut self, key: &'static str, s: &str, demo: bool) -> Option<Url> {
        let url = match Url::parse(s) {
            Ok(u) => u,
            Err(e) => return self.invalid(key, format!("{s:?} is not a URL: {e}")),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return self.invalid(
                key,
                format!("{s:?} must not have a query string or fragment"),
            );
        }
        match url.scheme() {
            "https" => {}
            "http" if demo || is_loopback(&url) => {}
            "http" => {
                return self.invalid(
                    key,
                    format!("{s:?} must use https (plain http is allowed only in demo mode)"),
                )
            }
            other => return self.invalid(key, format!("{s:?}: unsupported scheme {other:?}")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return self.invalid(key, format!("{s:?} has no host"));
        }
        Some(url)
    }

    /// Reads a text secret from the file `path` (named by `key`), trimmed of
    /// surrounding whitespace. `check` refuses unusable content with a
    /// reason, reported as `{path}: {reason}`. The file's text is zeroized
    /// once read.
    pub fn secret_text(
        &mut self,
        key: &'static str,
        path: &Path,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<SecretString> {
        match std::fs::read_to_string(path) {
            Ok(s) => {
                let s = Zeroizing::new(s);
                let t = s.trim();
                match check(t) {
                    Ok(()) => Some(SecretString::from(t)),
                    Err(reason) => self.invalid(key, format!("{}: {reason}", path.display())),
                }
            }
            Err(e) => self.invalid(key, format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Reads a binary secret from the file `path` (named by `key`), trimmed
    /// of surrounding ASCII whitespace; like [`Validator::secret_text`].
    pub fn secret_bytes(
        &mut self,
        key: &'static str,
        path: &Path,
        check: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Option<SecretSlice<u8>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let t = bytes.trim_ascii();
                match check(t) {
                    Ok(()) => Some(SecretSlice::from(t.to_vec())),
                    Err(reason) => self.invalid(key, format!("{}: {reason}", path.display())),
                }
            }
            Err(e) => self.invalid(key, format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// Whether `url` points at the loopback interface (plain http is fine there).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_collected_and_secrets_are_read_trimmed() {
        let dir = std::env::temp_dir().join(format!("wxpay-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "  sekrit \n").unwrap();
        let mut v = Validator::new(&dir);
        assert_eq!(v.range("a", 5, 1, 3), 3);
        let d = Bounded::new("d", 7, 1, 9);
        assert_eq!(v.bounded(None, d), 7);
        assert_eq!(v.bounded(Some(2), d.default_to(8)), 2);
        let s = v.secret_text("b", &v.path(Path::new("s.txt")), |_| Ok(()));
        assert_eq!(secrecy::ExposeSecret::expose_secret(&s.unwrap()), "sekrit");
        assert!(v.secret_bytes("c", &dir.join("none"), |_| Ok(())).is_none());
        let errors = v.finish().unwrap_err().0;
        assert_eq!(
            errors.iter().map(|e| e.key()).collect::<Vec<_>>(),
            [Some("a"), Some("c")]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
