//! The configuration engine: the one shared handle to the configuration that the daemon's
//! services use. It owns the in-memory [`Store`], the durable [`Journal`], periodic snapshots,
//! the master key for secrets, and the change watchers.
//!
//! Reading: [`ConfigEngine::read`] runs a closure against a consistent view under a read lock
//! (never held across `.await`). Writing: [`ConfigEngine::commit`] validates a plan against the
//! current view, applies it, queues it to the journal under the write lock (so journal order is
//! commit order) and resolves once the transaction is durable.
//!
//! INVARIANT: every acknowledged transaction is in the journal or in a snapshot on disk.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::journal::{self, Journal, JournalError, JournalLoadError};
use super::model::{FastMap, Group, Node, Store, Stored, UserGroupRecord, UserRecord};
use super::plan::{ConfigChangeError, Plan};
use super::secrets::{MasterKey, MasterKeyError};
use super::watch::{ChangeRecorder, ChangeSet, WatchFilter, Watchers};

const SNAPSHOT_FORMAT: u32 = 1;

/// Options for opening the configuration.
#[derive(Clone)]
pub struct EngineOptions {
    /// Passphrase protecting the master key file, if the site wants one.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// Take a snapshot (and drop old journal files) after this many transactions.
    pub snapshot_every: u64,
    /// Counts transactions made durable (the daemon's `confluent_config_commits_total`).
    pub commits: crate::metrics::Counter,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            passphrase: None,
            snapshot_every: 100_000,
            commits: crate::metrics::Counter::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigOpenError {
    #[error("failed to create configuration directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read snapshot {path}")]
    ReadSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path} is not valid")]
    DecodeSnapshot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to replay the configuration journal")]
    Journal(#[from] JournalLoadError),
    #[error("failed to start the journal writer")]
    StartJournal(#[source] io::Error),
    #[error("failed to load the master key")]
    MasterKey(#[from] MasterKeyError),
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to write snapshot {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal rotation failed")]
    Journal(#[source] Arc<JournalError>),
}

/// Outcome of a successful commit.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub seq: u64,
    pub warnings: Vec<String>,
    pub changes: Arc<ChangeSet>,
}

/// The snapshot document.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    seq: u64,
    nodes: &'a FastMap<Arc<str>, Arc<Node>>,
    groups: &'a FastMap<Arc<str>, Arc<Group>>,
    globals: &'a std::collections::BTreeMap<Arc<str>, serde_json::Value>,
    users: &'a std::collections::BTreeMap<Arc<str>, Arc<UserRecord>>,
    usergroups: &'a std::collections::BTreeMap<Arc<str>, Arc<UserGroupRecord>>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    seq: u64,
    nodes: HashMap<Arc<str>, Node>,
    groups: HashMap<Arc<str>, Group>,
    #[serde(default)]
    globals: std::collections::BTreeMap<Arc<str>, serde_json::Value>,
    #[serde(default)]
    users: std::collections::BTreeMap<Arc<str>, Arc<UserRecord>>,
    #[serde(default)]
    usergroups: std::collections::BTreeMap<Arc<str>, Arc<UserGroupRecord>>,
}

struct Versioned {
    store: Store,
    last_seq: u64,
}

pub struct ConfigEngine {
    cfg_dir: PathBuf,
    state: RwLock<Versioned>,
    journal: Journal<Arc<ChangeSet>>,
    key: MasterKey,
    watchers: Arc<Watchers>,
    options: EngineOptions,
    since_snapshot: AtomicU64,
    snapshotting: Mutex<()>,
    snapshot_pending: AtomicBool,
    snapshot_trigger: Mutex<std::sync::mpsc::Sender<()>>,
    closed: AtomicBool,
}

impl ConfigEngine {
    /// Open (or create) the configuration under `cfg_dir`, with the master key at `key_path`.
    pub fn open(
        cfg_dir: &Path,
        key_path: &Path,
        options: EngineOptions,
    ) -> Result<Arc<ConfigEngine>, ConfigOpenError> {
        fs::create_dir_all(cfg_dir).map_err(|source| ConfigOpenError::CreateDir {
            path: cfg_dir.to_path_buf(),
            source,
        })?;
        if let Some(key_dir) = key_path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(key_dir)
                .map_err(|source| ConfigOpenError::CreateDir {
                    path: key_dir.to_path_buf(),
                    source,
                })?;
        }
        let key = MasterKey::load_or_create(
            key_path,
            options.passphrase.as_ref().map(|pass| pass.as_slice()),
        )?;
        let (mut store, snapshot_seq) = load_snapshot(cfg_dir)?;
        let journal_dir = journal::journal_dir(cfg_dir);
        let (transactions, last_seq) = journal::replay(&journal_dir, snapshot_seq)?;
        let replayed = transactions.len();
        for transaction in transactions {
            for op in &transaction.ops {
                store.apply(op);
            }
        }
        tracing::info!(
            nodes = store.node_count(),
            groups = store.group_count(),
            snapshot_seq,
            replayed,
            last_seq,
            "configuration loaded"
        );
        let watchers = Arc::new(Watchers::default());
        let dispatch_to = watchers.clone();
        let journal = Journal::start(
            &journal_dir,
            last_seq + 1,
            move |changes: Arc<ChangeSet>| dispatch_to.dispatch(&changes),
        )
        .map_err(ConfigOpenError::StartJournal)?;
        let (snapshot_trigger, snapshot_requests) = std::sync::mpsc::channel::<()>();
        let engine = Arc::new(ConfigEngine {
            cfg_dir: cfg_dir.to_path_buf(),
            state: RwLock::new(Versioned { store, last_seq }),
            journal,
            key,
            watchers,
            since_snapshot: AtomicU64::new(u64::try_from(replayed).unwrap_or(u64::MAX)),
            options,
            snapshotting: Mutex::new(()),
            snapshot_pending: AtomicBool::new(false),
            snapshot_trigger: Mutex::new(snapshot_trigger),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&engine);
        std::thread::Builder::new()
            .name("config-snapshot".into())
            .spawn(move || {
                while snapshot_requests.recv().is_ok() {
                    let Some(engine) = weak.upgrade() else { break };
                    if engine.closed.load(Ordering::Acquire) {
                        break;
                    }
                    let result = engine.snapshot();
                    engine.snapshot_pending.store(false, Ordering::Release);
                    if let Err(error) = result {
                        tracing::error!(error = %crate::error::Chain(&error), "configuration snapshot failed; the journal keeps growing");
                    }
                }
            })
            .map_err(ConfigOpenError::StartJournal)?;
        Ok(engine)
    }

    /// Run `reader` against a consistent view of the configuration.
    pub fn read<R>(&self, reader: impl FnOnce(&Store) -> R) -> R {
        reader(&self.state.read().store)
    }

    /// Sequence number of the last applied transaction.
    pub fn last_seq(&self) -> u64 {
        self.state.read().last_seq
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.key
    }

    /// Subscribe to changes (see [`WatchFilter`]).
    pub fn watch(
        &self,
        filter: WatchFilter,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Arc<ChangeSet>> {
        self.watchers.watch(filter)
    }

    /// Validate, apply and durably record a change. `planner` sees the current configuration
    /// and returns the ops to apply (or why the change is refused, in which case nothing
    /// changes). Resolves once the transaction is on disk.
    pub async fn commit(
        &self,
        planner: impl FnOnce(&Store, &MasterKey) -> Result<Plan, ConfigChangeError>,
    ) -> Result<Receipt, ConfigChangeError> {
        let (pending, receipt) = self.stage(planner)?;
        if let Some(pending) = pending {
            match pending.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(ConfigChangeError::JournalUnavailable(unshare(&error)));
                }
                Err(_) => {
                    return Err(ConfigChangeError::JournalUnavailable(JournalError::Stopped));
                }
            }
            self.after_commit();
        }
        Ok(receipt)
    }

    /// [`ConfigEngine::commit`] for threads outside the async runtime.
    pub fn commit_blocking(
        &self,
        planner: impl FnOnce(&Store, &MasterKey) -> Result<Plan, ConfigChangeError>,
    ) -> Result<Receipt, ConfigChangeError> {
        let (pending, receipt) = self.stage(planner)?;
        if let Some(pending) = pending {
            match pending.blocking_recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(ConfigChangeError::JournalUnavailable(unshare(&error)));
                }
                Err(_) => {
                    return Err(ConfigChangeError::JournalUnavailable(JournalError::Stopped));
                }
            }
            self.after_commit();
        }
        Ok(receipt)
    }

    #[allow(clippy::type_complexity)]
    fn stage(
        &self,
        planner: impl FnOnce(&Store, &MasterKey) -> Result<Plan, ConfigChangeError>,
    ) -> Result<
        (
            Option<tokio::sync::oneshot::Receiver<Result<(), Arc<JournalError>>>>,
            Receipt,
        ),
        ConfigChangeError,
    > {
        let mut state = self.state.write();
        let plan = planner(&state.store, &self.key)?;
        if plan.ops.is_empty() {
            return Ok((
                None,
                Receipt {
                    seq: state.last_seq,
                    warnings: plan.warnings,
                    changes: Arc::new(ChangeSet::default()),
                },
            ));
        }
        let seq = state.last_seq + 1;
        // Serialize before applying: a transaction the journal would refuse changes nothing.
        let payload = serde_json::to_vec(&plan.ops).unwrap_or_default();
        if payload.len() > journal::MAX_RECORD {
            return Err(ConfigChangeError::JournalUnavailable(
                JournalError::TooLarge(payload.len()),
            ));
        }
        let mut recorder = ChangeRecorder::new();
        for op in &plan.ops {
            recorder.apply(&mut state.store, op);
        }
        let changes = Arc::new(recorder.finish(&state.store, seq));
        let pending = self
            .journal
            .append(seq, payload, changes.clone())
            .map_err(ConfigChangeError::JournalUnavailable)?;
        state.last_seq = seq;
        Ok((
            Some(pending),
            Receipt {
                seq,
                warnings: plan.warnings,
                changes,
            },
        ))
    }

    fn snapshot_due(&self) -> bool {
        let count = self.since_snapshot.fetch_add(1, Ordering::Relaxed) + 1;
        count >= self.options.snapshot_every && !self.snapshot_pending.swap(true, Ordering::AcqRel)
    }

    fn after_commit(&self) {
        self.options.commits.inc();
        if self.snapshot_due() {
            // The snapshot thread does the work; a commit never waits for it.
            let _ = self.snapshot_trigger.lock().send(());
        }
    }

    /// Write a snapshot of the current configuration and drop the journal files it covers.
    /// Blocking: call it from a plain thread or `spawn_blocking`, never directly on the runtime.
    /// Writers are held only while the in-memory view is captured (an O(nodes) reference-count
    /// copy); serialization and fsync happen outside the lock.
    pub fn snapshot(&self) -> Result<u64, SnapshotError> {
        let _only_one = self.snapshotting.lock();
        let (seq, nodes, groups, globals, users, usergroups, rotated) = {
            let state = self.state.write();
            let rotated = self.journal.rotate(state.last_seq + 1);
            (
                state.last_seq,
                state.store.nodes.clone(),
                state.store.groups.clone(),
                state.store.globals.clone(),
                state.store.users.clone(),
                state.store.usergroups.clone(),
                rotated,
            )
        };
        self.since_snapshot.store(0, Ordering::Relaxed);
        match rotated {
            Ok(receiver) => match receiver.blocking_recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(SnapshotError::Journal(error)),
                Err(_) => return Err(SnapshotError::Journal(Arc::new(JournalError::Stopped))),
            },
            Err(error) => return Err(SnapshotError::Journal(Arc::new(error))),
        }
        let document = SnapshotOut {
            format: SNAPSHOT_FORMAT,
            seq,
            nodes: &nodes,
            groups: &groups,
            globals: &globals,
            users: &users,
            usergroups: &usergroups,
        };
        let path = self.cfg_dir.join("snapshot.json");
        let temporary = self.cfg_dir.join("snapshot.json.tmp");
        let write = || -> io::Result<()> {
            let file = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&temporary)?;
            let mut writer = io::BufWriter::with_capacity(1 << 20, file);
            serde_json::to_writer(&mut writer, &document).map_err(io::Error::other)?;
            writer.flush()?;
            writer.get_ref().sync_all()?;
            fs::rename(&temporary, &path)?;
            journal::sync_dir(&self.cfg_dir)
        };
        write().map_err(|source| SnapshotError::Write {
            path: path.clone(),
            source,
        })?;
        // Journal files before the rotation are now covered by the snapshot.
        let journal_dir = journal::journal_dir(&self.cfg_dir);
        if let Ok(files) = journal::list_files(&journal_dir) {
            for (first_seq, file) in files {
                if first_seq <= seq
                    && let Err(error) = fs::remove_file(&file)
                {
                    tracing::warn!(path = %file.display(), error = %crate::error::Chain(&error), "could not remove an old journal file");
                }
            }
        }
        tracing::debug!(seq, "configuration snapshot written");
        Ok(seq)
    }

    /// Flush everything and stop the journal (graceful shutdown). Takes a snapshot so the next
    /// start-up has little to replay.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(error) = self.snapshot() {
            tracing::error!(error = %crate::error::Chain(&error), "final configuration snapshot failed; the journal still holds every change");
        }
        self.journal.close();
    }

    /// Decrypt a secret attribute of a node (explicit request only; never logged).
    pub fn decrypt_node_secret(
        &self,
        node: &str,
        attribute: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, super::secrets::SecretOpenError> {
        let sealed = self.read(|store| {
            let record = store.node(node)?;
            match store.effective_stored(record, attribute) {
                Some((Stored::Sealed(sealed), _)) => Some((**sealed).clone()),
                _ => None,
            }
        });
        match sealed {
            Some(sealed) => self.key.open(&sealed, attribute.as_bytes()).map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for ConfigEngine {
    fn drop(&mut self) {
        self.journal.close();
    }
}

/// Journal errors are shared among the writers of a batch; give each caller its own copy.
fn unshare(error: &Arc<JournalError>) -> JournalError {
    match &**error {
        JournalError::Write { path, source } => JournalError::Write {
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        JournalError::Stopped => JournalError::Stopped,
        JournalError::TooLarge(size) => JournalError::TooLarge(*size),
    }
}

fn load_snapshot(cfg_dir: &Path) -> Result<(Store, u64), ConfigOpenError> {
    let path = cfg_dir.join("snapshot.json");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Store::new(), 0)),
        Err(source) => return Err(ConfigOpenError::ReadSnapshot { path, source }),
    };
    let snapshot: SnapshotIn =
        serde_json::from_slice(&bytes).map_err(|source| ConfigOpenError::DecodeSnapshot {
            path: path.clone(),
            source,
        })?;
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(ConfigOpenError::DecodeSnapshot {
            path,
            source: serde::de::Error::custom(format!(
                "unsupported snapshot format {}",
                snapshot.format
            )),
        });
    }
    let mut store = Store::from_parts(snapshot.nodes, snapshot.groups, snapshot.globals);
    store.set_accounts(snapshot.users, snapshot.usergroups);
    Ok((store, snapshot.seq))
}
