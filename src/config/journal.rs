//! Durable persistence of the configuration: an append-only journal of committed transactions
//! plus periodic snapshots that let old journal files be deleted.
//!
//! On-disk layout (under `<state>/cfg/`):
//! - `snapshot.json`: `{"format": 1, "seq": S, "nodes": {..}, "groups": {..}, "globals": {..}}`,
//!   the whole configuration as of transaction `S`, replaced atomically (temp file, fsync, rename,
//!   directory fsync).
//! - `journal/<first-seq, 20 digits>.wal`: records, each
//!   `u32 LE payload length | u32 LE CRC-32 of (seq bytes ++ payload) | u64 LE seq | payload`,
//!   the payload being the JSON array of [`Op`]s of one transaction.
//!
//! Group commit: one writer thread drains every queued transaction, writes them, calls
//! `fdatasync` once, and only then acknowledges them all; many concurrent writers share one sync.
//!
//! INVARIANT: a transaction is acknowledged only after its record is durable; at start-up a record
//! is either whole (length and checksum match) or, at the tail of the newest file, ignored and cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::model::Op;

const RECORD_HEADER: usize = 16;
/// A single transaction larger than this is refused (and never written).
pub const MAX_RECORD: usize = 256 * 1024 * 1024;
/// Most transactions written per sync; bounds the latency of the first writer in a batch.
const MAX_BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to write journal file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal writer has stopped after an earlier failure")]
    Stopped,
    #[error("transaction of {0} bytes is larger than the journal allows")]
    TooLarge(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalLoadError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "corrupt record in {path} at offset {offset} (not at the end of the newest journal file): {reason}"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("journal sequence gap in {path}: expected {expected}, found {found}")]
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

/// One decoded transaction.
pub struct Transaction {
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// Work sent to the writer thread, in commit order.
pub(crate) enum Command<T> {
    Append {
        seq: u64,
        payload: Vec<u8>,
        ack: Ack,
        /// Handed to the durability callback, in order, once the record is on disk.
        after: T,
    },
    /// Start a new journal file whose first record will be `first_seq`.
    Rotate { first_seq: u64, ack: Ack },
    /// Flush and stop.
    Shutdown,
}

/// Completion of one queued journal operation.
pub type Ack = tokio::sync::oneshot::Sender<Result<(), Arc<JournalError>>>;

/// Handle to the writer thread.
pub struct Journal<T: Send + 'static> {
    sender: mpsc::Sender<Command<T>>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

pub fn journal_dir(cfg_dir: &Path) -> PathBuf {
    cfg_dir.join("journal")
}

fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// Journal files in order of their first sequence number.
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalLoadError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(source) => {
            return Err(JournalLoadError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| JournalLoadError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(first) = stem.parse::<u64>()
        {
            files.push((first, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Encode one record.
pub fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&hasher.finalize().to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// Why decoding stopped before the end of a file.
struct Torn {
    offset: u64,
    reason: String,
}

/// Decode every whole record of a file with `parse`; stops at the first torn or corrupt one
/// (a payload `parse` rejects counts as corrupt).
fn decode_file<R>(
    bytes: &[u8],
    parse: &impl Fn(&[u8]) -> Option<R>,
) -> (Vec<(u64, R)>, Option<Torn>) {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let torn = |reason: &str| Torn {
            offset: u64::try_from(offset).unwrap_or(u64::MAX),
            reason: reason.to_string(),
        };
        let Some(header) = bytes.get(offset..offset + RECORD_HEADER) else {
            return (records, Some(torn("truncated record header")));
        };
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&header[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        let start = offset + RECORD_HEADER;
        let Some(payload) = start
            .checked_add(length)
            .and_then(|end| bytes.get(start..end))
        else {
            return (records, Some(torn("truncated record payload")));
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq_bytes);
        hasher.update(payload);
        if hasher.finalize() != crc {
            return (records, Some(torn("checksum mismatch")));
        }
        let Some(record) = parse(payload) else {
            return (records, Some(torn("undecodable record")));
        };
        records.push((seq, record));
        offset = start + length;
    }
    (records, None)
}

/// Read every transaction with a sequence number above `after`, in order. A torn tail of the
/// newest file is cut off (so that appends continue after the last whole record); damage
/// anywhere else is an error, because acknowledged records could follow it.
pub fn replay(dir: &Path, after: u64) -> Result<(Vec<Transaction>, u64), JournalLoadError> {
    let (records, last_seq) = replay_with(dir, after, |payload| {
        serde_json::from_slice::<Vec<Op>>(payload).ok()
    })?;
    let transactions = records
        .into_iter()
        .map(|(seq, ops)| Transaction { seq, ops })
        .collect();
    Ok((transactions, last_seq))
}

/// [`replay`] for any record type: `parse` decodes one payload. Also used by the DHCP lease
/// journal, which shares the framing, the writer thread and the torn-tail rule.
pub fn replay_with<R>(
    dir: &Path,
    after: u64,
    parse: impl Fn(&[u8]) -> Option<R>,
) -> Result<(Vec<(u64, R)>, u64), JournalLoadError> {
    let files = list_files(dir)?;
    let mut result = Vec::new();
    let mut last_seq = after;
    let count = files.len();
    for (index, (_, path)) in files.iter().enumerate() {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| JournalLoadError::Read {
                path: path.clone(),
                source,
            })?;
        let (records, torn) = decode_file(&bytes, &parse);
        if let Some(torn) = torn {
            if index + 1 != count {
                return Err(JournalLoadError::Corrupt {
                    path: path.clone(),
                    offset: torn.offset,
                    reason: torn.reason,
                });
            }
            let zeros = usize::try_from(torn.offset)
                .ok()
                .and_then(|offset| bytes.get(offset..))
                .is_some_and(|tail| tail.iter().all(|byte| *byte == 0));
            if zeros {
                tracing::debug!(path = %path.display(), offset = torn.offset, "cutting the preallocated space after the last journal record");
            } else {
                tracing::warn!(
                    path = %path.display(),
                    offset = torn.offset,
                    reason = %torn.reason,
                    "ignoring the torn tail of a journal (a write interrupted by a crash; it was never acknowledged)"
                );
            }
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| JournalLoadError::Read {
                    path: path.clone(),
                    source,
                })?;
            file.set_len(torn.offset)
                .and_then(|()| file.sync_all())
                .map_err(|source| JournalLoadError::Read {
                    path: path.clone(),
                    source,
                })?;
        }
        for (seq, record) in records {
            if seq <= last_seq {
                continue;
            }
            if seq != last_seq + 1 {
                return Err(JournalLoadError::Gap {
                    path: path.clone(),
                    expected: last_seq + 1,
                    found: seq,
                });
            }
            last_seq = seq;
            result.push((seq, record));
        }
    }
    Ok((result, last_seq))
}

/// Fsync a directory so that a rename or file creation inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An open journal file, appended to in sequence order by the writer thread.
struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
}

impl Writer {
    /// Continue the newest journal file in `dir`, or start one whose first record is `first_seq`.
    fn open(dir: &Path, first_seq: u64) -> io::Result<Writer> {
        fs::create_dir_all(dir)?;
        // Continue the newest file if there is one, else start a new one.
        let existing = list_files(dir).ok().and_then(|files| files.last().cloned());
        let path = match existing {
            Some((_, path)) => path,
            None => dir.join(file_name(first_seq)),
        };
        Writer::open_path(dir, path)
    }

    fn open_path(dir: &Path, path: PathBuf) -> io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            path,
            file: BufWriter::with_capacity(1 << 20, file),
        })
    }

    /// Buffer one record (written out by the next [`Writer::sync`], or earlier when the buffer
    /// fills).
    fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        self.file.write_all(&encode_record(seq, payload))
    }

    /// Write out everything appended and make it durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    fn error(&self, source: io::Error) -> Arc<JournalError> {
        Arc::new(JournalError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Space a [`PreallocatedWriter`] allocates at a time.
const PREALLOCATION: u64 = 1 << 20;

/// A journal file written in place over zeros allocated ahead, for a caller that does its own
/// group commit (the DHCP leases): as a sync rarely changes the file's size or block map,
/// `fdatasync` writes the new records and nothing else. The zeros after the last record read
/// back as a torn tail, which replay cuts; the file is truncated to its records when it is
/// rotated or finished, so only the newest file of a crashed process ever has such a tail.
pub(crate) struct PreallocatedWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Records appended since the last sync.
    buffer: Vec<u8>,
    /// Bytes of records in the file.
    written: u64,
    /// Bytes of zeros and records in the file.
    allocated: u64,
}

impl PreallocatedWriter {
    /// Start a new file in `dir` whose first record will be `first_seq`.
    pub(crate) fn create(dir: &Path, first_seq: u64) -> io::Result<PreallocatedWriter> {
        fs::create_dir_all(dir)?;
        let path = dir.join(file_name(first_seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut writer = PreallocatedWriter {
            dir: dir.to_path_buf(),
            path,
            file,
            buffer: Vec::new(),
            written: 0,
            allocated: 0,
        };
        writer.allocate(PREALLOCATION)?;
        writer.file.sync_all()?;
        sync_dir(dir)?;
        Ok(writer)
    }

    /// Append zeros until `size` bytes are allocated.
    fn allocate(&mut self, size: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; 256 << 10];
        while self.allocated < size {
            let length = usize::try_from(size - self.allocated)
                .unwrap_or(usize::MAX)
                .min(zeros.len());
            self.file
                .write_all_at(zeros.get(..length).unwrap_or_default(), self.allocated)?;
            self.allocated += length as u64;
        }
        Ok(())
    }

    /// Buffer one record until the next [`PreallocatedWriter::sync`].
    pub(crate) fn append(&mut self, seq: u64, payload: &[u8]) {
        self.buffer.extend_from_slice(&encode_record(seq, payload));
    }

    /// Write the buffered records in place and make them durable (`fdatasync`).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.buffer.is_empty() {
            return Ok(());
        }
        let end = self.written + self.buffer.len() as u64;
        if end > self.allocated {
            self.allocate(end.div_ceil(PREALLOCATION) * PREALLOCATION)?;
        }
        self.file.write_all_at(&self.buffer, self.written)?;
        self.file.sync_data()?;
        self.written = end;
        self.buffer.clear();
        Ok(())
    }

    /// Sync, then cut the zeros after the last record.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.sync()?;
        if self.allocated > self.written {
            self.file.set_len(self.written)?;
            self.allocated = self.written;
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// Finish this file, then continue in a new one whose first record is `first_seq`.
    pub(crate) fn rotate(&mut self, first_seq: u64) -> io::Result<()> {
        self.finish()?;
        *self = PreallocatedWriter::create(&self.dir.clone(), first_seq)?;
        Ok(())
    }

    pub(crate) fn error(&self, source: io::Error) -> Arc<JournalError> {
        Arc::new(JournalError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

impl<T: Send + 'static> Journal<T> {
    /// Start the writer thread appending to `dir`. `on_durable` is called on the writer thread,
    /// in sequence order, with the `after` payload of each transaction once it is on disk.
    pub fn start(
        dir: &Path,
        next_seq: u64,
        on_durable: impl FnMut(T) + Send + 'static,
    ) -> io::Result<Journal<T>> {
        let writer = Writer::open(dir, next_seq)?;
        let (sender, receiver) = mpsc::channel::<Command<T>>();
        let thread = std::thread::Builder::new()
            .name("config-journal".into())
            .spawn(move || run_writer(writer, receiver, on_durable))?;
        Ok(Journal {
            sender,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Queue a transaction. Must be called in sequence order (the engine calls it under its
    /// write lock). The returned receiver resolves once the record is durable.
    pub fn append(
        &self,
        seq: u64,
        payload: Vec<u8>,
        after: T,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), Arc<JournalError>>>, JournalError> {
        if payload.len() > MAX_RECORD {
            return Err(JournalError::TooLarge(payload.len()));
        }
        let (ack, receiver) = tokio::sync::oneshot::channel();
        self.sender
            .send(Command::Append {
                seq,
                payload,
                ack,
                after,
            })
            .map_err(|_| JournalError::Stopped)?;
        Ok(receiver)
    }

    /// Switch to a new file starting at `first_seq` (after a snapshot covering everything before).
    pub fn rotate(
        &self,
        first_seq: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), Arc<JournalError>>>, JournalError> {
        let (ack, receiver) = tokio::sync::oneshot::channel();
        self.sender
            .send(Command::Rotate { first_seq, ack })
            .map_err(|_| JournalError::Stopped)?;
        Ok(receiver)
    }

    /// Flush everything queued and stop the writer thread.
    pub fn close(&self) {
        let _ = self.sender.send(Command::Shutdown);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl<T: Send + 'static> Drop for Journal<T> {
    fn drop(&mut self) {
        self.close();
    }
}

fn run_writer<T>(
    mut writer: Writer,
    receiver: mpsc::Receiver<Command<T>>,
    mut on_durable: impl FnMut(T),
) {
    let mut failed: Option<Arc<JournalError>> = None;
    let mut pending: Vec<(Ack, T)> = Vec::new();
    let mut stop = false;
    while !stop {
        let Ok(first) = receiver.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        for command in batch {
            match command {
                Command::Append {
                    seq,
                    payload,
                    ack,
                    after,
                } => {
                    if let Some(error) = &failed {
                        let _ = ack.send(Err(error.clone()));
                        continue;
                    }
                    if let Err(source) = writer.append(seq, &payload) {
                        failed = Some(writer.error(source));
                        let _ = ack.send(Err(failed
                            .clone()
                            .unwrap_or_else(|| Arc::new(JournalError::Stopped))));
                        continue;
                    }
                    pending.push((ack, after));
                }
                Command::Rotate { first_seq, ack } => {
                    flush_pending(&mut writer, &mut pending, &mut failed, &mut on_durable);
                    if let Some(error) = &failed {
                        let _ = ack.send(Err(error.clone()));
                        continue;
                    }
                    let path = writer.dir.join(file_name(first_seq));
                    match Writer::open_path(&writer.dir.clone(), path) {
                        Ok(next) => {
                            writer = next;
                            let _ = ack.send(Ok(()));
                        }
                        Err(source) => {
                            let error = writer.error(source);
                            failed = Some(error.clone());
                            let _ = ack.send(Err(error));
                        }
                    }
                }
                Command::Shutdown => stop = true,
            }
        }
        flush_pending(&mut writer, &mut pending, &mut failed, &mut on_durable);
    }
    flush_pending(&mut writer, &mut pending, &mut failed, &mut on_durable);
}

fn flush_pending<T>(
    writer: &mut Writer,
    pending: &mut Vec<(Ack, T)>,
    failed: &mut Option<Arc<JournalError>>,
    on_durable: &mut impl FnMut(T),
) {
    if pending.is_empty() {
        return;
    }
    if failed.is_none()
        && let Err(source) = writer.sync()
    {
        *failed = Some(writer.error(source));
    }
    for (ack, after) in pending.drain(..) {
        match failed {
            Some(error) => {
                let _ = ack.send(Err(error.clone()));
            }
            None => {
                on_durable(after);
                let _ = ack.send(Ok(()));
            }
        }
    }
    if let Some(error) = failed {
        tracing::error!(error = %crate::error::Chain(&**error), "configuration journal write failed; refusing further changes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u64) -> Vec<Op> {
        vec![Op::NodeCreate {
            node: Arc::from(format!("n{n}")),
        }]
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = Vec::new();
        for seq in 1..=3 {
            bytes.extend(encode_record(seq, &serde_json::to_vec(&op(seq)).unwrap()));
        }
        let whole = bytes.len();
        let partial = encode_record(4, &serde_json::to_vec(&op(4)).unwrap());
        bytes.extend_from_slice(&partial[..partial.len() - 3]);
        fs::write(&path, &bytes).unwrap();
        let (transactions, last) = replay(dir.path(), 0).unwrap();
        assert_eq!(transactions.len(), 3);
        assert_eq!(last, 3);
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, whole);
    }

    #[test]
    fn preallocated_files_replay_after_a_crash_and_are_cut_when_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |payload: &[u8]| Some(payload.to_vec());
        let mut writer = PreallocatedWriter::create(dir.path(), 1).unwrap();
        for seq in 1..=3 {
            writer.append(seq, format!("record {seq}").as_bytes());
        }
        writer.sync().unwrap();
        let first = dir.path().join(file_name(1));
        assert_eq!(fs::metadata(&first).unwrap().len(), PREALLOCATION);
        // More than one preallocation of records: the file grows by whole steps.
        let big = vec![b'x'; usize::try_from(PREALLOCATION / 4).unwrap()];
        for seq in 4..=8 {
            writer.append(seq, &big);
        }
        writer.sync().unwrap();
        assert_eq!(fs::metadata(&first).unwrap().len(), 2 * PREALLOCATION);
        writer.rotate(9).unwrap();
        writer.append(9, b"record 9");
        writer.sync().unwrap();
        // A crash now: the rotated file was cut to its records, the newest one still has its
        // zeros, which replay cuts.
        drop(writer);
        assert!(fs::metadata(&first).unwrap().len() < 2 * PREALLOCATION);
        let (records, last) = replay_with(dir.path(), 0, parse).unwrap();
        assert_eq!(last, 9);
        assert_eq!(records.len(), 9);
        assert_eq!(records[0].1, b"record 1");
        assert_eq!(records[8].1, b"record 9");
        let newest = dir.path().join(file_name(9));
        assert_eq!(
            fs::metadata(&newest).unwrap().len(),
            (RECORD_HEADER + b"record 9".len()) as u64
        );
    }

    #[test]
    fn corruption_before_the_newest_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = encode_record(1, &serde_json::to_vec(&op(1)).unwrap());
        let last_byte = first.len() - 2;
        first[last_byte] ^= 0x55;
        fs::write(dir.path().join(file_name(1)), &first).unwrap();
        fs::write(
            dir.path().join(file_name(2)),
            encode_record(2, &serde_json::to_vec(&op(2)).unwrap()),
        )
        .unwrap();
        assert!(matches!(
            replay(dir.path(), 0),
            Err(JournalLoadError::Corrupt { .. })
        ));
    }

    #[test]
    fn writer_acknowledges_after_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen_in_callback = seen.clone();
        let journal = Journal::start(dir.path(), 1, move |seq: u64| {
            seen_in_callback.lock().push(seq)
        })
        .unwrap();
        let mut receivers = Vec::new();
        for seq in 1..=100 {
            receivers.push(
                journal
                    .append(seq, serde_json::to_vec(&op(seq)).unwrap(), seq)
                    .unwrap(),
            );
        }
        for receiver in receivers {
            receiver.blocking_recv().unwrap().unwrap();
        }
        journal.close();
        assert_eq!(*seen.lock(), (1..=100).collect::<Vec<_>>());
        let (transactions, last) = replay(dir.path(), 0).unwrap();
        assert_eq!(transactions.len(), 100);
        assert_eq!(last, 100);
        let (after_50, _) = replay(dir.path(), 50).unwrap();
        assert_eq!(after_50.first().map(|t| t.seq), Some(51));
    }
}
