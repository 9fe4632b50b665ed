//! One read transfer: option negotiation ([`negotiate`], pure), then the sender loop
//! ([`send`]) on the transfer's own connected socket.
//!
//! The sender works in windows (RFC 7440; a window of one is plain RFC 1350): send blocks
//! `acked + 1 ..= acked + windowsize`, then wait for an ACK. An ACK of a block in the window
//! moves `acked` there and starts the next window from the block after it (so an ACK before
//! the window's end rewinds, as RFC 7440 section 4 asks); an ACK at or before `acked` (a
//! duplicate) is ignored and does not restart the timer, which is what prevents the sorcerer's
//! apprentice syndrome (RFC 1123 section 4.2.3.1). Silence resends the window after a timeout
//! that doubles each time, up to a number of attempts. A client ERROR packet ends the transfer
//! at once.
//!
//! Memory per transfer is bounded: one read buffer of at most [`READ_CHUNK`] or one window,
//! whichever is larger. DATA packets are sent straight from that buffer, a window per
//! `sendmmsg` call.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::pin::Pin;
use tokio::net::UdpSocket;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::TftpLimits;
use crate::proto::tftp::{self as wire, ErrorCode, Options, Packet};

/// Bytes read from a file at a time (at least one window is read at once).
pub const READ_CHUNK: usize = 128 << 10;
/// Largest windowsize accepted.
pub const MAX_WINDOWSIZE: u16 = 64;
/// Smallest blksize accepted; smaller requests get the default.
pub const MIN_BLKSIZE: u16 = 512;
/// Longest single wait for an ACK, however far the backoff has gone.
const MAX_WAIT: Duration = Duration::from_secs(64);

/// What was agreed with the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub blksize: u16,
    pub windowsize: u16,
    /// First retransmission timeout (doubled after each one).
    pub timeout: Duration,
    /// The OACK to send first, when the client asked for options we accept.
    pub oack: Option<Options>,
}

/// Decide the transfer parameters from the client's options (RFC 2347-2349, 7440).
/// `blksize_cap` is what the path allows (see `crate::tftp`).
pub fn negotiate(requested: &Options, size: u64, blksize_cap: u16, limits: &TftpLimits) -> Plan {
    let mut oack = Options::default();
    let blksize = match requested.blksize {
        Some(blksize) if blksize >= MIN_BLKSIZE => {
            let blksize = blksize.min(blksize_cap.max(MIN_BLKSIZE));
            oack.blksize = Some(blksize);
            blksize
        }
        _ => wire::DEFAULT_BLKSIZE,
    };
    if requested.tsize.is_some() {
        oack.tsize = Some(size);
    }
    let timeout = match requested.timeout {
        Some(seconds) => {
            oack.timeout = Some(seconds);
            Duration::from_secs(u64::from(seconds))
        }
        None => limits.initial_timeout,
    };
    let windowsize = match requested.windowsize {
        Some(windowsize) => {
            let by_memory = u16::try_from(limits.max_window_bytes / usize::from(blksize))
                .unwrap_or(u16::MAX)
                .max(1);
            let windowsize = windowsize.min(MAX_WINDOWSIZE).min(by_memory);
            oack.windowsize = Some(windowsize);
            windowsize
        }
        None => 1,
    };
    Plan {
        blksize,
        windowsize,
        timeout,
        oack: (!oack.is_empty()).then_some(oack),
    }
}

/// Where the bytes come from.
pub enum Source {
    Memory(Bytes),
    File(FileSource),
}

/// A file read in large chunks with `pread`, in a blocking thread; the buffer holds
/// `[start, start + buffer.len())`.
pub struct FileSource {
    file: Arc<File>,
    size: u64,
    start: u64,
    buffer: Vec<u8>,
}

impl Source {
    pub fn file(file: File, size: u64) -> Source {
        Source::File(FileSource {
            file: Arc::new(file),
            size,
            start: 0,
            buffer: Vec::new(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Source::Memory(bytes) => u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            Source::File(file) => file.size,
        }
    }

    /// The bytes `[offset, offset + length)`, which must lie inside the source.
    async fn range(&mut self, offset: u64, length: usize) -> std::io::Result<&[u8]> {
        match self {
            Source::Memory(bytes) => usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(length)?))
                .ok_or_else(|| std::io::Error::other("range outside the file")),
            Source::File(source) => source.range(offset, length).await,
        }
    }
}

impl FileSource {
    async fn range(&mut self, offset: u64, length: usize) -> std::io::Result<&[u8]> {
        let wanted = u64::try_from(length).unwrap_or(u64::MAX);
        let buffered = u64::try_from(self.buffer.len()).unwrap_or(0);
        let end = offset.saturating_add(wanted);
        if offset < self.start || end > self.start + buffered {
            let remaining = self.size.saturating_sub(offset);
            let read = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(length.max(READ_CHUNK));
            if read < length {
                return Err(std::io::Error::other("range outside the file"));
            }
            let mut buffer = std::mem::take(&mut self.buffer);
            let file = self.file.clone();
            let (buffer, result) = tokio::task::spawn_blocking(move || {
                buffer.resize(read, 0);
                let result = file.read_exact_at(&mut buffer, offset);
                (buffer, result)
            })
            .await
            .map_err(std::io::Error::other)?;
            self.buffer = buffer;
            if let Err(error) = result {
                self.buffer.clear();
                // Most likely the file shrank while it was being served.
                return Err(error);
            }
            self.start = offset;
        }
        let from = usize::try_from(offset - self.start).map_err(std::io::Error::other)?;
        self.buffer
            .get(from..from + length)
            .ok_or_else(|| std::io::Error::other("range outside the buffer"))
    }
}

/// How a transfer ended without completing.
#[derive(Debug, thiserror::Error)]
pub enum TftpTransferError {
    #[error("client sent error {code}: {message}")]
    ClientError { code: u16, message: String },
    #[error("no acknowledgement after {attempts} attempts")]
    TimedOut { attempts: u32 },
    #[error("transfer socket failed")]
    Socket(#[source] std::io::Error),
    #[error("failed to read the file")]
    Read(#[source] std::io::Error),
    #[error("server shutting down")]
    Cancelled,
}

/// The block number on the wire of block `index` (1-based). Block numbers roll over to 0
/// after 65535, as tftp-hpa, iPXE and EDK2 expect.
fn wire_block(index: u64) -> u16 {
    (index & 0xffff) as u16
}

/// Which block index an ACK of wire `block` refers to, if it is in `acked ..= sent_upto`.
fn ack_index(block: u16, acked: u64, sent_upto: u64) -> Option<u64> {
    let behind = u64::from(wire_block(sent_upto).wrapping_sub(block));
    (behind <= sent_upto - acked).then(|| sent_upto - behind)
}

/// How long to wait after the `attempt`th send (0-based) of the same window.
fn backoff(timeout: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    timeout.saturating_mul(factor).min(MAX_WAIT.max(timeout))
}

/// Serve `source` to the connected client. Returns the bytes sent once.
pub async fn send(
    socket: &UdpSocket,
    source: &mut Source,
    plan: &Plan,
    limits: &TftpLimits,
    shutdown: &CancellationToken,
) -> Result<u64, TftpTransferError> {
    let mut packet = Vec::with_capacity(64);
    let mut acks = AckReceiver::new(socket, shutdown);
    let mut attempt = 0u32;
    let attempts = limits.max_attempts.max(1);

    if let Some(oack) = &plan.oack {
        wire::encode_oack(oack, &mut packet);
        'oack: loop {
            socket
                .send(&packet)
                .await
                .map_err(TftpTransferError::Socket)?;
            acks.deadline(Instant::now() + backoff(plan.timeout, attempt));
            loop {
                match acks.next().await? {
                    Some(0) => break 'oack,
                    Some(_) => {}
                    None => {
                        attempt += 1;
                        if attempt >= attempts {
                            return Err(TftpTransferError::TimedOut { attempts });
                        }
                        continue 'oack;
                    }
                }
            }
        }
        attempt = 0;
    }

    let size = source.size();
    let blksize = u64::from(plan.blksize);
    let total_blocks = size / blksize + 1;
    let mut acked = 0u64;
    loop {
        let first = acked + 1;
        let last = (acked + u64::from(plan.windowsize)).min(total_blocks);
        let window_start = (first - 1) * blksize;
        let window_end = (last * blksize).min(size);
        let window_length = usize::try_from(window_end - window_start)
            .map_err(|error| TftpTransferError::Read(std::io::Error::other(error)))?;
        let data = source
            .range(window_start, window_length)
            .await
            .map_err(TftpTransferError::Read)?;
        let count = usize::try_from(last + 1 - first).unwrap_or(usize::MAX);
        send_window(socket, first, count, data, usize::from(plan.blksize))
            .await
            .map_err(TftpTransferError::Socket)?;
        acks.deadline(Instant::now() + backoff(plan.timeout, attempt));
        loop {
            match acks.next().await? {
                Some(block) => {
                    if let Some(index) = ack_index(block, acked, last)
                        && index > acked
                    {
                        acked = index;
                        attempt = 0;
                        if acked == total_blocks {
                            return Ok(size);
                        }
                        break;
                    }
                }
                None => {
                    attempt += 1;
                    if attempt >= attempts {
                        return Err(TftpTransferError::TimedOut { attempts });
                    }
                    break;
                }
            }
        }
    }
}

/// Send DATA blocks `first .. first + count` of a window whose bytes are `data` (the window
/// starts at block `first`; the last block may be short or empty), in as few `sendmmsg` calls
/// as the socket allows, straight from `data` (no copy per packet).
///
/// One call per window rather than one per packet matters more than the syscalls saved: each
/// send wakes the client, and a client on the same machine then preempts the sender after
/// every packet; with the whole window queued in one call, it reads the window in one go.
async fn send_window(
    socket: &UdpSocket,
    first: u64,
    count: usize,
    data: &[u8],
    blksize: usize,
) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < count {
        socket.writable().await?;
        let batch = (count - sent).min(MAX_BATCH);
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            send_batch(socket.as_raw_fd(), first, sent, batch, data, blksize)
        }) {
            Ok(0) => return Err(std::io::Error::other("sendmmsg sent nothing")),
            Ok(done) => sent += done,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Most DATA packets handed to one `sendmmsg` call.
const MAX_BATCH: usize = MAX_WINDOWSIZE as usize;

/// One `sendmmsg` of blocks `first + from .. first + from + batch` on a connected socket;
/// returns how many were sent.
fn send_batch(
    fd: std::os::fd::RawFd,
    first: u64,
    from: usize,
    batch: usize,
    data: &[u8],
    blksize: usize,
) -> std::io::Result<usize> {
    let batch = batch.min(MAX_BATCH);
    let mut headers = [[0u8; wire::DATA_HEADER_LEN]; MAX_BATCH];
    for (slot, header) in headers.iter_mut().take(batch).enumerate() {
        let block = first + u64::try_from(from + slot).unwrap_or(u64::MAX);
        header[..2].copy_from_slice(&wire::opcode::DATA.to_be_bytes());
        header[2..].copy_from_slice(&wire_block(block).to_be_bytes());
    }
    // Pointers are taken only after each array is written, so none is invalidated by a
    // later write.
    let header_base = headers.as_mut_ptr();
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iovecs = [empty; 2 * MAX_BATCH];
    for slot in 0..batch {
        let start = (from + slot).saturating_mul(blksize).min(data.len());
        let end = start.saturating_add(blksize).min(data.len());
        let payload = data.get(start..end).unwrap_or_default();
        iovecs[2 * slot] = libc::iovec {
            iov_base: header_base.wrapping_add(slot).cast(),
            iov_len: wire::DATA_HEADER_LEN,
        };
        iovecs[2 * slot + 1] = libc::iovec {
            // sendmmsg only reads through this pointer.
            iov_base: payload.as_ptr().cast_mut().cast(),
            iov_len: payload.len(),
        };
    }
    let iovec_base = iovecs.as_mut_ptr();
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value.
    let mut messages: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (slot, message) in messages.iter_mut().take(batch).enumerate() {
        message.msg_hdr.msg_iov = iovec_base.wrapping_add(2 * slot);
        message.msg_hdr.msg_iovlen = 2;
    }
    let length = u32::try_from(batch).unwrap_or(0);
    // SAFETY: `messages[..batch]` point at `iovecs`, which point at `headers` and `data`; all
    // outlive this synchronous call, and the kernel only reads them. No address is given: the
    // socket is connected.
    let result = unsafe { libc::sendmmsg(fd, messages.as_mut_ptr(), length, libc::MSG_DONTWAIT) };
    usize::try_from(result).map_err(|_| std::io::Error::last_os_error())
}

/// Receives the client's ACKs. The timer and the cancellation future live as long as the
/// transfer, so that waiting for an ACK allocates and registers nothing per window.
struct AckReceiver<'a> {
    socket: &'a UdpSocket,
    incoming: [u8; 1024],
    timer: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
}

impl<'a> AckReceiver<'a> {
    fn new(socket: &'a UdpSocket, shutdown: &'a CancellationToken) -> AckReceiver<'a> {
        AckReceiver {
            socket,
            incoming: [0; 1024],
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            cancelled: Box::pin(shutdown.cancelled()),
        }
    }

    /// When [`AckReceiver::next`] stops waiting.
    fn deadline(&mut self, deadline: Instant) {
        self.timer.as_mut().reset(deadline);
    }

    /// The next ACK from the client (its block number), or `None` at the deadline. Other
    /// packets are ignored; an ERROR ends the transfer.
    async fn next(&mut self) -> Result<Option<u16>, TftpTransferError> {
        loop {
            // CANCEL-SAFETY: `recv` on a UDP socket loses nothing when it is dropped unfinished.
            let length = tokio::select! {
                biased;
                () = &mut self.cancelled => return Err(TftpTransferError::Cancelled),
                () = &mut self.timer => return Ok(None),
                received = self.socket.recv(&mut self.incoming) => {
                    received.map_err(TftpTransferError::Socket)?
                }
            };
            match wire::decode(self.incoming.get(..length).unwrap_or_default()) {
                Ok(Packet::Ack { block }) => return Ok(Some(block)),
                Ok(Packet::Error { code, message }) => {
                    return Err(TftpTransferError::ClientError {
                        code: code.to_u16(),
                        message: String::from_utf8_lossy(message).into_owned(),
                    });
                }
                _ => {}
            }
        }
    }
}

/// Send an ERROR packet on a transfer socket, ignoring failures (the client may be gone).
pub async fn send_error(socket: &UdpSocket, code: ErrorCode, message: &str) {
    let mut packet = Vec::with_capacity(message.len() + 5);
    wire::encode_error(code, message, &mut packet);
    let _ = socket.send(&packet).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TftpLimits {
        TftpLimits::default()
    }

    #[test]
    fn negotiation_caps_and_echoes_options() {
        let requested = Options {
            blksize: Some(9000),
            timeout: Some(3),
            tsize: Some(0),
            windowsize: Some(200),
        };
        let plan = negotiate(&requested, 12345, 1468, &limits());
        assert_eq!(plan.blksize, 1468);
        assert_eq!(plan.windowsize, 64);
        assert_eq!(plan.timeout, Duration::from_secs(3));
        assert_eq!(
            plan.oack,
            Some(Options {
                blksize: Some(1468),
                timeout: Some(3),
                tsize: Some(12345),
                windowsize: Some(64),
            })
        );
    }

    #[test]
    fn negotiation_without_options_or_with_small_blksize() {
        let plan = negotiate(&Options::default(), 1, 1468, &limits());
        assert_eq!(plan.blksize, 512);
        assert_eq!(plan.windowsize, 1);
        assert_eq!(plan.oack, None);
        let small = Options {
            blksize: Some(100),
            ..Options::default()
        };
        let plan = negotiate(&small, 1, 1468, &limits());
        assert_eq!(plan.blksize, 512);
        assert_eq!(plan.oack, None, "a declined option is left out of the OACK");
    }

    #[test]
    fn windows_are_bounded_in_memory() {
        let requested = Options {
            blksize: Some(65464),
            windowsize: Some(64),
            ..Options::default()
        };
        let plan = negotiate(&requested, 1, 65464, &limits());
        assert_eq!(plan.blksize, 65464);
        assert!(usize::from(plan.windowsize) * 65464 <= limits().max_window_bytes);
        assert!(plan.windowsize >= 1);
    }

    #[test]
    fn acks_map_to_blocks_across_rollover() {
        assert_eq!(ack_index(16, 0, 16), Some(16));
        assert_eq!(ack_index(5, 0, 16), Some(5));
        assert_eq!(ack_index(0, 0, 16), Some(0));
        assert_eq!(ack_index(17, 0, 16), None, "not sent yet");
        assert_eq!(ack_index(3, 4, 20), None, "older than the window");
        // Blocks 65530..=65545 in flight; wire numbers roll over after 65535.
        assert_eq!(ack_index(9, 65529, 65545), Some(65545));
        assert_eq!(ack_index(0, 65529, 65545), Some(65536));
        assert_eq!(ack_index(65535, 65529, 65545), Some(65535));
        assert_eq!(ack_index(65000, 65529, 65545), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let second = Duration::from_secs(1);
        assert_eq!(backoff(second, 0), second);
        assert_eq!(backoff(second, 3), Duration::from_secs(8));
        assert_eq!(backoff(second, 40), MAX_WAIT);
        let long = Duration::from_secs(255);
        assert_eq!(backoff(long, 2), long);
    }
}
