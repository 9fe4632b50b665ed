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
    /// Sessions held (the daemon's `confluent_sessions`), set after every change.
    held: crate::metrics::Gauge,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sessions are open")]
pub struct SessionCreateError;

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions::with_gauge(idle, crate::metrics::Gauge::default())
    }

    /// Sessions whose number is kept in `held`.
    pub fn with_gauge(idle: Duration, held: crate::metrics::Gauge) -> Sessions {
        Sessions {
            entries: Mutex::new(FastMap::default()),
            idle,
            last_sweep: Mutex::new(Instant::now()),
            held,
        }
    }

    fn update_gauge(&self, held: usize) {
        self.held.set(i64::try_from(held).unwrap_or(i64::MAX));
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
        self.update_gauge(entries.len());
        Ok(id)
    }

    /// The identity of a live session, extending its life.
    pub fn lookup(&self, id: &str) -> Option<Arc<Identity>> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(id)?;
        if entry.expires <= now {
            entries.remove(id);
            self.update_gauge(entries.len());
            return None;
        }
        entry.expires = now + self.idle;
        Some(entry.identity.clone())
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut entries = self.entries.lock();
        let removed = entries.remove(id).is_some();
        self.update_gauge(entries.len());
        removed
    }

    /// End every session of a user (after its removal or a password or role change).
    pub fn remove_user(&self, login: &str) {
        let mut entries = self.entries.lock();
        entries.retain(|_, entry| entry.identity.login() != login);
        self.update_gauge(entries.len());
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
        let mut entries = self.entries.lock();
        entries.retain(|_, entry| entry.expires > now);
        self.update_gauge(entries.len());
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
