//! Reading a log: filters (node set, types, text), time ranges, order and cursor pagination,
//! across every segment. A time range is located by binary search in each segment's index;
//! exact node and type filters are first checked against the hashes in the index, so records
//! that cannot match are never read.
//!
//! Readers never lock out the writer: they copy the segment list, then read files with
//! positioned reads, seeing only what the writer had published in that copy.

use std::collections::HashSet;

use super::record::{IndexEntry, Record, short_hash};
use super::segment::SegmentReader;
use super::writer::LogShared;

/// Index entries examined per read.
const CHUNK: u64 = 4096;

/// Which records match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records of these nodes only (records without a node never match a node set).
    pub nodes: Option<HashSet<String>>,
    /// Type patterns: `dhcp.discover` (exact), `dhcp.*` or `dhcp.` (prefix), `*` (any).
    /// Empty: any type.
    pub types: Vec<String>,
    /// Case-insensitive (ASCII) substring of the record's JSON text.
    pub text: Option<String>,
}

/// The filter prepared for a scan.
struct Compiled<'a> {
    filter: &'a Filter,
    node_hashes: Option<HashSet<u32>>,
    /// Only when every type pattern is exact.
    type_hashes: Option<HashSet<u32>>,
    needle: Option<Vec<u8>>,
}

impl Filter {
    /// Node, type and text (the text against the record's JSON, serialized only when a text
    /// filter is set).
    pub fn matches(&self, record: &Record) -> bool {
        if let Some(nodes) = &self.nodes {
            match &record.node {
                Some(node) if nodes.contains(node) => {}
                _ => return false,
            }
        }
        if !self.types.is_empty()
            && !self
                .types
                .iter()
                .any(|pattern| type_matches(pattern, &record.kind))
        {
            return false;
        }
        if let Some(text) = &self.text {
            let json = record.to_json().to_string();
            return contains_ignore_case(json.as_bytes(), &text.to_ascii_lowercase().into_bytes());
        }
        true
    }

    /// Node and type only (the text is checked on the raw payload before decoding).
    pub fn matches_without_text(&self, record: &Record) -> bool {
        if let Some(nodes) = &self.nodes {
            match &record.node {
                Some(node) if nodes.contains(node) => {}
                _ => return false,
            }
        }
        self.types.is_empty()
            || self
                .types
                .iter()
                .any(|pattern| type_matches(pattern, &record.kind))
    }

    fn compile(&self) -> Compiled<'_> {
        let exact = !self.types.is_empty()
            && self
                .types
                .iter()
                .all(|pattern| !pattern.ends_with('*') && !pattern.ends_with('.'));
        Compiled {
            filter: self,
            node_hashes: self
                .nodes
                .as_ref()
                .map(|nodes| nodes.iter().map(|node| short_hash(node)).collect()),
            type_hashes: exact.then(|| self.types.iter().map(|kind| short_hash(kind)).collect()),
            needle: self
                .text
                .as_ref()
                .filter(|text| !text.is_empty())
                .map(|text| text.to_ascii_lowercase().into_bytes()),
        }
    }
}

impl Compiled<'_> {
    fn may_match(&self, entry: &IndexEntry) -> bool {
        self.node_hashes
            .as_ref()
            .is_none_or(|hashes| hashes.contains(&entry.node_hash))
            && self
                .type_hashes
                .as_ref()
                .is_none_or(|hashes| hashes.contains(&entry.type_hash))
    }

    fn payload_may_match(&self, payload: &[u8]) -> bool {
        self.needle
            .as_ref()
            .is_none_or(|needle| contains_ignore_case(payload, needle))
    }

    fn matches(&self, record: &Record) -> bool {
        self.filter.matches_without_text(record)
    }
}

pub fn type_matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return kind.starts_with(prefix);
    }
    if pattern.ends_with('.') {
        return kind.starts_with(pattern);
    }
    pattern == kind
}

/// `needle` must already be lower case.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

#[derive(Debug, Clone)]
pub struct Query {
    /// Inclusive bounds in epoch milliseconds.
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub filter: Filter,
    pub order: Order,
    pub limit: usize,
    /// The `next_cursor` of the previous page: continue after that record.
    pub cursor: Option<u64>,
    /// Ignore records after this seq (a subscription's backlog stops where live delivery starts).
    pub max_seq: Option<u64>,
}

impl Default for Query {
    fn default() -> Query {
        Query {
            start: None,
            end: None,
            filter: Filter::default(),
            order: Order::OldestFirst,
            limit: 100,
            cursor: None,
            max_seq: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// Present when the page is full: pass it as `cursor` for the next page.
    pub next_cursor: Option<u64>,
}

/// Run a query over every segment of a log.
pub fn run(shared: &LogShared, query: &Query) -> Page {
    let compiled = query.filter.compile();
    let limit = query.limit.max(1);
    let mut records = Vec::new();
    let mut segments = shared.segments();
    if query.order == Order::NewestFirst {
        segments.reverse();
    }
    for info in segments {
        if info.count == 0
            || query.start.is_some_and(|start| info.last_time < start)
            || query.end.is_some_and(|end| info.first_time > end)
        {
            continue;
        }
        // Seq bounds of this segment from the cursor and max_seq, as positions [low, high).
        let first = info.first_seq();
        let mut low = 0;
        let mut high = info.count;
        match (query.order, query.cursor) {
            (Order::OldestFirst, Some(cursor)) => low = (cursor + 1).saturating_sub(first),
            (Order::NewestFirst, Some(cursor)) => high = high.min(cursor.saturating_sub(first)),
            _ => {}
        }
        if let Some(max_seq) = query.max_seq {
            high = high.min((max_seq + 1).saturating_sub(first));
        }
        if low >= high {
            continue;
        }
        let Ok(mut reader) = SegmentReader::open(&shared.dir, first) else {
            // Deleted by retention since the list was copied: nothing left to read there.
            continue;
        };
        reader.limit(info.count);
        if let Some(start) = query.start {
            low = low.max(reader.lower_bound(start));
        }
        if let Some(end) = query.end {
            high = high.min(reader.upper_bound(end));
        }
        let wanted = limit - records.len();
        let found = match query.order {
            Order::OldestFirst => scan_forward(&reader, &compiled, low, high, wanted),
            Order::NewestFirst => scan_backward(&reader, &compiled, low, high, wanted),
        };
        records.extend(found);
        if records.len() >= limit {
            break;
        }
    }
    let next_cursor = (records.len() >= limit)
        .then(|| records.last().map(|record| record.seq))
        .flatten();
    Page {
        records,
        next_cursor,
    }
}

fn scan_forward(
    reader: &SegmentReader,
    compiled: &Compiled<'_>,
    mut low: u64,
    high: u64,
    wanted: usize,
) -> Vec<Record> {
    let mut out = Vec::new();
    while low < high && out.len() < wanted {
        let end = (low + CHUNK).min(high);
        let entries = reader.entries(low, end);
        if entries.is_empty() {
            break;
        }
        for record in candidate_records(reader, compiled, &entries) {
            if compiled.matches(&record) {
                out.push(record);
                if out.len() >= wanted {
                    break;
                }
            }
        }
        low = end;
    }
    out
}

/// The records of `entries` that survive the index and payload prefilters (callers still
/// apply the full match).
fn candidate_records(
    reader: &SegmentReader,
    compiled: &Compiled<'_>,
    entries: &[IndexEntry],
) -> Vec<Record> {
    let candidates: Vec<IndexEntry> = entries
        .iter()
        .filter(|entry| compiled.may_match(entry))
        .copied()
        .collect();
    reader.records(&candidates, |payload| compiled.payload_may_match(payload))
}

fn scan_backward(
    reader: &SegmentReader,
    compiled: &Compiled<'_>,
    low: u64,
    mut high: u64,
    wanted: usize,
) -> Vec<Record> {
    let mut out = Vec::new();
    // Small first chunks: "the last N" usually needs few entries.
    let mut chunk = (wanted as u64).clamp(16, CHUNK);
    while low < high && out.len() < wanted {
        let start = high.saturating_sub(chunk).max(low);
        let entries = reader.entries(start, high);
        if entries.is_empty() {
            break;
        }
        let found = candidate_records(reader, compiled, &entries);
        for record in found.into_iter().rev() {
            if compiled.matches(&record) {
                out.push(record);
                if out.len() >= wanted {
                    break;
                }
            }
        }
        high = start;
        chunk = (chunk * 4).min(CHUNK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_patterns() {
        assert!(type_matches("dhcp.*", "dhcp.offer"));
        assert!(type_matches("dhcp.", "dhcp.offer"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("dhcp.offer", "dhcp.offer"));
        assert!(!type_matches("dhcp.offer", "dhcp.offered"));
        assert!(!type_matches("dhcp.", "dhcpx"));
    }

    #[test]
    fn case_insensitive_text() {
        assert!(contains_ignore_case(b"Hello World", b"world"));
        assert!(!contains_ignore_case(b"Hello", b"hello world"));
        assert!(contains_ignore_case(b"", b""));
    }
}
