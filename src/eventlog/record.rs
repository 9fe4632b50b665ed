//! The record format: what an event is in memory ([`Event`] on the way in, [`Record`] once it has
//! a sequence number and a time), its JSON payload, the CRC framing around the payload, and the
//! fixed-size index entry. Pure code: no I/O, never panics on bytes read back from disk.
//!
//! The byte layout is documented for outside readers in `docs/eventlog-format.md`; changing it
//! means a new `v` in the payload or a new segment version, never a silent change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain::{self, BootPhase, DomainEvent, EventKind};
use super::timestamp;

/// Version of the JSON payload (`"v"`).
pub const PAYLOAD_VERSION: u32 = 1;
/// `u32 length | u32 crc | u64 seq | i64 time_ms`, then the payload.
pub const FRAME_HEADER: usize = 24;
/// A record payload larger than this is refused: a log is for events, not bulk data.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Size of one index entry.
pub const INDEX_ENTRY: usize = 40;

/// An event as producers hand it in: the log assigns the sequence number and (unless given) the
/// time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened; stored as the record's `type` and `detail`.
    pub payload: DomainEvent,
    pub node: Option<String>,
    pub user: Option<String>,
    /// Milliseconds since the epoch; `None` means "now". Bulk import and tests set it.
    pub time_ms: Option<i64>,
}

impl Event {
    /// An event of a type given as text ([`DomainEvent::Raw`]): imports, records copied from
    /// another log, tests. The daemon's producers build a typed [`DomainEvent`] instead and
    /// convert it with `Event::from`.
    pub fn new(kind: impl Into<String>, detail: Value) -> Event {
        Event::from(DomainEvent::Raw {
            kind: kind.into(),
            detail,
        })
    }

    pub fn node(mut self, node: impl Into<String>) -> Event {
        self.node = Some(node.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Event {
        self.user = Some(user.into());
        self
    }

    pub fn at(mut self, time_ms: i64) -> Event {
        self.time_ms = Some(time_ms);
        self
    }
}

impl From<DomainEvent> for Event {
    /// The event, of the node its fields name (if any).
    fn from(payload: DomainEvent) -> Event {
        Event {
            node: payload.node().map(str::to_string),
            payload,
            user: None,
            time_ms: None,
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub time_ms: i64,
    pub kind: String,
    pub node: Option<String>,
    pub user: Option<String>,
    pub detail: Value,
}

/// The JSON payload as written (field order is the documented one).
#[derive(Serialize)]
struct PayloadOut<'a> {
    v: u32,
    seq: u64,
    time: &'a str,
    ms: i64,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    detail: &'a Value,
}

#[derive(Deserialize)]
struct PayloadIn {
    v: u32,
    seq: u64,
    ms: i64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    detail: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("frame shorter than its header")]
    Short,
    #[error("frame length {0} exceeds the maximum payload")]
    TooLong(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error("payload is not a version {PAYLOAD_VERSION} record")]
    Payload(#[source] serde_json::Error),
    #[error("unsupported payload version {0}")]
    Version(u32),
    #[error("frame header and payload disagree on seq or time")]
    Mismatch,
}

impl Record {
    /// The typed event (raw when its type is unknown here or its detail is not the documented
    /// one).
    pub fn event(&self) -> DomainEvent {
        DomainEvent::decode(&self.kind, &self.detail)
    }

    /// The documented kind of the record's type, if it is one.
    pub fn event_kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }

    /// Where the record sits in a boot attempt, if it is a boot step.
    pub fn boot_phase(&self) -> Option<BootPhase> {
        domain::boot_phase(&self.kind)
    }

    /// The JSON payload, as written to disk and sent to clients.
    pub fn to_json(&self) -> Value {
        let time = timestamp::rfc3339(self.time_ms);
        serde_json::to_value(self.payload(&time)).unwrap_or(Value::Null)
    }

    fn payload<'a>(&'a self, time: &'a str) -> PayloadOut<'a> {
        PayloadOut {
            v: PAYLOAD_VERSION,
            seq: self.seq,
            time,
            ms: self.time_ms,
            kind: &self.kind,
            node: self.node.as_deref(),
            user: self.user.as_deref(),
            detail: &self.detail,
        }
    }

    /// Append the framed record to `out`; returns the frame length.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER]);
        let time = timestamp::rfc3339(self.time_ms);
        // INVARIANT: serializing our own payload struct into a Vec cannot fail (no maps with
        // non-string keys, no I/O); should it ever, the record is written with a null detail
        // instead of panicking the writer thread.
        if serde_json::to_writer(&mut *out, &self.payload(&time)).is_err() {
            out.truncate(start + FRAME_HEADER);
            let fallback = PayloadOut {
                detail: &Value::Null,
                ..self.payload(&time)
            };
            let _ = serde_json::to_writer(&mut *out, &fallback);
        }
        let payload_len = out.len() - start - FRAME_HEADER;
        let crc = frame_crc(self.seq, self.time_ms, &out[start + FRAME_HEADER..]);
        let header = &mut out[start..start + FRAME_HEADER];
        header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        header[8..16].copy_from_slice(&self.seq.to_le_bytes());
        header[16..24].copy_from_slice(&self.time_ms.to_le_bytes());
        out.len() - start
    }

    /// Decode one whole frame (header and payload).
    pub fn decode(frame: &[u8]) -> Result<Record, RecordDecodeError> {
        let header = FrameHeader::parse(frame)?;
        let payload = frame
            .get(FRAME_HEADER..FRAME_HEADER + header.payload_len)
            .ok_or(RecordDecodeError::Short)?;
        if frame_crc(header.seq, header.time_ms, payload) != header.crc {
            return Err(RecordDecodeError::Checksum);
        }
        Record::from_payload(payload, &header)
    }

    fn from_payload(payload: &[u8], header: &FrameHeader) -> Result<Record, RecordDecodeError> {
        let parsed: PayloadIn =
            serde_json::from_slice(payload).map_err(RecordDecodeError::Payload)?;
        if parsed.v != PAYLOAD_VERSION {
            return Err(RecordDecodeError::Version(parsed.v));
        }
        if parsed.seq != header.seq || parsed.ms != header.time_ms {
            return Err(RecordDecodeError::Mismatch);
        }
        Ok(Record {
            seq: parsed.seq,
            time_ms: parsed.ms,
            kind: parsed.kind,
            node: parsed.node,
            user: parsed.user,
            detail: parsed.detail,
        })
    }
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: usize,
    pub crc: u32,
    pub seq: u64,
    pub time_ms: i64,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader, RecordDecodeError> {
        let header = bytes.get(..FRAME_HEADER).ok_or(RecordDecodeError::Short)?;
        let payload_len = u32_at(header, 0) as usize;
        if payload_len > MAX_PAYLOAD {
            return Err(RecordDecodeError::TooLong(payload_len));
        }
        Ok(FrameHeader {
            payload_len,
            crc: u32_at(header, 4),
            seq: u64_at(header, 8),
            time_ms: u64_at(header, 16) as i64,
        })
    }

    pub fn frame_len(&self) -> usize {
        FRAME_HEADER + self.payload_len
    }
}

/// CRC-32 over seq, time and payload, so a frame header pointing at the wrong payload fails.
pub fn frame_crc(seq: u64, time_ms: i64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&time_ms.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Verify a frame's checksum without parsing its JSON (used when recovering a segment).
pub fn frame_is_valid(frame: &[u8]) -> Option<FrameHeader> {
    let header = FrameHeader::parse(frame).ok()?;
    let payload = frame.get(FRAME_HEADER..header.frame_len())?;
    (frame_crc(header.seq, header.time_ms, payload) == header.crc).then_some(header)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(at..at + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_le_bytes(word)
}

/// FNV-1a, 32 bits: the index stores hashes of the type and node so that exact filters skip
/// records without reading them. Collisions only cost a read; the payload decides.
pub fn short_hash(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// One index entry: where a record is and what it is, 40 bytes, little-endian:
/// `u64 seq | i64 time_ms | u64 offset | u32 frame length | u32 type hash | u32 node hash |
/// u32 CRC-32 of the first 36 bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub time_ms: i64,
    pub offset: u64,
    pub length: u32,
    pub type_hash: u32,
    /// 0 when the record has no node.
    pub node_hash: u32,
}

impl IndexEntry {
    pub fn for_record(record: &Record, offset: u64, length: usize) -> IndexEntry {
        IndexEntry {
            seq: record.seq,
            time_ms: record.time_ms,
            offset,
            length: u32::try_from(length).unwrap_or(u32::MAX),
            type_hash: short_hash(&record.kind),
            node_hash: record.node.as_deref().map(short_hash).unwrap_or(0),
        }
    }

    pub fn encode(&self) -> [u8; INDEX_ENTRY] {
        let mut out = [0u8; INDEX_ENTRY];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.time_ms.to_le_bytes());
        out[16..24].copy_from_slice(&self.offset.to_le_bytes());
        out[24..28].copy_from_slice(&self.length.to_le_bytes());
        out[28..32].copy_from_slice(&self.type_hash.to_le_bytes());
        out[32..36].copy_from_slice(&self.node_hash.to_le_bytes());
        let crc = crc32fast::hash(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// `None` when the entry is torn or damaged.
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let bytes = bytes.get(..INDEX_ENTRY)?;
        if crc32fast::hash(&bytes[..36]) != u32_at(bytes, 36) {
            return None;
        }
        Some(IndexEntry {
            seq: u64_at(bytes, 0),
            time_ms: u64_at(bytes, 8) as i64,
            offset: u64_at(bytes, 16),
            length: u32_at(bytes, 24),
            type_hash: u32_at(bytes, 28),
            node_hash: u32_at(bytes, 32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Record {
        Record {
            seq: 42,
            time_ms: 1_764_095_421_123,
            kind: "dhcp.discover".into(),
            node: Some("n1".into()),
            user: None,
            detail: json!({"mac": "00:11:22:33:44:55"}),
        }
    }

    #[test]
    fn frame_round_trip() {
        let record = sample();
        let mut buffer = Vec::new();
        let length = record.encode_into(&mut buffer);
        assert_eq!(length, buffer.len());
        assert_eq!(Record::decode(&buffer).unwrap(), record);
        let payload: Value = serde_json::from_slice(&buffer[FRAME_HEADER..]).unwrap();
        assert_eq!(payload["v"], 1);
        assert_eq!(payload["time"], "2025-11-25T18:30:21.123Z");
        assert_eq!(payload["type"], "dhcp.discover");
        assert!(payload.get("user").is_none());
    }

    #[test]
    fn damaged_frames_are_refused_without_panicking() {
        let mut buffer = Vec::new();
        sample().encode_into(&mut buffer);
        for cut in 0..buffer.len() {
            assert!(Record::decode(&buffer[..cut]).is_err());
            assert!(frame_is_valid(&buffer[..cut]).is_none());
        }
        let mut flipped = buffer.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(matches!(
            Record::decode(&flipped),
            Err(RecordDecodeError::Checksum)
        ));
        let mut huge = buffer;
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(&huge),
            Err(RecordDecodeError::TooLong(_))
        ));
    }

    #[test]
    fn index_entry_round_trip_and_torn_entry() {
        let entry = IndexEntry::for_record(&sample(), 4096, 120);
        let bytes = entry.encode();
        assert_eq!(IndexEntry::decode(&bytes), Some(entry));
        assert_eq!(IndexEntry::decode(&bytes[..39]), None);
        let mut damaged = bytes;
        damaged[3] ^= 1;
        assert_eq!(IndexEntry::decode(&damaged), None);
    }
}
