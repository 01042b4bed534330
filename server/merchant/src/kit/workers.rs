//! The kit's background tasks (reconciliation, webhook delivery, certificate
//! refresh, the internal listener, the bill schedule): registered by
//! [`KitBuilder::build`](super::KitBuilder::build), started and stopped
//! together. Each task gets a [`CancellationToken`] and returns soon after it
//! is cancelled; a [`TaskTracker`] waits for all of them, and tasks still
//! running after the grace period are aborted.

use futures_util::future::BoxFuture;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long [`Workers::run_until`] waits for the workers after the shutdown
/// signal before aborting them.
pub const WORKER_STOP_GRACE: Duration = Duration::from_secs(20);

type TaskFn = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// The background tasks of a [`Kit`](super::Kit), not yet running.
#[derive(Default)]
pub struct Workers {
    tasks: Vec<(&'static str, TaskFn)>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Workers {
    /// No tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task: `task(stop)` runs until it returns; it should return
    /// soon after `stop` is cancelled.
    pub fn add<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
    }

    /// The task names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(n, _)| *n).collect()
    }

    /// Spawns every task on the current Tokio runtime.
    pub fn start(self) -> RunningWorkers {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handles = self
            .tasks
            .into_iter()
            .map(|(name, task)| (name, tracker.spawn(task(stop.child_token()))))
            .collect();
        tracker.close();
        RunningWorkers {
            stop,
            tracker,
            handles,
        }
    }

    /// Runs every task until `shutdown` completes, then stops them (waiting
    /// up to [`WORKER_STOP_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let running = self.start();
        shutdown.await;
        running.stop(WORKER_STOP_GRACE).await;
    }
}

/// Running [`Workers`].
#[derive(Debug)]
pub struct RunningWorkers {
    stop: CancellationToken,
    tracker: TaskTracker,
    // Kept to abort stragglers and to name a worker that panicked.
    handles: Vec<(&'static str, JoinHandle<()>)>,
}

impl RunningWorkers {
    /// The token the tasks watch: cancelling it stops them (tasks started
    /// elsewhere can watch it too, or a child of it).
    pub fn shutdown(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Cancels the tasks once `signal` completes (in a task of its own);
    /// [`RunningWorkers::stop`] then only waits.
    pub fn stop_when(&self, signal: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            signal.await;
            stop.cancel();
        });
    }

    /// Cancels the tasks and waits for every one, aborting those still
    /// running after `grace` (in total).
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            for (name, handle) in &self.handles {
                if !handle.is_finished() {
                    tracing::warn!(worker = name, "worker did not stop in time; aborting");
                    handle.abort();
                }
            }
        }
        for (name, handle) in self.handles {
            if let Err(e) = handle.await {
                if e.is_panic() {
                    tracing::error!(worker = name, "worker panicked");
                }
            }
        }
    }
}
