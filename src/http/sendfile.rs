//! Large public boot files over plain HTTP with `sendfile(2)`: before hyper takes a plain-HTTP
//! connection, each leading request is peeked at (not consumed); a plain `GET` of a file under
//! `/confluent-public/` larger than the small-file limit, with no range or validator headers, is
//! answered here straight from the page cache, and the next request is looked at the same way.
//! Anything else (including a request not yet complete) is left unread for hyper, which then
//! serves the rest of the connection. Kernels and initrds fetched by firmware and iPXE take this
//! path; it saves the two copies a buffered body costs.

use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::files;
use super::files::SmallFileCache;
use crate::boot::Boot;

/// The longest request head looked at.
const MAX_HEAD: usize = 8192;
/// Bytes handed to one `sendfile` call.
const SENDFILE_CHUNK: usize = 4 * 1024 * 1024;

/// What to do with the connection after the fast path.
pub enum Next {
    /// Hand it to hyper (nothing of the pending request was read).
    Hyper,
    /// Close it (the client asked to, or went away).
    Close,
}

/// Parse a peeked request head into (head length, path under `/confluent-public/`, close
/// afterwards); `None` sends it to hyper.
fn plan(bytes: &[u8]) -> Option<(usize, String, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_length) = request.parse(bytes).ok()? else {
        return None;
    };
    if request.method? != "GET" {
        return None;
    }
    let target = request.path?;
    let relative = target.strip_prefix("/confluent-public/")?;
    if relative.contains(['?', '#', '%']) {
        return None;
    }
    let mut close = request.version? == 0;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("range")
            || name.eq_ignore_ascii_case("if-range")
            || name.eq_ignore_ascii_case("if-none-match")
            || name.eq_ignore_ascii_case("if-match")
            || name.eq_ignore_ascii_case("if-modified-since")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") && header.value != b"0" {
            return None;
        }
        if name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    Some((head_length, relative.to_string(), close))
}

/// Serve leading large-file requests of a plain-HTTP connection with `sendfile`.
pub async fn serve_leading_files(
    stream: &mut TcpStream,
    boot: &Arc<Boot>,
    cache: &SmallFileCache,
    metrics: &crate::metrics::Metrics,
) -> std::io::Result<Next> {
    let mut buffer = vec![0u8; MAX_HEAD];
    loop {
        // An idle connection is closed after the same time hyper would allow it.
        let Ok(peeked) =
            tokio::time::timeout(super::HEADER_TIMEOUT, stream.peek(&mut buffer)).await
        else {
            return Ok(Next::Close);
        };
        let peeked = peeked?;
        if peeked == 0 {
            return Ok(Next::Close);
        }
        let Some((head_length, relative, close)) = plan(&buffer[..peeked]) else {
            return Ok(Next::Hyper);
        };
        // A small file already in memory: no need to look at the file system here.
        if cache.holds(boot.public.path(), &relative) {
            return Ok(Next::Hyper);
        }
        let phase = crate::deploy::phase::of_file(&relative);
        let opened = {
            let boot = boot.clone();
            tokio::task::spawn_blocking(move || open_large(&boot, &relative)).await
        };
        let Ok(Some((file, length, etag, content_type))) = opened else {
            return Ok(Next::Hyper);
        };
        // Consume exactly the request head; anything after it is the next request.
        let mut head = vec![0u8; head_length];
        tokio::io::AsyncReadExt::read_exact(stream, &mut head).await?;
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\n"
        );
        if close {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        // Corked: the head and the file leave in full-sized segments, as with nginx's
        // `tcp_nopush`.
        set_cork(stream, true);
        if let (Some(phase), Ok(peer)) = (phase, stream.peer_addr()) {
            metrics
                .boot_phases
                .reached(peer.ip(), phase, std::time::Instant::now());
        }
        metrics.http_boot.files.inc();
        stream.write_all(response.as_bytes()).await?;
        let sent = send_file(stream, &file, length, &metrics.http_boot.bytes_sendfile).await;
        set_cork(stream, false);
        sent?;
        if close {
            stream.shutdown().await?;
            return Ok(Next::Close);
        }
    }
}

fn set_cork(stream: &TcpStream, cork: bool) {
    let _ = socket2::SockRef::from(stream).set_tcp_cork(cork);
}

/// Open a public file if it is large enough for this path: (file, length, etag, type).
fn open_large(boot: &Boot, relative: &str) -> Option<(std::fs::File, u64, String, &'static str)> {
    // Refusals and missing files go to hyper, which answers them as usual.
    let opened = boot.public.open_file(files::relative(relative)).ok()?;
    if opened.metadata.len() <= files::SMALL_FILE {
        return None;
    }
    Some((
        opened.file,
        opened.metadata.len(),
        files::etag_of(&opened.metadata),
        files::content_type(&opened.path),
    ))
}

/// `sendfile` the whole file to the socket as it becomes writable.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    length: u64,
    sent_bytes: &crate::metrics::Counter,
) -> std::io::Result<()> {
    let mut offset: libc::off_t = 0;
    while (offset as u64) < length {
        stream.writable().await?;
        let remaining = (length - offset as u64).min(SENDFILE_CHUNK as u64) as usize;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call; `offset` is a
            // valid pointer that sendfile advances.
            let sent = unsafe {
                libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, remaining)
            };
            if sent < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(sent as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ));
            }
            Ok(sent) => {
                sent_bytes.inc_by(u64::try_from(sent).unwrap_or(0));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
