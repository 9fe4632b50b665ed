//! PAM authentication of OS accounts (reference 6), service `confluent` (`/etc/pam.d/confluent`;
//! without that file libpam applies `/etc/pam.d/other`), and the OS account facts authorization
//! needs: whether a user exists, its groups, a uid's name.
//!
//! libpam is loaded at run time from the system's `libpam.so.0` (present on every Linux that
//! uses PAM), so building needs no `libpam0g-dev`. Where it is absent, [`Pam::load`] fails,
//! the daemon says so once at start-up and OS account logins are refused.
//!
//! Everything here blocks (PAM modules sleep a fail delay of seconds on a wrong password): call
//! it from the authenticator's bounded blocking pool only.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use nix::unistd::{Gid, Group, Uid, User};

/// The soname of Linux-PAM's library, ABI 0 since 1999.
const LIBPAM: &str = "libpam.so.0";

// The constants of Linux-PAM's `_pam_types.h` used here; they are part of its stable ABI.
const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`; libpam frees both the array and `resp` with `free(3)`.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

type PamStart = unsafe extern "C" fn(
    service_name: *const c_char,
    user: *const c_char,
    pam_conversation: *const PamConv,
    pamh: *mut *mut c_void,
) -> c_int;
type PamEnd = unsafe extern "C" fn(pamh: *mut c_void, pam_status: c_int) -> c_int;
type PamCall = unsafe extern "C" fn(pamh: *mut c_void, flags: c_int) -> c_int;
type PamStrerror = unsafe extern "C" fn(pamh: *mut c_void, errnum: c_int) -> *const c_char;

#[derive(Debug, thiserror::Error)]
#[error("failed to load {LIBPAM}")]
pub struct PamLoadError(#[source] libloading::Error);

/// A PAM call's failure: its name, Linux-PAM's code and `pam_strerror` text.
#[derive(Debug, thiserror::Error)]
#[error("{call} returned {code} ({text})")]
pub struct PamCallError {
    pub call: &'static str,
    pub code: c_int,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PamAuthError {
    #[error("failed to start a PAM transaction for service {service}")]
    Start {
        service: String,
        #[source]
        source: PamCallError,
    },
    #[error("PAM refused the credentials")]
    Authenticate(#[source] PamCallError),
    #[error("PAM refused the account")]
    Account(#[source] PamCallError),
    #[error("a user name, password or service name contains a NUL byte")]
    Nul,
}

/// The loaded library and the five entry points used.
pub struct Pam {
    start: PamStart,
    end: PamEnd,
    authenticate: PamCall,
    acct_mgmt: PamCall,
    strerror: PamStrerror,
    // Kept last so that it is dropped after the function pointers it backs.
    _library: libloading::Library,
}

impl std::fmt::Debug for Pam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pam")
    }
}

/// Credentials the conversation function answers prompts with.
struct Credentials {
    user: CString,
    password: zeroize::Zeroizing<Vec<u8>>,
}

impl Pam {
    /// Load `libpam.so.0` and resolve its entry points.
    pub fn load() -> Result<Pam, PamLoadError> {
        // SAFETY: loading libpam runs its initialisers, which have no preconditions; the
        // symbols are resolved with the C signatures of Linux-PAM's `<security/pam_appl.h>`.
        unsafe {
            let library = libloading::Library::new(LIBPAM).map_err(PamLoadError)?;
            let start = *library
                .get::<PamStart>(b"pam_start\0")
                .map_err(PamLoadError)?;
            let end = *library.get::<PamEnd>(b"pam_end\0").map_err(PamLoadError)?;
            let authenticate = *library
                .get::<PamCall>(b"pam_authenticate\0")
                .map_err(PamLoadError)?;
            let acct_mgmt = *library
                .get::<PamCall>(b"pam_acct_mgmt\0")
                .map_err(PamLoadError)?;
            let strerror = *library
                .get::<PamStrerror>(b"pam_strerror\0")
                .map_err(PamLoadError)?;
            Ok(Pam {
                start,
                end,
                authenticate,
                acct_mgmt,
                strerror,
                _library: library,
            })
        }
    }

    fn error(&self, pamh: *mut c_void, call: &'static str, code: c_int) -> PamCallError {
        // SAFETY: pam_strerror accepts any handle (even null) and returns a static string or
        // null.
        let text = unsafe {
            let text = (self.strerror)(pamh, code);
            if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            }
        };
        PamCallError { call, code, text }
    }

    /// Authenticate `user` with `password` and check the account is usable (not expired or
    /// locked). The password only lives in the conversation's credentials, zeroed on return.
    pub fn authenticate(
        &self,
        service: &str,
        user: &str,
        password: &str,
    ) -> Result<(), PamAuthError> {
        let c_service = CString::new(service).map_err(|_| PamAuthError::Nul)?;
        let credentials = Credentials {
            user: CString::new(user).map_err(|_| PamAuthError::Nul)?,
            password: zeroize::Zeroizing::new(password.as_bytes().to_vec()),
        };
        if credentials.password.contains(&0) {
            return Err(PamAuthError::Nul);
        }
        let conv = PamConv {
            conv: Some(conversation),
            appdata_ptr: (&credentials as *const Credentials).cast_mut().cast(),
        };
        let mut pamh: *mut c_void = std::ptr::null_mut();
        // SAFETY: every pointer passed lives until pam_end below: the service and user strings,
        // the conversation structure and the credentials it points to.
        let code = unsafe {
            (self.start)(
                c_service.as_ptr(),
                credentials.user.as_ptr(),
                &conv,
                &mut pamh,
            )
        };
        if code != PAM_SUCCESS || pamh.is_null() {
            return Err(PamAuthError::Start {
                service: service.to_string(),
                source: self.error(pamh, "pam_start", code),
            });
        }
        // SAFETY: pamh is the live handle pam_start returned; it is ended exactly once.
        let outcome = unsafe {
            let code = (self.authenticate)(pamh, PAM_DISALLOW_NULL_AUTHTOK);
            if code != PAM_SUCCESS {
                Err((
                    code,
                    PamAuthError::Authenticate(self.error(pamh, "pam_authenticate", code)),
                ))
            } else {
                let code = (self.acct_mgmt)(pamh, 0);
                if code != PAM_SUCCESS {
                    Err((
                        code,
                        PamAuthError::Account(self.error(pamh, "pam_acct_mgmt", code)),
                    ))
                } else {
                    Ok(())
                }
            }
        };
        let last = match &outcome {
            Ok(()) => PAM_SUCCESS,
            Err((code, _)) => *code,
        };
        // SAFETY: as above; the handle is not used after this.
        unsafe { (self.end)(pamh, last) };
        outcome.map_err(|(_, error)| error)
    }
}

/// Duplicate bytes into a NUL-terminated `malloc`ed string, which libpam frees.
fn malloc_string(bytes: &[u8]) -> *mut c_char {
    // SAFETY: the allocation is bytes.len() + 1 long, zeroed, and only that much is written.
    unsafe {
        let copy = libc::calloc(bytes.len() + 1, 1).cast::<u8>();
        if !copy.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
        }
        copy.cast()
    }
}

/// The conversation function: answers echo-off prompts with the password and echo-on prompts
/// with the user name; informational messages get empty answers.
unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(num_msg) else {
        return PAM_CONV_ERR;
    };
    if count == 0 || msg.is_null() || resp.is_null() || appdata_ptr.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: appdata_ptr is the Credentials that `Pam::authenticate` passed, alive for the
    // whole transaction.
    let credentials = unsafe { &*appdata_ptr.cast::<Credentials>() };
    // SAFETY: calloc of count responses, freed by libpam (or below on failure).
    let replies =
        unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for index in 0..count {
        // SAFETY: Linux-PAM passes `msg` as an array of num_msg pointers to messages.
        let style = unsafe {
            let message = *msg.add(index);
            if message.is_null() {
                -1
            } else {
                (*message).msg_style
            }
        };
        let answer = match style {
            PAM_PROMPT_ECHO_OFF => malloc_string(&credentials.password),
            PAM_PROMPT_ECHO_ON => malloc_string(credentials.user.as_bytes()),
            PAM_ERROR_MSG | PAM_TEXT_INFO => std::ptr::null_mut(),
            _ => {
                free_replies(replies, index);
                return PAM_CONV_ERR;
            }
        };
        if answer.is_null() && matches!(style, PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON) {
            free_replies(replies, index);
            return PAM_BUF_ERR;
        }
        // SAFETY: index < count, inside the calloc'ed array.
        unsafe { (*replies.add(index)).resp = answer };
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// Free the first `filled` answers (zeroing them, they may hold the password) and the array.
fn free_replies(replies: *mut PamResponse, filled: usize) {
    for index in 0..filled {
        // SAFETY: the first `filled` entries were written by `conversation`, each a
        // NUL-terminated malloc'ed string or null.
        unsafe {
            let answer = (*replies.add(index)).resp;
            if !answer.is_null() {
                let length = libc::strlen(answer);
                std::ptr::write_bytes(answer, 0, length);
                libc::free(answer.cast());
            }
        }
    }
    // SAFETY: the array was calloc'ed by `conversation` and not handed to libpam.
    unsafe { libc::free(replies.cast()) };
}

/// Whether an OS account of that name exists.
pub fn os_user_exists(name: &str) -> bool {
    matches!(User::from_name(name), Ok(Some(_)))
}

/// The login name of a uid.
pub fn os_user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// The names of the OS groups of a user (primary first, then supplementary).
pub fn os_groups(name: &str) -> Vec<String> {
    let Ok(Some(user)) = User::from_name(name) else {
        return Vec::new();
    };
    let Ok(c_name) = CString::new(name) else {
        return Vec::new();
    };
    let gids = nix::unistd::getgrouplist(&c_name, user.gid).unwrap_or_else(|_| vec![user.gid]);
    let mut names = Vec::with_capacity(gids.len());
    for gid in std::iter::once(user.gid).chain(gids) {
        if let Ok(Some(group)) = Group::from_gid(Gid::from_raw(gid.as_raw()))
            && !names.contains(&group.name)
        {
            names.push(group.name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpam_loads_and_refuses_an_unknown_user() {
        let pam = Pam::load().expect("libpam.so.0 is on every test machine");
        let error = pam
            .authenticate("confluent-test-none", "no-such-user-xyz", "x")
            .expect_err("an unknown account cannot authenticate");
        assert!(matches!(error, PamAuthError::Authenticate(_)), "{error:?}");
    }

    #[test]
    fn nul_bytes_are_refused_before_libpam() {
        let pam = Pam::load().expect("libpam.so.0 is on every test machine");
        assert!(matches!(
            pam.authenticate("confluent", "root", "a\0b"),
            Err(PamAuthError::Nul)
        ));
    }
}
