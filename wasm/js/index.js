// Entry point of the wxpay-combine-jsapi npm package (copied into pkg/ by
// `cargo xtask wasm`, which fills in SNIPPETS). The async functions load the
// WebAssembly module on first use, so no `init()` call is needed; the two
// synchronous helpers need `await load()` once before.
import init, * as wasm from "./wxpay_combine_jsapi.js";
export { PayError } from "./SNIPPETS/js/support.js";

let loading;
let loaded = false;

/** Fetches and instantiates the WebAssembly module (once). */
export const load = () =>
  (loading ||= init().then(
    () => {
      loaded = true;
    },
    (e) => {
      loading = undefined;
      throw e;
    },
  ));

const later =
  (f) =>
  (...args) =>
    load().then(() => f(...args));
const now =
  (f, name) =>
  (...args) => {
    if (!loaded) {
      throw Error("wxpay-combine-jsapi: `await load()` before calling " + name + "()");
    }
    return f(...args);
  };

export const ready = later(wasm.ready);
export const requestPayment = later(wasm.requestPayment);
export const checkout = later(wasm.checkout);
export const isWeChat = now(wasm.isWeChat, "isWeChat");
export const weChatVersion = now(wasm.weChatVersion, "weChatVersion");
export default load;
