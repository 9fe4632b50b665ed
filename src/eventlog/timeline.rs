//! The boot timeline of a node: the ordered events of its latest boot attempt, with the time
//! between consecutive steps, answering "why didn't node X boot, and where did it stop?".
//!
//! Boot steps are the records of the node with a boot phase ([`Record::boot_phase`]: the
//! documented DHCP and boot kinds, and by family the types of newer daemons). An attempt starts
//! at the latest [`BootPhase::Start`] (a `dhcp.discover`); `dhcp.discover`s directly before it (a
//! firmware retransmitting) belong to the same attempt.

use serde_json::{Value, json};

use super::domain::{BOOT_FAMILIES, BootPhase, EventKind};
use super::query::{self, Filter, Order, Query};
use super::record::Record;
use super::timestamp;
use super::writer::LogShared;

/// How far back to look for the start of an attempt, in records of the node.
const MAX_STEPS: usize = 20_000;

fn starts_attempt(record: &Record) -> bool {
    record.boot_phase() == Some(BootPhase::Start)
}

/// A firmware retransmitting its first DISCOVER before the exchange went on.
fn is_retransmitted_start(record: &Record) -> bool {
    record.event_kind() == Some(EventKind::DhcpDiscover)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub record: Record,
    /// Milliseconds since the previous step (0 for the first).
    pub gap_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BootTimeline {
    pub node: String,
    pub steps: Vec<Step>,
}

impl BootTimeline {
    /// Type of the last step reached.
    pub fn last_step(&self) -> Option<&str> {
        self.steps.last().map(|step| step.record.kind.as_str())
    }

    pub fn to_json(&self, now_ms: i64) -> Value {
        let first = self.steps.first().map(|step| step.record.time_ms);
        let last = self.steps.last().map(|step| step.record.time_ms);
        json!({
            "node": self.node,
            "started": first.map(timestamp::rfc3339),
            "last_step": self.last_step(),
            "duration_ms": first.zip(last).map(|(first, last)| last - first),
            "since_last_step_ms": last.map(|last| now_ms - last),
            "steps": self.steps.iter().map(|step| json!({
                "time": timestamp::rfc3339(step.record.time_ms),
                "type": step.record.kind,
                "gap_ms": step.gap_ms,
                "seq": step.record.seq,
                "detail": step.record.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The latest boot attempt of `node` in the log.
pub fn boot_timeline(shared: &LogShared, node: &str) -> BootTimeline {
    let filter = Filter {
        nodes: Some(std::iter::once(node.to_string()).collect()),
        // The families select the candidates in the index scan; the phase decides.
        types: BOOT_FAMILIES
            .iter()
            .map(|family| family.to_string())
            .collect(),
        text: None,
    };
    let mut newest_first: Vec<Record> = Vec::new();
    let mut cursor = None;
    let mut found_start = false;
    'pages: while newest_first.len() < MAX_STEPS {
        let page = query::run(
            shared,
            &Query {
                filter: filter.clone(),
                order: Order::NewestFirst,
                limit: 500,
                cursor,
                ..Query::default()
            },
        );
        for record in page.records {
            if record.boot_phase().is_none() {
                continue;
            }
            if found_start {
                // Only retransmitted discovers directly before the start still belong to it.
                if is_retransmitted_start(&record) {
                    newest_first.push(record);
                    continue;
                }
                break 'pages;
            }
            found_start = starts_attempt(&record);
            newest_first.push(record);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut steps = Vec::with_capacity(newest_first.len());
    let mut previous: Option<i64> = None;
    for record in newest_first.into_iter().rev() {
        let gap_ms = previous.map_or(0, |previous| record.time_ms - previous);
        previous = Some(record.time_ms);
        steps.push(Step { record, gap_ms });
    }
    BootTimeline {
        node: node.to_string(),
        steps,
    }
}
