//! Fault injection: per simulator, per merchant or per order, set with
//! `POST /sim/control`, CLI flags or [`super::SimHandle::control`].
//!
//! Shares are deterministic: with `api_error_share = 0.25` exactly one call
//! in four fails (the 4th, 8th, …), so tests need no luck.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use wxpay_combine_core::refund::RefundStatus;

/// The faults in force. Every field is optional so scopes can layer: an
/// order's value wins over its merchant's, which wins over the global one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Never deliver notifications (the merchant must query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_notifications: Option<bool>,
    /// Deliver this many extra copies of each attempt, concurrently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_notifications: Option<u32>,
    /// Wait this long after payment before the first delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_delay_ms: Option<u64>,
    /// Send a `WECHATPAY/SIGNTEST/` probe before the first real delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signtest_probe: Option<bool>,
    /// Share (0–1) of APIv3 calls refused with 500 `SYSTEM_ERROR`, unprocessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error_share: Option<f64>,
    /// Share (0–1) of APIv3 calls that are processed but answered only after
    /// `api_timeout_ms` (the client times out: a lost response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_timeout_share: Option<f64>,
    /// How long a timed-out call is held; default 30 000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_timeout_ms: Option<u64>,
    /// Announce a wrong `hash_value` for trade bills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_bill_hash: Option<bool>,
    /// Make the cashier alter `paySign` before confirming (answers `:fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_pay_sign: Option<bool>,
    /// The page's `bridge.js` never calls back once the payer picked pay or
    /// cancel (the choice still reaches the cashier): a lost callback, for
    /// the page's bridge timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lose_bridge_answer: Option<bool>,
    /// Deliver notifications to these URLs instead of the order's
    /// `notify_url`: the copies of an attempt (1 + `duplicate_notifications`)
    /// go round-robin over the list, starting one further on each retry
    /// (several merchant instances behind no load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_targets: Option<Vec<String>>,
    /// At most this many notifications in delivery at once (each with its
    /// copies); the others wait their turn, their retry schedule unchanged.
    /// Read from the global scope only. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_max_inflight: Option<u32>,
    /// Refuse refund requests with 429 `FREQUENCY_LIMITED`, unprocessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_frequency_limited: Option<bool>,
    /// The final status of refunds accepted while set: `SUCCESS` (the
    /// default), `CLOSED` or `ABNORMAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_outcome: Option<RefundStatus>,
    /// Simulated seconds from acceptance to the final status (scaled by
    /// `time_scale`); default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_delay_secs: Option<u64>,
    /// Refusals per API, keyed by the request-log label (`prepay`, `query`,
    /// `close`, `certificates`, `tradebill`, `billdownload`, `refund`,
    /// `refund_query`): every call to that API is refused, unprocessed,
    /// or only the next `calls` ones. Layers as a whole (an order's map
    /// replaces its merchant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_faults: Option<BTreeMap<String, EndpointFault>>,
}

/// The APIs `api_faults` can name (the request log's labels).
pub const FAULT_ENDPOINTS: &[&str] = &[
    "prepay",
    "query",
    "close",
    "certificates",
    "tradebill",
    "billdownload",
    "refund",
    "refund_query",
];

/// The refusal an `api_faults` entry answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FaultCode {
    /// 429 `FREQUENCY_LIMITED` (频率超限).
    FrequencyLimited,
    /// 500 `SYSTEM_ERROR` (系统繁忙).
    SystemError,
}

/// One API's refusal: a bare code (`"FREQUENCY_LIMITED"`: every call) or
/// `{"code": …, "calls": N}` (the next N calls, counted from the control
/// request that set any fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointFault {
    /// Every call.
    Always(FaultCode),
    /// The next `calls` calls, or every call without `calls`.
    Counted {
        /// The refusal.
        code: FaultCode,
        /// How many calls to refuse.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calls: Option<u64>,
    },
}

impl EndpointFault {
    fn code(self) -> FaultCode {
        match self {
            Self::Always(c) | Self::Counted { code: c, .. } => c,
        }
    }
    fn calls(self) -> Option<u64> {
        match self {
            Self::Always(_) => None,
            Self::Counted { calls, .. } => calls,
        }
    }
}

/// The field names, for checking control requests.
pub const FAULT_FIELDS: &[&str] = &[
    "drop_notifications",
    "duplicate_notifications",
    "notify_delay_ms",
    "signtest_probe",
    "api_error_share",
    "api_timeout_share",
    "api_timeout_ms",
    "corrupt_bill_hash",
    "tamper_pay_sign",
    "lose_bridge_answer",
    "notify_targets",
    "notify_max_inflight",
    "refund_frequency_limited",
    "refund_outcome",
    "refund_delay_secs",
    "api_faults",
];

impl Faults {
    /// `self` with `over`'s set fields on top.
    pub fn overlay(&self, over: &Faults) -> Faults {
        Faults {
            drop_notifications: over.drop_notifications.or(self.drop_notifications),
            duplicate_notifications: over
                .duplicate_notifications
                .or(self.duplicate_notifications),
            notify_delay_ms: over.notify_delay_ms.or(self.notify_delay_ms),
            signtest_probe: over.signtest_probe.or(self.signtest_probe),
            api_error_share: over.api_error_share.or(self.api_error_share),
            api_timeout_share: over.api_timeout_share.or(self.api_timeout_share),
            api_timeout_ms: over.api_timeout_ms.or(self.api_timeout_ms),
            corrupt_bill_hash: over.corrupt_bill_hash.or(self.corrupt_bill_hash),
            tamper_pay_sign: over.tamper_pay_sign.or(self.tamper_pay_sign),
            lose_bridge_answer: over.lose_bridge_answer.or(self.lose_bridge_answer),
            notify_targets: over
                .notify_targets
                .clone()
                .or_else(|| self.notify_targets.clone()),
            notify_max_inflight: over.notify_max_inflight.or(self.notify_max_inflight),
            refund_frequency_limited: over
                .refund_frequency_limited
                .or(self.refund_frequency_limited),
            refund_outcome: over.refund_outcome.or(self.refund_outcome),
            refund_delay_secs: over.refund_delay_secs.or(self.refund_delay_secs),
            api_faults: over.api_faults.clone().or_else(|| self.api_faults.clone()),
        }
    }

    /// Applies a JSON patch: a value sets a field, `null` clears it.
    pub fn patch(&self, patch: &Map<String, Value>) -> Result<Faults, String> {
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let obj = current.as_object_mut().ok_or("faults are not an object")?;
        for (k, v) in patch {
            if !FAULT_FIELDS.contains(&k.as_str()) {
                return Err(format!("unknown fault {k:?}"));
            }
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
        let out: Faults =
            serde_json::from_value(current).map_err(|e| format!("bad fault value: {e}"))?;
        for share in [out.api_error_share, out.api_timeout_share]
            .into_iter()
            .flatten()
        {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("a share must be between 0 and 1, got {share}"));
            }
        }
        for (api, f) in out.api_faults.iter().flatten() {
            if !FAULT_ENDPOINTS.contains(&api.as_str()) {
                return Err(format!(
                    "api_faults: unknown API {api:?} (one of {})",
                    FAULT_ENDPOINTS.join(", ")
                ));
            }
            if f.calls() == Some(0) {
                return Err(format!("api_faults.{api}.calls must be at least 1"));
            }
        }
        if out.refund_outcome == Some(RefundStatus::Processing) {
            return Err("refund_outcome must be SUCCESS, CLOSED or ABNORMAL".into());
        }
        if out.notify_max_inflight == Some(0) {
            return Err("notify_max_inflight must be at least 1 (null clears it)".into());
        }
        if let Some(targets) = &out.notify_targets {
            if targets.is_empty() {
                return Err("notify_targets must list at least one URL (null clears it)".into());
            }
            for t in targets {
                match url::Url::parse(t) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    _ => return Err(format!("notify_targets: {t:?} is not an http(s) URL")),
                }
            }
        }
        Ok(out)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }
}

/// Where a set of faults applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum FaultScope {
    /// Every merchant and order.
    Global,
    /// One merchant.
    Merchant {
        /// Its mchid.
        mchid: String,
    },
    /// One combined order (of any merchant).
    Order {
        /// Its `combine_out_trade_no`.
        combine_out_trade_no: String,
    },
}

impl FaultScope {
    /// The key stored in the database.
    pub fn key(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::Merchant { mchid } => format!("merchant:{mchid}"),
            Self::Order {
                combine_out_trade_no,
            } => format!("order:{combine_out_trade_no}"),
        }
    }

    /// Parses [`FaultScope::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "global" {
            Some(Self::Global)
        } else if let Some(m) = key.strip_prefix("merchant:") {
            Some(Self::Merchant { mchid: m.into() })
        } else {
            key.strip_prefix("order:").map(|o| Self::Order {
                combine_out_trade_no: o.into(),
            })
        }
    }
}

/// What a faulted API call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    /// Answer normally.
    None,
    /// 500 `SYSTEM_ERROR` without processing.
    Error,
    /// 429 `FREQUENCY_LIMITED` without processing.
    FrequencyLimited,
    /// Process, then hold the answer this many milliseconds.
    Timeout(u64),
}

/// All scopes' faults, plus the deterministic share counters.
#[derive(Debug, Default)]
pub struct FaultBook {
    scopes: RwLock<HashMap<FaultScope, Faults>>,
    error_calls: AtomicU64,
    timeout_calls: AtomicU64,
    /// Calls refused so far per API under a counted `api_faults` entry;
    /// reset whenever faults are set.
    endpoint_hits: Mutex<HashMap<String, u64>>,
}

impl FaultBook {
    /// Replaces one scope's faults; returns the stored value.
    pub fn set(&self, scope: FaultScope, faults: Faults) {
        self.endpoint_hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut map = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        if faults.is_empty() {
            map.remove(&scope);
        } else {
            map.insert(scope, faults);
        }
    }

    /// One scope's own faults.
    pub fn get(&self, scope: &FaultScope) -> Faults {
        self.scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned()
            .unwrap_or_default()
    }

    /// Removes every fault.
    pub fn clear(&self) -> Vec<FaultScope> {
        let mut map = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        map.drain().map(|(k, _)| k).collect()
    }

    /// Every scope that has faults.
    pub fn all(&self) -> Vec<(FaultScope, Faults)> {
        let mut v: Vec<_> = self
            .scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by_key(|(k, _)| k.key());
        v
    }

    /// The faults in force for a merchant and, optionally, an order.
    pub fn effective(&self, mchid: Option<&str>, order: Option<&str>) -> Faults {
        let mut f = self.get(&FaultScope::Global);
        if let Some(m) = mchid {
            f = f.overlay(&self.get(&FaultScope::Merchant { mchid: m.into() }));
        }
        if let Some(o) = order {
            f = f.overlay(&self.get(&FaultScope::Order {
                combine_out_trade_no: o.into(),
            }));
        }
        f
    }

    /// Decides the fate of one call to `endpoint` (a request-log label).
    pub fn api_call(&self, faults: &Faults, endpoint: &str) -> ApiFault {
        if let Some(f) = faults.api_faults.as_ref().and_then(|m| m.get(endpoint)) {
            let hit = match f.calls() {
                None => true,
                Some(n) => {
                    let mut hits = self.endpoint_hits.lock().unwrap_or_else(|e| e.into_inner());
                    let done = hits.entry(endpoint.to_string()).or_default();
                    *done += 1;
                    *done <= n
                }
            };
            if hit {
                return match f.code() {
                    FaultCode::FrequencyLimited => ApiFault::FrequencyLimited,
                    FaultCode::SystemError => ApiFault::Error,
                };
            }
        }
        if let Some(share) = faults.api_error_share.filter(|s| *s > 0.0) {
            if take_turn(&self.error_calls, share) {
                return ApiFault::Error;
            }
        }
        if let Some(share) = faults.api_timeout_share.filter(|s| *s > 0.0) {
            if take_turn(&self.timeout_calls, share) {
                return ApiFault::Timeout(faults.api_timeout_ms.unwrap_or(30_000));
            }
        }
        ApiFault::None
    }
}

/// Call n (1-based) is hit when ⌊n·share⌋ grows: exactly ⌊N·share⌋ of the
/// first N calls are hit, evenly spread.
fn take_turn(counter: &AtomicU64, share: f64) -> bool {
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    let hits = |k: u64| ((k as f64) * share + 1e-9).floor() as u64;
    hits(n) > hits(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shares_are_exact() {
        let c = AtomicU64::new(0);
        let hits: Vec<bool> = (0..8).map(|_| take_turn(&c, 0.25)).collect();
        assert_eq!(hits, [false, false, false, true, false, false, false, true]);
        let c = AtomicU64::new(0);
        assert!((0..5).all(|_| take_turn(&c, 1.0)));
    }

    #[test]
    fn scopes_layer_and_patches_clear() {
        let book = FaultBook::default();
        book.set(
            FaultScope::Global,
            Faults {
                drop_notifications: Some(true),
                notify_delay_ms: Some(5),
                ..Default::default()
            },
        );
        book.set(
            FaultScope::Order {
                combine_out_trade_no: "A".into(),
            },
            Faults {
                drop_notifications: Some(false),
                ..Default::default()
            },
        );
        let f = book.effective(Some("1"), Some("A"));
        assert_eq!(f.drop_notifications, Some(false));
        assert_eq!(f.notify_delay_ms, Some(5));
        let patched = f
            .patch(json!({"notify_delay_ms": null}).as_object().unwrap())
            .unwrap();
        assert_eq!(patched.notify_delay_ms, None);
        assert!(f.patch(json!({"drop": true}).as_object().unwrap()).is_err());
        assert!(f
            .patch(json!({"api_error_share": 2.0}).as_object().unwrap())
            .is_err());
    }

    #[test]
    fn api_faults_are_per_api_and_counted() {
        let book = FaultBook::default();
        let f = Faults::default()
            .patch(
                json!({"api_faults": {
                    "prepay": "FREQUENCY_LIMITED",
                    "query": {"code": "SYSTEM_ERROR", "calls": 2},
                }})
                .as_object()
                .unwrap(),
            )
            .unwrap();
        book.set(FaultScope::Global, f.clone());
        let f = book.effective(None, None);
        assert_eq!(book.api_call(&f, "close"), ApiFault::None);
        for _ in 0..3 {
            assert_eq!(book.api_call(&f, "prepay"), ApiFault::FrequencyLimited);
        }
        assert_eq!(book.api_call(&f, "query"), ApiFault::Error);
        assert_eq!(book.api_call(&f, "query"), ApiFault::Error);
        assert_eq!(book.api_call(&f, "query"), ApiFault::None);
        // Setting faults again restarts the count.
        book.set(FaultScope::Global, f.clone());
        assert_eq!(book.api_call(&f, "query"), ApiFault::Error);
        for bad in [
            json!({"pay": "SYSTEM_ERROR"}),
            json!({"query": "TIMEOUT"}),
            json!({"query": {"code": "SYSTEM_ERROR", "calls": 0}}),
        ] {
            assert!(
                Faults::default()
                    .patch(json!({ "api_faults": bad }).as_object().unwrap())
                    .is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn notify_targets_are_checked_and_layer() {
        let f = Faults::default();
        let set = f
            .patch(
                json!({"notify_targets": ["http://127.0.0.1:1/wxpay/notify", "https://b.test/n"]})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(set.notify_targets.as_ref().map(Vec::len), Some(2));
        for bad in [
            json!([]),
            json!(["ftp://x/y"]),
            json!(["not a url"]),
            json!("http://a/"),
        ] {
            assert!(
                f.patch(json!({ "notify_targets": bad }).as_object().unwrap())
                    .is_err(),
                "{bad} accepted"
            );
        }
        let cleared = set
            .patch(json!({"notify_targets": null}).as_object().unwrap())
            .unwrap();
        assert!(cleared.is_empty());
        let layered = set.overlay(&Faults {
            drop_notifications: Some(true),
            ..Default::default()
        });
        assert_eq!(layered.notify_targets, set.notify_targets);
    }
}
