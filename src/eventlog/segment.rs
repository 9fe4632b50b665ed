//! Segment storage: one log is a directory of segment files (`<first seq, 20 digits>.log`), each
//! starting with a small header that links to the previous segment, and a companion index
//! (`.idx`, fixed 40-byte entries, entry `i` describing record `first_seq + i`), so that a time
//! range or the last N records are found by binary search over the index, without scanning.
//!
//! Recovery after a crash lives here too: the newest segment is scanned, a torn tail (a frame
//! whose length or checksum does not match) is cut, and its index is rebuilt when it disagrees.
//! Older segments were sealed cleanly; their index is trusted unless its size is wrong.
//!
//! INVARIANT: within a log, sequence numbers are contiguous and times never decrease, so index
//! position, seq and time orders agree.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{FRAME_HEADER, INDEX_ENTRY, IndexEntry, Record, frame_is_valid};

pub const SEGMENT_MAGIC: &[u8; 8] = b"CNFLSEG\0";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum SegmentOpenError {
    #[error("failed to read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an event log segment (bad header)")]
    BadHeader { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SegmentOpenError + '_ {
    move |source| SegmentOpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment header: `magic "CNFLSEG\0" | u32 version | u32 header length (48) |
/// u64 first seq | i64 created ms | u64 previous segment's first seq (0: none) |
/// u32 CRC-32 of the preceding 40 bytes | u32 reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_seq: u64,
    pub created_ms: i64,
    pub previous: Option<u64>,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut out = [0u8; SEGMENT_HEADER];
        out[0..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        out[32..40].copy_from_slice(&self.previous.unwrap_or(0).to_le_bytes());
        let crc = crc32fast::hash(&out[..40]);
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let bytes = bytes.get(..SEGMENT_HEADER)?;
        if &bytes[0..8] != SEGMENT_MAGIC {
            return None;
        }
        let word = |range: std::ops::Range<usize>| -> u64 {
            let mut buffer = [0u8; 8];
            buffer[..range.len()].copy_from_slice(&bytes[range]);
            u64::from_le_bytes(buffer)
        };
        if word(8..12) != u64::from(SEGMENT_VERSION)
            || word(40..44) != u64::from(crc32fast::hash(&bytes[..40]))
        {
            return None;
        }
        let previous = word(32..40);
        Some(SegmentHeader {
            first_seq: word(16..24),
            created_ms: word(24..32) as i64,
            previous: (previous != 0).then_some(previous),
        })
    }
}

pub fn log_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

pub fn index_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.idx"))
}

/// First sequence numbers of the segments in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<u64>, SegmentOpenError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && let Ok(seq) = stem.parse::<u64>()
        {
            found.push(seq);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// What readers and the writer know about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub header: SegmentHeader,
    /// Records in the segment (also index entries).
    pub count: u64,
    /// Time of the first and last record (the creation time while empty).
    pub first_time: i64,
    pub last_time: i64,
    /// Bytes of the segment file (header included).
    pub bytes: u64,
    pub index_bytes: u64,
}

impl SegmentInfo {
    pub fn first_seq(&self) -> u64 {
        self.header.first_seq
    }

    /// One past the last seq.
    pub fn end_seq(&self) -> u64 {
        self.header.first_seq + self.count
    }
}

/// Outcome of recovering one segment, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of the segment file (a torn tail).
    pub torn_bytes: u64,
    /// Whether the index was rebuilt from the segment.
    pub index_rebuilt: bool,
}

/// Open a segment after start-up. `newest` segments are fully scanned and repaired.
pub fn recover(
    dir: &Path,
    first_seq: u64,
    newest: bool,
) -> Result<(SegmentInfo, Recovery), SegmentOpenError> {
    let path = log_path(dir, first_seq);
    let idx = index_path(dir, first_seq);
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let mut header_bytes = [0u8; SEGMENT_HEADER];
    let header = match log.read_exact_at(&mut header_bytes, 0) {
        Ok(()) => SegmentHeader::decode(&header_bytes),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => None,
        Err(source) => return Err(SegmentOpenError::Io { path, source }),
    };
    let Some(header) = header.filter(|header| header.first_seq == first_seq) else {
        return Err(SegmentOpenError::BadHeader { path });
    };
    let log_len = log.metadata().map_err(io_error(&path))?.len();
    let index_len = match fs::metadata(&idx) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
        Err(source) => return Err(SegmentOpenError::Io { path: idx, source }),
    };
    let mut recovery = Recovery::default();
    let index_trusted = !newest
        && index_len % INDEX_ENTRY as u64 == 0
        && index_len > 0
        && last_entry_matches(&idx, index_len, log_len);
    let (count, bytes) = if index_trusted {
        (index_len / INDEX_ENTRY as u64, log_len)
    } else {
        let entries = scan(&log, &path, first_seq, log_len)?;
        let valid_end = entries
            .last()
            .map(|entry| entry.offset + u64::from(entry.length))
            .unwrap_or(SEGMENT_HEADER as u64);
        if valid_end < log_len {
            recovery.torn_bytes = log_len - valid_end;
            log.set_len(valid_end).map_err(io_error(&path))?;
            log.sync_data().map_err(io_error(&path))?;
        }
        let expected: Vec<u8> = entries.iter().flat_map(|entry| entry.encode()).collect();
        let current = fs::read(&idx).unwrap_or_default();
        if current != expected {
            recovery.index_rebuilt = true;
            let mut file = File::create(&idx).map_err(io_error(&idx))?;
            file.write_all(&expected).map_err(io_error(&idx))?;
            file.sync_data().map_err(io_error(&idx))?;
        }
        (entries.len() as u64, valid_end)
    };
    let reader = SegmentReader::open(dir, first_seq)?;
    let first_time = reader
        .entry(0)
        .map(|entry| entry.time_ms)
        .unwrap_or(header.created_ms);
    let last_time = count
        .checked_sub(1)
        .and_then(|last| reader.entry(last))
        .map(|entry| entry.time_ms)
        .unwrap_or(first_time);
    Ok((
        SegmentInfo {
            header,
            count,
            first_time,
            last_time,
            bytes,
            index_bytes: count * INDEX_ENTRY as u64,
        },
        recovery,
    ))
}

fn last_entry_matches(idx: &Path, index_len: u64, log_len: u64) -> bool {
    let Ok(file) = File::open(idx) else {
        return false;
    };
    let mut bytes = [0u8; INDEX_ENTRY];
    if file
        .read_exact_at(&mut bytes, index_len - INDEX_ENTRY as u64)
        .is_err()
    {
        return false;
    }
    IndexEntry::decode(&bytes)
        .is_some_and(|entry| entry.offset + u64::from(entry.length) == log_len)
}

/// Read every valid frame from the start; stops at the first torn or damaged one.
fn scan(
    log: &File,
    path: &Path,
    first_seq: u64,
    log_len: u64,
) -> Result<Vec<IndexEntry>, SegmentOpenError> {
    let mut reader = BufReader::with_capacity(1 << 20, log);
    let mut skip = [0u8; SEGMENT_HEADER];
    reader.read_exact(&mut skip).map_err(io_error(path))?;
    let mut offset = SEGMENT_HEADER as u64;
    let mut entries = Vec::new();
    let mut frame = Vec::new();
    let mut expected_seq = first_seq;
    while offset + FRAME_HEADER as u64 <= log_len {
        frame.resize(FRAME_HEADER, 0);
        if reader.read_exact(&mut frame).is_err() {
            break;
        }
        let Ok(header) = super::record::FrameHeader::parse(&frame) else {
            break;
        };
        if offset + header.frame_len() as u64 > log_len {
            break;
        }
        frame.resize(header.frame_len(), 0);
        if reader.read_exact(&mut frame[FRAME_HEADER..]).is_err() {
            break;
        }
        if frame_is_valid(&frame).is_none() || header.seq != expected_seq {
            break;
        }
        // The index needs the type and node hashes, which only the payload knows.
        let Ok(record) = Record::decode(&frame) else {
            break;
        };
        entries.push(IndexEntry::for_record(&record, offset, frame.len()));
        offset += frame.len() as u64;
        expected_seq += 1;
    }
    Ok(entries)
}

/// Read access to one segment and its index (positioned reads: many readers share nothing).
pub struct SegmentReader {
    log: File,
    index: File,
    count: u64,
}

impl SegmentReader {
    pub fn open(dir: &Path, first_seq: u64) -> Result<SegmentReader, SegmentOpenError> {
        let path = log_path(dir, first_seq);
        let idx = index_path(dir, first_seq);
        let log = File::open(&path).map_err(io_error(&path))?;
        let index = File::open(&idx).map_err(io_error(&idx))?;
        let count = index.metadata().map_err(io_error(&idx))?.len() / INDEX_ENTRY as u64;
        Ok(SegmentReader { log, index, count })
    }

    /// Limit the view to the first `count` entries (what the writer has published).
    pub fn limit(&mut self, count: u64) {
        self.count = self.count.min(count);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn entry(&self, position: u64) -> Option<IndexEntry> {
        if position >= self.count {
            return None;
        }
        let mut bytes = [0u8; INDEX_ENTRY];
        self.index
            .read_exact_at(&mut bytes, position * INDEX_ENTRY as u64)
            .ok()?;
        IndexEntry::decode(&bytes)
    }

    /// Entries `[start, end)`; stops early at a damaged entry.
    pub fn entries(&self, start: u64, end: u64) -> Vec<IndexEntry> {
        let end = end.min(self.count);
        if start >= end {
            return Vec::new();
        }
        let mut bytes = vec![0u8; ((end - start) as usize) * INDEX_ENTRY];
        if self
            .index
            .read_exact_at(&mut bytes, start * INDEX_ENTRY as u64)
            .is_err()
        {
            return Vec::new();
        }
        bytes
            .chunks_exact(INDEX_ENTRY)
            .map_while(IndexEntry::decode)
            .collect()
    }

    /// First position whose time is `>= time` (`count` if none).
    pub fn lower_bound(&self, time_ms: i64) -> u64 {
        self.partition(|entry| entry.time_ms < time_ms)
    }

    /// First position whose time is `> time` (`count` if none).
    pub fn upper_bound(&self, time_ms: i64) -> u64 {
        self.partition(|entry| entry.time_ms <= time_ms)
    }

    fn partition(&self, before: impl Fn(&IndexEntry) -> bool) -> u64 {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            // A damaged entry is treated as "after": the search then stays in the readable part.
            match self.entry(middle) {
                Some(entry) if before(&entry) => low = middle + 1,
                _ => high = middle,
            }
        }
        low
    }

    /// Read and decode the records of `entries` (which must be in ascending position order)
    /// whose JSON payload passes `keep` (checked before decoding, for text search); damaged
    /// records are skipped. Nearby frames are fetched with one read.
    pub fn records(&self, entries: &[IndexEntry], keep: impl Fn(&[u8]) -> bool) -> Vec<Record> {
        let mut out = Vec::with_capacity(entries.len());
        let mut start = 0;
        while start < entries.len() {
            // Extend the run while frames are close together (gaps under 64 KiB, at most 4 MiB).
            let mut end = start + 1;
            let run_start = entries[start].offset;
            let mut run_end = run_start + u64::from(entries[start].length);
            while end < entries.len()
                && entries[end].offset >= run_end
                && entries[end].offset - run_end < 65_536
                && entries[end].offset + u64::from(entries[end].length) - run_start < (4 << 20)
            {
                run_end = entries[end].offset + u64::from(entries[end].length);
                end += 1;
            }
            let mut buffer = vec![0u8; (run_end - run_start) as usize];
            if self.log.read_exact_at(&mut buffer, run_start).is_ok() {
                for entry in &entries[start..end] {
                    let from = (entry.offset - run_start) as usize;
                    let Some(frame) = buffer.get(from..from + entry.length as usize) else {
                        continue;
                    };
                    if !keep(frame.get(FRAME_HEADER..).unwrap_or_default()) {
                        continue;
                    }
                    if let Ok(record) = Record::decode(frame) {
                        out.push(record);
                    }
                }
            }
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader {
            first_seq: 7,
            created_ms: 1000,
            previous: Some(3),
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Some(header));
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&damaged), None);
        assert_eq!(SegmentHeader::decode(&bytes[..10]), None);
        let first = SegmentHeader {
            previous: None,
            ..header
        };
        assert_eq!(SegmentHeader::decode(&first.encode()), Some(first));
    }
}
