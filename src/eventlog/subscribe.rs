//! Live subscriptions: a subscriber gives a filter and optionally a time to start from, and
//! receives the matching records as they are written.
//!
//! Fan-out is a shared ring of recent batches (a tokio broadcast channel) in which every
//! subscriber has its own cursor: the writer's publish never waits for anyone and costs the
//! same whatever the subscribers do. A subscriber that falls a whole ring behind loses the
//! oldest batches; it then receives [`Delivery::Missed`] with the number of records it skipped
//! (all records of the log in the gap, matching or not: the writer does not filter for it), and
//! continues with the newest ones.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::query::{self, Filter, Order, Query};
use super::record::Record;
use super::writer::{LogShared, Published};

/// Most backlog records delivered before live ones (the newest ones are kept).
pub const MAX_BACKLOG: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Record(Arc<Record>),
    /// The subscriber fell behind and this many records were skipped.
    Missed(u64),
}

pub struct Subscription {
    receiver: broadcast::Receiver<Published>,
    filter: Filter,
    /// Backlog first, then the rest of the current batch.
    queue: VecDeque<Arc<Record>>,
    /// Newest seq delivered or skipped: live records up to it are duplicates of the backlog.
    last_seq: u64,
}

impl Subscription {
    /// Subscribe to `shared`, with the matching records since `since` (epoch ms) first.
    pub fn new(shared: &LogShared, filter: Filter, since: Option<i64>) -> Subscription {
        // Subscribe before reading how far the log is durable: every record published after
        // that point is then in the ring, and records already written (published or not yet)
        // are skipped by seq there; the backlog reads them from the files instead.
        let receiver = shared.fanout.subscribe();
        let last_seq = shared.durable_seq.load(Ordering::Acquire);
        let mut queue = VecDeque::new();
        if let Some(since) = since {
            let page = query::run(
                shared,
                &Query {
                    start: Some(since),
                    filter: Filter {
                        text: None,
                        ..filter.clone()
                    },
                    order: Order::NewestFirst,
                    limit: MAX_BACKLOG,
                    max_seq: Some(last_seq),
                    ..Query::default()
                },
            );
            queue.extend(page.records.into_iter().rev().map(Arc::new));
        }
        Subscription {
            receiver,
            filter,
            queue,
            last_seq,
        }
    }

    /// The next delivery; `None` once the log is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(record) = self.queue.pop_front() {
                return Some(Delivery::Record(record));
            }
            let batch = match self.receiver.recv().await {
                Ok(batch) => batch,
                // The gap shows in the seqs of the next batch.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if let Some(missed) = self.take(&batch) {
                return Some(Delivery::Missed(missed));
            }
        }
    }

    /// Without waiting: `None` when nothing is ready (or the log is closed).
    pub fn try_next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(record) = self.queue.pop_front() {
                return Some(Delivery::Record(record));
            }
            let batch = match self.receiver.try_recv() {
                Ok(batch) => batch,
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            };
            if let Some(missed) = self.take(&batch) {
                return Some(Delivery::Missed(missed));
            }
        }
    }

    /// Queue the matching new records of a batch; returns the number skipped before it.
    fn take(&mut self, batch: &[Arc<Record>]) -> Option<u64> {
        let first = batch.first()?.seq;
        let missed = first.saturating_sub(self.last_seq + 1);
        for record in batch {
            if record.seq > self.last_seq {
                self.last_seq = record.seq;
                if self.filter.matches_without_text(record) {
                    self.queue.push_back(record.clone());
                }
            }
        }
        (missed > 0).then_some(missed)
    }
}
