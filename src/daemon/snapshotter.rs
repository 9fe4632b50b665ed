//! Periodic configuration snapshots: compacts the journal on a timer, so that a daemon with a
//! trickle of changes does not replay a long journal at its next start. (Snapshots are also
//! taken after every `snapshot_every` transactions by the engine itself, and at shutdown.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Service;
use crate::config::engine::ConfigEngine;

pub struct Snapshotter {
    config: Arc<ConfigEngine>,
    interval: Duration,
}

impl Snapshotter {
    pub fn new(config: Arc<ConfigEngine>, interval: Duration) -> Snapshotter {
        Snapshotter { config, interval }
    }
}

impl Service for Snapshotter {
    fn name(&self) -> &'static str {
        "snapshotter"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.tick().await;
            let mut snapshot_seq = self.config.last_seq();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                if self.config.last_seq() == snapshot_seq {
                    continue;
                }
                let config = self.config.clone();
                match tokio::task::spawn_blocking(move || config.snapshot()).await {
                    Ok(Ok(seq)) => snapshot_seq = seq,
                    Ok(Err(error)) => {
                        tracing::error!(error = %crate::error::Chain(&error), "periodic configuration snapshot failed")
                    }
                    Err(error) => {
                        tracing::error!(error = %crate::error::Chain(&error), "snapshot task panicked")
                    }
                }
            }
        })
    }
}
