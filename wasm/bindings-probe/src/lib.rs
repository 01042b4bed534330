//! A size probe: the browser calls the JSAPI package makes (read and check
//! the six parameters, copy them into a fresh object, read the user agent,
//! listen for `WeixinJSBridgeReady`, set and clear a timer, call
//! `WeixinJSBridge.invoke`), bound three ways, chosen by feature:
//! `own` — `extern "C"` declarations as in the package; `sys` — js-sys and
//! web-sys; `serde` — `sys` plus serde-wasm-bindgen reading the parameters
//! into a struct. Built with std (all three alike), so the absolute sizes
//! are above the package's `no_std` build; the differences are the point.
use wasm_bindgen::prelude::*;

const KEYS: [&str; 6] = [
    "appId",
    "timeStamp",
    "nonceStr",
    "package",
    "signType",
    "paySign",
];

#[cfg(feature = "own")]
mod b {
    use wasm_bindgen::prelude::*;
    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = Reflect, js_name = get, catch)]
        fn reflect_get(t: &JsValue, k: &str) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(js_namespace = Reflect, js_name = set, catch)]
        fn reflect_set(t: &JsValue, k: &str, v: &JsValue) -> Result<bool, JsValue>;
        #[wasm_bindgen(js_namespace = Object, js_name = keys, catch)]
        fn object_keys(o: &JsValue) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(js_namespace = Reflect, js_name = get)]
        fn get_index(a: &JsValue, i: u32) -> JsValue;
        #[wasm_bindgen(js_name = Object)]
        fn new_object() -> JsValue;
        type Callable;
        #[wasm_bindgen(method, js_name = call, catch)]
        fn call3(
            f: &Callable,
            this: &JsValue,
            a: &JsValue,
            b: &JsValue,
            c: &JsValue,
        ) -> Result<JsValue, JsValue>;
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(f: &JsValue, ms: f64) -> JsValue;
        #[wasm_bindgen(js_name = clearTimeout)]
        fn clear_timeout(id: &JsValue);
        #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
        static GLOBAL: JsValue;
    }
    pub fn get(t: &JsValue, k: &str) -> JsValue {
        reflect_get(t, k).unwrap_or(JsValue::UNDEFINED)
    }
    pub fn set(t: &JsValue, k: &str, v: &JsValue) {
        let _ = reflect_set(t, k, v);
    }
    pub fn keys(o: &JsValue) -> Vec<String> {
        let ks = object_keys(o).unwrap_or_default();
        (0..get(&ks, "length").as_f64().unwrap_or(0.0) as u32)
            .map(|i| get_index(&ks, i).as_string().unwrap_or_default())
            .collect()
    }
    pub fn obj() -> JsValue {
        new_object()
    }
    pub fn call(f: &JsValue, this: &JsValue, a: &JsValue, b: &JsValue) -> Result<JsValue, JsValue> {
        f.unchecked_ref::<Callable>()
            .call3(this, a, b, &JsValue::UNDEFINED)
    }
    pub fn global(k: &str) -> JsValue {
        GLOBAL.with(|g| get(g, k))
    }
    pub fn user_agent() -> String {
        get(&global("navigator"), "userAgent")
            .as_string()
            .unwrap_or_default()
    }
    pub fn listen(name: &str, f: &JsValue, on: bool) {
        let doc = global("document");
        let m = get(
            &doc,
            if on {
                "addEventListener"
            } else {
                "removeEventListener"
            },
        );
        let _ = call(&m, &doc, &JsValue::from_str(name), f);
    }
    pub fn timer(f: &JsValue, ms: f64) -> JsValue {
        set_timeout(f, ms)
    }
    pub fn untimer(id: &JsValue) {
        clear_timeout(id)
    }
}

#[cfg(feature = "sys")]
mod b {
    use wasm_bindgen::prelude::*;
    pub fn get(t: &JsValue, k: &str) -> JsValue {
        js_sys::Reflect::get(t, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
    }
    pub fn set(t: &JsValue, k: &str, v: &JsValue) {
        let _ = js_sys::Reflect::set(t, &JsValue::from_str(k), v);
    }
    // The serde variant reads the keys through serde instead.
    #[cfg_attr(feature = "serde", allow(dead_code))]
    pub fn keys(o: &JsValue) -> Vec<String> {
        match o.dyn_ref::<js_sys::Object>() {
            Some(o) => js_sys::Object::keys(o)
                .iter()
                .map(|k| k.as_string().unwrap_or_default())
                .collect(),
            None => Vec::new(),
        }
    }
    pub fn obj() -> JsValue {
        js_sys::Object::new().into()
    }
    pub fn call(f: &JsValue, this: &JsValue, a: &JsValue, b: &JsValue) -> Result<JsValue, JsValue> {
        f.unchecked_ref::<js_sys::Function>().call2(this, a, b)
    }
    pub fn global(k: &str) -> JsValue {
        get(&js_sys::global(), k)
    }
    pub fn user_agent() -> String {
        web_sys::window()
            .and_then(|w| w.navigator().user_agent().ok())
            .unwrap_or_default()
    }
    pub fn listen(name: &str, f: &JsValue, on: bool) {
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            let f = f.unchecked_ref::<js_sys::Function>();
            let _ = if on {
                doc.add_event_listener_with_callback(name, f)
            } else {
                doc.remove_event_listener_with_callback(name, f)
            };
        }
    }
    pub fn timer(f: &JsValue, ms: f64) -> JsValue {
        web_sys::window()
            .and_then(|w| {
                w.set_timeout_with_callback_and_timeout_and_arguments_0(
                    f.unchecked_ref(),
                    ms as i32,
                )
                .ok()
            })
            .map_or(JsValue::UNDEFINED, JsValue::from)
    }
    pub fn untimer(id: &JsValue) {
        if let Some(w) = web_sys::window() {
            w.clear_timeout_with_handle(id.as_f64().unwrap_or(0.0) as i32)
        }
    }
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    app_id: String,
    time_stamp: String,
    nonce_str: String,
    package: String,
    sign_type: String,
    pay_sign: String,
}

/// Reads and checks the parameters, copies them into a fresh object.
#[wasm_bindgen]
pub fn validate(params: JsValue) -> Result<JsValue, JsValue> {
    #[cfg(feature = "serde")]
    {
        let p: Params = serde_wasm_bindgen::from_value(params)
            .map_err(|e| JsValue::from_str(&e.to_string()))?;
        let out = b::obj();
        for (k, v) in KEYS.iter().zip([
            &p.app_id,
            &p.time_stamp,
            &p.nonce_str,
            &p.package,
            &p.sign_type,
            &p.pay_sign,
        ]) {
            if v.is_empty() {
                return Err(JsValue::from_str(k));
            }
            b::set(&out, k, &JsValue::from_str(v));
        }
        return Ok(out);
    }
    #[cfg(not(feature = "serde"))]
    {
        for k in b::keys(&params) {
            if !KEYS.contains(&k.as_str()) {
                return Err(JsValue::from_str(&k));
            }
        }
        let out = b::obj();
        for k in KEYS {
            let v = b::get(&params, k);
            match v.as_string() {
                Some(s) if !s.is_empty() => b::set(&out, k, &v),
                _ => return Err(JsValue::from_str(k)),
            }
        }
        Ok(out)
    }
}

/// Listens for the bridge, with a timer; invokes it.
#[wasm_bindgen]
pub fn invoke(args: JsValue, callback: JsValue, ms: f64) -> Result<JsValue, JsValue> {
    let wechat = b::user_agent()
        .to_ascii_lowercase()
        .contains("micromessenger");
    let bridge = b::global("WeixinJSBridge");
    if !bridge.is_object() {
        b::listen("WeixinJSBridgeReady", &callback, true);
        let id = b::timer(&callback, ms);
        if !wechat {
            b::untimer(&id);
            b::listen("WeixinJSBridgeReady", &callback, false);
        }
        return Ok(JsValue::from_bool(wechat));
    }
    b::call(
        &b::get(&bridge, "invoke"),
        &bridge,
        &JsValue::from_str("getBrandWCPayRequest"),
        &args,
    )?;
    Ok(JsValue::TRUE)
}
