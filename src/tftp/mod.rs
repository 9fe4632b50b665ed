//! The TFTP boot service: read-only, rooted at the boot-loader directory
//! (`lib/tftpboot/`), with virtual files ([`VirtualFiles`], e.g. per-node GRUB
//! configurations and profiles' `boot/` directories) consulted before the filesystem.
//!
//! The listening socket ([`socket::ListenSocket`]) only decodes requests
//! ([`crate::proto::tftp`]) and starts transfers: each read request becomes a task on the
//! service's tracker, holding one of [`TftpLimits::max_transfers`] slots, with its own
//! ephemeral socket bound to the local address the request arrived on ([`transfer`]). Past the
//! cap, requests get an ERROR packet saying the server is busy. Names are checked and opened by
//! [`root`], which never lets a request out of the root. Write requests are refused. Every
//! outcome is counted in [`TftpStats`]; a failed transfer is logged at debug and never ends
//! the service, only a failure of the listening socket does.
//!
//! Written for this daemon instead of using `async-tftp`, which runs every transfer inside one
//! task and ignores the ERROR packets UEFI firmware sends after reading `tsize`.

pub mod root;
pub mod socket;
pub mod transfer;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::metrics::{BootPhases, Counter};
use crate::proto::tftp::{self as wire, ErrorCode, Mode, Options, Packet};
pub use root::TftpOpenError;
use socket::ListenSocket;
pub use socket::TftpBindError;
use transfer::{Source, TftpTransferError};

/// Block size when the path MTU is unknown: what fits an Ethernet frame
/// (1500 - 20 IP - 8 UDP - 4 TFTP).
pub const FALLBACK_BLKSIZE_CAP: u16 = 1468;
/// How long shutdown waits for transfers to notice it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A file served from somewhere other than the root directory.
#[derive(Debug)]
pub enum VirtualFile {
    /// Generated in memory, such as a node's boot configuration.
    Memory(Bytes),
    /// Opened read-only by the [`VirtualFiles`] implementation, which is responsible for
    /// confining it (with a [`crate::fsroot::ConfinedRoot`] of its own), with its size.
    Opened(std::fs::File, u64),
}

/// Names the server answers other than from its root directory: files generated in memory
/// (a node's GRUB configuration) or mapped to other directories (a profile's `boot/`).
/// Consulted before the root, with the normalized name (relative to the root, `/`-separated,
/// no leading `/`) and the client's address; `None` falls through to the root.
pub trait VirtualFiles: Send + Sync + 'static {
    /// Runs on the blocking pool: it may read files.
    fn lookup(&self, path: &str, client: IpAddr) -> Option<Result<VirtualFile, TftpOpenError>>;
}

/// No virtual files: everything comes from the root directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVirtualFiles;

impl VirtualFiles for NoVirtualFiles {
    fn lookup(&self, _path: &str, _client: IpAddr) -> Option<Result<VirtualFile, TftpOpenError>> {
        None
    }
}

/// Bounds of the service.
#[derive(Debug, Clone)]
pub struct TftpLimits {
    /// Transfers in progress at once; requests beyond get a "server busy" error.
    pub max_transfers: usize,
    /// First retransmission timeout when the client sends no `timeout` option.
    pub initial_timeout: Duration,
    /// Sends of the same window (or OACK) before giving up; the wait doubles after each.
    pub max_attempts: u32,
    /// Upper bound of windowsize × blksize (the negotiated windowsize is lowered to fit).
    pub max_window_bytes: usize,
    /// Largest file served in netascii mode (converted in memory).
    pub max_netascii_bytes: u64,
}

impl Default for TftpLimits {
    fn default() -> TftpLimits {
        TftpLimits {
            max_transfers: 4096,
            initial_timeout: Duration::from_secs(1),
            max_attempts: 5,
            max_window_bytes: 1 << 20,
            max_netascii_bytes: 16 << 20,
        }
    }
}

/// Counters of the service, shared with whoever wants to read them: the daemon's metrics
/// (`confluent_tftp_*`) when it has any, so each event is counted once.
#[derive(Debug, Default)]
pub struct TftpStats {
    /// Read and write requests received.
    pub requests: Counter,
    /// Transfers acknowledged to the last block.
    pub completed: Counter,
    /// Transfers that timed out or hit a socket or read error.
    pub failed: Counter,
    /// Transfers the client ended with an ERROR packet (UEFI does after reading `tsize`).
    pub aborted: Counter,
    /// Requests refused: write requests, names outside the root or invalid, mail mode.
    pub refused: Counter,
    /// Requests for files that do not exist.
    pub not_found: Counter,
    /// Requests turned away because `max_transfers` were in progress.
    pub busy: Counter,
    /// Datagrams on the listening socket that are not a valid request.
    pub malformed: Counter,
    /// File bytes of completed transfers.
    pub bytes: Counter,
}

/// A copy of [`TftpStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TftpCounts {
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub aborted: u64,
    pub refused: u64,
    pub not_found: u64,
    pub busy: u64,
    pub malformed: u64,
}

impl TftpStats {
    /// Counters that are the handles of `metrics`.
    pub fn counting_into(metrics: &crate::metrics::TftpMetrics) -> TftpStats {
        TftpStats {
            requests: metrics.requests.clone(),
            completed: metrics.outcome("completed"),
            failed: metrics.outcome("failed"),
            aborted: metrics.outcome("aborted"),
            refused: metrics.outcome("refused"),
            not_found: metrics.outcome("not_found"),
            busy: metrics.outcome("busy"),
            malformed: metrics.malformed.clone(),
            bytes: metrics.bytes.clone(),
        }
    }

    pub fn snapshot(&self) -> TftpCounts {
        let read = |counter: &Counter| counter.get();
        TftpCounts {
            requests: read(&self.requests),
            completed: read(&self.completed),
            failed: read(&self.failed),
            aborted: read(&self.aborted),
            refused: read(&self.refused),
            not_found: read(&self.not_found),
            busy: read(&self.busy),
            malformed: read(&self.malformed),
        }
    }
}

fn count(counter: &Counter) {
    counter.inc();
}

/// What every transfer needs.
struct Shared {
    root: crate::fsroot::ConfinedRoot,
    files: Arc<dyn VirtualFiles>,
    limits: TftpLimits,
    stats: Arc<TftpStats>,
    /// Boot attempts whose loader, script, kernel or initramfs may come over TFTP.
    boot_phases: Option<Arc<BootPhases>>,
    /// The listening address: transfers use its IP when the packet info gives none.
    listen_ip: IpAddr,
}

/// The TFTP service (see the module documentation).
pub struct TftpService {
    socket: ListenSocket,
    shared: Arc<Shared>,
}

impl TftpService {
    /// Bind `address` and serve files under `root` (which must exist). Must run inside a
    /// tokio runtime.
    pub fn bind(
        address: SocketAddr,
        root: &Path,
        files: Arc<dyn VirtualFiles>,
        limits: TftpLimits,
    ) -> Result<TftpService, TftpBindError> {
        TftpService::bind_counted(address, root, files, limits, Arc::default(), None)
    }

    /// [`bind`](Self::bind), counting into `stats` (the daemon's metrics) and reporting boot
    /// files served to `boot_phases`.
    pub fn bind_counted(
        address: SocketAddr,
        root: &Path,
        files: Arc<dyn VirtualFiles>,
        limits: TftpLimits,
        stats: Arc<TftpStats>,
        boot_phases: Option<Arc<BootPhases>>,
    ) -> Result<TftpService, TftpBindError> {
        let root = crate::fsroot::ConfinedRoot::new(root).map_err(TftpBindError::Root)?;
        let socket = ListenSocket::bind(address)?;
        Ok(TftpService {
            shared: Arc::new(Shared {
                root,
                files,
                limits,
                stats,
                boot_phases,
                listen_ip: socket.local_addr().ip(),
            }),
            socket,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    pub fn stats(&self) -> Arc<TftpStats> {
        self.shared.stats.clone()
    }

    /// Serve until `shutdown`, then cancel the transfers in progress (they send the client an
    /// ERROR packet) and wait briefly for them.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.shared.limits.max_transfers));
        let mut buffer = vec![0u8; 2048];
        let mut reply = Vec::with_capacity(128);
        let result = loop {
            // CANCEL-SAFETY: a UDP receive loses nothing when dropped unfinished.
            let received = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                received = self.socket.receive(&mut buffer) => received,
            };
            let received = match received {
                Ok(received) => received,
                Err(error) if transient(&error) => {
                    tracing::debug!(error = %crate::error::Chain(&error), "tftp receive failed; continuing");
                    continue;
                }
                Err(error) => break Err(error),
            };
            let bytes = buffer.get(..received.length).unwrap_or_default();
            let stats = &self.shared.stats;
            reply.clear();
            match wire::decode(bytes) {
                Ok(Packet::Rrq(request)) => {
                    count(&stats.requests);
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        count(&stats.busy);
                        let message = format!(
                            "server busy: {} transfers in progress",
                            self.shared.limits.max_transfers
                        );
                        tracing::debug!(peer = %received.peer, "tftp request refused: busy");
                        wire::encode_error(ErrorCode::Undefined, &message, &mut reply);
                        let _ = self.socket.send_to(&reply, received.peer).await;
                        continue;
                    };
                    let local = received.local.unwrap_or(self.shared.listen_ip);
                    let pending = PendingRead {
                        peer: received.peer,
                        local,
                        filename: request.filename.to_vec(),
                        mode: request.mode,
                        options: request.options,
                    };
                    let shared = self.shared.clone();
                    let token = shutdown.child_token();
                    tracker.spawn(pending.serve(shared, token, permit));
                }
                Ok(Packet::Wrq(request)) => {
                    count(&stats.requests);
                    count(&stats.refused);
                    tracing::debug!(
                        peer = %received.peer,
                        file = %String::from_utf8_lossy(request.filename),
                        "tftp write request refused"
                    );
                    wire::encode_error(
                        ErrorCode::AccessViolation,
                        "read-only server: write requests are refused",
                        &mut reply,
                    );
                    let _ = self.socket.send_to(&reply, received.peer).await;
                }
                Ok(_) => {
                    // A DATA/ACK/ERROR/OACK for the well-known port belongs to no transfer.
                    count(&stats.malformed);
                }
                Err(error) => {
                    count(&stats.malformed);
                    tracing::debug!(peer = %received.peer, error = %crate::error::Chain(&error), "malformed tftp request");
                    let is_request = matches!(
                        bytes
                            .first_chunk::<2>()
                            .map(|opcode| u16::from_be_bytes(*opcode)),
                        Some(wire::opcode::RRQ | wire::opcode::WRQ)
                    );
                    if is_request {
                        wire::encode_error(
                            ErrorCode::IllegalOperation,
                            &format!("malformed request: {error}"),
                            &mut reply,
                        );
                        let _ = self.socket.send_to(&reply, received.peer).await;
                    }
                }
            }
        };
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::debug!("tftp transfers still running at shutdown; abandoning them");
        }
        result.context("the TFTP listening socket failed")
    }
}

/// Receive errors that concern one datagram, not the socket.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::InvalidData
    )
}

impl crate::service::Service for TftpService {
    fn name(&self) -> &'static str {
        "tftp"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(self.serve(shutdown))
    }
}

/// A read request waiting for its transfer task.
struct PendingRead {
    peer: SocketAddr,
    local: IpAddr,
    filename: Vec<u8>,
    mode: Mode,
    options: Options,
}

impl PendingRead {
    async fn serve(
        self,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        _slot: OwnedSemaphorePermit,
    ) {
        let name = String::from_utf8_lossy(&self.filename).into_owned();
        let span = tracing::debug_span!("tftp", peer = %self.peer, file = %name);
        self.transfer(&shared, &shutdown).instrument(span).await;
    }

    async fn transfer(&self, shared: &Shared, shutdown: &CancellationToken) {
        let stats = &shared.stats;
        let peer = match self.peer.ip() {
            // A v4-mapped peer on a dual-stack socket is answered over IPv4.
            IpAddr::V6(v6) if self.local.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), self.peer.port()),
                None => self.peer,
            },
            _ => self.peer,
        };
        let (socket, mtu) = match socket::transfer_socket(self.local, peer) {
            Ok(opened) => opened,
            Err(error) => {
                count(&stats.failed);
                tracing::debug!(error = %crate::error::Chain(&error), local = %self.local, "failed to open a tftp transfer socket");
                return;
            }
        };
        let started = Instant::now();
        let mut source = match self.open(shared).await {
            Ok(source) => source,
            Err(error) => {
                if error.is_refusal() {
                    count(&stats.refused);
                } else if matches!(error, TftpOpenError::NotFound | TftpOpenError::NotAFile) {
                    count(&stats.not_found);
                } else {
                    count(&stats.failed);
                }
                tracing::debug!(error = %crate::error::Chain(&error), "tftp request refused");
                transfer::send_error(&socket, error.code(), error.client_message()).await;
                return;
            }
        };
        if let Some(boot_phases) = &shared.boot_phases
            && let Some(phase) =
                crate::deploy::phase::of_file(&String::from_utf8_lossy(&self.filename))
        {
            boot_phases.reached(peer.ip(), phase, Instant::now());
        }
        let blksize_cap = match mtu {
            Some(mtu) => {
                let overhead = if peer.is_ipv4() { 32 } else { 52 };
                u16::try_from(mtu.saturating_sub(overhead))
                    .unwrap_or(wire::MAX_BLKSIZE)
                    .min(wire::MAX_BLKSIZE)
            }
            None => FALLBACK_BLKSIZE_CAP,
        };
        let plan = transfer::negotiate(&self.options, source.size(), blksize_cap, &shared.limits);
        tracing::debug!(
            size = source.size(),
            blksize = plan.blksize,
            windowsize = plan.windowsize,
            mode = %self.mode,
            "tftp transfer started"
        );
        match transfer::send(&socket, &mut source, &plan, &shared.limits, shutdown).await {
            Ok(bytes) => {
                count(&stats.completed);
                stats.bytes.inc_by(bytes);
                tracing::debug!(
                    bytes,
                    milliseconds = started.elapsed().as_millis(),
                    "tftp transfer complete"
                );
            }
            Err(TftpTransferError::ClientError { code, message }) => {
                // Not a failure: UEFI firmware ends every `tsize` probe this way.
                count(&stats.aborted);
                tracing::debug!(code, message, "tftp transfer ended by the client");
            }
            Err(error) => {
                count(&stats.failed);
                tracing::debug!(error = %crate::error::Chain(&error), "tftp transfer failed");
                let message = match &error {
                    TftpTransferError::TimedOut { .. } => Some("timed out"),
                    TftpTransferError::Read(_) => Some("cannot read file"),
                    TftpTransferError::Cancelled => Some("server shutting down"),
                    _ => None,
                };
                if let Some(message) = message {
                    transfer::send_error(&socket, ErrorCode::Undefined, message).await;
                }
            }
        }
    }

    /// The bytes to send: a virtual file, or a file under the root.
    async fn open(&self, shared: &Shared) -> Result<Source, TftpOpenError> {
        let name = root::normalize(&self.filename)?;
        if self.mode == Mode::Mail {
            return Err(TftpOpenError::MailMode);
        }
        let root = shared.root.clone();
        let files = shared.files.clone();
        let client = self.peer.ip().to_canonical();
        let max_netascii = shared.limits.max_netascii_bytes;
        let netascii = self.mode == Mode::Netascii;
        tokio::task::spawn_blocking(move || {
            let (file, size) = match files.lookup(&name, client) {
                Some(Ok(VirtualFile::Memory(bytes))) => {
                    return Ok(Source::Memory(if netascii {
                        Bytes::from(wire::to_netascii(&bytes))
                    } else {
                        bytes
                    }));
                }
                Some(Ok(VirtualFile::Opened(file, size))) => (file, size),
                Some(Err(error)) => return Err(error),
                None => root::open(&root, &name)?,
            };
            if !netascii {
                return Ok(Source::file(file, size));
            }
            if size > max_netascii {
                return Err(TftpOpenError::NetasciiTooLarge);
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(TftpOpenError::Io)?;
            Ok(Source::Memory(Bytes::from(wire::to_netascii(&bytes))))
        })
        .await
        .map_err(|error| TftpOpenError::Io(std::io::Error::other(error)))?
    }
}

#[cfg(test)]
mod tests;
