//! Writing one log: [`Storage`] owns the current segment (encoding, rotation by size and age,
//! retention, roll-back after a failed write) and is driven either by the log's single writer
//! thread ([`spawn`], batched group commit: one `fdatasync` per batch) or directly by
//! [`BulkWriter`] for imports and benchmarks.
//!
//! Appends never wait for readers or subscribers: producers put events on a bounded queue and
//! go on; when the queue is full the event is dropped, counted and reported. Records are
//! published to subscribers after they are written (readers can already find them in the
//! files) and before the batch's `fdatasync`; a durable append is acknowledged after it.
//!
//! INVARIANT: a seq is only consumed by a record that reached the file; a failed write is cut
//! off again (`set_len`) and its seqs are reused, so segments stay contiguous.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::watch;

use super::record::{Event, IndexEntry, MAX_PAYLOAD, Record};
use super::segment::{self, SegmentHeader, SegmentInfo, SegmentOpenError};
use super::timestamp;

/// Most queued events written per batch (bounds the wait of the first one).
const MAX_BATCH: usize = 8192;

/// Tunables of one log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Start a new segment when the current one would grow past this many bytes.
    pub max_segment_bytes: u64,
    /// Start a new segment when the current one's first record is older than this.
    pub max_segment_age: Duration,
    /// Keep at most this many segments (the current one included).
    pub retain_segments: usize,
    /// Delete sealed segments whose newest record is older than this.
    pub retain_age: Duration,
    /// Delete the oldest sealed segments while all segments together exceed this.
    pub retain_bytes: u64,
    /// Appends queued for the writer; beyond it they are dropped and counted.
    pub queue_capacity: usize,
    /// Batches of records kept for subscribers; a subscriber further behind misses records.
    pub fanout_capacity: usize,
    /// Records are handed to subscribers at most this often (one wake-up of every subscriber
    /// per interval instead of one per batch: the cost that bounds fan-out).
    pub publish_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            max_segment_bytes: 64 << 20,
            max_segment_age: Duration::from_secs(86_400),
            retain_segments: 1000,
            retain_age: Duration::from_secs(90 * 86_400),
            retain_bytes: 8 << 30,
            queue_capacity: 65_536,
            fanout_capacity: 4096,
            publish_interval: Duration::from_millis(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error("failed to create log directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log {path} is in use by another writer")]
    Locked {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to recover segment")]
    Segment(#[from] SegmentOpenError),
    #[error("failed to start a segment in {path}")]
    NewSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to start the writer thread")]
    Thread(#[source] io::Error),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("event log queue is full; event dropped")]
    QueueFull,
    #[error("event log writer has stopped")]
    Stopped,
    #[error("event of {0} bytes is larger than a record may be")]
    TooLarge(usize),
    #[error("failed to write the event log: {0}")]
    Write(Arc<str>),
}

/// Counters of one log (monotonic since start).
#[derive(Debug, Default)]
pub struct LogCounters {
    pub appended: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub disk_full: AtomicU64,
    pub batches: AtomicU64,
}

/// A batch handed to subscribers.
pub type Published = Arc<[Arc<Record>]>;

/// The shared ring of recent batches that subscribers read with their own cursors, and a
/// watch channel that wakes them. (A tokio broadcast channel wakes every receiver under one
/// mutex, which 1,000 receivers turn into a lock convoy; the watch channel's wake-ups are
/// sharded, and the ring is read under a shared lock.)
pub struct Fanout {
    ring: RwLock<std::collections::VecDeque<Published>>,
    capacity: usize,
    /// The newest published seq; `closed` is set before the last wake-up.
    notify: watch::Sender<u64>,
    closed: std::sync::atomic::AtomicBool,
}

impl Fanout {
    fn new(capacity: usize) -> Fanout {
        Fanout {
            ring: RwLock::new(std::collections::VecDeque::with_capacity(capacity)),
            capacity,
            notify: watch::Sender::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn publish(&self, batch: Published) {
        let Some(last) = batch.last().map(|record| record.seq) else {
            return;
        };
        {
            let mut ring = self.ring.write();
            if ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(batch);
        }
        self.notify.send_replace(last);
    }

    /// Wake everyone for the last time.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// The oldest batch holding a record after `seq`.
    pub fn after(&self, seq: u64) -> Option<Published> {
        let ring = self.ring.read();
        let index =
            ring.partition_point(|batch| batch.last().is_some_and(|record| record.seq <= seq));
        ring.get(index).cloned()
    }
}

/// State shared by the writer, readers and subscribers of one log.
pub struct LogShared {
    pub name: String,
    pub dir: PathBuf,
    /// Oldest first; the last one is being written.
    pub segments: RwLock<Vec<SegmentInfo>>,
    pub counters: LogCounters,
    pub fanout: Fanout,
    /// Seq of the newest record written to the files (readable by queries). A new subscriber
    /// starts after it: older records are history (its backlog), newer ones are live.
    pub written_seq: AtomicU64,
}

impl LogShared {
    /// A copy of the segment list (readers then work on files without holding the lock).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.read().clone()
    }

    pub fn stats(&self) -> serde_json::Value {
        let segments = self.segments.read();
        let bytes: u64 = segments
            .iter()
            .map(|segment| segment.bytes + segment.index_bytes)
            .sum();
        let records: u64 = segments.iter().map(|segment| segment.count).sum();
        let counter = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "log": self.name,
            "segments": segments.len(),
            "records": records,
            "bytes": bytes,
            "appended": counter(&self.counters.appended),
            "dropped": counter(&self.counters.dropped),
            "write_errors": counter(&self.counters.write_errors),
            "disk_full": counter(&self.counters.disk_full),
        })
    }
}

/// The writer side of one log's files.
pub struct Storage {
    shared: Arc<LogShared>,
    options: LogOptions,
    /// Shared with the sync thread, which calls `fdatasync` on them while the writer goes on.
    log: Arc<File>,
    index: Arc<File>,
    /// Committed lengths of the current segment and index (what a failed write returns to).
    log_len: u64,
    index_len: u64,
    next_seq: u64,
    last_time: i64,
    log_buffer: Vec<u8>,
    index_buffer: Vec<u8>,
    /// Records encoded into the buffers but not yet written.
    pending: Vec<Arc<Record>>,
    _lock: File,
}

impl Storage {
    /// Open (creating or recovering) the log in `dir`.
    pub fn open(name: &str, dir: &Path, options: LogOptions) -> Result<Storage, LogOpenError> {
        fs::create_dir_all(dir).map_err(|source| LogOpenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let firsts = segment::list(dir)?;
        let mut segments = Vec::with_capacity(firsts.len());
        for (position, first) in firsts.iter().enumerate() {
            let newest = position + 1 == firsts.len();
            let log_path = segment::log_path(dir, *first);
            if newest
                && fs::metadata(&log_path)
                    .is_ok_and(|metadata| metadata.len() < segment::SEGMENT_HEADER as u64)
            {
                // A crash while the segment was being created, before its header was synced:
                // it never held a record.
                tracing::warn!(
                    log = name,
                    segment = first,
                    "removing a segment left unfinished by a crash"
                );
                let _ = fs::remove_file(&log_path);
                let _ = fs::remove_file(segment::index_path(dir, *first));
                continue;
            }
            let (info, recovery) = segment::recover(dir, *first, newest)?;
            if recovery.torn_bytes > 0 || recovery.index_rebuilt {
                tracing::warn!(
                    log = name,
                    segment = first,
                    torn_bytes = recovery.torn_bytes,
                    index_rebuilt = recovery.index_rebuilt,
                    "event log recovered after an unclean stop"
                );
            }
            segments.push(info);
        }
        let fanout = Fanout::new(options.fanout_capacity.max(16));
        let last = segments.last().cloned();
        let shared = Arc::new(LogShared {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            counters: LogCounters::default(),
            fanout,
            written_seq: AtomicU64::new(0),
        });
        let (log, index, log_len, index_len, next_seq, last_time) = match last {
            Some(info) => {
                let open = |path: PathBuf| {
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(|source| LogOpenError::NewSegment { path, source })
                };
                (
                    open(segment::log_path(dir, info.first_seq()))?,
                    open(segment::index_path(dir, info.first_seq()))?,
                    info.bytes,
                    info.index_bytes,
                    info.end_seq(),
                    info.last_time,
                )
            }
            None => {
                let (log, index) = create_segment(dir, 1, None)?;
                shared
                    .segments
                    .write()
                    .push(empty_info(1, None, timestamp::now_ms()));
                (log, index, segment::SEGMENT_HEADER as u64, 0, 1, i64::MIN)
            }
        };
        shared
            .written_seq
            .store(next_seq.saturating_sub(1), Ordering::Relaxed);
        let mut storage = Storage {
            shared,
            options,
            log: Arc::new(log),
            index: Arc::new(index),
            log_len,
            index_len,
            next_seq,
            last_time,
            log_buffer: Vec::with_capacity(1 << 20),
            index_buffer: Vec::with_capacity(MAX_BATCH * 40),
            pending: Vec::with_capacity(MAX_BATCH),
            _lock: lock,
        };
        storage.apply_retention();
        Ok(storage)
    }

    pub fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// Encode and write `events` in order, rotating as needed: one result per event, in order.
    pub fn write(
        &mut self,
        events: impl IntoIterator<Item = Event>,
    ) -> Vec<Result<Arc<Record>, AppendError>> {
        let mut results = Vec::new();
        // Results from here on belong to records still in the buffers.
        let mut pending_from = 0;
        for event in events {
            let time_ms = event
                .time_ms
                .unwrap_or_else(timestamp::now_ms)
                .max(self.last_time);
            let (kind, detail) = event.payload.into_parts();
            let record = Record {
                seq: self.next_seq,
                time_ms,
                kind,
                node: event.node,
                user: event.user,
                detail,
            };
            let before = self.log_buffer.len();
            let length = record.encode_into(&mut self.log_buffer);
            if length - super::record::FRAME_HEADER > MAX_PAYLOAD {
                self.log_buffer.truncate(before);
                // Refused records consume no seq.
                results.push(Err(AppendError::TooLarge(length)));
                continue;
            }
            let mut before = before as u64;
            if self.needs_rotation(time_ms) {
                let frame = self.log_buffer.split_off(before as usize);
                let flushed = self.flush_pending();
                settle(&mut results, pending_from, flushed);
                pending_from = results.len();
                if let Err(error) = self.rotate(time_ms) {
                    results.push(Err(error));
                    pending_from = results.len();
                    continue;
                }
                self.log_buffer = frame;
                before = 0;
            }
            let entry = IndexEntry::for_record(&record, self.log_len + before, length);
            self.index_buffer.extend_from_slice(&entry.encode());
            self.next_seq += 1;
            self.last_time = time_ms;
            let record = Arc::new(record);
            self.pending.push(record.clone());
            results.push(Ok(record));
            if self.log_buffer.len() >= (4 << 20) {
                let flushed = self.flush_pending();
                settle(&mut results, pending_from, flushed);
                pending_from = results.len();
            }
        }
        let flushed = self.flush_pending();
        settle(&mut results, pending_from, flushed);
        results
    }

    fn needs_rotation(&self, time_ms: i64) -> bool {
        let segments = self.shared.segments.read();
        let Some(current) = segments.last() else {
            return false;
        };
        if current.count + self.pending.len() as u64 == 0 {
            return false;
        }
        let age_limit = i64::try_from(self.options.max_segment_age.as_millis()).unwrap_or(i64::MAX);
        let first_time = match self.pending.first() {
            Some(record) if current.count == 0 => record.time_ms,
            _ => current.first_time,
        };
        // The buffer already holds the new frame.
        self.log_len + self.log_buffer.len() as u64 > self.options.max_segment_bytes
            || time_ms.saturating_sub(first_time) >= age_limit
    }

    /// Write the buffered records of the current segment; on failure cut back to the committed
    /// length and give back their seqs.
    fn flush_pending(&mut self) -> Result<(), AppendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (&*self.log)
            .write_all(&self.log_buffer)
            .and_then(|()| (&*self.index).write_all(&self.index_buffer));
        if let Err(error) = result {
            let first_seq = self.pending[0].seq;
            let _ = self.log.set_len(self.log_len);
            let _ = self.index.set_len(self.index_len);
            self.next_seq = first_seq;
            self.last_time = {
                let segments = self.shared.segments.read();
                segments
                    .last()
                    .map(|info| info.last_time)
                    .unwrap_or(i64::MIN)
            };
            self.pending.clear();
            self.log_buffer.clear();
            self.index_buffer.clear();
            return Err(self.report_write_error("write", &error));
        }
        self.log_len += self.log_buffer.len() as u64;
        self.index_len += self.index_buffer.len() as u64;
        {
            let mut segments = self.shared.segments.write();
            if let Some(current) = segments.last_mut() {
                if current.count == 0 {
                    current.first_time = self.pending[0].time_ms;
                }
                current.count += self.pending.len() as u64;
                current.last_time = self.last_time;
                current.bytes = self.log_len;
                current.index_bytes = self.index_len;
            }
        }
        self.shared
            .counters
            .appended
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.pending.clear();
        self.log_buffer.clear();
        self.index_buffer.clear();
        Ok(())
    }

    fn report_write_error(&self, what: &'static str, error: &io::Error) -> AppendError {
        let counters = &self.shared.counters;
        let failures = counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if error.raw_os_error() == Some(libc::ENOSPC) {
            counters.disk_full.fetch_add(1, Ordering::Relaxed);
        }
        // Loud, but a full disk retried by every batch must not flood the daemon's own log.
        if failures.is_power_of_two() {
            tracing::error!(
                log = %self.shared.name,
                dir = %self.shared.dir.display(),
                operation = what,
                failures,
                error = %crate::error::Chain(&error),
                "event log write failed; events are being lost"
            );
        }
        AppendError::Write(Arc::from(error.to_string()))
    }

    /// `fdatasync` the current segment and index.
    pub fn sync(&mut self) -> Result<(), AppendError> {
        let result = self.log.sync_data().and_then(|()| self.index.sync_data());
        result.map_err(|error| self.report_write_error("sync", &error))
    }

    /// Seal the current segment and start the next one.
    fn rotate(&mut self, time_ms: i64) -> Result<(), AppendError> {
        self.sync()?;
        let previous = self
            .shared
            .segments
            .read()
            .last()
            .map(SegmentInfo::first_seq);
        let (log, index) = create_segment(&self.shared.dir, self.next_seq, previous).map_err(
            |error| match error {
                LogOpenError::NewSegment { source, .. } => {
                    self.report_write_error("rotate", &source)
                }
                other => AppendError::Write(Arc::from(other.to_string())),
            },
        )?;
        self.log = Arc::new(log);
        self.index = Arc::new(index);
        self.log_len = segment::SEGMENT_HEADER as u64;
        self.index_len = 0;
        self.shared
            .segments
            .write()
            .push(empty_info(self.next_seq, previous, time_ms));
        self.apply_retention();
        Ok(())
    }

    /// Delete the oldest sealed segments beyond the count, age and size limits.
    pub fn apply_retention(&mut self) {
        let now = timestamp::now_ms();
        let age_limit = i64::try_from(self.options.retain_age.as_millis()).unwrap_or(i64::MAX);
        loop {
            let victim = {
                let segments = self.shared.segments.read();
                if segments.len() < 2 {
                    return;
                }
                let total: u64 = segments
                    .iter()
                    .map(|segment| segment.bytes + segment.index_bytes)
                    .sum();
                let oldest = &segments[0];
                let expired = now.saturating_sub(oldest.last_time) > age_limit;
                if segments.len() > self.options.retain_segments.max(1)
                    || expired
                    || total > self.options.retain_bytes
                {
                    oldest.first_seq()
                } else {
                    return;
                }
            };
            // Readers holding the files open keep reading them; new readers no longer see them.
            self.shared.segments.write().remove(0);
            for path in [
                segment::log_path(&self.shared.dir, victim),
                segment::index_path(&self.shared.dir, victim),
            ] {
                if let Err(error) = fs::remove_file(&path)
                    && error.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %crate::error::Chain(&error), "failed to delete an expired event log segment");
                }
            }
        }
    }

    /// Hand records to subscribers.
    pub fn publish(&self, records: Vec<Arc<Record>>) {
        if records.is_empty() {
            return;
        }
        self.shared.fanout.publish(Published::from(records));
    }
}

/// After a flush of the buffered records (whose results start at `from`): a failure turns
/// them into errors.
fn settle(
    results: &mut [Result<Arc<Record>, AppendError>],
    from: usize,
    flushed: Result<(), AppendError>,
) {
    if let Err(error) = flushed {
        for result in results.iter_mut().skip(from) {
            if result.is_ok() {
                *result = Err(error.clone());
            }
        }
    }
}

fn empty_info(first_seq: u64, previous: Option<u64>, created_ms: i64) -> SegmentInfo {
    SegmentInfo {
        header: SegmentHeader {
            first_seq,
            created_ms,
            previous,
        },
        count: 0,
        first_time: created_ms,
        last_time: created_ms,
        bytes: segment::SEGMENT_HEADER as u64,
        index_bytes: 0,
    }
}

fn create_segment(
    dir: &Path,
    first_seq: u64,
    previous: Option<u64>,
) -> Result<(File, File), LogOpenError> {
    let header = SegmentHeader {
        first_seq,
        created_ms: timestamp::now_ms(),
        previous,
    };
    let log_path = segment::log_path(dir, first_seq);
    let index_path = segment::index_path(dir, first_seq);
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogOpenError::NewSegment { path, source }
    };
    let mut log = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&log_path)
        .map_err(fail(&log_path))?;
    log.write_all(&header.encode()).map_err(fail(&log_path))?;
    log.sync_data().map_err(fail(&log_path))?;
    let index = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&index_path)
        .map_err(fail(&index_path))?;
    // The new names must survive a crash too.
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(fail(dir))?;
    let reopen = |path: &Path| {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(fail(path))
    };
    drop(log);
    drop(index);
    Ok((reopen(&log_path)?, reopen(&index_path)?))
}

/// One writer per log directory, across processes too.
fn lock_dir(dir: &Path) -> Result<File, LogOpenError> {
    let path = dir.join("lock");
    let failed = |source| LogOpenError::Locked {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Work for the writer thread.
pub enum Command {
    Append {
        /// Boxed: every slot of the bounded queue has the size of the largest command, and a
        /// typed event is a few hundred bytes.
        event: Box<Event>,
        /// Present for durable appends: answered with the seq after `fdatasync`.
        ack: Option<tokio::sync::oneshot::Sender<Result<u64, AppendError>>>,
    },
    /// Answered once everything queued before it is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
    Shutdown,
}

/// Start the writer thread of `storage`.
pub fn spawn(
    storage: Storage,
) -> Result<(mpsc::SyncSender<Command>, std::thread::JoinHandle<()>), LogOpenError> {
    let (sender, receiver) = mpsc::sync_channel(storage.options.queue_capacity.max(1));
    let handle = std::thread::Builder::new()
        .name(format!("eventlog-{}", storage.shared.name))
        .spawn(move || run(storage, receiver))
        .map_err(LogOpenError::Thread)?;
    Ok((sender, handle))
}

/// Work for the sync thread: the files written by one batch and who waits for them.
struct SyncJob {
    log: Arc<File>,
    index: Arc<File>,
    acks: Vec<(Result<u64, AppendError>, Ack)>,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
}

type Ack = tokio::sync::oneshot::Sender<Result<u64, AppendError>>;

/// Longest time a written fire-and-forget record waits for its `fdatasync`.
const LAZY_SYNC: Duration = Duration::from_millis(1000);

/// The writer thread: write and publish batches; `fdatasync` and acknowledgements happen on a
/// second thread, so that subscribers and the next batch never wait for the disk's flush
/// (group commit as a pipeline: one sync covers every batch written while the previous one
/// ran).
fn run(mut storage: Storage, receiver: mpsc::Receiver<Command>) {
    let (jobs, job_receiver) = mpsc::channel::<SyncJob>();
    let shared = storage.shared.clone();
    let syncer = std::thread::Builder::new()
        .name(format!("eventlog-{}-sync", shared.name))
        .spawn(move || sync_loop(&shared, job_receiver));
    let syncer = match syncer {
        Ok(handle) => Some(handle),
        Err(error) => {
            // Without the thread, syncs run inline below (slower, still correct).
            tracing::error!(error = %crate::error::Chain(&error), "failed to start the event log sync thread");
            None
        }
    };
    let interval = storage.options.publish_interval;
    let mut unpublished: Vec<Arc<Record>> = Vec::new();
    let mut last_publish = Instant::now();
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::new();
    let mut flushes = Vec::new();
    let mut stopping = false;
    // Fire-and-forget records are synced lazily (at most LAZY_SYNC after they are written);
    // durable appends and flushes are synced at once. A DHCP server writing 10,000 events/s
    // must not pay one fdatasync per batch for records nobody waits on.
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    while !stopping {
        let first = if unpublished.is_empty() && !unsynced {
            match receiver.recv() {
                Ok(command) => Some(command),
                Err(_) => break,
            }
        } else {
            let publish_wait = if unpublished.is_empty() {
                LAZY_SYNC
            } else {
                interval.saturating_sub(last_publish.elapsed())
            };
            let sync_wait = if unsynced {
                LAZY_SYNC.saturating_sub(last_sync.elapsed())
            } else {
                LAZY_SYNC
            };
            let wait = publish_wait.min(sync_wait);
            match receiver.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    None
                }
            }
        };
        let mut next = first;
        while let Some(command) = next {
            match command {
                Command::Append { event, ack } => {
                    acks.push(ack);
                    events.push(*event);
                }
                Command::Flush(ack) => flushes.push(ack),
                Command::Shutdown => {
                    stopping = true;
                    break;
                }
            }
            if events.len() >= MAX_BATCH {
                break;
            }
            next = receiver.try_recv().ok();
        }
        let mut waiting = Vec::new();
        let wrote = !events.is_empty();
        if wrote {
            let results = storage.write(events.drain(..));
            storage
                .shared
                .counters
                .batches
                .fetch_add(1, Ordering::Relaxed);
            if let Some(Ok(last)) = results.iter().rev().find(|result| result.is_ok()) {
                storage
                    .shared
                    .written_seq
                    .store(last.seq, Ordering::Release);
            }
            for (result, ack) in results.into_iter().zip(acks.drain(..)) {
                if let Some(ack) = ack {
                    waiting.push((
                        result
                            .as_ref()
                            .map(|record| record.seq)
                            .map_err(Clone::clone),
                        ack,
                    ));
                }
                if let Ok(record) = result {
                    unpublished.push(record);
                }
            }
        }
        let publish_due = stopping || !flushes.is_empty() || last_publish.elapsed() >= interval;
        if !unpublished.is_empty() && publish_due {
            storage.publish(std::mem::take(&mut unpublished));
            last_publish = Instant::now();
        }
        unsynced |= wrote;
        let sync_due = !waiting.is_empty()
            || !flushes.is_empty()
            || stopping
            || (unsynced && last_sync.elapsed() >= LAZY_SYNC);
        if sync_due && (unsynced || !flushes.is_empty()) {
            unsynced = false;
            last_sync = Instant::now();
            let job = SyncJob {
                log: storage.log.clone(),
                index: storage.index.clone(),
                acks: waiting,
                flushes: std::mem::take(&mut flushes),
            };
            if syncer.is_some() {
                // The sync thread only stops when this sender is dropped.
                let _ = jobs.send(job);
            } else {
                finish_jobs(&storage.shared, vec![job]);
            }
        }
    }
    if !unpublished.is_empty() {
        storage.publish(unpublished);
    }
    drop(jobs);
    if let Some(syncer) = syncer {
        let _ = syncer.join();
    }
    let _ = storage.sync();
    storage.shared.fanout.close();
}

fn sync_loop(shared: &LogShared, jobs: mpsc::Receiver<SyncJob>) {
    while let Ok(job) = jobs.recv() {
        let mut group = vec![job];
        group.extend(jobs.try_iter());
        finish_jobs(shared, group);
    }
}

/// One `fdatasync` for a group of batches, then their acknowledgements. Only the newest files
/// need it: a rotation synced the segments before them.
fn finish_jobs(shared: &LogShared, group: Vec<SyncJob>) {
    let Some(newest) = group.last() else { return };
    let synced = newest
        .log
        .sync_data()
        .and_then(|()| newest.index.sync_data())
        .map_err(|error| {
            let failures = shared.counters.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if error.raw_os_error() == Some(libc::ENOSPC) {
                shared.counters.disk_full.fetch_add(1, Ordering::Relaxed);
            }
            if failures.is_power_of_two() {
                tracing::error!(log = %shared.name, failures, error = %crate::error::Chain(&error), "event log sync failed; records may not be durable");
            }
            AppendError::Write(Arc::from(error.to_string()))
        });
    for job in group {
        for (result, ack) in job.acks {
            let answer = match (result, &synced) {
                (Ok(seq), Ok(())) => Ok(seq),
                (Ok(_), Err(error)) => Err(error.clone()),
                (Err(error), _) => Err(error),
            };
            let _ = ack.send(answer);
        }
        for flush in job.flushes {
            let _ = flush.send(());
        }
    }
}

/// Writes a log directly from the calling thread, without the queue, for imports and
/// benchmarks. Nothing else may write the log meanwhile (the directory lock enforces it).
pub struct BulkWriter {
    storage: Storage,
    batch: Vec<Event>,
}

impl BulkWriter {
    pub fn open(name: &str, dir: &Path, options: LogOptions) -> Result<BulkWriter, LogOpenError> {
        Ok(BulkWriter {
            storage: Storage::open(name, dir, options)?,
            batch: Vec::with_capacity(MAX_BATCH),
        })
    }

    pub fn append(&mut self, event: Event) -> Result<(), AppendError> {
        self.batch.push(event);
        if self.batch.len() >= MAX_BATCH {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> Result<(), AppendError> {
        let results = self.storage.write(self.batch.drain(..));
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Write what is buffered and make it durable.
    pub fn finish(mut self) -> Result<(), AppendError> {
        self.write()?;
        self.storage.sync()
    }
}
