//! The TFTP root: which names a client may ask for, and opening them without leaving the
//! root directory.
//!
//! **Invariant:** nothing outside the root is ever opened for a client. A name is checked
//! lexically here ([`normalize`]: no `..`, at most 255 bytes, UTF-8, no NUL, `\` read as
//! `/`), then opened through [`crate::fsroot::ConfinedRoot`], the one confined open of the
//! daemon, whose refusals map to ERROR packets ([`TftpOpenError`]).

use std::fs::File;

use crate::fsroot::{ConfinedOpenError, ConfinedRoot};
use crate::proto::tftp::ErrorCode;

/// Longest accepted file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a request names no file this server will send. Each maps to an ERROR packet.
#[derive(Debug, thiserror::Error)]
pub enum TftpOpenError {
    #[error("file name longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    #[error("file name is not UTF-8")]
    NotUtf8,
    #[error("file name contains a NUL byte")]
    Nul,
    #[error("file name leaves the TFTP root")]
    Escapes,
    #[error("file not found")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("permission denied")]
    PermissionDenied,
    #[error("mail mode is not supported")]
    MailMode,
    #[error("file too large for netascii mode")]
    NetasciiTooLarge,
    #[error("failed to open the file")]
    Io(#[source] std::io::Error),
}

impl TftpOpenError {
    /// The ERROR packet code sent to the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            TftpOpenError::NotFound | TftpOpenError::NotAFile => ErrorCode::FileNotFound,
            TftpOpenError::Io(_) | TftpOpenError::NetasciiTooLarge => ErrorCode::Undefined,
            TftpOpenError::MailMode => ErrorCode::IllegalOperation,
            _ => ErrorCode::AccessViolation,
        }
    }

    /// The ERROR packet message: what the client did wrong, never a server path.
    pub fn client_message(&self) -> &'static str {
        match self {
            TftpOpenError::NameTooLong => "file name too long",
            TftpOpenError::NotUtf8 => "file name is not UTF-8",
            TftpOpenError::Nul => "file name contains NUL",
            TftpOpenError::Escapes => "access violation",
            TftpOpenError::NotFound | TftpOpenError::NotAFile => "file not found",
            TftpOpenError::PermissionDenied => "permission denied",
            TftpOpenError::MailMode => "mail mode is not supported",
            TftpOpenError::NetasciiTooLarge => "file too large for netascii mode: use octet",
            TftpOpenError::Io(_) => "cannot read file",
        }
    }

    /// Refused for what the name is (as opposed to a file that is simply missing).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            TftpOpenError::NotFound | TftpOpenError::NotAFile | TftpOpenError::Io(_)
        )
    }
}

/// The name relative to the root, `/`-separated, without empty or `.` components. A leading
/// `/` means the root (as `tftpd-hpa -s` does), and `\` is read as `/` because some PXE
/// clients send DOS-style names.
pub fn normalize(raw: &[u8]) -> Result<String, TftpOpenError> {
    if raw.len() > MAX_NAME_LEN {
        return Err(TftpOpenError::NameTooLong);
    }
    if raw.contains(&0) {
        return Err(TftpOpenError::Nul);
    }
    let text = std::str::from_utf8(raw).map_err(|_| TftpOpenError::NotUtf8)?;
    let mut components = Vec::new();
    for component in text.split(['/', '\\']) {
        match component {
            "" | "." => {}
            ".." => return Err(TftpOpenError::Escapes),
            other => components.push(other),
        }
    }
    if components.is_empty() {
        return Err(TftpOpenError::NotAFile);
    }
    Ok(components.join("/"))
}

/// Open a normalized name read-only under `root`, with its size. Blocking: call from
/// `spawn_blocking`.
pub fn open(root: &ConfinedRoot, name: &str) -> Result<(File, u64), TftpOpenError> {
    let opened = root.open_file(name)?;
    Ok((opened.file, opened.metadata.len()))
}

impl From<ConfinedOpenError> for TftpOpenError {
    fn from(error: ConfinedOpenError) -> TftpOpenError {
        match error {
            // `normalize` let the name through, so what is invalid here is what it leads to.
            ConfinedOpenError::Invalid | ConfinedOpenError::Escapes => TftpOpenError::Escapes,
            ConfinedOpenError::NotFound => TftpOpenError::NotFound,
            ConfinedOpenError::NotAFile => TftpOpenError::NotAFile,
            ConfinedOpenError::Io(error) => open_error(error),
        }
    }
}

fn open_error(error: std::io::Error) -> TftpOpenError {
    match error.kind() {
        std::io::ErrorKind::NotFound => TftpOpenError::NotFound,
        std::io::ErrorKind::PermissionDenied => TftpOpenError::PermissionDenied,
        _ if error.raw_os_error() == Some(libc::ELOOP) => TftpOpenError::Escapes,
        _ if error.raw_os_error() == Some(libc::ENOTDIR) => TftpOpenError::NotFound,
        _ => TftpOpenError::Io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize(b"pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(normalize(b"/efi//boot/./x.efi").unwrap(), "efi/boot/x.efi");
        assert_eq!(normalize(b"\\boot\\grub.cfg").unwrap(), "boot/grub.cfg");
    }

    #[test]
    fn refuses_bad_names() {
        for name in [
            &b"../etc/passwd"[..],
            b"/../../etc/passwd",
            b"a/../../b",
            b"..\\etc\\passwd",
            b"a/..",
        ] {
            assert!(
                matches!(normalize(name), Err(TftpOpenError::Escapes)),
                "{name:?}"
            );
        }
        assert!(matches!(
            normalize(&[b'a'; 256]),
            Err(TftpOpenError::NameTooLong)
        ));
        assert!(normalize(&[b'a'; 255]).is_ok());
        assert!(matches!(normalize(b"a\0b"), Err(TftpOpenError::Nul)));
        assert!(matches!(
            normalize(b"\xff\xfe"),
            Err(TftpOpenError::NotUtf8)
        ));
        assert!(matches!(normalize(b"/"), Err(TftpOpenError::NotAFile)));
    }

    #[test]
    fn confined_opens_map_to_tftp_errors() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root_dir = dir.path().join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(root_dir.join("sub/file"), b"hello").unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc", root_dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("loop", root_dir.join("loop")).unwrap();
        let root = ConfinedRoot::new(&root_dir).unwrap();
        assert_eq!(open(&root, "sub/file").unwrap().1, 5);
        for name in ["out/secret", "out/missing", "etc/passwd", "loop"] {
            assert!(
                matches!(open(&root, name), Err(TftpOpenError::Escapes)),
                "{name}"
            );
        }
        assert!(matches!(
            open(&root, "missing"),
            Err(TftpOpenError::NotFound)
        ));
        assert!(matches!(open(&root, "sub"), Err(TftpOpenError::NotAFile)));
        assert!(matches!(
            open(&root, "sub/file/x"),
            Err(TftpOpenError::NotFound)
        ));
    }
}
