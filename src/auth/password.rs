//! Local passwords: argon2id hashes (PHC strings) and the password policy (reference 5.2, last
//! bullet: minimum length and complexity levels 1 to 5).
//!
//! Hashing and verifying cost tens of milliseconds of CPU on purpose; the functions here are
//! blocking and must run on the authenticator's bounded blocking pool, never on an async worker.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    #[error("failed to hash the password: {0}")]
    Hash(String),
}

/// Hash a password with argon2id and a random salt (the crate's defaults: m=19 MiB, t=2, p=1).
pub fn hash(password: &str) -> Result<String, PasswordHashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordHashError::Hash(error.to_string()))
}

/// Verify a password against a stored PHC string; a malformed hash never verifies.
pub fn verify(password: &str, stored: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}

/// A hash that verifies nothing, checked against when a login names no local user, so that a
/// wrong user name costs as much time as a wrong password.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password that is never accepted").unwrap_or_default())
}

/// Rules a new password must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: usize,
    /// 0: none; 1: a letter; 2: and a digit; 3: and two of upper case, lower case, special;
    /// 4: and not the user name or its reverse; 5: and no character three times in a row.
    pub complexity: u8,
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 8,
            complexity: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must contain a letter")]
    NoLetter,
    #[error("the password must contain a digit")]
    NoDigit,
    #[error("the password must mix at least two of upper case, lower case and special characters")]
    TooUniform,
    #[error("the password must not be the user name or its reverse")]
    IsUserName,
    #[error("the password must not repeat a character three times in a row")]
    Repeats,
}

impl PasswordPolicy {
    pub fn check(&self, user: &str, password: &str) -> Result<(), PasswordPolicyError> {
        if password.chars().count() < self.min_length {
            return Err(PasswordPolicyError::TooShort(self.min_length));
        }
        if self.complexity >= 1 && !password.chars().any(char::is_alphabetic) {
            return Err(PasswordPolicyError::NoLetter);
        }
        if self.complexity >= 2 && !password.chars().any(|c| c.is_ascii_digit()) {
            return Err(PasswordPolicyError::NoDigit);
        }
        if self.complexity >= 3 {
            let upper = password.chars().any(char::is_uppercase);
            let lower = password.chars().any(char::is_lowercase);
            let special = password.chars().any(|c| !c.is_alphanumeric());
            if u8::from(upper) + u8::from(lower) + u8::from(special) < 2 {
                return Err(PasswordPolicyError::TooUniform);
            }
        }
        if self.complexity >= 4 {
            let name = user.rsplit('/').next().unwrap_or(user).to_lowercase();
            let lowered = password.to_lowercase();
            let reversed: String = name.chars().rev().collect();
            if lowered == name || lowered == reversed {
                return Err(PasswordPolicyError::IsUserName);
            }
        }
        if self.complexity >= 5 {
            let chars: Vec<char> = password.chars().collect();
            if chars
                .windows(3)
                .any(|run| run[0] == run[1] && run[1] == run[2])
            {
                return Err(PasswordPolicyError::Repeats);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trip() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("wrong horse", &stored));
        assert!(!verify("x", "not a hash"));
        assert!(!verify("decoy", decoy()));
    }

    #[test]
    fn policy_levels() {
        let policy = |complexity| PasswordPolicy {
            min_length: 4,
            complexity,
        };
        assert_eq!(
            policy(0).check("u", "abc"),
            Err(PasswordPolicyError::TooShort(4))
        );
        assert_eq!(
            policy(1).check("u", "1234"),
            Err(PasswordPolicyError::NoLetter)
        );
        assert_eq!(
            policy(2).check("u", "abcd"),
            Err(PasswordPolicyError::NoDigit)
        );
        assert_eq!(
            policy(3).check("u", "abcd1"),
            Err(PasswordPolicyError::TooUniform)
        );
        assert_eq!(
            policy(4).check("alice1A", "Alice1a"),
            Err(PasswordPolicyError::IsUserName)
        );
        assert_eq!(
            policy(5).check("u", "Aaaa1x"),
            Err(PasswordPolicyError::Repeats)
        );
        assert_eq!(policy(5).check("u", "Abc1xy!"), Ok(()));
    }
}
