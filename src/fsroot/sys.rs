//! The system calls confinement is built on (`openat`, `openat2`, `readlinkat`, `fstat`), as
//! thin safe wrappers returning owned descriptors. Nothing here decides what is allowed.

use std::ffi::{CStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStringExt as _;

/// Longest symlink target read, as the kernel's `PATH_MAX`.
const LINK_MAX: usize = 4096;

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of open(2)-like calls is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_CLOEXEC)`.
pub(super) fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open for the call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
        match owned(fd) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// `openat2(dir, path, {flags | O_CLOEXEC, resolve})`.
pub(super) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is three integers (non-exhaustive in libc only so that the kernel may
    // grow it); all zeros is a valid value and means "no mode, no resolve flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::from((flags | libc::O_CLOEXEC).cast_unsigned());
    how.resolve = resolve;
    loop {
        // SAFETY: `path` is NUL-terminated, `how` is a live `open_how` whose size is passed
        // along, `dir` is open for the call. The result is a descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        let fd = libc::c_int::try_from(fd).unwrap_or(-1);
        match owned(fd) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// The target of the symlink `link` was opened on (`O_PATH | O_NOFOLLOW`), read through the
/// descriptor so that it is the same link that was looked at.
pub(super) fn readlink(link: BorrowedFd<'_>) -> io::Result<OsString> {
    let mut buffer = vec![0u8; LINK_MAX];
    // SAFETY: the buffer is writable for its length; an empty path with a descriptor of a
    // symlink opened with O_PATH | O_NOFOLLOW reads that link (readlinkat(2), since 2.6.39).
    let length = unsafe {
        libc::readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let length = usize::try_from(length).map_err(|_| io::Error::last_os_error())?;
    if length >= buffer.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buffer.truncate(length);
    Ok(OsString::from_vec(buffer))
}

/// The file type bits (`S_IFMT` of `st_mode`) of an open descriptor, `O_PATH` ones included.
pub(super) fn file_type(fd: BorrowedFd<'_>) -> io::Result<libc::mode_t> {
    // SAFETY: `stat` is plain integers, so all zeros is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a live, writable `struct stat`; `fd` is open for the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.st_mode & libc::S_IFMT)
}
