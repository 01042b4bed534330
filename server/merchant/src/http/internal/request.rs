//! The request bodies of the internal API and their rules.
//!
//! A body is deserialised into the `*Body` structs below (unknown fields
//! refused, every error naming its JSON path, e.g. `sub_orders[1].amount`),
//! then checked field by field into a [`NewOrder`]. The structs keep every
//! field optional so that a missing field breaks its rule after parsing,
//! with a message saying what the field must be, rather than as serde's
//! "missing field" on the enclosing object. A value of the wrong JSON type
//! gets the same message as a wrong value of the right type.

use super::{invalid, InternalError};
use crate::catalog::{is_service_text, MAX_SUB_ORDER_FEN};
use crate::combine::{CombineOrder, SubOrder};
use crate::http::error::AppError;
use crate::http::orders::new_order;
use crate::http::AppState;
use axum::http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_path_to_error::{Path, Segment};
use sha2::{Digest, Sha256};

/// The idempotency header of `POST /internal/combine-orders`.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Longest `attach` (WeChat Pay: string(128)).
pub const MAX_ATTACH_BYTES: usize = 128;

/// Longest `description` (WeChat Pay: string(127)).
pub const MAX_DESCRIPTION_BYTES: usize = 127;

/// A `POST /internal/combine-orders` body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    combine_out_trade_no: Option<String>,
    payer_openid: Option<String>,
    pay_link: Option<bool>,
    /// `null` is a wrong type here, not an absent field.
    #[serde(default, deserialize_with = "not_null")]
    sub_orders: Option<Vec<SubOrderBody>>,
}

/// One of its `sub_orders` as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubOrderBody {
    mchid: Option<String>,
    out_trade_no: Option<String>,
    description: Option<String>,
    amount: Option<i64>,
    attach: Option<String>,
}

/// `Some` of a present value, refusing `null` (which `Option` would take
/// for absent).
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

// What each field must be: the message of every error about it.
const TRADE_NO_RULE: &str = "6–32 characters of [0-9A-Za-z_-|*], or omit it to have one generated";
const PAY_LINK_RULE: &str = "must be true or false";
const PAYER_OPENID_RULE: &str =
    "1–128 characters of [0-9A-Za-z_-] (the payer's openid under the configured appid)";
const SUB_ORDERS_RULE: &str = "must be an array of 2–10 sub-orders";
const SUB_ORDER_RULE: &str = "must be an object";
const MCHID_RULE: &str = "the sub-merchant's mchid (1–32 letters or digits)";

fn description_rule() -> String {
    format!("1–{MAX_DESCRIPTION_BYTES} bytes of text without emoji or control characters")
}

fn amount_rule() -> String {
    format!("an integer number of fen, 1–{MAX_SUB_ORDER_FEN}")
}

fn attach_rule() -> String {
    format!("1–{MAX_ATTACH_BYTES} bytes of text without emoji or control characters, or omit it")
}

/// The rule of the body's field at `path`; `None` where the body has no
/// such field. Lists the same fields as [`OrderBody`] and [`SubOrderBody`]
/// (the `every_field_has_a_rule` test holds them together).
fn rule_at(path: &Path) -> Option<String> {
    let segments: Vec<&Segment> = path.iter().collect();
    let rule = match segments[..] {
        [Segment::Map { key }] => match key.as_str() {
            "combine_out_trade_no" => TRADE_NO_RULE,
            "payer_openid" => PAYER_OPENID_RULE,
            "pay_link" => PAY_LINK_RULE,
            "sub_orders" => SUB_ORDERS_RULE,
            _ => return None,
        },
        [Segment::Map { key: subs }, Segment::Seq { .. }] if subs == "sub_orders" => SUB_ORDER_RULE,
        [Segment::Map { key: subs }, Segment::Seq { .. }, Segment::Map { key }]
            if subs == "sub_orders" =>
        {
            match key.as_str() {
                "mchid" => MCHID_RULE,
                "out_trade_no" => TRADE_NO_RULE,
                "description" => return Some(description_rule()),
                "amount" => return Some(amount_rule()),
                "attach" => return Some(attach_rule()),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(rule.to_string())
}

/// A deserialisation error as the API reports it: at its path, with the
/// rule of the field there.
fn deserialisation_error(e: serde_path_to_error::Error<serde_json::Error>) -> InternalError {
    let path = e.path();
    let field = match path.iter().next() {
        None => "body".to_string(),
        Some(_) => path.to_string(),
    };
    let message = match (rule_at(path), path.iter().next_back()) {
        (Some(rule), _) => rule,
        // deny_unknown_fields: a key without a rule is one the body may not
        // have.
        (None, Some(Segment::Map { .. })) => "unknown field".to_string(),
        (None, _) => e.into_inner().to_string(),
    };
    invalid(field, message)
}

/// A validated `POST /internal/combine-orders` body.
///
/// Its JSON serialisation is the idempotency digest's input, stored with
/// every key: changing its fields (or their order) makes repeats of requests
/// made before the change look like other bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    /// The merchant's order number, or `None` to have one generated.
    pub combine_out_trade_no: Option<String>,
    /// The payer's openid (`None` with a pay link).
    pub payer_openid: Option<String>,
    /// Whether a pay link is requested instead of a payer.
    pub pay_link: bool,
    /// The sub-orders, 2–10.
    pub sub_orders: Vec<NewSubOrder>,
}

/// A validated sub-order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSubOrder {
    /// Sub-merchant mchid.
    pub mchid: String,
    /// The merchant's sub-order number, or `None` to have `{no}-{i}` used.
    pub out_trade_no: Option<String>,
    /// 商品描述.
    pub description: String,
    /// Amount in fen.
    pub amount: i64,
    /// Merchant data returned by notifications, queries and bills (1–128
    /// bytes; `None`: the combined order number, which links the sub-order
    /// to its order in bills).
    pub attach: Option<String>,
}

impl NewOrder {
    /// SHA-256 (hex) of the request's meaning (the idempotency digest).
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a NewOrder serializes");
        hex::encode(Sha256::digest(bytes))
    }

    /// The order it makes under `no` for `openid` at `now`.
    pub(super) fn to_order(&self, st: &AppState, no: &str, openid: &str, now: i64) -> CombineOrder {
        let sub_orders = self
            .sub_orders
            .iter()
            .enumerate()
            .map(|(i, s)| {
                SubOrder::unpaid(
                    s.mchid.clone(),
                    s.out_trade_no
                        .clone()
                        .unwrap_or_else(|| format!("{no}-{}", i + 1)),
                    s.description.clone(),
                    s.attach.clone().unwrap_or_else(|| no.to_string()),
                    s.amount,
                )
            })
            .collect();
        new_order(st, no, openid, sub_orders, now)
    }

    /// Whether the stored order `o` is what this request asks for under
    /// `no` (a repeat, not another order using the same number).
    pub(super) fn matches(&self, o: &CombineOrder, no: &str) -> bool {
        o.sub_orders.len() == self.sub_orders.len()
            && (self.payer_openid.is_none()
                || self.payer_openid.as_deref() == Some(&o.payer_openid))
            && o.sub_orders
                .iter()
                .zip(&self.sub_orders)
                .enumerate()
                .all(|(i, (s, r))| {
                    s.mchid == r.mchid
                        && s.description == r.description
                        && s.amount == r.amount
                        && s.attach == r.attach.as_deref().unwrap_or(no)
                        && match &r.out_trade_no {
                            Some(n) => *n == s.out_trade_no,
                            None => s.out_trade_no == format!("{no}-{}", i + 1),
                        }
                })
    }
}

fn is_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

fn is_openid(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_mchid(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Validates a request body, naming the first wrong field.
///
/// The body is read as JSON before it is read as an order, so that a
/// syntax error anywhere is reported as one (field `body`) rather than as
/// whichever field came before it, and so that a non-object body is
/// "must be a JSON object". Fields are then taken in key order.
pub fn parse_new_order(body: &[u8]) -> Result<NewOrder, InternalError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid("body", format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("body", "must be a JSON object"));
    }
    let body: OrderBody = serde_path_to_error::deserialize(value).map_err(deserialisation_error)?;

    let combine_out_trade_no = match body.combine_out_trade_no {
        Some(n) if !is_trade_no(&n) => return Err(invalid("combine_out_trade_no", TRADE_NO_RULE)),
        n => n,
    };
    let pay_link = body.pay_link.unwrap_or(false);
    let payer_openid = match body.payer_openid {
        Some(p) if !is_openid(&p) => return Err(invalid("payer_openid", PAYER_OPENID_RULE)),
        p => p,
    };
    match (&payer_openid, pay_link) {
        (Some(_), true) => {
            return Err(invalid(
                "pay_link",
                "give either payer_openid or pay_link: true, not both",
            ))
        }
        (None, false) => return Err(invalid("payer_openid", "required unless pay_link is true")),
        _ => {}
    }
    let Some(subs) = body.sub_orders else {
        return Err(invalid("sub_orders", "required: 2–10 sub-orders"));
    };
    if !(2..=10).contains(&subs.len()) {
        return Err(invalid(
            "sub_orders",
            format!("a combined order has 2–10 sub-orders, got {}", subs.len()),
        ));
    }
    let mut sub_orders: Vec<NewSubOrder> = Vec::with_capacity(subs.len());
    for (i, s) in subs.into_iter().enumerate() {
        let at = |f: &str| format!("sub_orders[{i}].{f}");
        let mchid = match s.mchid {
            Some(m) if is_mchid(&m) => m,
            _ => return Err(invalid(at("mchid"), MCHID_RULE)),
        };
        let out_trade_no = match s.out_trade_no {
            Some(n) if !is_trade_no(&n) => return Err(invalid(at("out_trade_no"), TRADE_NO_RULE)),
            n => n,
        };
        let description = match s.description {
            Some(d)
                if !d.trim().is_empty()
                    && d.len() <= MAX_DESCRIPTION_BYTES
                    && is_service_text(&d) =>
            {
                d
            }
            _ => return Err(invalid(at("description"), description_rule())),
        };
        let amount = match s.amount {
            Some(a) if (1..=MAX_SUB_ORDER_FEN).contains(&a) => a,
            _ => return Err(invalid(at("amount"), amount_rule())),
        };
        let attach = match s.attach {
            Some(a) if a.is_empty() || a.len() > MAX_ATTACH_BYTES || !is_service_text(&a) => {
                return Err(invalid(at("attach"), attach_rule()))
            }
            a => a,
        };
        if let Some(n) = &out_trade_no {
            if sub_orders
                .iter()
                .any(|p| p.mchid == mchid && p.out_trade_no.as_ref() == Some(n))
            {
                return Err(invalid(
                    at("out_trade_no"),
                    "listed twice for the same mchid",
                ));
            }
        }
        sub_orders.push(NewSubOrder {
            mchid,
            out_trade_no,
            description,
            amount,
            attach,
        });
    }
    // A default sub-order number is `{combine_out_trade_no}-{i+1}`, and
    // WeChat Pay refuses one over 32 characters: say so now, not at prepay.
    if let Some(no) = &combine_out_trade_no {
        if let Some(i) = sub_orders.iter().enumerate().rposition(|(i, s)| {
            s.out_trade_no.is_none() && no.len() + 1 + (i + 1).to_string().len() > 32
        }) {
            let suffix = format!("-{}", i + 1);
            return Err(invalid(
                "combine_out_trade_no",
                format!(
                    "at most {} characters when sub_orders[{i}].out_trade_no is not given (its default is combine_out_trade_no + \"{suffix}\", and a sub-order number has at most 32)",
                    32 - suffix.len()
                ),
            ));
        }
    }
    Ok(NewOrder {
        combine_out_trade_no,
        payer_openid,
        pay_link,
        sub_orders,
    })
}

/// The `Idempotency-Key` header of `POST /internal/combine-orders`.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<String, InternalError> {
    let bad = || {
        invalid(
            "Idempotency-Key",
            "required header: 1–64 characters of [A-Za-z0-9._:-], unique per order you create",
        )
    };
    let v = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    if (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(v.to_string())
    } else {
        Err(bad())
    }
}

/// The token of a `POST /api/pay-links/claim` body `{"token": "…"}`. That
/// route is the H5 page's, answering in the public API's terms; other
/// fields are ignored there, as they always were.
pub(super) fn claim_token(body: &Value) -> Result<&str, AppError> {
    body.get("token")
        .and_then(Value::as_str)
        .filter(|t| (16..=128).contains(&t.len()))
        .ok_or_else(|| AppError::InvalidRequest("token: the pay link's token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn subs() -> Value {
        json!([
            {"mchid": "1900000109", "description": "A", "amount": 100},
            {"mchid": "1900000110", "description": "B", "amount": 200, "attach": "x"},
        ])
    }

    /// The field and message of the error about `v`.
    fn error(v: &[u8]) -> (String, String) {
        match parse_new_order(v) {
            Err(InternalError::Invalid { field, message }) => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let field = |v: Value| match parse_new_order(&body(v)) {
            Err(InternalError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100},
                {"mchid": "1900000110", "description": "B", "amount": 0},
            ]})),
            "sub_orders[1].amount"
        );
        assert_eq!(field(json!({"sub_orders": subs()})), "payer_openid");
        assert_eq!(
            field(json!({"payer_openid": "o1", "pay_link": true, "sub_orders": subs()})),
            "pay_link"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [subs()[0]]})),
            "sub_orders"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": subs(), "extra": 1})),
            "extra"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100, "price": 1},
                {"mchid": "1900000110", "description": "B", "amount": 1},
            ]})),
            "sub_orders[0].price"
        );
        assert_eq!(
            field(json!({"payer_openid": "o1", "sub_orders": [
                {"mchid": "1900000109", "description": "A", "amount": 100},
                {"mchid": "1900000110", "description": "😀", "amount": 1},
            ]})),
            "sub_orders[1].description"
        );
    }

    #[test]
    fn digest_ignores_key_order_and_spacing() {
        let a = parse_new_order(br#"{"payer_openid":"o1","sub_orders":[{"mchid":"1","description":"A","amount":1},{"mchid":"2","description":"B","amount":2}]}"#).unwrap();
        let b = parse_new_order(br#"{ "sub_orders": [ {"amount":1,"description":"A","mchid":"1"}, {"description":"B","mchid":"2","amount":2} ], "payer_openid": "o1" }"#).unwrap();
        let c = parse_new_order(br#"{"payer_openid":"o1","sub_orders":[{"mchid":"1","description":"A","amount":1},{"mchid":"2","description":"B","amount":3}]}"#).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }

    /// Stored idempotency keys hold digests of this serialisation: it may
    /// not change.
    #[test]
    fn digest_input_is_stable() {
        let o = parse_new_order(&body(json!({"pay_link": true, "sub_orders": subs()}))).unwrap();
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"combine_out_trade_no":null,"payer_openid":null,"pay_link":true,"sub_orders":[{"mchid":"1900000109","out_trade_no":null,"description":"A","amount":100,"attach":null},{"mchid":"1900000110","out_trade_no":null,"description":"B","amount":200,"attach":"x"}]}"#
        );
    }

    #[test]
    fn a_wrong_type_breaks_the_fields_rule() {
        let trade_no = TRADE_NO_RULE.to_string();
        let top = |k: &str, v: Value| {
            let mut b = json!({"payer_openid": "o1", "sub_orders": subs()});
            b[k] = v;
            error(&body(b))
        };
        assert_eq!(
            top("combine_out_trade_no", json!(123456)),
            ("combine_out_trade_no".into(), trade_no.clone())
        );
        assert_eq!(
            top("payer_openid", json!(["o1"])),
            ("payer_openid".into(), PAYER_OPENID_RULE.into())
        );
        assert_eq!(
            top("pay_link", json!("yes")),
            ("pay_link".into(), PAY_LINK_RULE.into())
        );
        assert_eq!(
            top("sub_orders", json!({})),
            ("sub_orders".into(), SUB_ORDERS_RULE.into())
        );
        assert_eq!(
            top("sub_orders", Value::Null),
            ("sub_orders".into(), SUB_ORDERS_RULE.into())
        );
        assert_eq!(
            top("sub_orders", json!([subs()[0], 7])),
            ("sub_orders[1]".into(), SUB_ORDER_RULE.into())
        );
        let sub = |k: &str, v: Value| {
            let mut s = subs();
            s[1][k] = v;
            error(&body(json!({"payer_openid": "o1", "sub_orders": s})))
        };
        let at = |k: &str| format!("sub_orders[1].{k}");
        assert_eq!(
            sub("mchid", json!(1900000110)),
            (at("mchid"), MCHID_RULE.into())
        );
        assert_eq!(
            sub("out_trade_no", json!(true)),
            (at("out_trade_no"), trade_no)
        );
        assert_eq!(
            sub("description", json!({})),
            (at("description"), description_rule())
        );
        assert_eq!(sub("amount", json!(1.5)), (at("amount"), amount_rule()));
        assert_eq!(sub("amount", json!("100")), (at("amount"), amount_rule()));
        assert_eq!(
            sub("amount", json!(u64::MAX)),
            (at("amount"), amount_rule())
        );
        assert_eq!(sub("attach", json!(0)), (at("attach"), attach_rule()));
    }

    #[test]
    fn missing_and_null_fields() {
        let mut s = subs();
        s[0].as_object_mut().unwrap().remove("mchid");
        assert_eq!(
            error(&body(json!({"payer_openid": "o1", "sub_orders": s}))),
            ("sub_orders[0].mchid".into(), MCHID_RULE.into())
        );
        let mut s = subs();
        s[0]["amount"] = Value::Null;
        assert_eq!(
            error(&body(json!({"payer_openid": "o1", "sub_orders": s}))),
            ("sub_orders[0].amount".into(), amount_rule())
        );
        assert_eq!(
            error(&body(json!({"payer_openid": "o1"}))),
            ("sub_orders".into(), "required: 2–10 sub-orders".into())
        );
        // null optional fields are absent ones.
        let mut s = subs();
        s[0]["attach"] = Value::Null;
        s[0]["out_trade_no"] = Value::Null;
        let o = parse_new_order(&body(json!({
            "payer_openid": "o1", "combine_out_trade_no": null, "pay_link": null, "sub_orders": s,
        })))
        .unwrap();
        assert_eq!(
            (o.pay_link, o.sub_orders[0].attach.as_deref()),
            (false, None)
        );
    }

    #[test]
    fn the_body_must_be_a_json_object() {
        let (field, message) = error(br#"{"payer_openid": "o1", "pay_link": 5"#);
        assert_eq!(field, "body");
        assert!(message.starts_with("not JSON: "), "{message}");
        assert_eq!(
            error(b"[1, 2]"),
            ("body".into(), "must be a JSON object".into())
        );
        assert_eq!(
            error(br#"{"payer_openid": "o1", "sub_orders": [], "Extra": 1}"#),
            ("Extra".into(), "unknown field".into())
        );
    }

    #[test]
    fn values_out_of_range() {
        let with = |k: &str, v: Value| {
            let mut s = subs();
            s[0][k] = v;
            error(&body(json!({"payer_openid": "o1", "sub_orders": s}))).0
        };
        assert_eq!(
            with("amount", json!(MAX_SUB_ORDER_FEN + 1)),
            "sub_orders[0].amount"
        );
        assert_eq!(with("description", json!(" ")), "sub_orders[0].description");
        assert_eq!(
            with("description", json!("a".repeat(MAX_DESCRIPTION_BYTES + 1))),
            "sub_orders[0].description"
        );
        assert_eq!(with("attach", json!("")), "sub_orders[0].attach");
        assert_eq!(
            with("attach", json!("a".repeat(MAX_ATTACH_BYTES + 1))),
            "sub_orders[0].attach"
        );
        assert_eq!(with("mchid", json!("a".repeat(33))), "sub_orders[0].mchid");
        assert_eq!(
            with("out_trade_no", json!("short")),
            "sub_orders[0].out_trade_no"
        );
        let too_many: Vec<Value> = (0..11).map(|_| subs()[0].clone()).collect();
        assert_eq!(
            error(&body(json!({"payer_openid": "o1", "sub_orders": too_many}))),
            (
                "sub_orders".into(),
                "a combined order has 2–10 sub-orders, got 11".into()
            )
        );
        assert_eq!(
            error(&body(json!({"payer_openid": "o 1", "sub_orders": subs()}))).0,
            "payer_openid"
        );
    }

    #[test]
    fn a_sub_order_number_is_listed_once_per_mchid() {
        let s = json!([
            {"mchid": "1900000109", "out_trade_no": "S-000001", "description": "A", "amount": 1},
            {"mchid": "1900000110", "out_trade_no": "S-000001", "description": "B", "amount": 1},
            {"mchid": "1900000109", "out_trade_no": "S-000001", "description": "C", "amount": 1},
        ]);
        assert_eq!(
            error(&body(json!({"pay_link": true, "sub_orders": s}))),
            (
                "sub_orders[2].out_trade_no".into(),
                "listed twice for the same mchid".into()
            )
        );
    }
}
