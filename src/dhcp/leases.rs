//! DHCP leases: in memory, keyed by MAC address (so the PXE ROM and the iPXE stage of one
//! machine, which send different client identifiers, share one lease), with a durable
//! append-only journal so that an address is on disk before the ACK that hands it out.
//!
//! - [`Leases`] is the table: offers (short holds, memory only), bound leases, declined
//!   addresses in quarantine, expiry against a `tokio::time::Instant` clock (pausable in
//!   tests). It implements the policy's [`LeaseView`].
//! - [`LeaseJournal`] persists bind/release/decline records with the configuration journal's
//!   file format (`config::journal`) under `<lib>/dhcp/`, committed in groups by the DHCP
//!   worker thread before it sends the replies that depend on them, and compacts them into
//!   `leases.json` at start-up and every [`COMPACT_AFTER_RECORDS`] records.
//!
//! INVARIANT: an address is bound to at most one MAC at a time; an address reserved for a
//! node is bound only to that node's MAC (the policy never offers it to another, and
//! [`Leases::apply`] refuses a bind over another MAC's live lease unless it is the
//! reservation holder's).

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::policy::{LeaseChange, LeaseInfo, LeaseView};
use crate::config::journal::{self, JournalError, JournalLoadError};
use crate::proto::dhcp::MacAddress;

/// How long an OFFER holds its address for the client's REQUEST (RFC 2131 section 4.3.1
/// leaves it to the server; dhcpd and Kea use a few tens of seconds).
pub const OFFER_HOLD: Duration = Duration::from_secs(30);
/// How long a DECLINEd address stays out of the pool (RFC 2131 section 4.3.3).
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);

/// State of one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Offered,
    Bound,
}

/// One lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddress,
    pub address: Ipv4Addr,
    pub state: LeaseState,
    pub expires: Instant,
}

/// A bind over another MAC's live lease.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("address {address} is leased to {holder}")]
pub struct LeaseConflictError {
    pub address: Ipv4Addr,
    pub holder: MacAddress,
}

/// Who holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Client(MacAddress),
    Declined { until: Instant },
}

/// A durable lease change, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaseRecord {
    Bind {
        mac: String,
        address: Ipv4Addr,
        /// Seconds since the Unix epoch.
        expires: u64,
    },
    Release {
        mac: String,
        address: Ipv4Addr,
    },
    Decline {
        address: Ipv4Addr,
        until: u64,
    },
}

/// The lease table.
#[derive(Debug, Default)]
pub struct Leases {
    by_mac: HashMap<MacAddress, Lease>,
    by_address: HashMap<Ipv4Addr, Holder>,
    /// The address after the last one offered or bound: where the next pool search starts.
    next_hint: Option<Ipv4Addr>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Wall-clock seconds for an instant (for the journal), and back.
fn to_unix(at: Instant, now: Instant) -> u64 {
    unix_now().saturating_add(at.saturating_duration_since(now).as_secs())
}

fn from_unix(seconds: u64, now: Instant) -> Option<Instant> {
    let remaining = seconds.checked_sub(unix_now())?;
    now.checked_add(Duration::from_secs(remaining))
}

impl Leases {
    pub fn new() -> Leases {
        Leases::default()
    }

    /// The live lease or offer of a MAC at `now`.
    pub fn lease(&self, mac: &MacAddress, now: Instant) -> Option<&Lease> {
        self.by_mac.get(mac).filter(|lease| lease.expires > now)
    }

    /// Number of live bound leases.
    pub fn bound_count(&self, now: Instant) -> usize {
        self.by_mac
            .values()
            .filter(|lease| lease.state == LeaseState::Bound && lease.expires > now)
            .count()
    }

    /// The policy's read-only view at `now`.
    pub fn at(&self, now: Instant) -> LeasesAt<'_> {
        LeasesAt { leases: self, now }
    }

    fn holder(&self, address: Ipv4Addr, now: Instant) -> Option<Holder> {
        match self.by_address.get(&address)? {
            Holder::Declined { until } if *until > now => Some(Holder::Declined { until: *until }),
            Holder::Declined { .. } => None,
            Holder::Client(mac) => self
                .lease(mac, now)
                .filter(|lease| lease.address == address)
                .map(|_| Holder::Client(*mac)),
        }
    }

    fn drop_lease_of(&mut self, mac: &MacAddress) {
        if let Some(old) = self.by_mac.remove(mac)
            && self.by_address.get(&old.address) == Some(&Holder::Client(*mac))
        {
            self.by_address.remove(&old.address);
        }
    }

    fn set(&mut self, lease: Lease) {
        self.next_hint = u32::from(lease.address).checked_add(1).map(Ipv4Addr::from);
        self.drop_lease_of(&lease.mac);
        if let Some(Holder::Client(other)) = self.by_address.get(&lease.address).copied()
            && other != lease.mac
        {
            self.by_mac.remove(&other);
        }
        self.by_address
            .insert(lease.address, Holder::Client(lease.mac));
        self.by_mac.insert(lease.mac, lease);
    }

    /// Apply a policy decision for `mac`. `reserved_for_mac`: the address is this MAC's node
    /// reservation, which wins over a dynamic lease another MAC still holds (that lease ends).
    /// Returns the record to journal before replying, if the change must be durable.
    pub fn apply(
        &mut self,
        mac: MacAddress,
        change: LeaseChange,
        reserved_for_mac: bool,
        now: Instant,
    ) -> Result<Option<LeaseRecord>, LeaseConflictError> {
        match change {
            LeaseChange::None => Ok(None),
            LeaseChange::Offer { address } | LeaseChange::Bind { address, .. } => {
                match self.holder(address, now) {
                    Some(Holder::Client(holder)) if holder != mac && !reserved_for_mac => {
                        return Err(LeaseConflictError { address, holder });
                    }
                    Some(Holder::Declined { .. }) if !reserved_for_mac => {
                        return Err(LeaseConflictError {
                            address,
                            holder: MacAddress([0; 6]),
                        });
                    }
                    _ => {}
                }
                if let LeaseChange::Bind { seconds, .. } = change {
                    let expires = now + Duration::from_secs(u64::from(seconds));
                    self.set(Lease {
                        mac,
                        address,
                        state: LeaseState::Bound,
                        expires,
                    });
                    Ok(Some(LeaseRecord::Bind {
                        mac: mac.to_string(),
                        address,
                        expires: to_unix(expires, now),
                    }))
                } else {
                    // An offer never shortens or downgrades a live bound lease of the same
                    // address (a bound client that reboots and DISCOVERs again).
                    if let Some(current) = self.lease(&mac, now)
                        && current.state == LeaseState::Bound
                        && current.address == address
                    {
                        return Ok(None);
                    }
                    self.set(Lease {
                        mac,
                        address,
                        state: LeaseState::Offered,
                        expires: now + OFFER_HOLD,
                    });
                    Ok(None)
                }
            }
            LeaseChange::Release { address } => {
                if self
                    .lease(&mac, now)
                    .is_some_and(|lease| lease.address == address)
                {
                    self.drop_lease_of(&mac);
                    return Ok(Some(LeaseRecord::Release {
                        mac: mac.to_string(),
                        address,
                    }));
                }
                Ok(None)
            }
            LeaseChange::Decline { address } => {
                // Only the holder's DECLINE counts, so a stranger cannot take addresses away.
                if self
                    .lease(&mac, now)
                    .is_none_or(|lease| lease.address != address)
                {
                    return Ok(None);
                }
                self.drop_lease_of(&mac);
                let until = now + DECLINE_HOLD;
                self.by_address.insert(address, Holder::Declined { until });
                Ok(Some(LeaseRecord::Decline {
                    address,
                    until: to_unix(until, now),
                }))
            }
        }
    }

    /// Replay a journaled record (start-up). Records already expired are skipped.
    pub fn replay(&mut self, record: &LeaseRecord, now: Instant) {
        match record {
            LeaseRecord::Bind {
                mac,
                address,
                expires,
            } => {
                if let (Some(mac), Some(expires)) =
                    (MacAddress::parse(mac), from_unix(*expires, now))
                {
                    self.set(Lease {
                        mac,
                        address: *address,
                        state: LeaseState::Bound,
                        expires,
                    });
                }
            }
            LeaseRecord::Release { mac, address } => {
                if let Some(mac) = MacAddress::parse(mac)
                    && self
                        .by_mac
                        .get(&mac)
                        .is_some_and(|lease| lease.address == *address)
                {
                    self.drop_lease_of(&mac);
                }
            }
            LeaseRecord::Decline { address, until } => {
                if let Some(holder) = self.by_address.get(address).copied()
                    && let Holder::Client(mac) = holder
                {
                    self.by_mac.remove(&mac);
                }
                match from_unix(*until, now) {
                    Some(until) => {
                        self.by_address.insert(*address, Holder::Declined { until });
                    }
                    None => {
                        self.by_address.remove(address);
                    }
                }
            }
        }
    }

    /// Drop expired leases, offers and quarantines; returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.by_mac.len() + self.by_address.len();
        let expired: Vec<MacAddress> = self
            .by_mac
            .values()
            .filter(|lease| lease.expires <= now)
            .map(|lease| lease.mac)
            .collect();
        for mac in &expired {
            self.drop_lease_of(mac);
        }
        self.by_address
            .retain(|_, holder| !matches!(holder, Holder::Declined { until } if *until <= now));
        before - (self.by_mac.len() + self.by_address.len())
    }

    /// Every live bound lease and quarantine as records (the compacted journal).
    pub fn records(&self, now: Instant) -> Vec<LeaseRecord> {
        let mut records: Vec<LeaseRecord> = self
            .by_mac
            .values()
            .filter(|lease| lease.state == LeaseState::Bound && lease.expires > now)
            .map(|lease| LeaseRecord::Bind {
                mac: lease.mac.to_string(),
                address: lease.address,
                expires: to_unix(lease.expires, now),
            })
            .collect();
        records.extend(
            self.by_address
                .iter()
                .filter_map(|(address, holder)| match holder {
                    Holder::Declined { until } if *until > now => Some(LeaseRecord::Decline {
                        address: *address,
                        until: to_unix(*until, now),
                    }),
                    _ => None,
                }),
        );
        records
    }
}

/// The lease table at one instant, as the policy sees it.
pub struct LeasesAt<'a> {
    leases: &'a Leases,
    now: Instant,
}

impl LeaseView for LeasesAt<'_> {
    fn lease_of(&self, mac: &MacAddress) -> Option<LeaseInfo> {
        self.leases.lease(mac, self.now).map(|lease| LeaseInfo {
            address: lease.address,
            offered: lease.state == LeaseState::Offered,
        })
    }

    fn holder_of(&self, address: Ipv4Addr) -> Option<Option<MacAddress>> {
        match self.leases.holder(address, self.now)? {
            Holder::Client(mac) => Some(Some(mac)),
            Holder::Declined { .. } => Some(None),
        }
    }

    fn allocation_hint(&self) -> Option<Ipv4Addr> {
        self.leases.next_hint
    }
}

/// Why the lease store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LeaseOpenError {
    #[error("failed to read the lease journal")]
    Replay(#[source] JournalLoadError),
    #[error("failed to read {path}")]
    ReadSnapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {path}")]
    Compact {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open the lease journal")]
    Start(#[source] io::Error),
}

/// Why a lease change could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum LeaseWriteError {
    #[error("lease record of {0} bytes is larger than the journal allows")]
    TooLarge(usize),
    #[error("failed to encode a lease record")]
    Encode(#[source] serde_json::Error),
    #[error("lease journal write failed")]
    Write(#[source] Arc<JournalError>),
    #[error("failed to write {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lease compaction stopped before it finished")]
    Stopped,
}

/// The compacted lease file: every live lease as of journal sequence `seq`.
#[derive(Serialize, Deserialize)]
struct LeaseSnapshot {
    format: u32,
    seq: u64,
    records: Vec<LeaseRecord>,
}

/// The durable side of the leases: `<dir>/leases.json` plus `<dir>/journal/*.wal`.
///
/// No thread of its own: records are buffered by [`LeaseJournal::append`] and made durable,
/// many at a time, by [`LeaseJournal::commit`], which the DHCP worker calls before it sends
/// the replies that depend on them (its own group commit). Kept under the lease lock, so the
/// records are in the order the changes were applied.
pub struct LeaseJournal {
    writer: journal::PreallocatedWriter,
    dir: PathBuf,
    next_seq: u64,
    /// Records appended since the last commit.
    uncommitted: usize,
    /// Records appended since `leases.json` was last written.
    appended_since_compaction: u64,
    /// The first write or sync failure: every later append and commit fails with it, so no
    /// reply ever depends on a record that may not be on disk.
    failed: Option<Arc<JournalError>>,
}

/// Compact the journal into `leases.json` once this many records were appended.
pub const COMPACT_AFTER_RECORDS: u64 = 50_000;

/// A compaction in progress: the journal already continues in a new file; [`Compaction::finish`]
/// writes the snapshot and deletes the files it covers.
pub struct Compaction {
    dir: PathBuf,
    snapshot: LeaseSnapshot,
}

fn write_snapshot(dir: &Path, snapshot: &LeaseSnapshot) -> io::Result<()> {
    let path = dir.join("leases.json");
    let temporary = dir.join("leases.json.tmp");
    let bytes = serde_json::to_vec(snapshot)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    journal::sync_dir(dir)
}

impl Compaction {
    /// Write `leases.json` (on a blocking thread) and delete the journal files it covers. A
    /// crash at any point leaves a loadable state: until the new snapshot is renamed into
    /// place, the old snapshot plus every journal file still covers everything.
    pub async fn finish(self) -> Result<(), LeaseWriteError> {
        let first_kept = self.snapshot.seq + 1;
        let dir = self.dir;
        let snapshot = self.snapshot;
        let path = dir.join("leases.json");
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            write_snapshot(&dir, &snapshot)?;
            if let Ok(files) = journal::list_files(&dir.join("journal")) {
                for (first_seq, path) in files {
                    if first_seq < first_kept {
                        std::fs::remove_file(&path)?;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| LeaseWriteError::Stopped)?
        .map_err(|source| LeaseWriteError::Snapshot { path, source })
    }
}

impl LeaseJournal {
    /// Load the leases from `dir`, compact them into a fresh `leases.json`, delete the replayed
    /// journal files, and open a new journal file.
    pub fn open(dir: &Path, now: Instant) -> Result<(Leases, LeaseJournal), LeaseOpenError> {
        let snapshot_path = dir.join("leases.json");
        let journal_dir = dir.join("journal");
        let mut leases = Leases::new();
        let mut seq = 0;
        match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snapshot: LeaseSnapshot = serde_json::from_slice(&bytes).map_err(|error| {
                    LeaseOpenError::ReadSnapshot {
                        path: snapshot_path.clone(),
                        source: io::Error::new(io::ErrorKind::InvalidData, error),
                    }
                })?;
                seq = snapshot.seq;
                for record in &snapshot.records {
                    leases.replay(record, now);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LeaseOpenError::ReadSnapshot {
                    path: snapshot_path,
                    source,
                });
            }
        }
        let (records, last_seq) = journal::replay_with(&journal_dir, seq, |payload| {
            serde_json::from_slice::<LeaseRecord>(payload).ok()
        })
        .map_err(LeaseOpenError::Replay)?;
        for (_, record) in &records {
            leases.replay(record, now);
        }
        let compact = |source| LeaseOpenError::Compact {
            path: snapshot_path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(compact)?;
        let snapshot = LeaseSnapshot {
            format: 1,
            seq: last_seq,
            records: leases.records(now),
        };
        let temporary = dir.join("leases.json.tmp");
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|error| compact(io::Error::new(io::ErrorKind::InvalidData, error)))?;
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
            .and_then(|()| std::fs::rename(&temporary, &snapshot_path))
            .and_then(|()| journal::sync_dir(dir))
            .map_err(compact)?;
        // Everything replayed is now in leases.json: the old journal files can go.
        if let Ok(files) = journal::list_files(&journal_dir) {
            for (_, path) in files {
                std::fs::remove_file(&path).map_err(compact)?;
            }
        }
        let next_seq = last_seq + 1;
        let writer = journal::PreallocatedWriter::create(&journal_dir, next_seq)
            .map_err(LeaseOpenError::Start)?;
        Ok((
            leases,
            LeaseJournal {
                writer,
                dir: dir.to_path_buf(),
                next_seq,
                uncommitted: 0,
                appended_since_compaction: 0,
                failed: None,
            },
        ))
    }

    /// Buffer a record; call in the order the changes were applied (under the lease lock). It
    /// is durable once a later [`LeaseJournal::commit`] returns `Ok`.
    pub fn append(&mut self, record: &LeaseRecord) -> Result<(), LeaseWriteError> {
        if let Some(error) = &self.failed {
            return Err(LeaseWriteError::Write(error.clone()));
        }
        let payload = serde_json::to_vec(record).map_err(LeaseWriteError::Encode)?;
        if payload.len() > journal::MAX_RECORD {
            return Err(LeaseWriteError::TooLarge(payload.len()));
        }
        self.writer.append(self.next_seq, &payload);
        self.next_seq += 1;
        self.uncommitted += 1;
        self.appended_since_compaction += 1;
        Ok(())
    }

    /// Make every appended record durable: one write and one `fdatasync` for all of them.
    pub fn commit(&mut self) -> Result<(), LeaseWriteError> {
        if let Some(error) = &self.failed {
            return Err(LeaseWriteError::Write(error.clone()));
        }
        if self.uncommitted == 0 {
            return Ok(());
        }
        match self.writer.sync() {
            Ok(()) => {
                self.uncommitted = 0;
                Ok(())
            }
            Err(source) => Err(self.fail(source)),
        }
    }

    /// Records appended and not yet committed.
    pub fn uncommitted(&self) -> usize {
        self.uncommitted
    }

    fn fail(&mut self, source: io::Error) -> LeaseWriteError {
        let error = self.writer.error(source);
        tracing::error!(error = %crate::error::Chain(&*error), "DHCP lease journal write failed; no lease is handed out until restart");
        self.failed = Some(error.clone());
        LeaseWriteError::Write(error)
    }

    /// Whether enough records were appended to make a compaction worthwhile.
    pub fn wants_compaction(&self) -> bool {
        self.appended_since_compaction >= COMPACT_AFTER_RECORDS
    }

    /// Start a compaction of `leases` (under the same lock as [`LeaseJournal::append`], so the
    /// snapshot matches the records before the switch): commit, continue in a new file, and
    /// return the snapshot to write outside the lock with [`Compaction::finish`].
    pub fn begin_compaction(
        &mut self,
        leases: &Leases,
        now: Instant,
    ) -> Result<Compaction, LeaseWriteError> {
        self.commit()?;
        if let Err(source) = self.writer.rotate(self.next_seq) {
            return Err(self.fail(source));
        }
        self.appended_since_compaction = 0;
        Ok(Compaction {
            dir: self.dir.clone(),
            snapshot: LeaseSnapshot {
                format: 1,
                seq: self.next_seq - 1,
                records: leases.records(now),
            },
        })
    }

    /// Make everything appended durable and cut the file's preallocated space (at shutdown).
    pub fn close(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Err(source) = self.writer.finish() {
            let error = self.fail(source);
            tracing::warn!(error = %crate::error::Chain(&error), "DHCP lease journal not flushed at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddress {
        MacAddress([0x52, 0x54, 0, 0, 0, last])
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 51);

    fn bind(address: Ipv4Addr, seconds: u32) -> LeaseChange {
        LeaseChange::Bind { address, seconds }
    }

    #[tokio::test(start_paused = true)]
    async fn offers_expire_quickly_and_binds_at_lease_time() {
        let mut leases = Leases::new();
        let now = Instant::now();
        assert_eq!(
            leases.apply(mac(1), LeaseChange::Offer { address: A }, false, now),
            Ok(None)
        );
        assert_eq!(leases.at(now).holder_of(A), Some(Some(mac(1))));
        assert!(leases.at(now).lease_of(&mac(1)).unwrap().offered);
        tokio::time::advance(OFFER_HOLD + Duration::from_secs(1)).await;
        let later = Instant::now();
        assert_eq!(leases.at(later).holder_of(A), None);
        assert!(leases.at(later).lease_of(&mac(1)).is_none());

        let record = leases.apply(mac(1), bind(A, 60), false, later).unwrap();
        assert!(matches!(record, Some(LeaseRecord::Bind { address, .. }) if address == A));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(leases.lease(&mac(1), Instant::now()).is_some());
        assert_eq!(leases.bound_count(Instant::now()), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(leases.lease(&mac(1), Instant::now()).is_none());
        assert_eq!(leases.expire(Instant::now()), 2);
        assert_eq!(leases.expire(Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_extends_the_same_lease() {
        let mut leases = Leases::new();
        leases
            .apply(mac(1), bind(A, 60), false, Instant::now())
            .unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        leases
            .apply(mac(1), bind(A, 60), false, Instant::now())
            .unwrap();
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(leases.lease(&mac(1), Instant::now()).unwrap().address, A);
        // A DISCOVER after reboot (offer of the same address) keeps the bound lease.
        leases
            .apply(
                mac(1),
                LeaseChange::Offer { address: A },
                false,
                Instant::now(),
            )
            .unwrap();
        assert_eq!(
            leases.lease(&mac(1), Instant::now()).unwrap().state,
            LeaseState::Bound
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_mac_one_lease_one_address_one_mac() {
        let mut leases = Leases::new();
        let now = Instant::now();
        leases.apply(mac(1), bind(A, 60), false, now).unwrap();
        // Moving to another address frees the first.
        leases.apply(mac(1), bind(B, 60), false, now).unwrap();
        assert_eq!(leases.at(now).holder_of(A), None);
        assert_eq!(leases.at(now).holder_of(B), Some(Some(mac(1))));
        // Another MAC cannot take a live lease...
        assert_eq!(
            leases.apply(mac(2), bind(B, 60), false, now),
            Err(LeaseConflictError {
                address: B,
                holder: mac(1)
            })
        );
        assert_eq!(
            leases.apply(mac(2), LeaseChange::Offer { address: B }, false, now),
            Err(LeaseConflictError {
                address: B,
                holder: mac(1)
            })
        );
        // ...unless the address is its node's reservation: the dynamic lease ends.
        leases.apply(mac(2), bind(B, 60), true, now).unwrap();
        assert_eq!(leases.at(now).holder_of(B), Some(Some(mac(2))));
        assert!(leases.lease(&mac(1), now).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn release_and_decline() {
        let mut leases = Leases::new();
        let now = Instant::now();
        leases.apply(mac(1), bind(A, 60), false, now).unwrap();
        // Releasing an address one does not hold does nothing.
        assert_eq!(
            leases.apply(mac(2), LeaseChange::Release { address: A }, false, now),
            Ok(None)
        );
        assert!(matches!(
            leases.apply(mac(1), LeaseChange::Release { address: A }, false, now),
            Ok(Some(LeaseRecord::Release { .. }))
        ));
        assert_eq!(leases.at(now).holder_of(A), None);

        leases.apply(mac(1), bind(A, 60), false, now).unwrap();
        assert_eq!(
            leases.apply(mac(2), LeaseChange::Decline { address: A }, false, now),
            Ok(None)
        );
        assert!(matches!(
            leases.apply(mac(1), LeaseChange::Decline { address: A }, false, now),
            Ok(Some(LeaseRecord::Decline { .. }))
        ));
        assert_eq!(leases.at(now).holder_of(A), Some(None));
        assert!(leases.lease(&mac(1), now).is_none());
        assert!(
            leases
                .apply(mac(3), LeaseChange::Offer { address: A }, false, now)
                .is_err()
        );
        tokio::time::advance(DECLINE_HOLD + Duration::from_secs(1)).await;
        assert_eq!(leases.at(Instant::now()).holder_of(A), None);
    }

    #[tokio::test(start_paused = true)]
    async fn journal_survives_restart_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        {
            let (mut leases, mut journal) = LeaseJournal::open(dir.path(), now).unwrap();
            for (index, address) in [A, B].into_iter().enumerate() {
                let record = leases
                    .apply(
                        mac(u8::try_from(index).unwrap()),
                        bind(address, 3600),
                        false,
                        now,
                    )
                    .unwrap()
                    .unwrap();
                journal.append(&record).unwrap();
                journal.commit().unwrap();
            }
            let record = leases
                .apply(mac(1), LeaseChange::Release { address: B }, false, now)
                .unwrap()
                .unwrap();
            journal.append(&record).unwrap();
            journal.commit().unwrap();
            let record = leases
                .apply(mac(0), LeaseChange::Offer { address: B }, false, now)
                .unwrap();
            assert!(record.is_none(), "offers are not journaled");
            journal.close();
        }
        let (leases, mut journal) = LeaseJournal::open(dir.path(), now).unwrap();
        assert_eq!(leases.lease(&mac(0), now).unwrap().address, A);
        assert!(leases.lease(&mac(1), now).is_none());
        journal.close();
        // Compacted: one snapshot, and the journal directory holds only the new empty file.
        let snapshot = std::fs::read_to_string(dir.path().join("leases.json")).unwrap();
        assert!(snapshot.contains("10.0.0.50"));
        assert!(!snapshot.contains("10.0.0.51"));
        let files = journal::list_files(&dir.path().join("journal")).unwrap();
        assert!(files.len() <= 1);
        // A third start still sees the lease.
        let (leases, mut journal) = LeaseJournal::open(dir.path(), now).unwrap();
        assert_eq!(leases.lease(&mac(0), now).unwrap().address, A);
        journal.close();
    }

    #[tokio::test(start_paused = true)]
    async fn compaction_while_running_keeps_every_lease_and_drops_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut leases, mut journal) = LeaseJournal::open(dir.path(), now).unwrap();
        let bind_one = |leases: &mut Leases, journal: &mut LeaseJournal, last: u8| {
            let record = leases
                .apply(
                    mac(last),
                    bind(Ipv4Addr::new(10, 0, 1, last), 3600),
                    false,
                    now,
                )
                .unwrap()
                .unwrap();
            journal.append(&record).unwrap();
        };
        for last in 1..=3 {
            bind_one(&mut leases, &mut journal, last);
        }
        // Compaction commits the records appended so far.
        assert_eq!(journal.uncommitted(), 3);
        let compaction = journal.begin_compaction(&leases, now).unwrap();
        assert_eq!(journal.uncommitted(), 0);
        // A record appended after the switch lands in the new file.
        bind_one(&mut leases, &mut journal, 4);
        compaction.finish().await.unwrap();
        journal.commit().unwrap();
        let files = journal::list_files(&dir.path().join("journal")).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].0, 4);
        journal.close();
        let (reopened, mut journal) = LeaseJournal::open(dir.path(), now).unwrap();
        for last in 1..=4 {
            assert_eq!(
                reopened.lease(&mac(last), now).map(|lease| lease.address),
                Some(Ipv4Addr::new(10, 0, 1, last)),
                "{last}"
            );
        }
        journal.close();
    }

    #[tokio::test(start_paused = true)]
    async fn records_round_trip_through_replay() {
        let mut leases = Leases::new();
        let now = Instant::now();
        leases.apply(mac(1), bind(A, 600), false, now).unwrap();
        leases.apply(mac(2), bind(B, 600), false, now).unwrap();
        leases
            .apply(mac(2), LeaseChange::Decline { address: B }, false, now)
            .unwrap();
        let mut replayed = Leases::new();
        for record in leases.records(now) {
            replayed.replay(&record, now);
        }
        assert_eq!(replayed.at(now).holder_of(A), Some(Some(mac(1))));
        assert_eq!(replayed.at(now).holder_of(B), Some(None));
    }
}
