//! The sequential log facility: typed, versioned event records in append-only segment files
//! with a binary index (the `events` and `audit` logs; per-node console logs later), queries by
//! time, node, type and text, live subscriptions with cheap fan-out, per-node boot timelines,
//! and forwarding to syslog. It replaces a database for logs (reference section 8).
//!
//! Code map, in reading order: [`domain`] (the typed events: every documented kind and its
//! fields, `docs/events.md`), [`record`] (the record, its framing and index entry),
//! [`timestamp`], [`segment`] (files, index search, crash recovery), [`writer`] (the writer
//! thread, rotation, retention), [`query`], [`subscribe`], [`timeline`], [`syslog`].
//! The byte format is documented for outside tools in `docs/eventlog-format.md`.
//!
//! API boundary: producers only call [`EventLog::append`] (never blocks, may drop under
//! overload) or [`EventLog::append_durable`] (waits for `fdatasync`) with an [`Event`] built from
//! a typed [`DomainEvent`]; nothing here knows the API or the configuration.

pub mod domain;
pub mod query;
pub mod record;
pub mod segment;
pub mod subscribe;
pub mod syslog;
pub mod timeline;
pub mod timestamp;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, TrySendError};

pub use domain::{BootPhase, DomainEvent, EventKind, UnknownEventType};
pub use query::{Filter, Order, Page, Query};
pub use record::{Event, Record};
pub use subscribe::{BatchDelivery, Delivery, Subscription};
pub use timeline::BootTimeline;
pub use writer::{AppendError, LogOpenError, LogOptions};

use writer::{Command, LogShared};

/// One log: a directory of segments and its writer thread.
pub struct EventLog {
    sender: mpsc::SyncSender<Command>,
    shared: Arc<LogShared>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Events accepted (the daemon's `confluent_event_log_appends_total`).
    appends: crate::metrics::Counter,
}

impl EventLog {
    /// Open (recovering after a crash) or create the log in `dir` and start its writer.
    pub fn open(name: &str, dir: &Path, options: LogOptions) -> Result<EventLog, LogOpenError> {
        let storage = writer::Storage::open(name, dir, options)?;
        let shared = storage.shared().clone();
        let (sender, thread) = writer::spawn(storage)?;
        Ok(EventLog {
            sender,
            shared,
            thread: parking_lot::Mutex::new(Some(thread)),
            appends: crate::metrics::Counter::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Queue an event without waiting. When the queue is full the event is dropped: counted,
    /// and reported on the daemon's log at growing intervals.
    pub fn append(&self, event: Event) -> Result<(), AppendError> {
        self.enqueue(Command::Append {
            event: Box::new(event),
            ack: None,
        })
    }

    /// Append and wait until the record is on disk; returns its seq.
    pub async fn append_durable(&self, event: Event) -> Result<u64, AppendError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.enqueue(Command::Append {
            event: Box::new(event),
            ack: Some(ack),
        })?;
        done.await.unwrap_or(Err(AppendError::Stopped))
    }

    /// [`append_durable`](Self::append_durable) for threads outside the async runtime.
    pub fn append_durable_blocking(&self, event: Event) -> Result<u64, AppendError> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.enqueue(Command::Append {
            event: Box::new(event),
            ack: Some(ack),
        })?;
        done.blocking_recv().unwrap_or(Err(AppendError::Stopped))
    }

    fn enqueue(&self, command: Command) -> Result<(), AppendError> {
        match self.sender.try_send(command) {
            Ok(()) => {
                self.appends.inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                let dropped = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::error!(
                        log = %self.shared.name,
                        dropped,
                        "event log queue full; events are being dropped"
                    );
                }
                Err(AppendError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Stopped),
        }
    }

    /// Wait until everything queued so far is durable (and published).
    pub async fn flush(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        // A full queue still drains; wait for room rather than skip the flush.
        let mut command = Command::Flush(ack);
        loop {
            match self.sender.try_send(command) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    command = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let _ = done.await;
    }

    pub fn query(&self, query: &Query) -> Page {
        query::run(&self.shared, query)
    }

    pub fn subscribe(&self, filter: Filter, since: Option<i64>) -> Subscription {
        Subscription::new(&self.shared, filter, since)
    }

    pub fn boot_timeline(&self, node: &str) -> BootTimeline {
        timeline::boot_timeline(&self.shared, node)
    }

    /// Sizes and counters (appended, dropped, write errors, disk full).
    pub fn stats(&self) -> serde_json::Value {
        self.shared.stats()
    }

    /// Stop the writer after it has written and synced everything queued.
    pub fn close(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        // A full queue still drains; the shutdown command waits for room (the writer is alive).
        let _ = self.sender.send(Command::Shutdown);
        if thread.join().is_err() {
            tracing::error!(log = %self.shared.name, "event log writer panicked");
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The daemon's logs.
pub struct EventLogs {
    /// Everything that happens: boot steps, discovery, power, daemon start/stop.
    pub events: EventLog,
    /// Who asked for what, and whether it was allowed.
    pub audit: EventLog,
}

impl EventLogs {
    /// Open `events` and `audit` under `log_dir`.
    pub fn open(log_dir: &Path, options: LogOptions) -> Result<EventLogs, LogOpenError> {
        Ok(EventLogs {
            events: EventLog::open("events", &log_dir.join("events"), options.clone())?,
            audit: EventLog::open("audit", &log_dir.join("audit"), options)?,
        })
    }

    /// Count accepted appends of `events` and `audit` into these counters.
    pub fn counting_appends(
        mut self,
        events: crate::metrics::Counter,
        audit: crate::metrics::Counter,
    ) -> EventLogs {
        self.events.appends = events;
        self.audit.appends = audit;
        self
    }

    /// A log by its name in the API (`log`/`events`, `audit`).
    pub fn by_name(&self, name: &str) -> Option<&EventLog> {
        match name {
            "events" | "log" => Some(&self.events),
            "audit" => Some(&self.audit),
            _ => None,
        }
    }

    pub fn close(&self) {
        self.events.close();
        self.audit.close();
    }
}

#[cfg(test)]
mod tests;
