//! Static files for booting machines: opened only through [`crate::fsroot::ConfinedRoot`]
//! (never by path), strong ETags with `If-None-Match`, single byte ranges (`Range`,
//! `If-Range`), HEAD, and bodies streamed in large chunks without a thread per download.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::fsroot::{ConfinedOpenError, ConfinedRoot};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Files up to this size are read in one go; larger ones are streamed.
pub(crate) const SMALL_FILE: u64 = 256 * 1024;
/// Chunk size when streaming.
const CHUNK: usize = 2 * 1024 * 1024;
/// Chunks read ahead of the connection.
const READ_AHEAD: usize = 3;

pub(crate) fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("efi" | "EFI") => "application/efi",
        Some("img") => "application/vnd.efi-img",
        Some("iso") => "application/vnd.efi-iso",
        Some("ipxe" | "cfg" | "yaml" | "yml" | "sh" | "txt" | "custom") => {
            "text/plain; charset=utf-8"
        }
        Some("pem") => "application/x-pem-file",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The byte range a request asks for, if it asks for one we honour.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parse a `Range` header for a file of `length` bytes. Only one `bytes=` range is honoured;
/// several ranges, other units or malformed values get the whole file (RFC 9110 allows this).
pub fn parse_range(value: &str, length: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |text: &str| text.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(suffix) => (length.saturating_sub(suffix), length.saturating_sub(1)),
            None => return RangeRequest::Whole,
        },
        (false, true) => match parse(first) {
            Some(start) => (start, length.saturating_sub(1)),
            None => return RangeRequest::Whole,
        },
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => (start, end.min(length.saturating_sub(1))),
            _ => return RangeRequest::Whole,
        },
        (true, true) => return RangeRequest::Whole,
    };
    if length == 0 || start >= length {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part { start, end }
}

pub(crate) fn etag_of(metadata: &std::fs::Metadata) -> String {
    format!(
        "\"{:x}-{:x}-{:x}\"",
        metadata.len(),
        metadata.mtime() as u64 * 1_000_000_000 + metadata.mtime_nsec() as u64,
        metadata.ino()
    )
}

fn matches_etag(list: &str, etag: &str) -> bool {
    list.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || candidate.trim_start_matches("W/") == etag
    })
}

/// A one-line plain-text answer (firmware and iPXE show it as is).
pub(crate) fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut text = text.into();
    text.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// What is served: a small file's bytes (possibly from the cache) or an open large file.
enum Source {
    Memory(Bytes),
    File(std::fs::File),
}

/// A file ready to be served.
struct Opened {
    content_type: &'static str,
    length: u64,
    etag: Arc<str>,
    source: Source,
}

/// A small file kept in memory for [`CACHE_TTL`].
#[derive(Clone)]
struct Cached {
    content_type: &'static str,
    etag: Arc<str>,
    content: Bytes,
    loaded: Instant,
}

/// Small files (up to 256 KiB each, 64 MiB in all) served from memory for a second after they
/// were read, so a boot storm fetching the same scripts and loaders costs no file system work.
/// A changed file is seen at most one second late.
#[derive(Default)]
pub struct SmallFileCache {
    entries: parking_lot::Mutex<HashMap<PathBuf, Cached>>,
    bytes: AtomicUsize,
}

const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_BYTES: usize = 64 * 1024 * 1024;

impl SmallFileCache {
    /// Whether `request` under `root` is a small file served from memory right now.
    pub fn holds(&self, root: &Path, request: &str) -> bool {
        self.get(&cache_key(root, request)).is_some()
    }

    fn get(&self, key: &Path) -> Option<Cached> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        (entry.loaded.elapsed() < CACHE_TTL).then(|| entry.clone())
    }

    fn insert(&self, key: PathBuf, entry: Cached) {
        let mut entries = self.entries.lock();
        let size = entry.content.len();
        if self.bytes.load(Ordering::Relaxed) + size > CACHE_BYTES {
            entries.clear();
            self.bytes.store(0, Ordering::Relaxed);
        }
        if let Some(old) = entries.insert(key, entry) {
            self.bytes.fetch_sub(old.content.len(), Ordering::Relaxed);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }
}

fn cache_key(root: &Path, request: &str) -> PathBuf {
    root.join(relative(request))
}

/// The request as a path under its root: a leading `/` (from `//` in a URL) means the root.
pub(crate) fn relative(request: &str) -> &str {
    request.trim_start_matches('/')
}

/// Open (confined), stat and (when small) read in one trip to the blocking pool.
fn open(root: &ConfinedRoot, request: &str) -> Result<Opened, ConfinedOpenError> {
    let opened = root.open_file(relative(request))?;
    let (mut file, metadata) = (opened.file, opened.metadata);
    let etag: Arc<str> = Arc::from(etag_of(&metadata));
    // The real path: a symlink's own name says nothing of what it serves.
    let content_type = content_type(&opened.path);
    let source = if metadata.len() <= SMALL_FILE {
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(ConfinedOpenError::Io)?;
        Source::Memory(Bytes::from(bytes))
    } else {
        Source::File(file)
    };
    let length = match &source {
        Source::Memory(bytes) => bytes.len() as u64,
        Source::File(_) => metadata.len(),
    };
    Ok(Opened {
        content_type,
        length,
        etag,
        source,
    })
}

/// Serve `request` (a path relative to `root`).
pub async fn serve(
    root: &ConfinedRoot,
    request: &str,
    cache: &SmallFileCache,
    method: &Method,
    headers: &HeaderMap,
    counters: &crate::metrics::HttpBootMetrics,
) -> Response {
    let key = cache_key(root.path(), request);
    if let Some(cached) = cache.get(&key) {
        let opened = Opened {
            content_type: cached.content_type,
            length: cached.content.len() as u64,
            etag: cached.etag,
            source: Source::Memory(cached.content),
        };
        return respond(opened, method, headers, counters);
    }
    let (root, request) = (root.clone(), request.to_string());
    let opened = tokio::task::spawn_blocking(move || open(&root, &request)).await;
    let opened = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(ConfinedOpenError::NotFound | ConfinedOpenError::NotAFile)) => {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Ok(Err(refused @ (ConfinedOpenError::Invalid | ConfinedOpenError::Escapes))) => {
            tracing::info!(refused = %refused, "refused a boot file path");
            return plain(StatusCode::FORBIDDEN, "this path is not served");
        }
        // A symlink loop answered "not found" before confinement moved here; it still does.
        Ok(Err(ConfinedOpenError::Io(error)))
            if error.kind() == std::io::ErrorKind::NotFound
                || error.raw_os_error() == Some(libc::ELOOP) =>
        {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Ok(Err(ConfinedOpenError::Io(error))) => {
            tracing::warn!(error = %crate::error::Chain(&error), "failed to open a boot file");
            return plain(StatusCode::FORBIDDEN, "cannot open this file");
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "file reader failed"),
    };
    if let Source::Memory(content) = &opened.source {
        cache.insert(
            key,
            Cached {
                content_type: opened.content_type,
                etag: opened.etag.clone(),
                content: content.clone(),
                loaded: Instant::now(),
            },
        );
    }
    respond(opened, method, headers, counters)
}

fn respond(
    opened: Opened,
    method: &Method,
    headers: &HeaderMap,
    counters: &crate::metrics::HttpBootMetrics,
) -> Response {
    let Opened {
        content_type,
        length,
        etag,
        source,
    } = opened;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    if let Some(list) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        && matches_etag(list, &etag)
    {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value.trim() == &*etag);
    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        Some(value) if if_range_ok => parse_range(value, length),
        _ => RangeRequest::Whole,
    };
    let (status, start, count) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, length),
        RangeRequest::Part { start, end } => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response();
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD || count == 0 {
        return (status, response_headers).into_response();
    }
    counters.files.inc();
    let body = match source {
        Source::Memory(content) => {
            counters.bytes_http.inc_by(count);
            Body::from(content.slice(start as usize..(start + count) as usize))
        }
        Source::File(file) => Body::new(ReadAhead::start(
            file,
            start,
            count,
            counters.bytes_http.clone(),
        )),
    };
    (status, response_headers, body).into_response()
}

/// A file body read ahead of the connection: a task reads the next chunks (positional reads
/// on the blocking pool) while hyper writes the previous ones, so disk-cache copies and socket
/// writes overlap. Dropping the body (client gone) stops the reader.
struct ReadAhead {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    /// Counts the bytes of each chunk as hyper takes it (not as it is read ahead, so that a
    /// client gone early is not counted for what it never received).
    sent: crate::metrics::Counter,
}

impl ReadAhead {
    fn start(
        file: std::fs::File,
        start: u64,
        count: u64,
        sent: crate::metrics::Counter,
    ) -> ReadAhead {
        let (sender, chunks) = tokio::sync::mpsc::channel(READ_AHEAD);
        let file = Arc::new(file);
        tokio::spawn(async move {
            let end = start + count;
            let mut offset = start;
            while offset < end {
                let size = (end - offset).min(CHUNK as u64) as usize;
                let file = file.clone();
                let chunk = tokio::task::spawn_blocking(move || read_chunk(&file, offset, size))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("file reader panicked")));
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
                offset += size as u64;
            }
        });
        ReadAhead { chunks, sent }
    }
}

/// Read `size` bytes at `offset` into a fresh buffer (not zero-filled first: the chunks are
/// large and the kernel fills them).
fn read_chunk(file: &std::fs::File, offset: u64, size: usize) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd as _;
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    while buffer.len() < size {
        let filled = buffer.len();
        let spare = buffer.spare_capacity_mut();
        // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity of
        // `buffer`, which stays alive and unaliased for the call.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + filled as u64) as libc::off_t,
            )
        };
        match read {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being served",
                ));
            }
            read if read < 0 => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            // SAFETY: the kernel initialised `read` more bytes after `filled`.
            read => unsafe { buffer.set_len(filled + read as usize) },
        }
    }
    Ok(Bytes::from(buffer))
}

impl http_body::Body for ReadAhead {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let polled = self.chunks.poll_recv(context);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.sent.inc_by(chunk.len() as u64);
        }
        polled.map(|chunk| chunk.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Part { start: 0, end: 99 });
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Part { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=9-0", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=x-y", 100), Whole);
    }
}
