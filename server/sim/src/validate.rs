//! Field rules of the combined JSAPI prepay and close bodies (reference §2,
//! §6), as the current merchant documentation states them: order numbers
//! 6–32 of `[0-9A-Za-z_-|*]`, `amount.currency` required, and a field the
//! direct-merchant API does not define is refused (`PARAM_ERROR` naming it),
//! as the real service does. notify_url may be up to 256 characters (the
//! older limit). Lengths count characters.

use super::clock;
use super::error::ApiError;
use serde_json::{Map, Value};

/// Largest sub-order amount: 10 million yuan, in fen.
pub const MAX_SUB_ORDER_FEN: i64 = 1_000_000_000;

/// A validated prepay request.
#[derive(Debug, Clone)]
pub struct PrepayRequest {
    pub combine_appid: String,
    pub combine_mchid: String,
    pub combine_out_trade_no: String,
    pub device_id: Option<String>,
    pub sub_orders: Vec<SubOrderRequest>,
    pub openid: String,
    pub time_expire: Option<i64>,
    pub notify_url: String,
}

/// One validated sub-order.
#[derive(Debug, Clone)]
pub struct SubOrderRequest {
    pub mchid: String,
    pub attach: String,
    pub total_amount: i64,
    pub currency: String,
    pub out_trade_no: String,
    pub description: String,
}

/// A validated close request.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    pub combine_appid: String,
    pub sub_orders: Vec<(String, String)>,
}

fn type_error(ptr: &str, want: &str) -> ApiError {
    ApiError::param(ptr, format!("字段类型错误，应为{want}"))
}

fn as_object<'a>(v: &'a Value, ptr: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| type_error(ptr, "object"))
}

fn required<'a>(o: &'a Map<String, Value>, key: &str, ptr: &str) -> Result<&'a Value, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Err(ApiError::param(&format!("{ptr}/{key}"), "必填字段缺失")),
        Some(v) => Ok(v),
    }
}

fn string_len(v: &Value, ptr: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let s = v.as_str().ok_or_else(|| type_error(ptr, "string"))?;
    let n = s.chars().count();
    if n < min || n > max {
        return Err(ApiError::param(
            ptr,
            format!("长度应在{min}到{max}之间，实际为{n}"),
        ));
    }
    Ok(s.to_string())
}

fn req_string(
    o: &Map<String, Value>,
    key: &str,
    ptr: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    string_len(required(o, key, ptr)?, &format!("{ptr}/{key}"), min, max)
}

fn opt_string(
    o: &Map<String, Value>,
    key: &str,
    ptr: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string_len(v, &format!("{ptr}/{key}"), 0, max).map(Some),
    }
}

fn trade_no(s: &str, ptr: &str) -> Result<(), ApiError> {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::param(ptr, "只能是数字、大小写字母或_-|*"))
    }
}

/// Refuses the first field of `o` not in `known` (the real service does not
/// ignore unknown fields: a misspelt optional field would otherwise pass
/// silently here and fail in production).
fn only_known(o: &Map<String, Value>, ptr: &str, known: &[&str]) -> Result<(), ApiError> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::param(&format!("{ptr}/{k}"), "未定义的字段")),
        None => Ok(()),
    }
}

const PREPAY_FIELDS: &[&str] = &[
    "combine_appid",
    "combine_mchid",
    "combine_out_trade_no",
    "scene_info",
    "sub_orders",
    "combine_payer_info",
    "time_start",
    "time_expire",
    "notify_url",
    "limit_pay",
];
const SUB_ORDER_FIELDS: &[&str] = &[
    "mchid",
    "attach",
    "amount",
    "out_trade_no",
    "description",
    "detail",
    "goods_tag",
    "settle_info",
];

fn check_time(o: &Map<String, Value>, key: &str, ptr: &str) -> Result<Option<i64>, ApiError> {
    match opt_string(o, key, ptr, 64)? {
        None => Ok(None),
        Some(s) => clock::parse_rfc3339(&s).map(Some).ok_or_else(|| {
            ApiError::param(
                &format!("{ptr}/{key}"),
                "时间格式应为RFC 3339，如2018-06-08T10:34:56+08:00",
            )
        }),
    }
}

/// Rejects characters outside the 1–3-byte UTF-8 range anywhere in the body
/// (the service does not take emoji and other 4-byte characters).
fn no_four_byte_chars(v: &Value, ptr: &str) -> Result<(), ApiError> {
    match v {
        Value::String(s) if s.chars().any(|c| c.len_utf8() > 3) => {
            Err(ApiError::param(ptr, "包含不支持的4字节UTF-8字符"))
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| no_four_byte_chars(x, &format!("{ptr}/{i}"))),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| no_four_byte_chars(x, &format!("{ptr}/{k}"))),
        _ => Ok(()),
    }
}

fn notify_url(o: &Map<String, Value>) -> Result<String, ApiError> {
    let s = req_string(o, "notify_url", "", 1, 256)?;
    let ptr = "/notify_url";
    let url = url::Url::parse(&s).map_err(|_| ApiError::param(ptr, "不是合法的URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::param(ptr, "必须是http或https的绝对地址"));
    }
    if url.query().is_some() || s.contains('?') {
        return Err(ApiError::param(ptr, "通知地址不允许携带查询串"));
    }
    if url.fragment().is_some() {
        return Err(ApiError::param(ptr, "通知地址不允许携带#片段"));
    }
    Ok(s)
}

/// Parses and checks a prepay body. `now` bounds `time_expire`.
pub fn prepay(body: &Value, now: i64) -> Result<PrepayRequest, ApiError> {
    no_four_byte_chars(body, "")?;
    let o = as_object(body, "")?;
    only_known(o, "", PREPAY_FIELDS)?;
    let combine_appid = req_string(o, "combine_appid", "", 1, 32)?;
    let combine_mchid = req_string(o, "combine_mchid", "", 1, 32)?;
    let combine_out_trade_no = req_string(o, "combine_out_trade_no", "", 6, 32)?;
    trade_no(&combine_out_trade_no, "/combine_out_trade_no")?;

    let mut device_id = None;
    if let Some(scene) = o.get("scene_info").filter(|v| !v.is_null()) {
        let s = as_object(scene, "/scene_info")?;
        only_known(s, "/scene_info", &["device_id", "payer_client_ip"])?;
        let ip = req_string(s, "payer_client_ip", "/scene_info", 1, 45)?;
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(ApiError::param(
                "/scene_info/payer_client_ip",
                "不是合法的IPv4或IPv6地址",
            ));
        }
        device_id = opt_string(s, "device_id", "/scene_info", 16)?;
    }

    let subs = required(o, "sub_orders", "")?
        .as_array()
        .ok_or_else(|| type_error("/sub_orders", "array"))?;
    if !(2..=10).contains(&subs.len()) {
        return Err(ApiError::param(
            "/sub_orders",
            format!("子单数量应为2到10笔，实际为{}笔", subs.len()),
        ));
    }
    let mut sub_orders = Vec::with_capacity(subs.len());
    for (i, sub) in subs.iter().enumerate() {
        let ptr = format!("/sub_orders/{i}");
        let s = as_object(sub, &ptr)?;
        only_known(s, &ptr, SUB_ORDER_FIELDS)?;
        let mchid = req_string(s, "mchid", &ptr, 1, 32)?;
        let attach = req_string(s, "attach", &ptr, 1, 128)?;
        let amount_ptr = format!("{ptr}/amount");
        let amount = as_object(required(s, "amount", &ptr)?, &amount_ptr)?;
        only_known(amount, &amount_ptr, &["total_amount", "currency"])?;
        let total = required(amount, "total_amount", &amount_ptr)?;
        let total_amount = total
            .as_i64()
            .filter(|_| total.is_i64() || total.is_u64())
            .ok_or_else(|| type_error(&format!("{amount_ptr}/total_amount"), "integer (fen)"))?;
        if !(1..=MAX_SUB_ORDER_FEN).contains(&total_amount) {
            return Err(ApiError::param(
                &format!("{amount_ptr}/total_amount"),
                format!("金额应在1到{MAX_SUB_ORDER_FEN}分之间"),
            ));
        }
        let currency = req_string(amount, "currency", &amount_ptr, 1, 8)?;
        if currency != "CNY" {
            return Err(ApiError::param(
                &format!("{amount_ptr}/currency"),
                "仅支持CNY",
            ));
        }
        let out_trade_no = req_string(s, "out_trade_no", &ptr, 6, 32)?;
        trade_no(&out_trade_no, &format!("{ptr}/out_trade_no"))?;
        let description = req_string(s, "description", &ptr, 1, 127)?;
        opt_string(s, "detail", &ptr, 6000)?;
        opt_string(s, "goods_tag", &ptr, 32)?;
        if let Some(settle) = s.get("settle_info").filter(|v| !v.is_null()) {
            let sp = format!("{ptr}/settle_info");
            let so = as_object(settle, &sp)?;
            only_known(so, &sp, &["profit_sharing", "subsidy_amount"])?;
            if let Some(v) = so.get("profit_sharing").filter(|v| !v.is_null()) {
                v.as_bool()
                    .ok_or_else(|| type_error(&format!("{sp}/profit_sharing"), "boolean"))?;
            }
            if let Some(v) = so.get("subsidy_amount").filter(|v| !v.is_null()) {
                v.as_i64()
                    .filter(|n| *n >= 0 && v.is_i64())
                    .ok_or_else(|| {
                        type_error(&format!("{sp}/subsidy_amount"), "non-negative integer")
                    })?;
            }
        }
        if sub_orders
            .iter()
            .any(|x: &SubOrderRequest| x.mchid == mchid && x.out_trade_no == out_trade_no)
        {
            return Err(ApiError::param(
                &format!("{ptr}/out_trade_no"),
                "子单商户订单号重复",
            ));
        }
        sub_orders.push(SubOrderRequest {
            mchid,
            attach,
            total_amount,
            currency,
            out_trade_no,
            description,
        });
    }

    let payer = as_object(
        required(o, "combine_payer_info", "")?,
        "/combine_payer_info",
    )?;
    only_known(payer, "/combine_payer_info", &["openid"])?;
    let openid = req_string(payer, "openid", "/combine_payer_info", 1, 128)?;

    check_time(o, "time_start", "")?;
    let time_expire = check_time(o, "time_expire", "")?;
    if let Some(t) = time_expire {
        if t <= now {
            return Err(ApiError::param(
                "/time_expire",
                "订单失效时间不能早于当前时间",
            ));
        }
    }
    let notify_url = notify_url(o)?;
    if let Some(lp) = o.get("limit_pay").filter(|v| !v.is_null()) {
        let arr = lp
            .as_array()
            .ok_or_else(|| type_error("/limit_pay", "array"))?;
        for (i, v) in arr.iter().enumerate() {
            if !matches!(v.as_str(), Some("no_balance" | "no_debit" | "balance_only")) {
                return Err(ApiError::param(
                    &format!("/limit_pay/{i}"),
                    "取值应为no_balance、no_debit或balance_only",
                ));
            }
        }
    }
    Ok(PrepayRequest {
        combine_appid,
        combine_mchid,
        combine_out_trade_no,
        device_id,
        sub_orders,
        openid,
        time_expire,
        notify_url,
    })
}

/// Parses and checks a close body.
pub fn close(body: &Value) -> Result<CloseRequest, ApiError> {
    no_four_byte_chars(body, "")?;
    let o = as_object(body, "")?;
    only_known(o, "", &["combine_appid", "sub_orders"])?;
    let combine_appid = req_string(o, "combine_appid", "", 1, 32)?;
    let subs = required(o, "sub_orders", "")?
        .as_array()
        .ok_or_else(|| type_error("/sub_orders", "array"))?;
    if subs.is_empty() || subs.len() > 50 {
        return Err(ApiError::param("/sub_orders", "子单数量不合法"));
    }
    let mut sub_orders = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let ptr = format!("/sub_orders/{i}");
        let s = as_object(sub, &ptr)?;
        only_known(s, &ptr, &["mchid", "out_trade_no"])?;
        let mchid = req_string(s, "mchid", &ptr, 1, 32)?;
        let out_trade_no = req_string(s, "out_trade_no", &ptr, 1, 32)?;
        sub_orders.push((mchid, out_trade_no));
    }
    Ok(CloseRequest {
        combine_appid,
        sub_orders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({
            "combine_appid": "wx0000000000000001",
            "combine_mchid": "1900000001",
            "combine_out_trade_no": "C20240101000001",
            "sub_orders": [
                {"mchid": "1900000002", "attach": "a", "amount": {"total_amount": 100, "currency": "CNY"},
                 "out_trade_no": "S2024000001", "description": "apple"},
                {"mchid": "1900000003", "attach": "b", "amount": {"total_amount": 1, "currency": "CNY"},
                 "out_trade_no": "S2024000002", "description": "pear"}
            ],
            "combine_payer_info": {"openid": "oUser"},
            "notify_url": "http://127.0.0.1:9/notify"
        })
    }

    #[test]
    fn accepts_a_valid_body() {
        let r = prepay(&body(), 0).unwrap();
        assert_eq!(r.sub_orders.len(), 2);
        assert_eq!(r.sub_orders[1].currency, "CNY");
    }

    #[test]
    fn rejects_floats_and_emoji() {
        let mut b = body();
        b["sub_orders"][0]["amount"]["total_amount"] = json!(1.5);
        assert_eq!(prepay(&b, 0).unwrap_err().code, "PARAM_ERROR");
        let mut b = body();
        b["sub_orders"][0]["description"] = json!("🍎");
        let e = prepay(&b, 0).unwrap_err();
        assert_eq!(e.detail.unwrap()["field"], "/sub_orders/0/description");
    }

    /// The field a refusal names, and its shape.
    fn refused_field(b: &Value) -> (String, Value) {
        let e = prepay(b, 0).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "PARAM_ERROR"));
        let d = e.detail.unwrap();
        assert_eq!(d["location"], "body");
        (d["field"].as_str().unwrap().to_string(), d)
    }

    #[test]
    fn refuses_unknown_fields_naming_them() {
        for (path, ptr) in [
            (vec![], "/payer_client_ip"),
            (vec!["sub_orders", "1"], "/sub_orders/1/sub_mchid"),
            (
                vec!["sub_orders", "0", "amount"],
                "/sub_orders/0/amount/payer_total",
            ),
            (vec!["combine_payer_info"], "/combine_payer_info/sub_openid"),
        ] {
            let mut b = body();
            let mut at = &mut b;
            for k in &path {
                at = match k.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*k],
                };
            }
            let key = ptr.rsplit('/').next().unwrap();
            at[key] = json!("x");
            assert_eq!(refused_field(&b).0, ptr);
        }
        let mut c =
            json!({"combine_appid": "wx1", "sub_orders": [{"mchid": "1", "out_trade_no": "S1"}]});
        assert!(close(&c).is_ok());
        c["sub_orders"][0]["amount"] = json!(1);
        let e = close(&c).unwrap_err();
        assert_eq!(e.detail.unwrap()["field"], "/sub_orders/0/amount");
    }

    #[test]
    fn currency_is_required_and_order_numbers_follow_the_current_rules() {
        let mut b = body();
        b["sub_orders"][1]["amount"]
            .as_object_mut()
            .unwrap()
            .remove("currency");
        assert_eq!(refused_field(&b).0, "/sub_orders/1/amount/currency");
        for bad in ["C1234", "C2024@0001", &"C".repeat(33)] {
            let mut b = body();
            b["combine_out_trade_no"] = json!(bad);
            assert_eq!(refused_field(&b).0, "/combine_out_trade_no", "{bad}");
        }
        for good in ["C12345", "a_-|*Z", &"C".repeat(32)] {
            let mut b = body();
            b["combine_out_trade_no"] = json!(good);
            assert!(prepay(&b, 0).is_ok(), "{good}");
        }
        let mut b = body();
        b["sub_orders"][0]["out_trade_no"] = json!("S2024@001");
        assert_eq!(refused_field(&b).0, "/sub_orders/0/out_trade_no");
    }
}
