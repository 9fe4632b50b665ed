//! The DHCP worker: one thread that owns every served socket, decides every packet
//! (`super::handle_datagram`) and commits the lease journal itself.
//!
//! Why a thread and not tasks: at a few thousand exchanges per second each datagram arrives
//! alone, and waking a runtime worker, then a journal writer thread, then sending one reply per
//! system call cost several times more CPU than deciding the packet. This loop instead:
//!
//! 1. waits, without a timeout, until a socket is readable (or it is told to stop);
//! 2. drains every socket with `recvmmsg`, handles each datagram, and sends the replies that
//!    need nothing durable (OFFERs, proxy replies, NAKs) with one `sendmmsg` per socket;
//! 3. replies that depend on a lease record (ACKs) wait for the group commit: one `fdatasync`
//!    for every record appended since the last, at most once per [`COMMIT_INTERVAL`]. While a
//!    commit is due, the thread sleeps until it instead of waking for each packet, so under
//!    load one wake-up serves many packets; an idle server commits (and replies) at once.
//!
//! INVARIANT: a reply whose lease record was appended is sent only after a commit that covers
//! the record has returned `Ok`; if the journal fails, those replies are dropped and counted.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::socket::{BATCH, Outgoing, ReceiveBatch};
use super::{Served, Shared, handle_datagram};

/// Shortest time between two lease journal syncs: a client waits seconds before it
/// retransmits, so an ACK held up to 2 ms costs nothing, and a storm shares one sync per 2 ms.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(2);
/// Most datagrams taken from one socket before the others (and a due commit) get their turn.
const ROUND_LIMIT: usize = 8 * BATCH;

/// A change of the sockets served, sent to the thread.
enum Command {
    Add(Vec<Served>),
    /// Close both sockets of this interface.
    Remove(String),
}

/// The running worker thread.
pub struct Worker {
    stop: Arc<AtomicBool>,
    commands: mpsc::Sender<Command>,
    /// Writing to it wakes the thread (to stop, or to take a command).
    wake: UnixDatagram,
    finished: Option<oneshot::Receiver<anyhow::Result<()>>>,
}

impl Worker {
    /// Start the thread on `served` sockets.
    pub(super) fn start(served: Vec<Served>, shared: Arc<Shared>) -> std::io::Result<Worker> {
        let (wake, woken) = UnixDatagram::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (report, finished) = oneshot::channel();
        let (commands, received_commands) = mpsc::channel();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                let mut state = Loop::new(served, shared, woken, received_commands, thread_stop);
                let _ = report.send(state.run());
            })?;
        Ok(Worker {
            stop,
            commands,
            wake,
            finished: Some(finished),
        })
    }

    /// Serve these sockets too.
    pub(super) fn add(&self, served: Vec<Served>) {
        self.command(Command::Add(served));
    }

    /// Stop serving `interface` (its replies waiting for a commit are sent first).
    pub(super) fn remove(&self, interface: String) {
        self.command(Command::Remove(interface));
    }

    fn command(&self, command: Command) {
        // The thread only ends at shutdown or on a socket failure, which `finished` reports.
        let _ = self.commands.send(command);
        let _ = self.wake.send(&[1]);
    }

    /// Resolves when the thread ends by itself (a socket failure, or a panic).
    pub async fn finished(&mut self) -> anyhow::Result<()> {
        let Some(finished) = self.finished.as_mut() else {
            return std::future::pending().await;
        };
        let ended = finished.await;
        self.finished = None;
        ended.unwrap_or_else(|_| Err(anyhow::anyhow!("the DHCP worker thread panicked")))
    }

    /// Tell the thread to stop (it commits and sends what is pending first) and wait for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(&[1]);
        match self.finished.take() {
            Some(finished) => finished
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the DHCP worker thread panicked"))),
            None => Ok(()),
        }
    }
}

/// The thread's state.
struct Loop {
    served: Vec<Served>,
    shared: Arc<Shared>,
    woken: UnixDatagram,
    commands: mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    batch: ReceiveBatch,
    /// Per socket: replies to send now, and replies waiting for the next commit.
    immediate: Vec<Vec<Outgoing>>,
    after_commit: Vec<Vec<Outgoing>>,
    /// Records were appended since the last commit.
    commit_pending: bool,
    last_commit: Option<Instant>,
}

impl Loop {
    fn new(
        served: Vec<Served>,
        shared: Arc<Shared>,
        woken: UnixDatagram,
        commands: mpsc::Receiver<Command>,
        stop: Arc<AtomicBool>,
    ) -> Loop {
        let sockets = served.len();
        Loop {
            served,
            shared,
            woken,
            commands,
            stop,
            batch: ReceiveBatch::default(),
            immediate: (0..sockets).map(|_| Vec::new()).collect(),
            after_commit: (0..sockets).map(|_| Vec::new()).collect(),
            commit_pending: false,
            last_commit: None,
        }
    }

    fn run(&mut self) -> anyhow::Result<()> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.commit();
                return Ok(());
            }
            match self.commit_due_in() {
                // Nothing waits for a commit: sleep until a packet (or the stop signal) comes.
                None => self.wait(true, None)?,
                Some(wait) if !wait.is_zero() => self.wait(false, Some(wait))?,
                Some(_) => {}
            }
            self.drain_wake();
            self.take_commands();
            for index in 0..self.served.len() {
                self.receive(index)?;
                self.send(index, false);
            }
            if self.commit_due_in().is_some_and(|wait| wait.is_zero()) {
                self.commit();
            }
        }
    }

    /// How long until the pending commit is due; `None` when nothing is pending.
    fn commit_due_in(&self) -> Option<Duration> {
        if !self.commit_pending {
            return None;
        }
        Some(self.last_commit.map_or(Duration::ZERO, |last| {
            COMMIT_INTERVAL.saturating_sub(last.elapsed())
        }))
    }

    /// Sleep until the wake socket (and, with `sockets`, any served socket) is readable, or
    /// `timeout` passes.
    fn wait(&self, sockets: bool, timeout: Option<Duration>) -> anyhow::Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.served.len() + 1);
        fds.push(pollfd(self.woken.as_raw_fd()));
        if sockets {
            fds.extend(self.served.iter().map(|served| pollfd(served.socket.fd())));
        }
        let timeout = timeout.map(|timeout| libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        });
        let timeout_pointer = timeout
            .as_ref()
            .map_or(std::ptr::null(), std::ptr::from_ref);
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        // SAFETY: `fds` holds `count` initialised pollfd entries and `timeout_pointer` is null
        // or points at `timeout`; both outlive the call.
        let result =
            unsafe { libc::ppoll(fds.as_mut_ptr(), count, timeout_pointer, std::ptr::null()) };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(anyhow::Error::new(error).context("DHCP worker failed to wait"));
            }
        }
        Ok(())
    }

    /// Apply the socket changes sent by the service.
    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add(served) => {
                    for served in served {
                        self.served.push(served);
                        self.immediate.push(Vec::new());
                        self.after_commit.push(Vec::new());
                    }
                }
                Command::Remove(interface) => {
                    // Replies waiting for a commit leave before their socket closes.
                    self.commit();
                    let keep: Vec<bool> = self
                        .served
                        .iter()
                        .map(|served| served.interface.name != interface)
                        .collect();
                    let mut kept = keep.iter();
                    self.served.retain(|_| kept.next().copied().unwrap_or(true));
                    let mut kept = keep.iter();
                    self.immediate
                        .retain(|_| kept.next().copied().unwrap_or(true));
                    let mut kept = keep.iter();
                    self.after_commit
                        .retain(|_| kept.next().copied().unwrap_or(true));
                }
            }
        }
    }

    fn drain_wake(&self) {
        let mut byte = [0u8; 16];
        while self.woken.recv(&mut byte).is_ok() {}
    }

    /// Take and handle what is waiting on socket `index`.
    fn receive(&mut self, index: usize) -> anyhow::Result<()> {
        let Some(served) = self.served.get(index) else {
            return Ok(());
        };
        let mut taken = 0;
        while taken < ROUND_LIMIT {
            let count = match served.socket.receive_batch(&mut self.batch) {
                Ok(count) => count,
                // Datagram-level errors (ICMP feedback, interruptions) are not fatal.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::HostUnreachable
                            | std::io::ErrorKind::NetworkUnreachable
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    tracing::debug!(interface = %served.socket.interface, error = %crate::error::Chain(&error), "DHCP receive error");
                    break;
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "DHCP socket on {} port {} failed",
                        served.socket.interface, served.socket.port
                    )));
                }
            };
            let counters = &self.shared.exchanges.counters;
            counters.received.inc_by(u64::try_from(count).unwrap_or(0));
            let now = tokio::time::Instant::now();
            for (datagram, received) in self.batch.datagrams() {
                let handled = handle_datagram(served, &self.shared, datagram, received.source, now);
                self.commit_pending |= handled.journaled;
                if let Some(reply) = handled.reply {
                    let queue = if handled.journaled {
                        &mut self.after_commit
                    } else {
                        &mut self.immediate
                    };
                    if let Some(queue) = queue.get_mut(index) {
                        queue.push(reply);
                    }
                }
            }
            taken += count;
            if count < BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Send socket `index`'s immediate replies, or (`committed`) the ones that waited for the
    /// commit.
    fn send(&mut self, index: usize, committed: bool) {
        let (Some(served), Some(queue)) = (
            self.served.get(index),
            if committed {
                self.after_commit.get_mut(index)
            } else {
                self.immediate.get_mut(index)
            },
        ) else {
            return;
        };
        if queue.is_empty() {
            return;
        }
        let (failed, error) = served.socket.send_batch(queue);
        self.shared
            .exchanges
            .counters
            .replies
            .inc_by(u64::try_from(queue.len() - failed).unwrap_or(0));
        if failed > 0 {
            self.shared
                .exchanges
                .counters
                .reply_failures
                .inc_by(u64::try_from(failed).unwrap_or(u64::MAX));
            tracing::warn!(
                interface = %served.socket.interface,
                failed,
                error = %error.map_or_else(String::new, |error| crate::error::Chain(&error).to_string()),
                "DHCP replies not sent"
            );
        }
        queue.clear();
    }

    /// Make the appended lease records durable, then send the replies that waited for them.
    fn commit(&mut self) {
        if !self.commit_pending {
            return;
        }
        let committed = self.shared.leases.lock().journal.commit();
        self.last_commit = Some(Instant::now());
        self.commit_pending = false;
        match committed {
            Ok(()) => {
                for index in 0..self.served.len() {
                    self.send(index, true);
                }
            }
            Err(error) => {
                let dropped: usize = self.after_commit.iter().map(Vec::len).sum();
                self.shared
                    .exchanges
                    .counters
                    .reply_failures
                    .inc_by(u64::try_from(dropped).unwrap_or(u64::MAX));
                tracing::error!(error = %crate::error::Chain(&error), dropped, "DHCP lease journal commit failed; replies dropped");
                for queue in &mut self.after_commit {
                    queue.clear();
                }
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
