// Entry point of the wxpay-combine-jsapi npm package (copied into pkg/ by
// `cargo xtask wasm`, which fills in SNIPPETS). The async functions load the
// WebAssembly module on first use, so no `init()` call is needed; the
// environment helpers are plain JavaScript and work without it.
import init, * as wasm from "./wxpay_combine_jsapi.js";
import {
  PayError,
  checkout as checkoutWith,
  isWeChat,
  weChatVersion,
  environment,
} from "./SNIPPETS/js/support.js";
export { PayError, isWeChat, weChatVersion, environment };

let loading;

const failed = (code, message, cause) => {
  throw new PayError(code, message, "", "", cause);
};

/**
 * Fetches and instantiates the WebAssembly module, once: from `source` (a
 * URL, a `Response` or a compiled `WebAssembly.Module`), by default from
 * next to this file. Rejects with a PayError `load_failed` or `unsupported`.
 */
export const load = (source) =>
  (loading ||= (async () => {
    if (typeof WebAssembly != "object") {
      failed("unsupported", "no WebAssembly here (off in iOS Lockdown Mode)");
    }
    let input = source || new URL("wxpay_combine_jsapi_bg.wasm", import.meta.url);
    let where = String(input.url || input);
    if (!(input instanceof WebAssembly.Module)) {
      try {
        if (!(input instanceof Response)) input = await fetch(input);
        where = input.url || where;
        if (!input.ok) throw Error("HTTP " + input.status);
        input = await input.arrayBuffer();
      } catch (e) {
        failed("load_failed", `cannot fetch the module from ${where} (${e.message}); give its URL to load(url)`, e);
      }
      if (new Uint32Array(input.slice(0, 4))[0] != 0x6d736100) {
        failed("load_failed", where + " is not a .wasm file");
      }
    }
    try {
      // The glue only instantiates (see trim_glue in xtask/src/wasm.rs).
      if (!(input instanceof WebAssembly.Module)) input = await WebAssembly.compile(input);
      await init({ module_or_path: input });
    } catch (e) {
      // Chromium: "Refused to compile or instantiate WebAssembly module
      // because 'unsafe-eval' is not an allowed source of script in the
      // following Content Security Policy directive"; Safari: "Refused to
      // create a WebAssembly object because 'unsafe-eval' or
      // 'wasm-unsafe-eval' is not an allowed source of script".
      if (/unsafe-eval|Content Security/i.test(e.message)) {
        failed("load_failed", `the page's CSP blocks WebAssembly: add 'wasm-unsafe-eval' to script-src (${e.message})`, e);
      }
      failed("unsupported", `cannot run the module (${e.message})`, e);
    }
  })().catch((e) => {
    loading = undefined;
    throw e;
  }));

// A wasm trap (out of memory: nothing else traps) is reported as one too.
const later =
  (f) =>
  (...args) =>
    load()
      .then(() => f(...args))
      .catch((e) => {
        if (e instanceof PayError) throw e;
        failed("unsupported", "wxpay-combine-jsapi stopped: " + e.message, e);
      });

export const ready = later(wasm.ready);
export const requestPayment = later(wasm.requestPayment);
export const checkout = later((options) => checkoutWith(options, wasm.requestPayment));
export default load;
