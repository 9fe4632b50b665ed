//! Secrets at rest: the master key and its key file, authenticated encryption of `secret.*` and
//! `custom.nodesecret.*` values, and the one-way hashes stored for `crypted.*` values.
//!
//! The master key is 32 random bytes kept in a small JSON key file (mode 0600), either plain or
//! wrapped with a key derived from a passphrase (argon2id, AES-256-GCM). Secret values are sealed
//! with AES-256-GCM under the master key, a fresh random 96-bit nonce per value, and the attribute
//! name bound as associated data so a sealed value cannot be moved to another attribute.
//!
//! This module must not decide which attributes are secret (the catalogue does), must not log or
//! print key material or plaintexts (its `Debug` impls are opaque on purpose), and performs no
//! I/O except on the key file it is given.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Length of the master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes.
const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag in bytes.
const TAG_LEN: usize = 16;
/// Version written in the `format` field of key documents.
const KEY_DOCUMENT_FORMAT: u32 = 1;
/// Version written in the `v` field of sealed values.
const SEALED_VERSION: u32 = 1;
/// Associated data of the wrapped master key, so a wrapped blob of some other purpose cannot be
/// passed off as a master key.
const WRAP_ASSOCIATED_DATA: &[u8] = b"confluent master key v1";

/// Argon2id memory cost in KiB for newly wrapped keys (the OWASP recommendation).
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Argon2id passes for newly wrapped keys.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Argon2id lanes for newly wrapped keys.
pub const ARGON2_PARALLELISM: u32 = 1;
/// Length of the random argon2id salt of newly wrapped keys.
const ARGON2_SALT_LEN: usize = 16;
/// Upper bounds on parameters read from a key document: the parameters come from a file or a
/// restored dump, and must not let that input make the daemon allocate gigabytes or spin for
/// hours before it can even say the passphrase is wrong.
const ARGON2_MAX_MEMORY_KIB: u32 = 1 << 20;
const ARGON2_MAX_ITERATIONS: u32 = 64;
const ARGON2_MAX_PARALLELISM: u32 = 64;

/// A key file larger than this is not one of ours; refusing it early avoids reading a huge file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// GRUB's PBKDF2 parameters, as `grub-mkpasswd-pbkdf2` uses them by default.
const GRUB_PBKDF2_ITERATIONS: u32 = 10_000;
const GRUB_PBKDF2_SALT_LEN: usize = 64;
const GRUB_PBKDF2_HASH_LEN: usize = 64;
const GRUB_PBKDF2_PREFIX: &str = "grub.pbkdf2.sha512.";
/// Bounds on GRUB hashes being verified, so a malformed stored hash cannot make a verification
/// run for minutes or allocate without bound.
const GRUB_PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;
const GRUB_PBKDF2_MAX_FIELD_BYTES: usize = 1024;

/// SHA-crypt hashes the password once per password byte for each of several steps, so its cost
/// grows with the square of the password length; longer passwords are refused by verification.
const SHA_CRYPT_MAX_VERIFY_PASSWORD_LEN: usize = 4096;

/// Failure to load, create, export or import the master key.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// A file system operation on the key file or its directory failed.
    #[error("cannot {operation} {}", path.display())]
    Io {
        /// What was being done, e.g. "read".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key document is not valid.
    #[error("malformed master key in {origin}: {reason}")]
    Malformed {
        /// The key file path, or "imported document".
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The passphrase does not unwrap the key.
    #[error("wrong passphrase for the master key in {origin} (or the wrapped key was altered)")]
    WrongPassphrase {
        /// The key file path, or "imported document".
        origin: String,
    },
    /// The key is wrapped and no passphrase was given.
    #[error("the master key in {origin} is passphrase-protected and no passphrase was given")]
    PassphraseRequired {
        /// The key file path, or "imported document".
        origin: String,
    },
    /// The key file can be read by group or other users.
    #[error(
        "refusing to use master key file {}: mode {mode:04o} allows group or other access (chmod 600 it)",
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The passphrase-based key derivation failed.
    #[error("cannot derive the key-wrapping key from the passphrase")]
    KeyDerivation(#[source] argon2::Error),
}

/// Failure to decrypt a sealed secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretOpenError {
    /// The sealed value was written by an unknown format version.
    #[error("unsupported sealed secret version {0}")]
    UnsupportedVersion(u32),
    /// The ciphertext is shorter than an authentication tag.
    #[error("sealed secret is too short to hold an authentication tag")]
    Truncated,
    /// Authentication failed: another master key, another context (attribute), or altered data.
    #[error("secret cannot be decrypted: wrong master key, wrong attribute or altered data")]
    AuthenticationFailed,
}

/// The 32-byte master key. Zeroized on drop; its `Debug` never shows the key.
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MasterKey(..)")
    }
}

/// An encrypted value as persisted: `{"v":1,"nonce":"<base64>","ct":"<base64>"}`, where `ct` is
/// the AES-256-GCM ciphertext followed by its 16-byte tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(rename = "v")]
    version: u32,
    #[serde(with = "base64_nonce")]
    nonce: [u8; NONCE_LEN],
    #[serde(with = "base64_bytes")]
    ct: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Sealed(..)")
    }
}

/// The on-disk and dump form of the master key.
#[derive(Serialize, Deserialize)]
struct KeyDocument {
    format: u32,
    #[serde(flatten)]
    body: KeyBody,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind")]
enum KeyBody {
    #[serde(rename = "plain")]
    Plain { key: String },
    #[serde(rename = "argon2id-aes256gcm")]
    Wrapped {
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
        nonce: String,
        ct: String,
    },
}

impl Drop for KeyBody {
    fn drop(&mut self) {
        if let KeyBody::Plain { key } = self {
            key.zeroize();
        }
    }
}

fn fill_random(destination: &mut [u8]) {
    rand::fill(destination);
}

fn malformed(origin: &str, reason: impl Into<String>) -> MasterKeyError {
    MasterKeyError::Malformed {
        origin: origin.to_owned(),
        reason: reason.into(),
    }
}

fn decode_base64(origin: &str, field: &str, text: &str) -> Result<Vec<u8>, MasterKeyError> {
    BASE64
        .decode(text)
        .map_err(|_| malformed(origin, format!("field '{field}' is not valid base64")))
}

/// Argon2id over the passphrase into a 32-byte wrapping key.
fn derive_wrapping_key(
    passphrase: &[u8],
    salt: &[u8],
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<Zeroizing<[u8; MASTER_KEY_LEN]>, MasterKeyError> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(MASTER_KEY_LEN))
        .map_err(MasterKeyError::KeyDerivation)?;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut wrapping_key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    argon2
        .hash_password_into(passphrase, salt, wrapping_key.as_mut())
        .map_err(MasterKeyError::KeyDerivation)?;
    Ok(wrapping_key)
}

fn cipher_for(key: &[u8; MASTER_KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        fill_random(bytes.as_mut());
        MasterKey { bytes }
    }

    /// Loads the key file at `path`, or creates it when missing: written with mode 0600 to a
    /// temporary file in the same directory, fsynced, linked into place (never replacing a file
    /// another process created meanwhile; that one is loaded instead), and the directory fsynced.
    ///
    /// With `passphrase`, a new file is wrapped (argon2id with a random 16-byte salt and the
    /// parameters stored in the file, AES-256-GCM). An existing wrapped file needs the passphrase;
    /// an existing plain file is loaded as it is even when a passphrase is given. A file whose
    /// mode allows group or other access is refused.
    pub fn load_or_create(
        path: &Path,
        passphrase: Option<&[u8]>,
    ) -> Result<MasterKey, MasterKeyError> {
        match fs::File::open(path) {
            Ok(file) => Self::load_open_file(file, path, passphrase),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Self::create_key_file(path, passphrase)
            }
            Err(source) => Err(MasterKeyError::Io {
                operation: "open",
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn load_open_file(
        file: fs::File,
        path: &Path,
        passphrase: Option<&[u8]>,
    ) -> Result<MasterKey, MasterKeyError> {
        let origin = path.display().to_string();
        // Checking the opened file (fstat) rather than the path leaves no window for the path
        // to be swapped between the check and the read.
        let metadata = file.metadata().map_err(|source| MasterKeyError::Io {
            operation: "inspect",
            path: path.to_owned(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(malformed(&origin, "not a regular file"));
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        if metadata.len() > MAX_KEY_FILE_BYTES {
            return Err(malformed(&origin, "file is too large to be a key file"));
        }
        let mut contents = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_BYTES)
            .read_to_end(&mut contents)
            .map_err(|source| MasterKeyError::Io {
                operation: "read",
                path: path.to_owned(),
                source,
            })?;
        let document: KeyDocument = serde_json::from_slice(&contents)
            .map_err(|error| malformed(&origin, format!("not a key document: {error}")))?;
        Self::from_document(&document, passphrase, &origin)
    }

    fn create_key_file(
        path: &Path,
        passphrase: Option<&[u8]>,
    ) -> Result<MasterKey, MasterKeyError> {
        let io_error = |operation: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| MasterKeyError::Io {
                operation,
                path,
                source,
            }
        };
        let Some(file_name) = path.file_name() else {
            return Err(io_error("create", path)(io::Error::from(
                io::ErrorKind::InvalidInput,
            )));
        };
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let key = MasterKey::generate();
        let document = key.to_document(passphrase)?;
        let mut contents = Zeroizing::new(
            serde_json::to_vec_pretty(&document)
                .map_err(|error| malformed(&path.display().to_string(), error.to_string()))?,
        );
        contents.push(b'\n');

        let mut suffix = [0u8; 8];
        fill_random(&mut suffix);
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(file_name);
        temporary_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            hex::encode(suffix)
        ));
        let temporary_path = directory.join(temporary_name);

        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary_path)
            .map_err(io_error("create", &temporary_path))?;
        let written = file
            .write_all(&contents)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &temporary_path));
        drop(file);
        if let Err(error) = written {
            // Best effort: the write error is what the caller needs to see.
            let _ = fs::remove_file(&temporary_path);
            return Err(error);
        }

        // A hard link, unlike rename, fails instead of replacing a key file that another process
        // created in the meantime; replacing it would orphan every secret sealed under it.
        let linked = fs::hard_link(&temporary_path, path);
        let removed = fs::remove_file(&temporary_path);
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let file = fs::File::open(path).map_err(io_error("open", path))?;
                return Self::load_open_file(file, path, passphrase);
            }
            Err(source) => return Err(io_error("create", path)(source)),
        }
        removed.map_err(io_error("remove", &temporary_path))?;
        fs::File::open(directory)
            .and_then(|directory_handle| directory_handle.sync_all())
            .map_err(io_error("sync directory", directory))?;
        Ok(key)
    }

    /// Exports the key as a key document (plain, or wrapped when `passphrase` is given), for
    /// dumps. A plain export contains the key itself: treat it as the key.
    pub fn export(&self, passphrase: Option<&[u8]>) -> Result<serde_json::Value, MasterKeyError> {
        let document = self.to_document(passphrase)?;
        serde_json::to_value(&document)
            .map_err(|error| malformed("exported document", error.to_string()))
    }

    /// Imports a key document produced by [`MasterKey::export`] or read from a key file.
    pub fn import(
        value: &serde_json::Value,
        passphrase: Option<&[u8]>,
    ) -> Result<MasterKey, MasterKeyError> {
        let origin = "imported document";
        let document = KeyDocument::deserialize(value)
            .map_err(|error| malformed(origin, format!("not a key document: {error}")))?;
        Self::from_document(&document, passphrase, origin)
    }

    fn to_document(&self, passphrase: Option<&[u8]>) -> Result<KeyDocument, MasterKeyError> {
        let body = match passphrase {
            None => KeyBody::Plain {
                key: BASE64.encode(self.bytes.as_ref()),
            },
            Some(passphrase) => {
                let mut salt = [0u8; ARGON2_SALT_LEN];
                fill_random(&mut salt);
                let wrapping_key = derive_wrapping_key(
                    passphrase,
                    &salt,
                    ARGON2_MEMORY_KIB,
                    ARGON2_ITERATIONS,
                    ARGON2_PARALLELISM,
                )?;
                let mut nonce = [0u8; NONCE_LEN];
                fill_random(&mut nonce);
                let ciphertext = encrypt(
                    &wrapping_key,
                    &nonce,
                    self.bytes.as_ref(),
                    WRAP_ASSOCIATED_DATA,
                );
                KeyBody::Wrapped {
                    m_cost: ARGON2_MEMORY_KIB,
                    t_cost: ARGON2_ITERATIONS,
                    p_cost: ARGON2_PARALLELISM,
                    salt: BASE64.encode(salt),
                    nonce: BASE64.encode(nonce),
                    ct: BASE64.encode(ciphertext),
                }
            }
        };
        Ok(KeyDocument {
            format: KEY_DOCUMENT_FORMAT,
            body,
        })
    }

    fn from_document(
        document: &KeyDocument,
        passphrase: Option<&[u8]>,
        origin: &str,
    ) -> Result<MasterKey, MasterKeyError> {
        if document.format != KEY_DOCUMENT_FORMAT {
            return Err(malformed(
                origin,
                format!("unsupported format version {}", document.format),
            ));
        }
        let key_bytes: Zeroizing<Vec<u8>> = match &document.body {
            KeyBody::Plain { key } => Zeroizing::new(decode_base64(origin, "key", key)?),
            KeyBody::Wrapped {
                m_cost,
                t_cost,
                p_cost,
                salt,
                nonce,
                ct,
            } => {
                let Some(passphrase) = passphrase else {
                    return Err(MasterKeyError::PassphraseRequired {
                        origin: origin.to_owned(),
                    });
                };
                if *m_cost > ARGON2_MAX_MEMORY_KIB
                    || *t_cost > ARGON2_MAX_ITERATIONS
                    || *p_cost > ARGON2_MAX_PARALLELISM
                {
                    return Err(malformed(
                        origin,
                        format!(
                            "argon2 parameters m={m_cost} t={t_cost} p={p_cost} exceed the limits \
                             m={ARGON2_MAX_MEMORY_KIB} t={ARGON2_MAX_ITERATIONS} p={ARGON2_MAX_PARALLELISM}"
                        ),
                    ));
                }
                let salt = decode_base64(origin, "salt", salt)?;
                if !(8..=64).contains(&salt.len()) {
                    return Err(malformed(origin, "salt must be 8 to 64 bytes"));
                }
                let nonce: [u8; NONCE_LEN] = decode_base64(origin, "nonce", nonce)?
                    .try_into()
                    .map_err(|_| malformed(origin, "nonce must be 12 bytes"))?;
                let ciphertext = decode_base64(origin, "ct", ct)?;
                if ciphertext.len() != MASTER_KEY_LEN + TAG_LEN {
                    return Err(malformed(origin, "wrapped key has the wrong length"));
                }
                let wrapping_key = derive_wrapping_key(
                    passphrase, &salt, *m_cost, *t_cost, *p_cost,
                )
                .map_err(|error| match error {
                    MasterKeyError::KeyDerivation(cause) => {
                        malformed(origin, format!("invalid argon2 parameters: {cause}"))
                    }
                    other => other,
                })?;
                decrypt(&wrapping_key, &nonce, &ciphertext, WRAP_ASSOCIATED_DATA).map_err(|_| {
                    MasterKeyError::WrongPassphrase {
                        origin: origin.to_owned(),
                    }
                })?
            }
        };
        let bytes: [u8; MASTER_KEY_LEN] = key_bytes
            .as_slice()
            .try_into()
            .map_err(|_| malformed(origin, "key must be 32 bytes"))?;
        Ok(MasterKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// Encrypts with AES-256-GCM under a fresh random 96-bit nonce, binding `context` (the
    /// attribute name) as associated data.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let ct = encrypt(&self.bytes, &nonce, plaintext, context);
        Sealed {
            version: SEALED_VERSION,
            nonce,
            ct,
        }
    }

    /// Decrypts a value sealed under this key with the same `context`.
    pub fn open(
        &self,
        sealed: &Sealed,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretOpenError> {
        if sealed.version != SEALED_VERSION {
            return Err(SecretOpenError::UnsupportedVersion(sealed.version));
        }
        if sealed.ct.len() < TAG_LEN {
            return Err(SecretOpenError::Truncated);
        }
        decrypt(&self.bytes, &sealed.nonce, &sealed.ct, context)
    }
}

fn encrypt(
    key: &[u8; MASTER_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    associated_data: &[u8],
) -> Vec<u8> {
    let payload = Payload {
        msg: plaintext,
        aad: associated_data,
    };
    // INVARIANT: AES-GCM only refuses plaintexts over 64 GiB and associated data over 2^61
    // bytes; configuration values and attribute names are bounded far below that by the API and
    // the persistence layer, so this cannot fail.
    cipher_for(key)
        .encrypt(nonce.into(), payload)
        .expect("AES-GCM input within its length limits")
}

fn decrypt(
    key: &[u8; MASTER_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    associated_data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecretOpenError> {
    let payload = Payload {
        msg: ciphertext,
        aad: associated_data,
    };
    cipher_for(key)
        .decrypt(nonce.into(), payload)
        .map(Zeroizing::new)
        .map_err(|_| SecretOpenError::AuthenticationFailed)
}

impl Sealed {
    /// The format version of this sealed value.
    pub fn version(&self) -> u32 {
        self.version
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

mod base64_nonce {
    use super::NONCE_LEN;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        nonce: &[u8; NONCE_LEN],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::base64_bytes::serialize(nonce, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; NONCE_LEN], D::Error> {
        let bytes = super::base64_bytes::deserialize(deserializer)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("nonce must be 12 bytes"))
    }
}

/// SHA-512 crypt (`$6$`, random 16-character salt, default 5000 rounds) as in `/etc/shadow`.
///
/// The cost grows with the square of the password length; callers bound password lengths.
pub fn sha512_crypt(password: &str) -> String {
    // INVARIANT: with the default rounds the only failure modes of sha512_simple (rounds out of
    // range, non-UTF-8 output of its own base64 alphabet) cannot occur.
    sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
        .expect("SHA-512 crypt with default parameters")
}

/// Whether `password` matches a `$6$` SHA-512 crypt hash (constant-time comparison). Malformed
/// hashes and passwords over 4096 bytes never match.
pub fn sha512_crypt_verify(password: &str, hash: &str) -> bool {
    password.len() <= SHA_CRYPT_MAX_VERIFY_PASSWORD_LEN
        && hash.starts_with("$6$")
        && sha_crypt::sha512_check(password, hash).is_ok()
}

/// GRUB's PBKDF2 form, `grub.pbkdf2.sha512.10000.<SALTHEX>.<HASHHEX>`, with a 64-byte random
/// salt and a 64-byte hash in uppercase hex, as `grub-mkpasswd-pbkdf2` prints it.
pub fn grub_pbkdf2(password: &str) -> String {
    let mut salt = [0u8; GRUB_PBKDF2_SALT_LEN];
    fill_random(&mut salt);
    let mut hash = [0u8; GRUB_PBKDF2_HASH_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(
        password.as_bytes(),
        &salt,
        GRUB_PBKDF2_ITERATIONS,
        &mut hash,
    );
    format!(
        "{GRUB_PBKDF2_PREFIX}{GRUB_PBKDF2_ITERATIONS}.{}.{}",
        hex::encode_upper(salt),
        hex::encode_upper(hash)
    )
}

/// Whether `password` matches a `grub.pbkdf2.sha512.<iterations>.<salt>.<hash>` string (hex in
/// either case, constant-time comparison). Malformed or out-of-bounds hashes never match.
pub fn grub_pbkdf2_verify(password: &str, hash: &str) -> bool {
    let Some(rest) = hash.strip_prefix(GRUB_PBKDF2_PREFIX) else {
        return false;
    };
    let mut fields = rest.split('.');
    let (Some(iterations), Some(salt), Some(expected), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let Some(iterations) = iterations
        .parse::<u32>()
        .ok()
        .filter(|count| (1..=GRUB_PBKDF2_MAX_ITERATIONS).contains(count))
    else {
        return false;
    };
    let (Ok(salt), Ok(expected)) = (hex::decode(salt), hex::decode(expected)) else {
        return false;
    };
    let within_bounds = |field: &[u8]| (1..=GRUB_PBKDF2_MAX_FIELD_BYTES).contains(&field.len());
    if !within_bounds(&salt) || !within_bounds(&expected) {
        return false;
    }
    let mut computed = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, iterations, &mut computed);
    constant_time_equal(&computed, &expected)
}

/// Compares without an early exit, so timing does not reveal how many leading bytes matched.
fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: &[u8] = b"secret.hardwaremanagementpassword";

    fn key_path(directory: &tempfile::TempDir) -> PathBuf {
        directory.path().join("master.key")
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).map_or(0, |metadata| metadata.permissions().mode() & 0o7777)
    }

    fn read_json(path: &Path) -> serde_json::Value {
        let text = fs::read_to_string(path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// Two keys are the same when one opens what the other sealed.
    fn same_key(left: &MasterKey, right: &MasterKey) -> bool {
        let sealed = left.seal(b"probe", CONTEXT);
        right.open(&sealed, CONTEXT).is_ok()
    }

    #[test]
    fn seal_open_round_trip() {
        let key = MasterKey::generate();
        for plaintext in [
            &b""[..],
            b"PASSW0RD",
            &[0u8, 255, 10, 13][..],
            &[7u8; 10_000][..],
        ] {
            let sealed = key.seal(plaintext, CONTEXT);
            assert_eq!(sealed.version(), 1);
            let opened = key.open(&sealed, CONTEXT);
            assert_eq!(opened.as_deref().map(|v| v.as_slice()), Ok(plaintext));
        }
    }

    #[test]
    fn wrong_context_fails() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"PASSW0RD", b"secret.hardwaremanagementpassword");
        assert_eq!(
            key.open(&sealed, b"secret.hardwaremanagementuser"),
            Err(SecretOpenError::AuthenticationFailed)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = MasterKey::generate().seal(b"PASSW0RD", CONTEXT);
        assert_eq!(
            MasterKey::generate().open(&sealed, CONTEXT),
            Err(SecretOpenError::AuthenticationFailed)
        );
    }

    #[test]
    fn tampering_fails() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"PASSW0RD", CONTEXT);
        for index in 0..sealed.ct.len() {
            let mut altered = sealed.clone();
            if let Some(byte) = altered.ct.get_mut(index) {
                *byte ^= 0x01;
            }
            assert_eq!(
                key.open(&altered, CONTEXT),
                Err(SecretOpenError::AuthenticationFailed),
                "flipped ciphertext byte {index}"
            );
        }
        let mut altered_nonce = sealed.clone();
        altered_nonce.nonce[0] ^= 0x80;
        assert_eq!(
            key.open(&altered_nonce, CONTEXT),
            Err(SecretOpenError::AuthenticationFailed)
        );
        let mut truncated = sealed.clone();
        truncated.ct.truncate(TAG_LEN - 1);
        assert_eq!(
            key.open(&truncated, CONTEXT),
            Err(SecretOpenError::Truncated)
        );
        let mut future = sealed;
        future.version = 2;
        assert_eq!(
            key.open(&future, CONTEXT),
            Err(SecretOpenError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn nonces_differ() {
        let key = MasterKey::generate();
        let first = key.seal(b"same", CONTEXT);
        let second = key.seal(b"same", CONTEXT);
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ct, second.ct);
        assert_ne!(first, second);
    }

    #[test]
    fn sealed_serialises_without_plaintext() {
        let key = MasterKey::generate();
        let plaintext = "correct-horse-battery-staple";
        let sealed = key.seal(plaintext.as_bytes(), CONTEXT);
        let json = serde_json::to_string(&sealed).unwrap_or_default();
        assert!(!json.contains(plaintext), "{json}");
        assert!(!json.contains(&BASE64.encode(plaintext)), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let fields: Vec<&str> = value
            .as_object()
            .map(|object| object.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(fields.len(), 3, "{json}");
        assert_eq!(value["v"], 1);
        assert!(value["nonce"].is_string() && value["ct"].is_string());
        let back: Result<Sealed, _> = serde_json::from_str(&json);
        assert!(back.as_ref().is_ok_and(|back| *back == sealed));
        let reopened = back.map(|back| key.open(&back, CONTEXT).is_ok());
        assert!(reopened.is_ok_and(|opened| opened));
    }

    #[test]
    fn sealed_rejects_bad_serialised_forms() {
        for json in [
            r#"{"v":1,"nonce":"AAAA","ct":"AAAAAAAAAAAAAAAAAAAAAA=="}"#,
            r#"{"v":1,"nonce":"not base64!","ct":""}"#,
            r#"{"v":1,"nonce":"AAAAAAAAAAAAAAAA"}"#,
        ] {
            assert!(serde_json::from_str::<Sealed>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn debug_output_hides_material() {
        let key = MasterKey::generate();
        assert_eq!(format!("{key:?}"), "MasterKey(..)");
        assert_eq!(format!("{:?}", key.seal(b"x", CONTEXT)), "Sealed(..)");
    }

    #[test]
    fn key_file_is_created_private_and_reloads() -> Result<(), MasterKeyError> {
        let directory = tempfile::tempdir().map_err(|source| MasterKeyError::Io {
            operation: "create",
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = key_path(&directory);
        let created = MasterKey::load_or_create(&path, None)?;
        assert_eq!(mode_of(&path), 0o600);
        let document = read_json(&path);
        assert_eq!(document["format"], 1);
        assert_eq!(document["kind"], "plain");
        let reloaded = MasterKey::load_or_create(&path, None)?;
        assert!(same_key(&created, &reloaded));
        assert!(same_key(&reloaded, &created));
        assert!(!same_key(&created, &MasterKey::generate()));
        let leftovers: Vec<_> = fs::read_dir(directory.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("master.key")]);
        Ok(())
    }

    #[test]
    fn wrapped_key_file_needs_the_right_passphrase() -> Result<(), MasterKeyError> {
        let directory = tempfile::tempdir().map_err(|source| MasterKeyError::Io {
            operation: "create",
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = key_path(&directory);
        let created = MasterKey::load_or_create(&path, Some(b"open sesame"))?;
        assert_eq!(mode_of(&path), 0o600);
        let document = read_json(&path);
        assert_eq!(document["kind"], "argon2id-aes256gcm");
        assert_eq!(document["m_cost"], ARGON2_MEMORY_KIB);
        assert_eq!(document["t_cost"], ARGON2_ITERATIONS);
        assert_eq!(document["p_cost"], ARGON2_PARALLELISM);
        assert_eq!(
            document["salt"]
                .as_str()
                .and_then(|salt| BASE64.decode(salt).ok())
                .map(|salt| salt.len()),
            Some(ARGON2_SALT_LEN)
        );
        assert!(document.get("key").is_none());

        let missing = MasterKey::load_or_create(&path, None);
        assert!(
            matches!(missing, Err(MasterKeyError::PassphraseRequired { .. })),
            "{missing:?}"
        );
        let wrong = MasterKey::load_or_create(&path, Some(b"open barley"));
        assert!(
            matches!(wrong, Err(MasterKeyError::WrongPassphrase { .. })),
            "{wrong:?}"
        );
        let reloaded = MasterKey::load_or_create(&path, Some(b"open sesame"))?;
        assert!(same_key(&created, &reloaded));
        Ok(())
    }

    #[test]
    fn plain_key_file_with_passphrase_is_loaded_unchanged() -> Result<(), MasterKeyError> {
        let directory = tempfile::tempdir().map_err(|source| MasterKeyError::Io {
            operation: "create",
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = key_path(&directory);
        let created = MasterKey::load_or_create(&path, None)?;
        let before = fs::read(&path).unwrap_or_default();
        let reloaded = MasterKey::load_or_create(&path, Some(b"ignored"))?;
        assert!(same_key(&created, &reloaded));
        assert_eq!(fs::read(&path).unwrap_or_default(), before);
        Ok(())
    }

    #[test]
    fn insecure_mode_is_refused() -> Result<(), MasterKeyError> {
        let directory = tempfile::tempdir().map_err(|source| MasterKeyError::Io {
            operation: "create",
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = key_path(&directory);
        MasterKey::load_or_create(&path, None)?;
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|source| {
                MasterKeyError::Io {
                    operation: "chmod",
                    path: path.clone(),
                    source,
                }
            })?;
            let result = MasterKey::load_or_create(&path, None);
            match result {
                Err(MasterKeyError::InsecurePermissions { mode: seen, .. }) => {
                    assert_eq!(seen, mode);
                }
                other => panic!("mode {mode:o} accepted: {other:?}"),
            }
        }
        let message = MasterKey::load_or_create(&path, None)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("0660") && message.contains("chmod 600"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let Ok(directory) = tempfile::tempdir() else {
            panic!("cannot create a temporary directory");
        };
        let path = key_path(&directory);
        let cases = [
            "not json",
            r#"{"format":2,"kind":"plain","key":"AAAA"}"#,
            r#"{"format":1,"kind":"plain","key":"AAAA"}"#,
            r#"{"format":1,"kind":"plain","key":"%%%"}"#,
            r#"{"format":1,"kind":"rot13","key":"AAAA"}"#,
            r#"{"format":1,"kind":"argon2id-aes256gcm","m_cost":4294967295,"t_cost":2,"p_cost":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AAAAAAAAAAAAAAAA","ct":"AAAA"}"#,
            r#"{"format":1,"kind":"argon2id-aes256gcm","m_cost":19456,"t_cost":2,"p_cost":1,"salt":"AAAA","nonce":"AAAAAAAAAAAAAAAA","ct":"AAAA"}"#,
            r#"{"format":1,"kind":"argon2id-aes256gcm","m_cost":1,"t_cost":2,"p_cost":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AAAAAAAAAAAAAAAA","ct":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        ];
        for contents in cases {
            let written = fs::write(&path, contents)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o600)));
            assert!(written.is_ok());
            let result = MasterKey::load_or_create(&path, Some(b"pass"));
            assert!(
                matches!(result, Err(MasterKeyError::Malformed { .. })),
                "{contents}: {result:?}"
            );
        }
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let Ok(directory) = tempfile::tempdir() else {
            panic!("cannot create a temporary directory");
        };
        let path = directory.path().join("absent").join("master.key");
        let result = MasterKey::load_or_create(&path, None);
        assert!(
            matches!(result, Err(MasterKeyError::Io { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn export_import_plain() -> Result<(), MasterKeyError> {
        let key = MasterKey::generate();
        let exported = key.export(None)?;
        assert_eq!(exported["kind"], "plain");
        assert_eq!(exported["format"], 1);
        let imported = MasterKey::import(&exported, None)?;
        assert!(same_key(&key, &imported));
        // A passphrase is not needed for a plain document and is ignored.
        let imported_with_passphrase = MasterKey::import(&exported, Some(b"unused"))?;
        assert!(same_key(&key, &imported_with_passphrase));
        Ok(())
    }

    #[test]
    fn export_import_wrapped() -> Result<(), MasterKeyError> {
        let key = MasterKey::generate();
        let exported = key.export(Some(b"dump passphrase"))?;
        assert_eq!(exported["kind"], "argon2id-aes256gcm");
        assert!(exported.get("key").is_none());
        let text = exported.to_string();
        assert!(!text.contains(&BASE64.encode(key.bytes.as_ref())));
        assert!(matches!(
            MasterKey::import(&exported, None),
            Err(MasterKeyError::PassphraseRequired { .. })
        ));
        assert!(matches!(
            MasterKey::import(&exported, Some(b"other")),
            Err(MasterKeyError::WrongPassphrase { .. })
        ));
        let imported = MasterKey::import(&exported, Some(b"dump passphrase"))?;
        assert!(same_key(&key, &imported));

        let mut altered = exported.clone();
        altered["t_cost"] = serde_json::json!(3);
        assert!(matches!(
            MasterKey::import(&altered, Some(b"dump passphrase")),
            Err(MasterKeyError::WrongPassphrase { .. })
        ));
        assert!(matches!(
            MasterKey::import(&serde_json::json!({"kind": "plain"}), None),
            Err(MasterKeyError::Malformed { .. })
        ));
        Ok(())
    }

    #[test]
    fn sha512_crypt_hashes_and_verifies() {
        let hash = sha512_crypt("rootpw");
        assert!(hash.starts_with("$6$"), "{hash}");
        let salt = hash.split('$').nth(2).unwrap_or_default();
        assert_eq!(salt.len(), 16, "{hash}");
        assert!(sha512_crypt_verify("rootpw", &hash));
        assert!(!sha512_crypt_verify("rootpw2", &hash));
        assert_ne!(sha512_crypt("rootpw"), hash);
        assert!(!sha512_crypt_verify("rootpw", "garbage"));
        assert!(!sha512_crypt_verify("rootpw", "$5$abc$def"));
        assert!(!sha512_crypt_verify("rootpw", "$6$"));
        let long_password = "x".repeat(SHA_CRYPT_MAX_VERIFY_PASSWORD_LEN + 1);
        assert!(!sha512_crypt_verify(&long_password, &hash));
    }

    #[test]
    fn sha512_crypt_matches_the_reference_vector() {
        // From Ulrich Drepper's SHA-crypt specification.
        let hash = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(sha512_crypt_verify("Hello world!", hash));
        assert!(!sha512_crypt_verify("Hello world", hash));
    }

    #[test]
    fn grub_pbkdf2_format_and_verify() {
        let hash = grub_pbkdf2("grubpw");
        let fields: Vec<&str> = hash.split('.').collect();
        assert_eq!(
            fields.get(..4),
            Some(&["grub", "pbkdf2", "sha512", "10000"][..]),
            "{hash}"
        );
        assert_eq!(fields.len(), 6, "{hash}");
        for hex_field in fields.get(4..).unwrap_or_default() {
            assert_eq!(hex_field.len(), 128, "{hash}");
            assert!(
                hex_field
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
                "{hash}"
            );
        }
        assert!(grub_pbkdf2_verify("grubpw", &hash));
        assert!(!grub_pbkdf2_verify("grubpw!", &hash));
        // GRUB itself accepts lowercase hex too.
        assert!(grub_pbkdf2_verify("grubpw", &hash.to_ascii_lowercase()));
        assert_ne!(grub_pbkdf2("grubpw"), hash);
    }

    #[test]
    fn grub_pbkdf2_matches_an_independent_implementation() {
        // Computed with Python's hashlib.pbkdf2_hmac("sha512", b"correct horse", bytes(range(64)),
        // 10000, 64).
        let hash = "grub.pbkdf2.sha512.10000.\
            000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\
            202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F.\
            C873AC74B5CBAC9B3D70D518DEBEB05666CCDC8364FA05ACBE1DBB51924382694F\
            C75B865A03C16F0C63FC71878588743168989DCCB48B62EF08B2251E7D5ADE";
        assert!(grub_pbkdf2_verify("correct horse", hash));
        assert!(!grub_pbkdf2_verify("correct horse ", hash));
    }

    #[test]
    fn grub_pbkdf2_rejects_malformed_hashes() {
        for bad in [
            "",
            "grub.pbkdf2.sha512.10000.00",
            "grub.pbkdf2.sha512.10000.00.00.00",
            "grub.pbkdf2.sha256.10000.00.00",
            "grub.pbkdf2.sha512.0.00.00",
            "grub.pbkdf2.sha512.99999999999.00.00",
            "grub.pbkdf2.sha512.10000.zz.00",
            "grub.pbkdf2.sha512.10000..00",
            "grub.pbkdf2.sha512.10000.00.",
        ] {
            assert!(!grub_pbkdf2_verify("x", bad), "{bad}");
        }
    }

    #[test]
    fn constant_time_equal_compares_contents_and_lengths() {
        assert!(constant_time_equal(b"abc", b"abc"));
        assert!(!constant_time_equal(b"abc", b"abd"));
        assert!(!constant_time_equal(b"abc", b"ab"));
        assert!(constant_time_equal(b"", b""));
    }
}
