//! The TFTP root: which names a client may ask for, and opening them without leaving the
//! root directory.
//!
//! **Invariant:** nothing outside the root is ever opened for a client. A name is checked
//! twice: lexically ([`normalize`]: no `..`, at most 255 bytes, UTF-8, no NUL), then after
//! opening (the opened file's real path, read back from `/proc/self/fd`, must lie under the
//! canonical root), so a symlink pointing out of the root is refused even if it is swapped
//! between the checks.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// The canonical root; files are opened under it.
#[derive(Debug, Clone)]
pub struct Root {
    canonical: PathBuf,
    /// Canonical directories an opened file may really lie in: the root, and for
    /// [`Root::with_link_targets`] the directories its symlinks may point into.
    allowed: Vec<PathBuf>,
}

impl Root {
    /// `directory` must exist.
    pub fn new(directory: &Path) -> std::io::Result<Root> {
        let canonical = std::fs::canonicalize(directory)?;
        Ok(Root {
            allowed: vec![canonical.clone()],
            canonical,
        })
    }

    /// Names are resolved under `directory`, but symlinks may lead into the canonical
    /// directories `link_targets` (e.g. a profile's `boot/` whose kernel links into imported
    /// media); nothing outside them is opened. `directory` itself must resolve into one of
    /// them, or the root is refused as [`TftpOpenError::Escapes`].
    pub fn with_link_targets(
        directory: &Path,
        link_targets: &[PathBuf],
    ) -> Result<Root, TftpOpenError> {
        let canonical = std::fs::canonicalize(directory).map_err(open_error)?;
        if !link_targets
            .iter()
            .any(|target| canonical.starts_with(target))
        {
            return Err(TftpOpenError::Escapes);
        }
        Ok(Root {
            canonical,
            allowed: link_targets.to_vec(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.canonical
    }

    fn allows(&self, path: &Path) -> bool {
        self.allowed.iter().any(|allowed| path.starts_with(allowed))
    }

    /// Open a normalized name read-only. Blocking: call from `spawn_blocking`.
    pub fn open(&self, name: &str) -> Result<(File, u64), TftpOpenError> {
        let joined = self.canonical.join(name);
        let resolved = match std::fs::canonicalize(&joined) {
            Ok(resolved) => resolved,
            Err(error) => {
                // Say "not found" only when the part of the path that exists is inside the
                // root, so that clients cannot probe for files behind a symlink.
                let inside = joined
                    .ancestors()
                    .skip(1)
                    .find_map(|ancestor| std::fs::canonicalize(ancestor).ok())
                    .is_some_and(|ancestor| self.allows(&ancestor));
                return Err(if inside {
                    open_error(error)
                } else {
                    TftpOpenError::Escapes
                });
            }
        };
        if !self.allows(&resolved) {
            return Err(TftpOpenError::Escapes);
        }
        // O_NOFOLLOW: the canonical path has no symlinks left, so one appearing now is a
        // race. O_NONBLOCK: opening a FIFO must not hang the transfer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&resolved)
            .map_err(open_error)?;
        let metadata = file.metadata().map_err(TftpOpenError::Io)?;
        if !metadata.is_file() {
            return Err(TftpOpenError::NotAFile);
        }
        // The path the kernel really opened, in case a directory was swapped for a symlink
        // after canonicalize.
        let opened = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ))
        .map_err(TftpOpenError::Io)?;
        if !self.allows(&opened) {
            return Err(TftpOpenError::Escapes);
        }
        Ok((file, metadata.len()))
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
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let root_dir = dir.path().join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(root_dir.join("sub/file"), b"hello").unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root_dir.join("secret")).unwrap();
        std::os::unix::fs::symlink("sub/file", root_dir.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", root_dir.join("etc")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        let (_, size) = root.open("sub/file").unwrap();
        assert_eq!(size, 5);
        assert!(
            root.open("inside").is_ok(),
            "a symlink inside the root is fine"
        );
        for name in [
            "out/secret",
            "out/missing",
            "secret",
            "etc/passwd",
            "etc/missing",
        ] {
            assert!(
                matches!(root.open(name), Err(TftpOpenError::Escapes)),
                "{name}"
            );
        }
        assert!(matches!(root.open("missing"), Err(TftpOpenError::NotFound)));
        assert!(matches!(root.open("sub"), Err(TftpOpenError::NotAFile)));
        assert!(matches!(
            root.open("sub/file/x"),
            Err(TftpOpenError::NotFound)
        ));
    }

    #[test]
    fn link_targets_widen_where_symlinks_may_lead_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("distributions/debian");
        let boot = dir.path().join("public/os/p1/boot");
        std::fs::create_dir_all(&media).unwrap();
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(media.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(media.join("vmlinuz"), boot.join("kernel")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), boot.join("secret")).unwrap();
        let targets = [
            std::fs::canonicalize(dir.path().join("public")).unwrap(),
            std::fs::canonicalize(dir.path().join("distributions")).unwrap(),
        ];
        let root = Root::with_link_targets(&boot, &targets).unwrap();
        assert_eq!(root.open("kernel").unwrap().1, 6);
        assert!(matches!(root.open("secret"), Err(TftpOpenError::Escapes)));
        // A root that itself lies outside the targets is refused.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("public/os/out")).unwrap();
        assert!(matches!(
            Root::with_link_targets(&dir.path().join("public/os/out"), &targets),
            Err(TftpOpenError::Escapes)
        ));
        assert!(matches!(
            Root::with_link_targets(&dir.path().join("public/os/missing/boot"), &targets),
            Err(TftpOpenError::NotFound)
        ));
    }
}
