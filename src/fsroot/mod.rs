//! Confinement of served paths: the one way files handed to clients over HTTP and TFTP, and
//! files read to build boot images, are opened. A [`ConfinedRoot`] is a directory, held open,
//! plus the directories its symlinks may lead into (its link targets); a request names a path
//! relative to it, and what is opened never lies outside those directories.
//!
//! **Invariant:** no descriptor of a file outside the root's link targets is returned. A
//! request is checked lexically first ([`ConfinedRoot::open_file`]: relative, no `..`, no NUL,
//! no backslash, bounded length), then resolved without ever trusting a path twice:
//!
//! - the fast path is `openat2(root, request, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, where
//!   the kernel itself refuses to leave the root directory;
//! - when that refuses a symlink (an absolute one, or one leading out of the root into another
//!   link target), or `openat2` is unavailable, a walk opens one component at a time
//!   (`openat` with `O_PATH | O_NOFOLLOW`) and resolves symlinks itself: an absolute target
//!   must lie, lexically, under a link target and the walk continues from that target's
//!   descriptor, never from a path; `..` never climbs out of the link targets;
//! - the real path of the opened descriptor (`/proc/self/fd/N`) must then lie under a link
//!   target, which defeats a directory renamed out of the root during the walk.
//!
//! A symlink swapped between a file inside and one outside therefore yields either the inside
//! file or a refusal, never the outside one. "Not found" is reported only when the part of the
//! path that exists lies inside the allowed directories, so clients cannot probe files behind a
//! symlink. Everything here is blocking: callers run it on the blocking pool.
//!
//! This module must not import any other module of the crate (layer 0).

mod sys;
mod walk;

#[cfg(test)]
mod tests;

use std::ffi::{CString, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest request accepted, in bytes (the kernel's `PATH_MAX`).
pub const MAX_REQUEST_LEN: usize = 4096;
/// Longest component accepted, in bytes (the kernel's `NAME_MAX`).
const MAX_COMPONENT_LEN: usize = 255;

/// Why a request under a [`ConfinedRoot`] was not opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfinedOpenError {
    /// Not a plain relative path: `..`, a NUL, a backslash, an absolute path, too long.
    #[error("the path is not a plain relative path")]
    Invalid,
    /// Leads (through a symlink or a moved directory) outside every allowed directory.
    #[error("the path leads outside the directories it may be served from")]
    Escapes,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("failed to open the file")]
    Io(#[source] io::Error),
}

/// Why a [`ConfinedRoot`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfinedRootError {
    #[error("failed to open the directory {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} lies outside the directories its symlinks may lead into", path.display())]
    OutsideLinkTargets { path: PathBuf },
}

/// A regular file opened for reading under a [`ConfinedRoot`].
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    pub metadata: Metadata,
    /// Where the file really is (for content types, logs and stamps; never reopen by it).
    pub path: PathBuf,
}

/// A directory symlinks may lead into.
#[derive(Debug)]
struct LinkTarget {
    /// Canonical path.
    path: PathBuf,
    /// The path as configured when it differs from the canonical one (`/var/lib/confluent`
    /// below a symlinked `/var`): absolute symlinks written with it are accepted too.
    alias: Option<PathBuf>,
    /// `O_PATH | O_DIRECTORY`; walks that enter this target continue from here.
    dir: OwnedFd,
}

/// The link targets of a root and of the roots made from it with
/// [`ConfinedRoot::subdirectory`].
#[derive(Debug)]
struct LinkTargets {
    targets: Vec<LinkTarget>,
    /// Cleared once `openat2` answered ENOSYS (a kernel older than 5.6): walk directly.
    openat2: AtomicBool,
}

impl LinkTargets {
    /// Whether a real (canonical) path lies under a link target.
    fn allows(&self, real: &Path) -> bool {
        self.targets
            .iter()
            .any(|target| real.starts_with(&target.path))
    }
}

/// The innermost link target an absolute, lexically normal path lies under (canonical paths
/// and aliases alike), with the rest of the path below it.
fn containing<'a>(targets: &[LinkTarget], path: &'a Path) -> Option<(usize, &'a Path)> {
    targets
        .iter()
        .enumerate()
        .flat_map(|(index, target)| {
            std::iter::once(&target.path)
                .chain(target.alias.as_ref())
                .filter_map(move |base| Some((index, path.strip_prefix(base).ok()?)))
        })
        .min_by_key(|(_, rest)| rest.components().count())
}

#[derive(Debug)]
struct Inner {
    /// Canonical path of the root directory.
    path: PathBuf,
    /// `O_PATH | O_DIRECTORY`.
    dir: OwnedFd,
    /// The link target holding the root, and the root's components below it.
    home: usize,
    home_names: Vec<OsString>,
    links: Arc<LinkTargets>,
}

/// A directory files are served from (see the module documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConfinedRoot(Arc<Inner>);

/// What a resolution opens at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A regular file, for reading.
    Read,
    /// Anything, to stat it (`O_PATH`).
    Stat,
    /// A directory, to become a root (`O_PATH | O_DIRECTORY`).
    Directory,
}

impl Want {
    fn flags(self) -> libc::c_int {
        match self {
            // O_NONBLOCK: opening a FIFO must not hang; O_NOCTTY: a terminal must not become
            // the daemon's.
            Want::Read => libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            Want::Stat => libc::O_PATH,
            Want::Directory => libc::O_PATH | libc::O_DIRECTORY,
        }
    }
}

/// Open a configured directory (trusted, at set-up) as `O_PATH | O_DIRECTORY`.
fn open_directory(path: &Path) -> Result<(PathBuf, OwnedFd), ConfinedRootError> {
    let failed = |source| ConfinedRootError::Open {
        path: path.to_path_buf(),
        source,
    };
    let canonical = std::fs::canonicalize(path).map_err(failed)?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&canonical)
        .map_err(failed)?;
    Ok((canonical, OwnedFd::from(dir)))
}

impl ConfinedRoot {
    /// A root whose symlinks may lead only within itself (the TFTP root).
    pub fn new(directory: &Path) -> Result<ConfinedRoot, ConfinedRootError> {
        ConfinedRoot::with_link_targets(directory, &[directory])
    }

    /// A root whose symlinks may lead into `link_targets` (e.g. `lib/public`, whose profiles
    /// link into `lib/distributions`); `directory` must lie inside one of them. Paths are
    /// trusted configuration, resolved once here.
    pub fn with_link_targets(
        directory: &Path,
        link_targets: &[&Path],
    ) -> Result<ConfinedRoot, ConfinedRootError> {
        let mut targets = Vec::with_capacity(link_targets.len());
        for target in link_targets {
            let (path, dir) = open_directory(target)?;
            let alias = (target.is_absolute() && *target != path).then(|| target.to_path_buf());
            targets.push(LinkTarget { path, alias, dir });
        }
        let links = LinkTargets {
            targets,
            openat2: AtomicBool::new(true),
        };
        let (path, dir) = open_directory(directory)?;
        ConfinedRoot::build(path, dir, Arc::new(links)).ok_or_else(|| {
            ConfinedRootError::OutsideLinkTargets {
                path: directory.to_path_buf(),
            }
        })
    }

    /// `None` when the real `path` lies outside every link target.
    fn build(path: PathBuf, dir: OwnedFd, links: Arc<LinkTargets>) -> Option<ConfinedRoot> {
        let (home, rest) = containing(&links.targets, &path)?;
        let home_names = rest
            .components()
            .map(|component| component.as_os_str().to_owned())
            .collect();
        Some(ConfinedRoot(Arc::new(Inner {
            path,
            dir,
            home,
            home_names,
            links,
        })))
    }

    /// The canonical path of the root (for cache keys and messages; never open by it).
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Open the regular file `request` names for reading.
    pub fn open_file(&self, request: &str) -> Result<OpenedFile, ConfinedOpenError> {
        let (fd, path) = self.resolve(request, Want::Read)?;
        let file = File::from(fd);
        let metadata = file.metadata().map_err(ConfinedOpenError::Io)?;
        Ok(OpenedFile {
            file,
            metadata,
            path,
        })
    }

    /// Stat what `request` names (following confined symlinks), without opening it for
    /// reading.
    pub fn metadata(&self, request: &str) -> Result<Metadata, ConfinedOpenError> {
        let (fd, _) = self.resolve(request, Want::Stat)?;
        File::from(fd).metadata().map_err(ConfinedOpenError::Io)
    }

    /// The directory `request` names as a root of its own, with the same link targets (a
    /// profile's `os/<profile>/boot` under `lib/public`).
    pub fn subdirectory(&self, request: &str) -> Result<ConfinedRoot, ConfinedOpenError> {
        let (fd, path) = self.resolve(request, Want::Directory)?;
        ConfinedRoot::build(path, fd, self.0.links.clone()).ok_or(ConfinedOpenError::Escapes)
    }

    /// Check, open and verify: the descriptor and its real path.
    fn resolve(&self, request: &str, want: Want) -> Result<(OwnedFd, PathBuf), ConfinedOpenError> {
        self.resolve_with(request, want, true)
    }

    /// [`ConfinedRoot::resolve`], optionally without the fast path (tests cover both).
    fn resolve_with(
        &self,
        request: &str,
        want: Want,
        fast: bool,
    ) -> Result<(OwnedFd, PathBuf), ConfinedOpenError> {
        let components = lexical(request)?;
        let fast = if fast {
            self.beneath(&components, want)
        } else {
            None
        };
        let fd = match fast {
            Some(result) => result?,
            None => walk::walk(&self.0, &components, want)?,
        };
        // INVARIANT: whatever the resolution did, the kernel's word on where the descriptor
        // points is what is checked last.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(ConfinedOpenError::Io)?;
        if !self.0.links.allows(&real) {
            return Err(ConfinedOpenError::Escapes);
        }
        // The fast path opens whatever is there (a FIFO does not block: O_NONBLOCK); the walk
        // looked before opening.
        if want == Want::Read
            && sys::file_type(fd.as_fd()).map_err(ConfinedOpenError::Io)? != libc::S_IFREG
        {
            return Err(ConfinedOpenError::NotAFile);
        }
        Ok((fd, real))
    }

    /// The fast path: the kernel resolves the whole request, refusing to leave the root.
    /// `None` hands over to the walk (a symlink the kernel would not follow beneath the root,
    /// or no `openat2`).
    fn beneath(
        &self,
        components: &[&str],
        want: Want,
    ) -> Option<Result<OwnedFd, ConfinedOpenError>> {
        if !self.0.links.openat2.load(Ordering::Relaxed) {
            return None;
        }
        let joined = if components.is_empty() {
            ".".to_string()
        } else {
            components.join("/")
        };
        // Components were checked for NUL bytes.
        let path = CString::new(joined).ok()?;
        // No O_NOFOLLOW: RESOLVE_BENEATH confines the last component's symlink as well, so a
        // symlink within the root is served without a walk.
        let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        match sys::openat2(self.0.dir.as_fd(), &path, want.flags(), resolve) {
            Ok(fd) => Some(Ok(fd)),
            Err(error) => match error.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => Some(Err(ConfinedOpenError::NotFound)),
                Some(libc::ENAMETOOLONG) => Some(Err(ConfinedOpenError::Invalid)),
                // EXDEV: a symlink leaves the root (perhaps into another link target); ELOOP:
                // too many links, or a magic link; EAGAIN: a rename raced the resolution.
                Some(libc::EXDEV | libc::ELOOP | libc::EAGAIN) => None,
                Some(libc::ENOSYS) => {
                    self.0.links.openat2.store(false, Ordering::Relaxed);
                    None
                }
                // Seccomp filters that do not know openat2 answer EPERM; a real EPERM comes
                // back from the walk as well.
                Some(libc::EPERM) => None,
                _ => Some(Err(ConfinedOpenError::Io(error))),
            },
        }
    }
}

/// The components of a request: relative, `/`-separated, empty and `.` components dropped.
fn lexical(request: &str) -> Result<Vec<&str>, ConfinedOpenError> {
    if request.len() > MAX_REQUEST_LEN || request.starts_with('/') || request.contains(['\0', '\\'])
    {
        return Err(ConfinedOpenError::Invalid);
    }
    let mut components = Vec::new();
    for component in request.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(ConfinedOpenError::Invalid),
            _ if component.len() > MAX_COMPONENT_LEN => return Err(ConfinedOpenError::Invalid),
            _ => components.push(component),
        }
    }
    Ok(components)
}

/// An absolute symlink target made lexically normal: `.` and empty components dropped, `..`
/// taking one away (at `/` it stays at `/`, as the kernel does).
fn normalize_absolute(target: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in target.components() {
        match component {
            Component::Normal(name) => normal.push(name),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}
