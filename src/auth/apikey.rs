//! Node API keys (reference 10.6): a deployed node authenticates with headers
//! `CONFLUENT_NODENAME` + `CONFLUENT_APIKEY`, checked against the crypt hash in the node's
//! `crypted.selfapikey` attribute (SHA-512 crypt as the engine stores `crypted.*` values, or the
//! SHA-256 crypt the node itself registers). The deployment issue issues keys; this checks them.

use crate::config::model::{Store, Stored};

/// Longest key accepted (Confluent's limit is 48 characters; some slack for other encodings).
pub const MAX_KEY_LENGTH: usize = 128;
/// The attribute holding the hash.
pub const ATTRIBUTE: &str = "crypted.selfapikey";

/// The stored hash of a node's key, if one is set on the node itself (never inherited: a key
/// set on a group would let every member impersonate every other).
pub fn stored_hash(store: &Store, node: &str) -> Option<String> {
    match store.node(node)?.attributes.get(ATTRIBUTE)? {
        Stored::Hashed { hash, .. } => Some(hash.to_string()),
        _ => None,
    }
}

/// Whether `key` matches a `$6$` or `$5$` crypt hash. Blocking (thousands of SHA rounds).
pub fn verify(key: &str, hash: &str) -> bool {
    if hash.starts_with("$6$") {
        crate::config::secrets::sha512_crypt_verify(key, hash)
    } else if hash.starts_with("$5$") {
        key.len() <= 4096 && sha_crypt::sha256_check(key, hash).is_ok()
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_against_crypt_hashes() {
        let hash = crate::config::secrets::sha512_crypt("s3cret-key");
        assert!(verify("s3cret-key", &hash));
        assert!(!verify("other", &hash));
        let sha256 = sha_crypt::sha256_simple("k2", &sha_crypt::Sha256Params::default()).unwrap();
        assert!(verify("k2", &sha256));
        assert!(!verify("k2", "plain"));
    }
}
