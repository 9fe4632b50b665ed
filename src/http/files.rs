//! Static files for booting machines: safe path resolution under allowed roots, strong ETags
//! with `If-None-Match`, single byte ranges (`Range`, `If-Range`), HEAD, and bodies streamed in
//! large chunks without a thread per download.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// Files up to this size are read in one go; larger ones are streamed.
const SMALL_FILE: u64 = 256 * 1024;
/// Chunk size when streaming.
const CHUNK: usize = 1024 * 1024;

/// Why a path cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum PathRefused {
    /// `..`, a NUL, a backslash or another odd component.
    Invalid,
    /// Resolves (through a symlink) outside every allowed root.
    Escapes,
    NotFound,
}

/// Resolve the relative `request` path under `root`, following symlinks only while they stay
/// inside one of `allowed` (canonical) roots.
pub fn resolve(root: &Path, request: &str, allowed: &[PathBuf]) -> Result<PathBuf, PathRefused> {
    if request.len() > 4096 || request.contains(['\0', '\\']) {
        return Err(PathRefused::Invalid);
    }
    let mut path = root.to_path_buf();
    for component in Path::new(request.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return Err(PathRefused::Invalid),
        }
    }
    let canonical = match path.canonicalize() {
        Ok(canonical) => canonical,
        Err(_) => return Err(PathRefused::NotFound),
    };
    if allowed.iter().any(|root| canonical.starts_with(root)) {
        Ok(canonical)
    } else {
        Err(PathRefused::Escapes)
    }
}

/// Canonical forms of the roots that exist (a missing root allows nothing).
pub fn canonical_roots(roots: &[&Path]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .collect()
}

fn content_type(path: &Path) -> &'static str {
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

fn etag_of(metadata: &std::fs::Metadata) -> String {
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

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

/// A file opened for serving, with its whole content when small.
struct Opened {
    path: PathBuf,
    file: std::fs::File,
    metadata: std::fs::Metadata,
    content: Option<axum::body::Bytes>,
}

enum OpenError {
    Refused(PathRefused),
    NotAFile,
    Io(std::io::Error),
}

/// Resolve, open, stat and (when small) read in one trip to the blocking pool.
fn open(root: &Path, request: &str, allowed: &[PathBuf], read: bool) -> Result<Opened, OpenError> {
    let path = resolve(root, request, allowed).map_err(OpenError::Refused)?;
    let mut file = std::fs::File::open(&path).map_err(OpenError::Io)?;
    let metadata = file.metadata().map_err(OpenError::Io)?;
    if !metadata.is_file() {
        return Err(OpenError::NotAFile);
    }
    let content = if read && metadata.len() <= SMALL_FILE {
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(OpenError::Io)?;
        Some(axum::body::Bytes::from(bytes))
    } else {
        None
    };
    Ok(Opened {
        path,
        file,
        metadata,
        content,
    })
}

/// Serve `request` (a path relative to `root`, confined to the canonical `allowed` roots).
pub async fn serve(
    root: &Path,
    request: &str,
    allowed: &Arc<[PathBuf]>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let (root, request, allowed) = (root.to_path_buf(), request.to_string(), allowed.clone());
    let read = method != Method::HEAD;
    let opened = tokio::task::spawn_blocking(move || open(&root, &request, &allowed, read)).await;
    let opened = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(OpenError::Refused(PathRefused::NotFound))) | Ok(Err(OpenError::NotAFile)) => {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Ok(Err(OpenError::Refused(refused))) => {
            tracing::info!(refused = ?refused, "refused a boot file path");
            return plain(StatusCode::FORBIDDEN, "this path is not served");
        }
        Ok(Err(OpenError::Io(error))) if error.kind() == std::io::ErrorKind::NotFound => {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Ok(Err(OpenError::Io(error))) => {
            tracing::warn!(error = %error, "failed to open a boot file");
            return plain(StatusCode::FORBIDDEN, "cannot open this file");
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "file reader failed"),
    };
    respond(opened, method, headers).await
}

async fn respond(opened: Opened, method: &Method, headers: &HeaderMap) -> Response {
    let Opened {
        path,
        file,
        metadata,
        content,
    } = opened;
    let length = metadata.len();
    let etag = etag_of(&metadata);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
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
        .is_none_or(|value| value.trim() == etag);
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
    if let Some(content) = content {
        // Small files were read whole (ranges are slices of it); a file that changed size
        // since is served as read, with its real length.
        let end = (start + count).min(content.len() as u64) as usize;
        let body = content.slice((start as usize).min(end)..end);
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return (status, response_headers, Body::from(body)).into_response();
    }
    let mut file = tokio::fs::File::from_std(file);
    if start > 0
        && let Err(error) = file.seek(SeekFrom::Start(start)).await
    {
        tracing::warn!(path = %path.display(), error = %error, "failed to seek in a boot file");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read this file");
    }
    let reader = file.take(count);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, CHUNK));
    (status, response_headers, body).into_response()
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

    #[test]
    fn paths_never_leave_their_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("os/p/boot")).unwrap();
        std::fs::write(root.join("os/p/boot/kernel"), b"k").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("os/etc")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("os/p/s")).unwrap();
        let allowed = canonical_roots(&[&root]);
        assert!(resolve(&root, "os/p/boot/kernel", &allowed).is_ok());
        assert!(resolve(&root, "/os/p/boot/kernel", &allowed).is_ok());
        assert_eq!(
            resolve(&root, "os/../../secret", &allowed),
            Err(PathRefused::Invalid)
        );
        assert_eq!(
            resolve(&root, "os/etc/passwd", &allowed),
            Err(PathRefused::Escapes)
        );
        assert_eq!(
            resolve(&root, "os/p/s", &allowed),
            Err(PathRefused::Escapes)
        );
        assert_eq!(
            resolve(&root, "os/p/\0", &allowed),
            Err(PathRefused::Invalid)
        );
        assert_eq!(
            resolve(&root, "os/p/nothing", &allowed),
            Err(PathRefused::NotFound)
        );
    }
}
