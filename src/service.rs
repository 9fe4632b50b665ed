//! The service seam every long-running part of the daemon plugs into, and the accept loop
//! the connection-oriented services share. A leaf: it knows nothing of the daemon that runs
//! the services, so services below the composition root depend only on this.
//!
//! [`Service`]: bind in the constructor (failing start-up early), then `run` under a
//! cancellation token until the daemon shuts down.
//!
//! [`serve_connections`]: at most `limit` connections served at once (the rest wait in the
//! listen backlog), each on the service's own task tracker; an accept error is logged and
//! retried, never fatal; at shutdown, in-flight connections get up to 10 s to finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A long-running part of the daemon (a listener, a periodic job).
///
/// Implementors bind their sockets in their constructor, so that a port conflict stops the
/// daemon at start-up instead of later; `run` then serves until `shutdown` is cancelled and
/// returns after finishing (or abandoning) in-flight work.
pub trait Service: Send + 'static {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
}

/// Accept with `accept` until `shutdown`, handing each connection to `handle`.
pub async fn serve_connections<S, A, AF, H, HF>(
    service: &'static str,
    limit: usize,
    shutdown: &CancellationToken,
    mut accept: A,
    handle: H,
) -> anyhow::Result<()>
where
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<S>>,
    H: Fn(S, CancellationToken) -> HF,
    HF: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limit));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit?,
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let connection = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Typically EMFILE or a connection reset before accept: back off briefly.
                tracing::warn!(service, error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let work = handle(connection, shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            work.await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    Ok(())
}
