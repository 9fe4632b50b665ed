//! HTTP sessions (reference 6): a random id, the identity it stands for, and a sliding idle
//! expiry refreshed by every request. A lookup is one hash-map probe under a short lock; no
//! password work ever happens here.
//!
//! Expired sessions are dropped when looked up and swept at most every few seconds when new
//! sessions are created, so no background task is needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;

use super::Identity;
use crate::config::model::FastMap;

/// Most sessions held at once; logins beyond it are refused until some expire.
pub const MAX_SESSIONS: usize = 100_000;
/// Sweep expired sessions at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

struct Entry {
    identity: Arc<Identity>,
    expires: Instant,
}

pub struct Sessions {
    entries: Mutex<FastMap<Box<str>, Entry>>,
    idle: Duration,
    last_sweep: Mutex<Instant>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sessions are open")]
pub struct SessionCreateError;

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            entries: Mutex::new(FastMap::default()),
            idle,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Open a session; returns its id (43 URL-safe characters, 256 random bits).
    pub fn create(&self, identity: Arc<Identity>) -> Result<String, SessionCreateError> {
        let now = Instant::now();
        self.sweep(now);
        let bytes: [u8; 32] = rand::random();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_SESSIONS {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= MAX_SESSIONS {
                return Err(SessionCreateError);
            }
        }
        entries.insert(
            id.clone().into_boxed_str(),
            Entry {
                identity,
                expires: now + self.idle,
            },
        );
        Ok(id)
    }

    /// The identity of a live session, extending its life.
    pub fn lookup(&self, id: &str) -> Option<Arc<Identity>> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(id)?;
        if entry.expires <= now {
            entries.remove(id);
            return None;
        }
        entry.expires = now + self.idle;
        Some(entry.identity.clone())
    }

    pub fn remove(&self, id: &str) -> bool {
        self.entries.lock().remove(id).is_some()
    }

    /// End every session of a user (after its removal or a password or role change).
    pub fn remove_user(&self, login: &str) {
        self.entries
            .lock()
            .retain(|_, entry| entry.identity.login() != login);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock();
            if now.duration_since(*last) < SWEEP_INTERVAL {
                return;
            }
            *last = now;
        }
        self.entries.lock().retain(|_, entry| entry.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::roles::Role;

    fn identity(user: &str) -> Arc<Identity> {
        Arc::new(Identity {
            user: Arc::from(user),
            tenant: None,
            role: Role::Monitor,
            method: super::super::Method::Password,
        })
    }

    #[test]
    fn sliding_expiry() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let id = sessions.create(identity("alice")).unwrap();
        assert_eq!(id.len(), 43);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                sessions.lookup(&id).is_some(),
                "each use extends the session"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(sessions.lookup(&id).is_none());
        assert!(sessions.lookup("nonexistent").is_none());
        let id = sessions.create(identity("bob")).unwrap();
        sessions.remove_user("bob");
        assert!(sessions.lookup(&id).is_none());
    }
}
