//! Rows of the server-to-server order API (`/internal/…`): idempotency keys
//! and one-time pay links (migration `0003_intake`), and the SQL both
//! backends run for them.

/// What an idempotency key was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The merchant's key.
    pub key: String,
    /// SHA-256 (hex) of the canonical request it first came with.
    pub request_sha256: String,
    /// The order number given to that request.
    pub combine_out_trade_no: String,
    /// When it was first used, Unix seconds.
    pub created_at: i64,
}

/// Where a pay link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayLinkStatus {
    /// Waiting for a payer.
    Open,
    /// Claimed by a payer (the order exists).
    Claimed,
    /// Closed before its order was stored (unclaimed, or claimed but the
    /// order's creation failed).
    Closed,
}

impl PayLinkStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Claimed => "claimed",
            Self::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "claimed" => Some(Self::Claimed),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A one-time pay link. Only the SHA-256 of its token is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayLink {
    /// SHA-256 (hex) of the token in the link.
    pub token_sha256: String,
    /// The order the link pays.
    pub combine_out_trade_no: String,
    /// The order without a payer (JSON of a
    /// [`CombineOrder`](crate::combine::CombineOrder) with an empty openid).
    pub draft: String,
    /// Where it stands.
    pub status: PayLinkStatus,
    /// The payer who claimed it.
    pub payer_openid: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// After this, the link cannot be claimed.
    pub expires_at: i64,
    /// When it was claimed.
    pub claimed_at: Option<i64>,
}

/// What [`Store::claim_pay_link`](super::Store::claim_pay_link) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Claimed now by this payer.
    Claimed(PayLink),
    /// Claimed earlier by the same payer (a reload): the same order.
    AlreadyClaimed(PayLink),
    /// Claimed by another payer.
    Taken,
    /// Past its expiry.
    Expired,
    /// Closed by the merchant.
    Closed,
    /// No link has this token.
    Unknown,
}

pub(crate) const INSERT_KEY: &str = "INSERT INTO intake_keys (idempotency_key, request_sha256, \
     combine_out_trade_no, created_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (idempotency_key) DO NOTHING";

pub(crate) const SELECT_KEY: &str = "SELECT idempotency_key, request_sha256, \
     combine_out_trade_no, created_at FROM intake_keys WHERE idempotency_key = $1";

pub(crate) const DELETE_EXPIRED_STATES: &str =
    "DELETE FROM oauth_states_used WHERE expires_at <= $1";

pub(crate) const INSERT_STATE: &str = "INSERT INTO oauth_states_used (state_sha256, expires_at) \
     VALUES ($1, $2) ON CONFLICT (state_sha256) DO NOTHING";

pub(crate) const INSERT_LINK: &str = "INSERT INTO pay_links (token_sha256, combine_out_trade_no, \
     draft, status, payer_openid, created_at, expires_at, claimed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) const SELECT_LINK_BY_TOKEN: &str = "SELECT token_sha256, combine_out_trade_no, \
     draft, status, payer_openid, created_at, expires_at, claimed_at FROM pay_links \
     WHERE token_sha256 = $1";

pub(crate) const SELECT_LINK_BY_ORDER: &str = "SELECT token_sha256, combine_out_trade_no, \
     draft, status, payer_openid, created_at, expires_at, claimed_at FROM pay_links \
     WHERE combine_out_trade_no = $1";

/// Claims an open, unexpired link for `$2` at `$3`.
pub(crate) const CLAIM_LINK: &str = "UPDATE pay_links SET status = 'claimed', \
     payer_openid = $2, claimed_at = $3 \
     WHERE token_sha256 = $1 AND status = 'open' AND expires_at > $3";

/// Closes an open link, or a claimed one whose order was never stored (its
/// creation failed): a later claim is then refused.
pub(crate) const CLOSE_LINK: &str = "UPDATE pay_links SET status = 'closed' \
     WHERE combine_out_trade_no = $1 AND (status = 'open' OR (status = 'claimed' \
     AND NOT EXISTS (SELECT 1 FROM combine_orders o WHERE o.combine_out_trade_no = $1)))";

/// A pay link row: (token_sha256, no, draft, status, openid, created, expires, claimed).
pub(crate) type LinkRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn link(row: LinkRow) -> Result<PayLink, super::StoreError> {
    let (
        token_sha256,
        combine_out_trade_no,
        draft,
        status,
        payer_openid,
        created_at,
        expires_at,
        claimed_at,
    ) = row;
    Ok(PayLink {
        status: PayLinkStatus::parse(&status)
            .ok_or_else(|| super::StoreError::Corrupt(format!("pay link status {status:?}")))?,
        token_sha256,
        combine_out_trade_no,
        draft,
        payer_openid,
        created_at,
        expires_at,
        claimed_at,
    })
}

/// Why a claim that updated nothing failed, from the row as it is.
pub(crate) fn refused(existing: Option<PayLink>, openid: &str, now: i64) -> ClaimOutcome {
    match existing {
        None => ClaimOutcome::Unknown,
        Some(l) => match l.status {
            PayLinkStatus::Claimed if l.payer_openid.as_deref() == Some(openid) => {
                ClaimOutcome::AlreadyClaimed(l)
            }
            PayLinkStatus::Claimed => ClaimOutcome::Taken,
            PayLinkStatus::Closed => ClaimOutcome::Closed,
            PayLinkStatus::Open if l.expires_at <= now => ClaimOutcome::Expired,
            // Open and valid but not updated: raced with a concurrent claim
            // that has not committed; the caller may retry.
            PayLinkStatus::Open => ClaimOutcome::Taken,
        },
    }
}

/// An idempotency row.
pub(crate) type KeyRow = (String, String, String, i64);

pub(crate) fn key(row: KeyRow) -> IdempotencyRecord {
    IdempotencyRecord {
        key: row.0,
        request_sha256: row.1,
        combine_out_trade_no: row.2,
        created_at: row.3,
    }
}

/// The error of inserting an idempotency key: a unique violation can only be
/// the order number, which another key holds (`0008_intake_key_per_order`).
pub(crate) fn key_error(e: sqlx::Error, combine_out_trade_no: &str) -> super::StoreError {
    if super::shared::is_unique_violation(&e) {
        super::StoreError::Duplicate(combine_out_trade_no.to_owned())
    } else {
        e.into()
    }
}
