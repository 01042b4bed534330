//! The reconciliation worker's keys: `reconcile_interval_secs`,
//! `reconcile_after_secs`.

use crate::settings::{FieldKind, FieldTable, Validator};

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("reconcile_interval_secs", FieldKind::Int),
    ("reconcile_after_secs", FieldKind::Int),
];

/// Reconciliation worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// Seconds between sweeps.
    pub interval_secs: u64,
    /// Open orders older than this are queried.
    pub after_secs: i64,
}

/// Validates the keys; the demo sweeps sooner by default.
pub fn validate(
    interval_secs: Option<u64>,
    after_secs: Option<u64>,
    demo: bool,
    v: &mut Validator<'_>,
) -> ReconcileSettings {
    let interval_secs = v.range(
        "reconcile_interval_secs",
        interval_secs.unwrap_or(if demo { 5 } else { 30 }),
        1,
        3600,
    );
    let after_secs = v.range(
        "reconcile_after_secs",
        after_secs.unwrap_or(if demo { 10 } else { 60 }),
        0,
        86400,
    );
    ReconcileSettings {
        interval_secs,
        after_secs: after_secs as i64,
    }
}
