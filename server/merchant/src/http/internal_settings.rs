//! The internal API's keys: `internal_token_file` (off when unset),
//! `internal_listen`, `internal_on_public_listener`, `pay_link_ttl_secs`.
//! See `docs/internal-api.md`.

use crate::settings::{Bounded, FieldKind, FieldTable, Validator};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::Path;

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("internal_token_file", FieldKind::Str),
    ("internal_listen", FieldKind::Str),
    ("internal_on_public_listener", FieldKind::Bool),
    ("pay_link_ttl_secs", FieldKind::Int),
];

/// Shortest accepted internal API token.
pub const MIN_INTERNAL_TOKEN_LEN: usize = 32;

const PAY_LINK_TTL_SECS: Bounded = Bounded::new("pay_link_ttl_secs", 3600, 60, 7 * 86400);

/// The server-to-server order API (`/internal/…`), see `docs/internal-api.md`.
#[derive(Debug, Clone)]
pub struct InternalApiConfig {
    /// The bearer token callers present.
    pub token: SecretString,
    /// A separate listener for the internal API.
    pub listen: Option<SocketAddr>,
    /// Also mount the internal API on the public listener (explicit opt-in).
    pub on_public_listener: bool,
    /// Lifetime of a one-time pay link, seconds.
    pub pay_link_ttl_secs: i64,
}

/// The raw values of this subsystem's keys, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct InternalApiRaw<'a> {
    /// `internal_token_file`.
    pub internal_token_file: Option<&'a Path>,
    /// `internal_listen`.
    pub internal_listen: Option<&'a str>,
    /// `internal_on_public_listener`.
    pub internal_on_public_listener: Option<bool>,
    /// `pay_link_ttl_secs`.
    pub pay_link_ttl_secs: Option<u64>,
}

/// Validates the keys: `None` when no token file is set (the API is off)
/// or after recording a problem.
pub fn validate(raw: &InternalApiRaw<'_>, v: &mut Validator<'_>) -> Option<InternalApiConfig> {
    let listen = v.socket_addr("internal_listen", raw.internal_listen, "127.0.0.1:8081");
    let on_public = raw.internal_on_public_listener.unwrap_or(false);
    let ttl = v.bounded(raw.pay_link_ttl_secs, PAY_LINK_TTL_SECS);
    let Some(file) = raw
        .internal_token_file
        .filter(|p| !p.as_os_str().is_empty())
    else {
        if listen.is_some() || on_public {
            v.invalid::<()>(
                "internal_token_file",
                "required with internal_listen / internal_on_public_listener (a file holding \
                 a random token of ≥ 32 characters, e.g. `head -c 32 /dev/urandom | base64 > internal.token`)"
                    .into(),
            );
        }
        return None;
    };
    let p = v.path(file);
    let token = v.secret_text("internal_token_file", &p, |t| {
        if t.len() < MIN_INTERNAL_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            Err(format!(
                "the token must be at least {MIN_INTERNAL_TOKEN_LEN} printable ASCII characters"
            ))
        } else {
            Ok(())
        }
    })?;
    if listen.is_none() && !on_public {
        v.warn(
            "internal_token_file is set but neither internal_listen nor internal_on_public_listener: \
             `serve` does not expose the internal API (an embedding app can mount Kit::internal_router)"
                .into(),
        );
    }
    Some(InternalApiConfig {
        token,
        listen,
        on_public_listener: on_public,
        pay_link_ttl_secs: ttl as i64,
    })
}
