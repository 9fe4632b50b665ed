//! The administrator token: a random secret written once to `etc/keys/admin.token` (0600).
//! Whoever can read that file (root, the daemon's user) may present it to the HTTP, WebSocket
//! and TLS socket transports to act as a trusted administrator, until the authentication issue
//! brings users, sessions and roles. Compared in constant time; never logged.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

pub struct AdminToken {
    token: Zeroizing<String>,
}

impl AdminToken {
    /// Read the token file, creating it with a fresh random token when missing.
    pub fn load_or_create(path: &Path) -> io::Result<AdminToken> {
        match fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(AdminToken {
                token: Zeroizing::new(text.trim().to_string()),
            }),
            Ok(_) | Err(_) => {
                let bytes: [u8; 32] = rand::random();
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(token.as_bytes())?;
                file.sync_all()?;
                Ok(AdminToken {
                    token: Zeroizing::new(token),
                })
            }
        }
    }

    /// Constant-time comparison with a presented token.
    pub fn verify(&self, presented: &str) -> bool {
        let expected = self.token.as_bytes();
        let presented = presented.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }
}
