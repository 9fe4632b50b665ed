//! PAM authentication of OS accounts (reference 6) through `pam-client2`, service `confluent`
//! (`/etc/pam.d/confluent`; without that file libpam applies `/etc/pam.d/other`), and the OS
//! account facts authorization needs: whether a user exists, its groups, a uid's name.
//!
//! Everything here blocks (PAM modules sleep a fail delay of seconds on a wrong password): call
//! it from the authenticator's bounded blocking pool only.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PamAuthError {
    #[error("failed to start a PAM transaction for service {service}")]
    Start {
        service: String,
        #[source]
        source: pam_client2::Error,
    },
    #[error("PAM refused the credentials")]
    Authenticate(#[source] pam_client2::Error),
    #[error("PAM refused the account")]
    Account(#[source] pam_client2::Error),
}

/// Authenticate `user` with `password` and check the account is usable (not expired or
/// locked). The password only lives in the conversation handler, dropped on return.
pub fn authenticate(service: &str, user: &str, password: &str) -> Result<(), PamAuthError> {
    let conversation = pam_client2::conv_mock::Conversation::with_credentials(user, password);
    let mut context =
        pam_client2::Context::new(service, Some(user), conversation).map_err(|source| {
            PamAuthError::Start {
                service: service.to_string(),
                source,
            }
        })?;
    context
        .authenticate(pam_client2::Flag::DISALLOW_NULL_AUTHTOK)
        .map_err(PamAuthError::Authenticate)?;
    context
        .acct_mgmt(pam_client2::Flag::NONE)
        .map_err(PamAuthError::Account)?;
    Ok(())
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
