//! Who a caller is: local users (argon2id), OS accounts through PAM, unix-socket peers, HTTP
//! sessions, node API keys; their roles (within tenants). The one authorization decision lives
//! in `api::authorize` (the layer above), which consults the [`roles::RoleTable`] held here.
//!
//! **Invariant:** no password or key is hashed or verified on an async worker: that work runs on
//! tokio's blocking pool behind a small semaphore ([`AuthOptions::hash_workers`]), so a storm of
//! logins costs at most that many cores and never delays requests carrying a session.
//! **Invariant:** no secret (password, session id, API key) is logged or stored in clear; users'
//! passwords are stored as argon2id hashes in the configuration journal.

pub mod apikey;
pub mod pam;
pub mod password;
pub mod roles;
pub mod sessions;
pub mod tenant;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::ConfigEngine;
use crate::config::model::{FastMap, Store};
use password::PasswordPolicy;
use roles::{Role, RoleTable};

/// How an identity was established (for the audit log and `/sessions/current/info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A local user's password.
    Password,
    /// An OS account through PAM.
    Pam,
    /// A unix-socket peer mapped through its uid.
    UnixSocket,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Pam => "pam",
            Method::UnixSocket => "unix-socket",
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name without its tenant.
    pub user: Arc<str>,
    pub tenant: Option<Arc<str>>,
    pub role: Role,
    pub method: Method,
}

impl Identity {
    /// The login name: `user` or `tenant/user`, which is also the user's key in the store.
    pub fn login(&self) -> String {
        qualified(self.tenant.as_deref(), &self.user)
    }
}

/// `tenant/name`, or `name` in the default tenant.
pub fn qualified(tenant: Option<&str>, name: &str) -> String {
    match tenant {
        Some(tenant) => format!("{tenant}/{name}"),
        None => name.to_string(),
    }
}

/// Split a login name `tenant/user` into its parts, validating both.
pub fn split_login(login: &str) -> Result<(Option<&str>, &str), InvalidNameError> {
    let (tenant, user) = match login.split_once('/') {
        Some((tenant, user)) => (Some(tenant), user),
        None => (None, login),
    };
    if let Some(tenant) = tenant {
        check_name(tenant)?;
    }
    check_name(user)?;
    Ok((tenant, user))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid name '{0}': use 1 to 64 letters, digits, '.', '_', '-' or '@'")]
pub struct InvalidNameError(pub String);

/// User, group and tenant names: what OS account names allow, nothing that could be confused
/// with a path or a tenant separator.
pub fn check_name(name: &str) -> Result<(), InvalidNameError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(InvalidNameError(name.chars().take(80).collect()))
    }
}

/// The operation of a request (HTTP verbs map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Retrieve,
    Update,
    Delete,
    Start,
    Shutdown,
}

impl Operation {
    pub fn parse(text: &str) -> Option<Operation> {
        Some(match text {
            "create" => Operation::Create,
            "retrieve" => Operation::Retrieve,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            "start" => Operation::Start,
            "shutdown" => Operation::Shutdown,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Retrieve => "retrieve",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Start => "start",
            Operation::Shutdown => "shutdown",
        }
    }
}

/// Authentication settings decided by the command line.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Sessions expire after this long without a request.
    pub session_idle: Duration,
    pub password_policy: PasswordPolicy,
    /// PAM service name (`/etc/pam.d/<name>`).
    pub pam_service: String,
    /// A failed login holds the user's login queue this long (brute-force mitigation).
    pub failure_delay: Duration,
    /// Password hashes verified at once (each a blocking-pool thread at full CPU).
    pub hash_workers: usize,
    /// Keeps the number of sessions held (the daemon's `confluent_sessions`).
    pub sessions_gauge: crate::metrics::Gauge,
}

impl Default for AuthOptions {
    fn default() -> AuthOptions {
        AuthOptions {
            session_idle: Duration::from_secs(900),
            password_policy: PasswordPolicy::default(),
            pam_service: "confluent".to_string(),
            failure_delay: Duration::from_millis(250),
            hash_workers: default_hash_workers(),
            sessions_gauge: crate::metrics::Gauge::default(),
        }
    }
}

/// Half the cores, at least one: a login storm may take that much CPU and no more.
pub fn default_hash_workers() -> usize {
    std::thread::available_parallelism()
        .map(|cores| (cores.get() / 2).max(1))
        .unwrap_or(1)
}

/// PAM conversations at once: they mostly sleep (fail delays), so more than hash workers.
const PAM_WORKERS: usize = 4;
/// Login attempts that may wait for one user; further attempts are refused at once.
const MAX_WAITING_PER_USER: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("invalid user name or password")]
    BadCredentials,
    #[error("the account is not authorized for any role")]
    NotAuthorized,
    #[error("too many concurrent login attempts for this user")]
    Throttled,
    #[error("too many sessions are open")]
    TooManySessions,
}

/// One user's login queue.
struct LoginQueue {
    lock: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
}

pub struct Authenticator {
    options: AuthOptions,
    pub roles: RoleTable,
    pub sessions: sessions::Sessions,
    queues: Mutex<FastMap<String, Arc<LoginQueue>>>,
    hashing: Arc<Semaphore>,
    pam_slots: Arc<Semaphore>,
    /// libpam, loaded at run time; `None` where the system has none (OS logins are refused).
    pam: Option<Arc<pam::Pam>>,
    /// Keys the digests of recently verified credentials, so repeated HTTP Basic requests and
    /// node API keys are checked with one SHA-256 rather than argon2 (as Confluent caches).
    cache_key: [u8; 32],
    verified: Mutex<FastMap<String, [u8; 32]>>,
}

impl Authenticator {
    pub fn new(options: AuthOptions, roles: RoleTable) -> Authenticator {
        let pam = match pam::Pam::load() {
            Ok(pam) => Some(Arc::new(pam)),
            Err(error) => {
                tracing::warn!(
                    error = %crate::error::Chain(&error),
                    "PAM is not available: logins of OS accounts are refused (local users still work)"
                );
                None
            }
        };
        Authenticator {
            pam,
            sessions: sessions::Sessions::with_gauge(
                options.session_idle,
                options.sessions_gauge.clone(),
            ),
            hashing: Arc::new(Semaphore::new(options.hash_workers.max(1))),
            pam_slots: Arc::new(Semaphore::new(PAM_WORKERS)),
            options,
            roles,
            queues: Mutex::new(FastMap::default()),
            cache_key: rand::random(),
            verified: Mutex::new(FastMap::default()),
        }
    }

    pub fn options(&self) -> &AuthOptions {
        &self.options
    }

    /// Run blocking password work on the bounded pool.
    pub async fn on_hash_pool<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let _permit = self.hashing.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    /// Check a new password against the policy, then hash it (on the bounded pool).
    pub async fn hash_new_password(
        &self,
        login: &str,
        password: &str,
    ) -> Result<String, NewPasswordError> {
        self.options.password_policy.check(login, password)?;
        let password = zeroize::Zeroizing::new(password.to_string());
        self.on_hash_pool(move || password::hash(&password))
            .await
            .ok_or(NewPasswordError::Unavailable)?
            .map_err(NewPasswordError::Hash)
    }

    /// Forget cached verifications and sessions of a user whose record changed.
    pub fn forget(&self, login: &str) {
        self.verified.lock().remove(login);
        self.sessions.remove_user(login);
    }

    fn digest(&self, scope: &str, login: &str, stored: &str, secret: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        for part in [scope, login, stored, secret] {
            hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }

    fn cached(&self, key: &str, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .get(key)
            .is_some_and(|known| constant_time_eq(known, digest))
    }

    fn remember(&self, key: &str, digest: Option<[u8; 32]>) {
        let mut verified = self.verified.lock();
        match digest {
            Some(digest) => {
                // Bounded: a cache this large is cleared rather than grown.
                if verified.len() >= 65_536 {
                    verified.clear();
                }
                verified.insert(key.to_string(), digest);
            }
            None => {
                verified.remove(key);
            }
        }
    }

    fn queue(&self, login: &str) -> Result<Arc<LoginQueue>, LoginError> {
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(login.to_string())
            .or_insert_with(|| {
                Arc::new(LoginQueue {
                    lock: tokio::sync::Mutex::new(()),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone();
        if queue.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_PER_USER {
            queue.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(LoginError::Throttled);
        }
        Ok(queue)
    }

    fn release(&self, login: &str, queue: Arc<LoginQueue>) {
        let mut queues = self.queues.lock();
        if queue.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Last one out removes the queue, so a storm of random names leaves nothing behind.
            if queues
                .get(login)
                .is_some_and(|current| Arc::ptr_eq(current, &queue))
            {
                queues.remove(login);
            }
        }
    }

    /// Authenticate a login (`user` or `tenant/user`) and password: the local user record
    /// first, then PAM for OS accounts (default tenant only). Attempts for one login are
    /// serialized, and a failure holds the queue for the failure delay.
    pub async fn login(
        &self,
        config: &ConfigEngine,
        login: &str,
        password: &str,
    ) -> Result<Arc<Identity>, LoginError> {
        let (tenant, user) = split_login(login).map_err(|_| LoginError::BadCredentials)?;
        let queue = self.queue(login)?;
        let result = {
            let _turn = queue.lock.lock().await;
            let result = self
                .check_password(config, login, tenant, user, password)
                .await;
            if result.is_err() {
                tokio::time::sleep(self.options.failure_delay).await;
            }
            result
        };
        self.release(login, queue);
        result.map(Arc::new)
    }

    async fn check_password(
        &self,
        config: &ConfigEngine,
        login: &str,
        tenant: Option<&str>,
        user: &str,
        password: &str,
    ) -> Result<Identity, LoginError> {
        let record = config.read(|store| store.user(login).cloned());
        let identity = |role: Role, method: Method| Identity {
            user: Arc::from(user),
            tenant: tenant.map(Arc::from),
            role,
            method,
        };
        if let Some(record) = &record
            && let Some(stored) = &record.password_hash
        {
            let digest = self.digest("password", login, stored, password);
            let verified = self.cached(login, &digest) || {
                let stored = stored.to_string();
                let password = zeroize::Zeroizing::new(password.to_string());
                self.on_hash_pool(move || password::verify(&password, &stored))
                    .await
                    .unwrap_or(false)
            };
            self.remember(login, verified.then_some(digest));
            if !verified {
                return Err(LoginError::BadCredentials);
            }
            let role = self.role_of(config, &record.role, tenant, user)?;
            return Ok(identity(role, Method::Password));
        }
        if tenant.is_none()
            && let Some(pam) = self.pam.clone()
            && pam::os_user_exists(user)
        {
            let service = self.options.pam_service.clone();
            let name = user.to_string();
            let secret = zeroize::Zeroizing::new(password.to_string());
            let permit = self.pam_slots.clone().acquire_owned().await;
            let outcome = match permit {
                Ok(_permit) => {
                    tokio::task::spawn_blocking(move || pam.authenticate(&service, &name, &secret))
                        .await
                        .ok()
                }
                Err(_) => None,
            };
            match outcome {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tracing::debug!(user, error = %crate::error::Chain(&error), "PAM authentication failed");
                    return Err(LoginError::BadCredentials);
                }
                None => return Err(LoginError::BadCredentials),
            }
            let role_name = record.as_ref().map(|record| record.role.to_string());
            let role = match role_name {
                Some(name) => self.role_of(config, &name, None, user)?,
                None => self
                    .os_group_role(config, user)
                    .ok_or(LoginError::NotAuthorized)?,
            };
            return Ok(identity(role, Method::Pam));
        }
        // No such user: spend the time a wrong password would, so names cannot be probed.
        let password = zeroize::Zeroizing::new(password.to_string());
        let _ = self
            .on_hash_pool(move || password::verify(&password, password::decoy()))
            .await;
        Err(LoginError::BadCredentials)
    }

    /// The role a user record grants; `Stub` (or an unknown role) defers to OS groups.
    fn role_of(
        &self,
        config: &ConfigEngine,
        role: &str,
        tenant: Option<&str>,
        user: &str,
    ) -> Result<Role, LoginError> {
        match self.roles.resolve(role) {
            Ok(Role::Stub) | Err(_) if tenant.is_none() => self
                .os_group_role(config, user)
                .ok_or(LoginError::NotAuthorized),
            Ok(Role::Stub) | Err(_) => Err(LoginError::NotAuthorized),
            Ok(role) => Ok(role),
        }
    }

    /// The role of the first of a user's OS groups that is a user group.
    fn os_group_role(&self, config: &ConfigEngine, user: &str) -> Option<Role> {
        let groups = pam::os_groups(user);
        config.read(|store| self.group_role(store, &groups))
    }

    fn group_role(&self, store: &Store, groups: &[String]) -> Option<Role> {
        groups.iter().find_map(|group| {
            let record = store.usergroup(group)?;
            match self.roles.resolve(&record.role) {
                Ok(Role::Stub) | Err(_) => None,
                Ok(role) => Some(role),
            }
        })
    }

    /// The identity of a local (unix socket) user that is neither root nor the daemon's user:
    /// its user record, else a user group of one of its OS groups. `None`: not authorized.
    pub fn identity_for_uid(&self, config: &ConfigEngine, uid: u32) -> Option<Identity> {
        let name = pam::os_user_name(uid)?;
        let record_role = config.read(|store| store.user(&name).map(|record| record.role.clone()));
        let role = match record_role {
            Some(role) => self.role_of(config, &role, None, &name).ok()?,
            None => self.os_group_role(config, &name)?,
        };
        Some(Identity {
            user: Arc::from(name.as_str()),
            tenant: None,
            role,
            method: Method::UnixSocket,
        })
    }

    /// Check a node's API key against `crypted.selfapikey` (cached after the first success).
    pub async fn check_node_key(&self, config: &ConfigEngine, node: &str, key: &str) -> bool {
        if key.is_empty() || key.len() > apikey::MAX_KEY_LENGTH {
            return false;
        }
        let Some(stored) = config.read(|store| apikey::stored_hash(store, node)) else {
            return false;
        };
        let cache_key = format!("\0node\0{node}");
        let digest = self.digest("apikey", node, &stored, key);
        if self.cached(&cache_key, &digest) {
            return true;
        }
        let secret = zeroize::Zeroizing::new(key.to_string());
        let verified = self
            .on_hash_pool(move || apikey::verify(&secret, &stored))
            .await
            .unwrap_or(false);
        self.remember(&cache_key, verified.then_some(digest));
        verified
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NewPasswordError {
    #[error(transparent)]
    Policy(#[from] password::PasswordPolicyError),
    #[error("failed to hash the password")]
    Hash(#[source] password::PasswordHashError),
    #[error("the password hashing pool is unavailable")]
    Unavailable,
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        assert_eq!(split_login("alice"), Ok((None, "alice")));
        assert_eq!(split_login("acme/bob"), Ok((Some("acme"), "bob")));
        assert!(split_login("a/b/c").is_err());
        assert!(split_login("").is_err());
        assert!(split_login("-x").is_err());
        assert!(split_login("x y").is_err());
    }
}
