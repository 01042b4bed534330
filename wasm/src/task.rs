//! A minimal executor for this crate's few concurrent tasks.
//!
//! Every future here waits only on [`Signal`]s (JS callbacks, promise
//! settlements, timers). Any signal settling calls back into [`run`], which
//! polls every pending task: with a handful of tasks that is cheaper, in code
//! size, than per-task wakers and a microtask queue (`js_sys::futures` costs
//! several KB of the package's size budget). Tasks complete by settling the
//! Promise that [`spawn`] returned.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use wasm_bindgen::prelude::*;

use crate::{aborted, call, get, Local, U};

#[wasm_bindgen(module = "/js/support.js")]
extern "C" {
    #[wasm_bindgen(js_name = setWake)]
    fn set_wake(f: &JsValue);
    fn signal() -> JsValue;
    /// A signal settled once the `AbortSignal` (or `undefined`) fires.
    #[wasm_bindgen(js_name = aborted)]
    fn abort_signal(signal: &JsValue) -> JsValue;
    fn deferred() -> JsValue;
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

pub type Outcome = Result<JsValue, JsValue>;
/// A future, the deferred Promise it settles, and its abort signal.
type Task = (Pin<Box<dyn Future<Output = Outcome>>>, JsValue, Signal);

static TASKS: Local<Cell<Vec<Task>>> = Local(Cell::new(Vec::new()));
/// `run` is polling; a wake-up meanwhile sets `AGAIN` for another round.
static RUNNING: Local<Cell<bool>> = Local(Cell::new(false));
static AGAIN: Local<Cell<bool>> = Local(Cell::new(false));
static WAKE_SET: Local<Cell<bool>> = Local(Cell::new(false));

fn call1(f: &JsValue, arg: &JsValue) {
    let _ = call(f, U, arg, U, U);
}

/// Starts `future` and returns a Promise of its outcome. When the
/// `AbortSignal` `abort` (or `undefined`) fires, the future is dropped (its
/// guards clean up) and the Promise rejects with an `aborted` PayError.
pub fn spawn(future: impl Future<Output = Outcome> + 'static, abort: &JsValue) -> JsValue {
    spawn_boxed(Box::pin(future), abort)
}

fn spawn_boxed(future: Pin<Box<dyn Future<Output = Outcome>>>, abort: &JsValue) -> JsValue {
    if !WAKE_SET.0.replace(true) {
        set_wake(&wasm_bindgen::exports());
    }
    let d = deferred();
    let promise = get(&d, "p");
    let mut tasks = TASKS.0.take();
    tasks.push((future, d, Signal(abort_signal(abort))));
    TASKS.0.set(tasks);
    run();
    promise
}

/// Called by js/support.js (as `exports.wxpay_wake()`) whenever a signal
/// settles. A raw export rather than a `Closure`: that saves the closure
/// glue's bytes.
#[no_mangle]
pub extern "C" fn wxpay_wake() {
    run();
}

/// Polls every task until a round passes without a wake-up.
fn run() {
    if RUNNING.0.replace(true) {
        AGAIN.0.set(true);
        return;
    }
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        AGAIN.0.set(false);
        let mut pending = Vec::new();
        for (mut future, d, abort) in TASKS.0.take() {
            let poll = match abort.state() {
                Some(Ok(reason)) => Poll::Ready(Err(aborted(&reason))),
                _ => future.as_mut().poll(&mut cx),
            };
            match poll {
                Poll::Pending => pending.push((future, d, abort)),
                Poll::Ready(Ok(v)) => call1(&get(&d, "f"), &v),
                Poll::Ready(Err(e)) => call1(&get(&d, "e"), &e),
            }
        }
        // Tasks spawned while polling were added to TASKS meanwhile.
        pending.extend(TASKS.0.take());
        TASKS.0.set(pending);
        if !AGAIN.0.get() {
            break;
        }
    }
    RUNNING.0.set(false);
}

/// A one-shot JS signal (see `signal()` in js/support.js).
pub struct Signal(pub JsValue);

impl Signal {
    pub fn new() -> Signal {
        Signal(signal())
    }

    /// The JS function that settles it successfully with its argument.
    pub fn ok_fn(&self) -> JsValue {
        get(&self.0, "f")
    }

    /// Settles (with `undefined`) after `ms`; returns the timer id.
    fn timer(ms: f64) -> (Signal, JsValue) {
        let s = Signal::new();
        let id = set_timeout(&s.ok_fn(), ms);
        (s, id)
    }

    pub fn state(&self) -> Option<Outcome> {
        let ok = get(&self.0, "ok");
        if ok.is_undefined() {
            return None;
        }
        let v = get(&self.0, "v");
        Some(if ok.is_truthy() { Ok(v) } else { Err(v) })
    }
}

/// Waits for `s` at most `ms`: `None` on timeout. The timer is cleared after.
pub async fn within(s: &Signal, ms: f64) -> Option<Outcome> {
    let (t, id) = Signal::timer(ms);
    let r = poll_fn(|_| match s.state() {
        Some(r) => Poll::Ready(Some(r)),
        None if t.state().is_some() => Poll::Ready(None),
        None => Poll::Pending,
    })
    .await;
    clear_timeout(&id);
    r
}
