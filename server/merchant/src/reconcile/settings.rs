//! The reconciliation worker's keys: `reconcile_interval_secs`,
//! `reconcile_after_secs`.

use crate::settings::{Bounded, FieldKind, FieldTable, Validator};

/// The keys of this subsystem.
pub const FIELDS: FieldTable = &[
    ("reconcile_interval_secs", FieldKind::Int),
    ("reconcile_after_secs", FieldKind::Int),
];

// Production defaults; the demo sweeps sooner.
const INTERVAL_SECS: Bounded = Bounded::new("reconcile_interval_secs", 30, 1, 3600);
const AFTER_SECS: Bounded = Bounded::new("reconcile_after_secs", 60, 0, 86400);

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
    let (interval, after) = if demo {
        (INTERVAL_SECS.default_to(5), AFTER_SECS.default_to(10))
    } else {
        (INTERVAL_SECS, AFTER_SECS)
    };
    let interval_secs = v.bounded(interval_secs, interval);
    let after_secs = v.bounded(after_secs, after);
    ReconcileSettings {
        interval_secs,
        after_secs: after_secs as i64,
    }
}
