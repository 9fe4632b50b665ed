//! The node [`Directory`] kept current for everything that identifies booting machines: the
//! DHCP service (per packet) and the HTTP boot routes (`/boot/by-mac/...`).
//!
//! [`LiveDirectory::start`] registers a configuration watcher at once, so no change is missed,
//! and returns the [`DirectoryRefresher`] service, which builds the index off the async workers
//! and then applies every committed change to it. Readers wait for the first build with
//! [`LiveDirectory::wait_ready`] (a single atomic load once built).
//!
//! The refresher also rescans the profiles' `profile.yaml` files every
//! [`ProfileScan::INTERVAL`] on the blocking pool (stat only, parse what changed) and swaps
//! their `bootloader` settings into the directory, so the DHCP policy reads them from memory.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::directory::{Directory, NodeBoot};
use crate::config::ConfigEngine;
use crate::config::watch::{ChangeSet, WatchFilter};
use crate::osimage::profile::{BootLoader, ProfileScan};

/// The shared, always-current directory.
#[derive(Default)]
pub struct LiveDirectory {
    directory: RwLock<Directory>,
    ready: AtomicBool,
    built: Notify,
}

impl LiveDirectory {
    /// Watch the configuration and hand back the service that builds and refreshes the index
    /// (and the boot loader settings of the profiles under `profiles`, the `os/` directory).
    pub fn start(
        config: &Arc<ConfigEngine>,
        profiles: PathBuf,
    ) -> (Arc<LiveDirectory>, DirectoryRefresher) {
        let changes = config.watch(WatchFilter {
            nodes: None,
            attributes: vec![
                "net.*".into(),
                "id.uuid".into(),
                "deployment.*".into(),
                "discovery.*".into(),
                "dns.*".into(),
                "ntp.*".into(),
            ],
            collection: true,
            globals: Vec::new(),
        });
        let live = Arc::new(LiveDirectory::default());
        let refresher = DirectoryRefresher {
            live: live.clone(),
            config: config.clone(),
            changes,
            profiles: ProfileScan::new(profiles),
        };
        (live, refresher)
    }

    /// A directory built right away from `config` (tests and tools; no refresher).
    pub fn built_from(config: &ConfigEngine) -> LiveDirectory {
        let live = LiveDirectory::default();
        *live.directory.write() = config.read(Directory::from_store);
        live.ready.store(true, Ordering::Release);
        live
    }

    /// Wait until the first build is done.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.built.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The current directory. Before the first build it is empty.
    pub fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read()
    }

    /// Re-read the nodes a committed change touched.
    fn apply(&self, config: &ConfigEngine, changes: &ChangeSet) {
        let mut names: Vec<Arc<str>> = changes.node_attributes.keys().cloned().collect();
        names.extend(changes.nodes_created.iter().cloned());
        names.extend(changes.nodes_deleted.iter().cloned());
        for (from, to) in &changes.nodes_renamed {
            names.push(from.clone());
            names.push(to.clone());
        }
        // Read the configuration first, then take the directory lock only to swap entries in.
        let (nodes, globals) = config.read(|store| {
            let nodes: Vec<(Arc<str>, Option<NodeBoot>)> = names
                .iter()
                .map(|name| (name.clone(), NodeBoot::from_store(store, name)))
                .collect();
            let mut globals = Directory::default();
            globals.refresh_globals(store);
            (nodes, globals)
        });
        let mut directory = self.directory.write();
        directory.discovery_boot_allowed = globals.discovery_boot_allowed;
        directory.default_insecure = globals.default_insecure;
        directory.default_network = globals.default_network;
        for (name, node) in nodes {
            directory.remove(&name);
            if let Some(node) = node {
                directory.insert(node);
            }
        }
        tracing::debug!(
            nodes = names.len(),
            seq = changes.seq,
            "node directory refreshed"
        );
    }
}

/// Builds the directory, then applies configuration changes (and profile boot loader changes)
/// to it until shutdown.
pub struct DirectoryRefresher {
    live: Arc<LiveDirectory>,
    config: Arc<ConfigEngine>,
    changes: tokio::sync::mpsc::UnboundedReceiver<Arc<ChangeSet>>,
    profiles: ProfileScan,
}

/// Rescan the profiles on the blocking pool; the scanner goes there and comes back.
async fn rescan_profiles(
    mut scan: ProfileScan,
) -> anyhow::Result<(ProfileScan, Option<HashMap<Arc<str>, BootLoader>>)> {
    tokio::task::spawn_blocking(move || {
        let changed = scan.rescan();
        (scan, changed)
    })
    .await
    .map_err(|error| anyhow::anyhow!("scanning the profiles panicked: {error}"))
}

impl DirectoryRefresher {
    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let DirectoryRefresher {
            live,
            config,
            mut changes,
            profiles,
        } = self;
        let reader = config.clone();
        let mut directory = tokio::task::spawn_blocking(move || reader.read(Directory::from_store))
            .await
            .map_err(|error| anyhow::anyhow!("building the node directory panicked: {error}"))?;
        let (mut profiles, loaders) = rescan_profiles(profiles).await?;
        directory.set_profile_boot_loaders(loaders.unwrap_or_default());
        *live.directory.write() = directory;
        live.ready.store(true, Ordering::Release);
        live.built.notify_waiters();
        let mut rescan = tokio::time::interval(ProfileScan::INTERVAL);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the scan above covered it.
        rescan.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                changes = changes.recv() => match changes {
                    Some(changes) => live.apply(&config, &changes),
                    None => return Ok(()),
                },
                _ = rescan.tick() => {
                    let (scanned, loaders) = rescan_profiles(profiles).await?;
                    profiles = scanned;
                    if let Some(loaders) = loaders {
                        tracing::debug!(profiles = loaders.len(), "profile boot loaders refreshed");
                        live.directory.write().set_profile_boot_loaders(loaders);
                    }
                }
            }
        }
    }
}

impl crate::service::Service for DirectoryRefresher {
    fn name(&self) -> &'static str {
        "node-directory"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin((*self).serve(shutdown))
    }
}
