//! The slow path of a confined open: one component at a time from descriptors, symlinks
//! resolved here rather than by the kernel, so that a symlink may lead into another link
//! target (an absolute link from a profile into `lib/distributions`) and nowhere else.
//!
//! The position is always a link target plus the names below it; the descriptor of the
//! current directory was reached from that target's descriptor by `O_NOFOLLOW` opens only.
//! `..` (which only symlink targets bring: requests cannot hold it) is taken lexically, by
//! walking down again from the target, never by asking the kernel for a parent.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;

use super::{ConfinedOpenError, Inner, LinkTarget, Want, containing, normalize_absolute, sys};

/// Symlinks followed in one resolution, as the kernel's limit.
const MAX_LINKS: u32 = 40;
/// Components visited in one resolution, counting those walked again after `..`: a bound on
/// the work symlinks can cause.
const MAX_STEPS: u32 = 16 * 1024;

fn too_many_links() -> ConfinedOpenError {
    ConfinedOpenError::Io(io::Error::from_raw_os_error(libc::ELOOP))
}

/// An error opening an entry of a directory the walk is in (so inside the allowed
/// directories): a missing entry is "not found".
fn entry_error(error: io::Error) -> ConfinedOpenError {
    match error.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => ConfinedOpenError::NotFound,
        Some(libc::ENAMETOOLONG) => ConfinedOpenError::Invalid,
        _ => ConfinedOpenError::Io(error),
    }
}

struct Walk<'a> {
    targets: &'a [LinkTarget],
    /// The link target the position is in, and the directory names below it.
    target: usize,
    names: Vec<OsString>,
    /// `O_PATH` descriptor of that directory.
    current: OwnedFd,
    /// Components still to resolve.
    queue: VecDeque<OsString>,
    links: u32,
    steps: u32,
}

/// Resolve the lexically checked `components` under `root` and open the last one as `want`
/// says.
pub(super) fn walk(
    root: &Inner,
    components: &[&str],
    want: Want,
) -> Result<OwnedFd, ConfinedOpenError> {
    let walk = Walk {
        targets: &root.links.targets,
        target: root.home,
        names: root.home_names.clone(),
        current: root.dir.try_clone().map_err(ConfinedOpenError::Io)?,
        queue: components.iter().map(OsString::from).collect(),
        links: 0,
        steps: 0,
    };
    walk.run(want)
}

impl Walk<'_> {
    fn run(mut self, want: Want) -> Result<OwnedFd, ConfinedOpenError> {
        while let Some(component) = self.queue.pop_front() {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(too_many_links());
            }
            match component.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    self.parent()?;
                    continue;
                }
                _ => {}
            }
            // A NUL cannot come from a checked request nor from a symlink target.
            let name =
                CString::new(component.as_bytes()).map_err(|_| ConfinedOpenError::Invalid)?;
            let entry = sys::openat(self.current.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW)
                .map_err(entry_error)?;
            let kind = sys::file_type(entry.as_fd()).map_err(ConfinedOpenError::Io)?;
            if kind == libc::S_IFLNK {
                self.follow(&entry)?;
                continue;
            }
            if !self.queue.is_empty() {
                if kind != libc::S_IFDIR {
                    return Err(ConfinedOpenError::NotFound);
                }
                self.names.push(component);
                self.current = entry;
                continue;
            }
            return match want {
                Want::Stat => Ok(entry),
                Want::Directory if kind == libc::S_IFDIR => Ok(entry),
                Want::Directory => Err(ConfinedOpenError::NotFound),
                // Checked before opening: a FIFO or a device is never opened for a client.
                Want::Read if kind != libc::S_IFREG => Err(ConfinedOpenError::NotAFile),
                // By name in the confined directory; O_NOFOLLOW because a symlink put there
                // since the look above must be refused, not followed.
                Want::Read => {
                    sys::openat(self.current.as_fd(), &name, want.flags() | libc::O_NOFOLLOW)
                        .map_err(entry_error)
                }
            };
        }
        // The walk ended on a directory it moved to: an empty request, or a symlink to a
        // directory (or ending in `..`) as the last component.
        match want {
            Want::Read => Err(ConfinedOpenError::NotAFile),
            Want::Stat | Want::Directory => Ok(self.current),
        }
    }

    /// Queue the target of the symlink `link` (in the current directory).
    fn follow(&mut self, link: &OwnedFd) -> Result<(), ConfinedOpenError> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(too_many_links());
        }
        let target = sys::readlink(link.as_fd()).map_err(ConfinedOpenError::Io)?;
        if target.is_empty() {
            return Err(ConfinedOpenError::NotFound);
        }
        let target = Path::new(&target);
        if target.is_absolute() {
            return self.jump(&normalize_absolute(target));
        }
        // Relative: resolved from the directory holding the link, which is where the walk is.
        for part in target
            .as_os_str()
            .as_bytes()
            .split(|byte| *byte == b'/')
            .rev()
        {
            self.queue.push_front(OsString::from_vec(part.to_vec()));
        }
        Ok(())
    }

    /// `..`: one name less below the target. At a target's top, the walk leaves the allowed
    /// directories; it follows the queued components lexically (nothing is opened out there)
    /// until the path is back inside a link target (`../../distributions/...` from a
    /// profile), or refuses.
    fn parent(&mut self) -> Result<(), ConfinedOpenError> {
        if self.names.pop().is_some() {
            // Walked down again from the target, by the names that led here.
            let names = std::mem::take(&mut self.names);
            return self.restart_at(self.target, names);
        }
        let mut outside = self.targets[self.target].path.clone();
        outside.pop();
        loop {
            if containing(self.targets, &outside).is_some() {
                return self.jump(&outside);
            }
            let Some(component) = self.queue.pop_front() else {
                return Err(ConfinedOpenError::Escapes);
            };
            match component.as_bytes() {
                b"" | b"." => {}
                b".." => {
                    outside.pop();
                }
                _ => outside.push(component),
            }
        }
    }

    /// Continue at the lexically normal absolute `path`, which must lie under a link target.
    fn jump(&mut self, path: &Path) -> Result<(), ConfinedOpenError> {
        let (target, rest) = containing(self.targets, path).ok_or(ConfinedOpenError::Escapes)?;
        let rest = rest
            .components()
            .map(|component| component.as_os_str().to_owned())
            .collect();
        self.names.clear();
        self.restart_at(target, rest)
    }

    /// Stand at the top of `target` with `names` to walk before the rest of the queue.
    fn restart_at(&mut self, target: usize, names: Vec<OsString>) -> Result<(), ConfinedOpenError> {
        self.target = target;
        self.current = self.targets[target]
            .dir
            .try_clone()
            .map_err(ConfinedOpenError::Io)?;
        for name in names.into_iter().rev() {
            self.queue.push_front(name);
        }
        Ok(())
    }
}
