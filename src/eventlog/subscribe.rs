//! Live subscriptions: a subscriber gives a filter and optionally a time to start from, and
//! receives the matching records as they are written.
//!
//! Fan-out is a shared ring of recent batches ([`Fanout`]) in which every subscriber has its
//! own cursor (the seq it has reached): the writer's publish never waits for anyone and costs
//! the same whatever the subscribers do. A subscriber that falls a whole ring behind loses the
//! oldest batches; it then receives [`Delivery::Missed`] with the number of records it skipped
//! (all records of the log in the gap, matching or not: the writer does not filter for it), and
//! continues with the newest ones.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::query::{self, Filter, Order, Query};
use super::record::Record;
use super::writer::{Fanout, LogShared, Published};

/// Most backlog records delivered before live ones (the newest ones are kept).
pub const MAX_BACKLOG: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Record(Arc<Record>),
    /// The subscriber fell behind and this many records were skipped.
    Missed(u64),
}

pub struct Subscription {
    shared: Arc<LogShared>,
    wake: watch::Receiver<u64>,
    filter: Filter,
    backlog: VecDeque<Arc<Record>>,
    /// The batch being delivered and the position in it: records are taken from the shared
    /// batch one by one, never copied into a per-subscriber queue.
    batch: Option<Published>,
    position: usize,
    /// A gap found while looking for the next batch, reported before it.
    pending_missed: u64,
    /// Newest seq delivered or skipped: live records up to it are duplicates of the backlog.
    last_seq: u64,
}

impl Subscription {
    /// Subscribe to `shared`, with the matching records since `since` (epoch ms) first.
    pub fn new(shared: &Arc<LogShared>, filter: Filter, since: Option<i64>) -> Subscription {
        // Subscribe before reading how far the log is written: every record published after
        // that point is then in the ring, and records already written (published or not yet)
        // are skipped by seq there; the backlog reads them from the files instead.
        let wake = shared.fanout.watch();
        let last_seq = shared.written_seq.load(Ordering::Acquire);
        let mut backlog = VecDeque::new();
        if let Some(since) = since {
            let page = query::run(
                shared,
                &Query {
                    start: Some(since),
                    filter: filter.clone(),
                    order: Order::NewestFirst,
                    limit: MAX_BACKLOG,
                    max_seq: Some(last_seq),
                    ..Query::default()
                },
            );
            backlog.extend(page.records.into_iter().rev().map(Arc::new));
        }
        Subscription {
            shared: shared.clone(),
            wake,
            filter,
            backlog,
            batch: None,
            position: 0,
            pending_missed: 0,
            last_seq,
        }
    }

    /// The next delivery; `None` once the log is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            // Mark the wake-up seen before looking: a batch published after the look then
            // wakes `changed` at once.
            self.wake.borrow_and_update();
            if let Some(delivery) = self.try_next() {
                return Some(delivery);
            }
            if self.fanout().is_closed() || self.wake.changed().await.is_err() {
                return self.try_next();
            }
        }
    }

    /// Without waiting: `None` when nothing is ready.
    pub fn try_next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.ready() {
                return Some(delivery);
            }
            let batch = self.fanout().after(self.last_seq)?;
            if let Some(missed) = self.start_batch(batch) {
                return Some(Delivery::Missed(missed));
            }
        }
    }

    /// The next batch of deliveries, for consumers of high volumes: one shared batch instead
    /// of a reference-counted handle per record. `None` once the log is closed.
    pub async fn next_batch(&mut self) -> Option<BatchDelivery<'_>> {
        loop {
            self.wake.borrow_and_update();
            if self.batch_ready() {
                break;
            }
            if self.fanout().is_closed() || self.wake.changed().await.is_err() {
                if self.batch_ready() {
                    break;
                }
                return None;
            }
        }
        Some(self.take_batch())
    }

    /// Whether [`take_batch`](Self::take_batch) has something to hand out.
    fn batch_ready(&mut self) -> bool {
        if !self.backlog.is_empty() {
            return true;
        }
        if let Some(batch) = &self.batch
            && self.position < batch.len()
        {
            return true;
        }
        self.batch = None;
        match self.fanout().after(self.last_seq) {
            Some(batch) => {
                self.pending_missed = self.start_batch(batch).unwrap_or(0);
                true
            }
            None => false,
        }
    }

    fn take_batch(&mut self) -> BatchDelivery<'_> {
        if self.pending_missed > 0 {
            return BatchDelivery::Missed(std::mem::take(&mut self.pending_missed));
        }
        if !self.backlog.is_empty() {
            let records: Published = self.backlog.drain(..).collect();
            return BatchDelivery::Records(BatchView {
                records,
                from: 0,
                after: 0,
                filter: &self.filter,
            });
        }
        let records = self
            .batch
            .take()
            .unwrap_or_else(|| Published::from(Vec::new()));
        let from = self.position;
        let after = self.last_seq;
        self.last_seq = records.last().map_or(after, |record| record.seq.max(after));
        self.position = 0;
        BatchView {
            records,
            from,
            after,
            filter: &self.filter,
        }
        .into()
    }

    fn fanout(&self) -> &Fanout {
        &self.shared.fanout
    }

    /// The next matching record already at hand.
    fn ready(&mut self) -> Option<Delivery> {
        if let Some(record) = self.backlog.pop_front() {
            return Some(Delivery::Record(record));
        }
        let batch = self.batch.as_ref()?;
        while let Some(record) = batch.get(self.position) {
            self.position += 1;
            if record.seq <= self.last_seq {
                continue;
            }
            self.last_seq = record.seq;
            if self.filter.matches(record) {
                return Some(Delivery::Record(record.clone()));
            }
        }
        self.batch = None;
        None
    }

    /// Take a new batch; returns the number of records skipped before it.
    fn start_batch(&mut self, batch: Published) -> Option<u64> {
        let first = batch.first()?.seq;
        let missed = first.saturating_sub(self.last_seq + 1);
        if missed > 0 {
            self.last_seq = first - 1;
        }
        self.batch = Some(batch);
        self.position = 0;
        (missed > 0).then_some(missed)
    }
}

/// What [`Subscription::next_batch`] hands out.
pub enum BatchDelivery<'a> {
    Records(BatchView<'a>),
    Missed(u64),
}

impl<'a> From<BatchView<'a>> for BatchDelivery<'a> {
    fn from(view: BatchView<'a>) -> BatchDelivery<'a> {
        BatchDelivery::Records(view)
    }
}

/// The matching new records of one published batch.
pub struct BatchView<'a> {
    records: Published,
    from: usize,
    /// Records up to this seq were delivered already.
    after: u64,
    filter: &'a Filter,
}

impl BatchView<'_> {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.records
            .get(self.from..)
            .unwrap_or_default()
            .iter()
            .filter(|record| record.seq > self.after && self.filter.matches(record))
    }
}
