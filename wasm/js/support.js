// JavaScript half of wxpay-combine-jsapi: the error class, and the few lines
// of Promise plumbing that let the Rust side (src/task.rs) await JS without
// shipping a general-purpose futures runtime (see BENCHMARKS.md: size).

// Every rejection of this package is a PayError: `e instanceof PayError` and
// `e instanceof Error` both hold, and consoles print `PayError: <message>`.
export class PayError extends Error {
  constructor(code, message, errMsg, hint) {
    super(message);
    this.name = "PayError";
    this.code = code;
    this.errMsg = errMsg;
    if (hint) this.hint = hint;
  }
}

// The message comes in parts (joining them here saves string code in wasm).
export const payError = (code, a, b, c, d, errMsg, hint) =>
  new PayError(code, a + b + c + d + (hint ? " " + hint : ""), errMsg, hint);

// The wasm instance's exports; `wxpay_wake()` polls the Rust tasks.
let wasm;
export const setWake = (exports) => {
  wasm = exports;
};
const wake = () => wasm.wxpay_wake();

// A one-shot signal: `f` settles it ok, `e` settles it failed (first call
// wins), then `ok` and `v` tell how. Rust passes `f` / `e` as callbacks,
// listeners and `then` handlers, and reads the outcome when polled.
export function signal() {
  const s = {};
  const settle = (ok) => (v) => {
    if (s.ok === undefined) {
      s.ok = ok;
      s.v = v;
      wake();
    }
  };
  s.f = settle(true);
  s.e = settle(false);
  return s;
}

// A Promise with its settle functions, for the Promises Rust returns.
export function deferred() {
  const d = {};
  d.p = new Promise((f, e) => {
    d.f = f;
    d.e = e;
  });
  return d;
}

export const global = (key) => globalThis[key];

// One request to the merchant's server with its session cookie, uncached;
// resolves { r: Response, body } (body undefined when not JSON). Rust
// (src/lib.rs `request`) applies the timeout and reads status and body.
export const fetchJson = (url, method) =>
  fetch(url, {
    method,
    credentials: "include",
    cache: "no-store",
    headers: { Accept: "application/json" },
  }).then((r) =>
    r.json().then(
      (body) => ({ r, body }),
      () => ({ r }),
    ),
  );
