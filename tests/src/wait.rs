//! Waiting for something to happen: one polling loop for async code (and
//! one for the blocking process start-ups), on which the tests' waits build.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Some`, for at most
/// `within`; `None` when time ran out. `check` runs at least once, and once
/// more after the deadline has passed.
pub async fn wait_for<T, F, Fut>(within: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// [`wait_for`] every 25 ms; panics naming `what` when `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for(timeout, Duration::from_millis(25), f)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// The blocking [`wait_for`], for starting processes outside a runtime:
/// until `deadline`, every `every`. An error from `check` (the process
/// exited, say) ends the wait at once.
pub fn wait_for_blocking<T, E>(
    deadline: Instant,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}
