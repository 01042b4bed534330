//! Serving a [`Kit`] with graceful shutdown: stop accepting, finish
//! in-flight requests (within a grace period), stop the workers.

use super::start::{bind, StartError};
use super::Kit;
use crate::http;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight work may take after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves `server` on `listener` until `shutdown` completes: runs the
/// kit's background workers ([`crate::kit::Workers`]: reconciliation, in
/// certificate mode a periodic certificate refresh, …), and `GET /metrics`
/// on `metrics_listen` when set. On shutdown: stops accepting, tells the
/// workers to stop (the reconciliation worker stops claiming; a round in
/// progress finishes), waits for in-flight requests, then for the workers.
pub async fn serve(
    server: Kit,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = match server.config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    serve_with_metrics(server, listener, metrics, shutdown).await
}

/// [`serve`] with the metrics listener already bound (`None`: none).
pub async fn serve_with_metrics(
    server: Kit,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Background tasks are registered in `Kit::build` (kit/mod.rs), not here.
    // They are told to stop as soon as shutdown is requested (the
    // reconciliation worker stops claiming); the listeners watch the same
    // token.
    let workers = server.workers.start();
    let stop = workers.shutdown();
    workers.stop_when(shutdown);
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        let signal = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(l, http::traced(crate::metrics::router::<()>()))
                .with_graceful_shutdown(signal)
                .await
        })
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "merchant server listening");
    }
    // Our own accept loop (`http::listener`): header-read and keep-alive
    // timeouts, a connection cap, the peer address for the per-IP rate
    // limit (`ConnectInfo<SocketAddr>`), TCP_NODELAY.
    let serving = http::listener::serve(
        listener,
        server.router,
        server.config.http.connections,
        "public",
        stop.clone(),
    );
    // In-flight requests get a grace period; a connection that never
    // finishes does not keep the process alive forever.
    let grace = {
        let signal = stop.cancelled_owned();
        async move {
            signal.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    let result = tokio::select! {
        () = serving => Ok(()),
        _ = grace => {
            tracing::warn!("in-flight requests did not finish within {} s; stopping anyway", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    };
    tracing::info!("in-flight requests finished; waiting for the background workers");
    workers.stop(SHUTDOWN_GRACE).await;
    if let Some(t) = metrics_task {
        match tokio::time::timeout(SHUTDOWN_GRACE, t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics listener failed"),
            _ => tracing::warn!("metrics listener did not stop in time"),
        }
    }
    tracing::info!("server stopped");
    result
}
