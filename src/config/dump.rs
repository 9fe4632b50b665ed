//! Dump and restore of the whole configuration to a directory of JSON or YAML files
//! (Confluent's `confluentdbutil dump/restore/merge`, reference section 5.4).
//!
//! Layout of a dump directory:
//! - `keys.json`: the master key, plain or wrapped by a passphrase (absent when redacted);
//! - `main.json` or `main.yaml`: `{"nodes": {name: {attr: value-object, "groups": [..]}},
//!   "nodegroups": {name: {attr: value-object, "noderange"?: text}}}`; values keep their stored
//!   shape (`{"value"}`, `{"expression"}`, `{"cryptvalue"}` still encrypted, `{"hashvalue"}`);
//!   inherited values are not written (they come back through the groups);
//! - `globals.json`.
//!
//! With `redact`, secrets are written as `"*REDACTED*"` and are skipped on restore.
//! Restoring decrypts secrets with the dump's key and re-encrypts them with the local one.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::model::{EVERYTHING, Op, Store, Stored, StoredWire, UserGroupRecord, UserRecord};
use super::noderange;
use super::plan::Plan;
use super::secrets::{MasterKey, MasterKeyError};

const REDACTED: &str = "*REDACTED*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    Json,
    Yaml,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to encode the configuration")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to export the master key")]
    Key(#[from] MasterKeyError),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid dump file")]
    Decode {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the dump holds encrypted secrets but no keys.json to decrypt them")]
    MissingKeys,
    #[error("failed to import the dump's master key")]
    Key(#[from] MasterKeyError),
    #[error("failed to decrypt {attribute} of {owner} with the dump's key")]
    Secret {
        owner: String,
        attribute: String,
        #[source]
        source: super::secrets::SecretOpenError,
    },
    #[error("dump names {0} both as a node and as a group")]
    Conflict(String),
}

/// One record (node or group) in a dump: attribute values, plus lists.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DumpRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noderange: Option<String>,
    /// The owning tenant (absent for the default tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub attributes: BTreeMap<String, DumpValue>,
}

/// A value in a dump: the stored shape, or the redaction marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DumpValue {
    Stored(StoredWire),
    Redacted(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DumpMain {
    #[serde(default)]
    pub nodes: BTreeMap<String, DumpRecord>,
    #[serde(default)]
    pub nodegroups: BTreeMap<String, DumpRecord>,
    /// Users with their role and password hash (redacted dumps keep the role only; such a
    /// user must get a new password, or authenticates through PAM).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, UserRecord>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usergroups: BTreeMap<String, UserGroupRecord>,
}

fn record_values(
    attributes: &BTreeMap<Arc<str>, Stored>,
    redact: bool,
) -> BTreeMap<String, DumpValue> {
    attributes
        .iter()
        .map(|(name, stored)| {
            let value = match stored {
                Stored::Sealed(_) | Stored::Hashed { .. } if redact => {
                    DumpValue::Redacted(REDACTED.to_string())
                }
                other => DumpValue::Stored(other.to_wire()),
            };
            (name.to_string(), value)
        })
        .collect()
}

/// Build the dump document of a configuration.
pub fn to_document(store: &Store, redact: bool) -> DumpMain {
    let mut main = DumpMain::default();
    for name in store.node_names_sorted() {
        let Some(node) = store.node(&name) else {
            continue;
        };
        main.nodes.insert(
            name.to_string(),
            DumpRecord {
                groups: Some(node.groups.iter().map(|group| group.to_string()).collect()),
                noderange: None,
                tenant: node.tenant.as_ref().map(|tenant| tenant.to_string()),
                attributes: record_values(&node.attributes, redact),
            },
        );
    }
    for name in store.group_names_sorted() {
        let Some(group) = store.group(&name) else {
            continue;
        };
        main.nodegroups.insert(
            name.to_string(),
            DumpRecord {
                groups: None,
                noderange: group.noderange.as_ref().map(|text| text.to_string()),
                tenant: group.tenant.as_ref().map(|tenant| tenant.to_string()),
                attributes: record_values(&group.attributes, redact),
            },
        );
    }
    for (name, user) in store.users() {
        let mut user = (**user).clone();
        if redact {
            user.password_hash = None;
        }
        main.users.insert(name.to_string(), user);
    }
    for (name, group) in store.usergroups() {
        main.usergroups.insert(name.to_string(), (**group).clone());
    }
    main
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DumpError> {
    fs::write(path, bytes).map_err(|source| DumpError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a dump of `store` to `dir`.
pub fn dump(
    store: &Store,
    key: &MasterKey,
    dir: &Path,
    format: DumpFormat,
    redact: bool,
    passphrase: Option<&[u8]>,
) -> Result<(), DumpError> {
    fs::create_dir_all(dir).map_err(|source| DumpError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let main = to_document(store, redact);
    match format {
        DumpFormat::Json => {
            let bytes = serde_json::to_vec_pretty(&main)
                .map_err(|error| DumpError::Encode(Box::new(error)))?;
            write_file(&dir.join("main.json"), &bytes)?;
        }
        DumpFormat::Yaml => {
            let text = serde_saphyr::to_string(&main)
                .map_err(|error| DumpError::Encode(Box::new(error)))?;
            write_file(&dir.join("main.yaml"), text.as_bytes())?;
        }
    }
    let globals = serde_json::to_vec_pretty(store.globals())
        .map_err(|error| DumpError::Encode(Box::new(error)))?;
    write_file(&dir.join("globals.json"), &globals)?;
    if !redact {
        let exported = key.export(passphrase)?;
        let bytes = serde_json::to_vec_pretty(&exported)
            .map_err(|error| DumpError::Encode(Box::new(error)))?;
        write_file(&dir.join("keys.json"), &bytes)?;
        restrict(&dir.join("keys.json"));
    }
    Ok(())
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, RestoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RestoreError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A dump read back, secrets re-encrypted under the local key.
pub struct Loaded {
    pub main: DumpMain,
    pub globals: BTreeMap<String, serde_json::Value>,
}

/// Read a dump directory (JSON or YAML), re-encrypting secrets with `local_key`.
pub fn load(
    dir: &Path,
    local_key: &MasterKey,
    passphrase: Option<&[u8]>,
) -> Result<Loaded, RestoreError> {
    let json_path = dir.join("main.json");
    let yaml_path = dir.join("main.yaml");
    let mut main: DumpMain = if let Some(bytes) = read(&json_path)? {
        serde_json::from_slice(&bytes).map_err(|source| RestoreError::Decode {
            path: json_path.clone(),
            source: Box::new(source),
        })?
    } else if let Some(bytes) = read(&yaml_path)? {
        let text = String::from_utf8(bytes).map_err(|source| RestoreError::Decode {
            path: yaml_path.clone(),
            source: Box::new(source),
        })?;
        serde_saphyr::from_str(&text).map_err(|source| RestoreError::Decode {
            path: yaml_path.clone(),
            source: Box::new(source),
        })?
    } else {
        return Err(RestoreError::Read {
            path: json_path,
            source: io::Error::new(io::ErrorKind::NotFound, "no main.json or main.yaml"),
        });
    };
    let keys_path = dir.join("keys.json");
    let dump_key = match read(&keys_path)? {
        Some(bytes) => {
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|source| RestoreError::Decode {
                    path: keys_path.clone(),
                    source: Box::new(source),
                })?;
            Some(MasterKey::import(&value, passphrase)?)
        }
        None => None,
    };
    let reseal = |owner: &str, record: &mut DumpRecord| -> Result<(), RestoreError> {
        for (attribute, value) in record.attributes.iter_mut() {
            if let DumpValue::Stored(StoredWire::Sealed { cryptvalue }) = value {
                let Some(dump_key) = &dump_key else {
                    return Err(RestoreError::MissingKeys);
                };
                let plain = dump_key
                    .open(cryptvalue, attribute.as_bytes())
                    .map_err(|source| RestoreError::Secret {
                        owner: owner.to_string(),
                        attribute: attribute.clone(),
                        source,
                    })?;
                *cryptvalue = local_key.seal(&plain, attribute.as_bytes());
            }
        }
        Ok(())
    };
    for (name, record) in main.nodes.iter_mut() {
        reseal(name, record)?;
    }
    for (name, record) in main.nodegroups.iter_mut() {
        reseal(name, record)?;
    }
    let globals_path = dir.join("globals.json");
    let globals = match read(&globals_path)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| RestoreError::Decode {
            path: globals_path,
            source: Box::new(source),
        })?,
        None => BTreeMap::new(),
    };
    Ok(Loaded { main, globals })
}

fn stored_attributes(record: &DumpRecord) -> Vec<(Arc<str>, Stored)> {
    record
        .attributes
        .iter()
        .filter_map(|(name, value)| match value {
            DumpValue::Stored(wire) => {
                Some((Arc::from(name.as_str()), Stored::from_wire(wire.clone())))
            }
            DumpValue::Redacted(_) => None,
        })
        .collect()
}

/// Ops that make the configuration equal to the dump (`replace`), or that add only the nodes
/// and groups the configuration does not have yet (`merge`).
pub fn plan_restore(store: &Store, loaded: &Loaded, replace: bool) -> Result<Plan, RestoreError> {
    let mut ops = Vec::new();
    for name in loaded.main.nodes.keys() {
        if loaded.main.nodegroups.contains_key(name) {
            return Err(RestoreError::Conflict(name.clone()));
        }
    }
    if replace {
        for node in store.node_names_sorted() {
            ops.push(Op::NodeDelete { node });
        }
        for group in store.group_names_sorted() {
            if &*group != EVERYTHING {
                ops.push(Op::GroupDelete { group });
            }
        }
        for key in store.globals().keys() {
            ops.push(Op::GlobalSet {
                key: key.clone(),
                value: None,
            });
        }
    }
    let exists = |name: &str| !replace && store.name_in_use(name);
    let mut group_names: Vec<&String> = loaded.main.nodegroups.keys().collect();
    noderange::sort_naturally(&mut group_names);
    for name in group_names {
        let Some(record) = loaded.main.nodegroups.get(name) else {
            continue;
        };
        if exists(name) && name != EVERYTHING {
            continue;
        }
        let group: Arc<str> = Arc::from(name.as_str());
        ops.push(Op::GroupCreate {
            group: group.clone(),
        });
        if let Some(noderange) = &record.noderange {
            ops.push(Op::GroupSetNoderange {
                group: group.clone(),
                noderange: Some(Arc::from(noderange.as_str())),
            });
        }
        if let Some(tenant) = &record.tenant {
            ops.push(Op::GroupSetTenant {
                group: group.clone(),
                tenant: Some(Arc::from(tenant.as_str())),
            });
        }
        for (attribute, stored) in stored_attributes(record) {
            ops.push(Op::GroupSet {
                group: group.clone(),
                attribute,
                stored,
            });
        }
    }
    let mut node_names: Vec<&String> = loaded.main.nodes.keys().collect();
    noderange::sort_naturally(&mut node_names);
    for name in node_names {
        let Some(record) = loaded.main.nodes.get(name) else {
            continue;
        };
        if exists(name) {
            continue;
        }
        let node: Arc<str> = Arc::from(name.as_str());
        ops.push(Op::NodeCreate { node: node.clone() });
        if let Some(groups) = &record.groups {
            for group in groups {
                if !loaded.main.nodegroups.contains_key(group)
                    && store.group(group).is_none_or(|_| replace)
                {
                    ops.push(Op::GroupCreate {
                        group: Arc::from(group.as_str()),
                    });
                }
            }
            ops.push(Op::NodeSetGroups {
                node: node.clone(),
                groups: groups
                    .iter()
                    .map(|group| Arc::from(group.as_str()))
                    .collect(),
            });
        }
        if let Some(tenant) = &record.tenant {
            ops.push(Op::NodeSetTenant {
                node: node.clone(),
                tenant: Some(Arc::from(tenant.as_str())),
            });
        }
        for (attribute, stored) in stored_attributes(record) {
            ops.push(Op::NodeSet {
                node: node.clone(),
                attribute,
                stored,
            });
        }
    }
    // Users are restored by `restore` only; a merge leaves the accounts alone (as Confluent).
    if replace {
        for user in store.users().keys() {
            if !loaded.main.users.contains_key(&**user) {
                ops.push(Op::UserSet {
                    user: user.clone(),
                    record: None,
                });
            }
        }
        for group in store.usergroups().keys() {
            if !loaded.main.usergroups.contains_key(&**group) {
                ops.push(Op::UserGroupSet {
                    group: group.clone(),
                    record: None,
                });
            }
        }
        for (user, record) in &loaded.main.users {
            ops.push(Op::UserSet {
                user: Arc::from(user.as_str()),
                record: Some(record.clone()),
            });
        }
        for (group, record) in &loaded.main.usergroups {
            ops.push(Op::UserGroupSet {
                group: Arc::from(group.as_str()),
                record: Some(record.clone()),
            });
        }
    }
    for (key, value) in &loaded.globals {
        if !replace && store.global(key).is_some() {
            continue;
        }
        ops.push(Op::GlobalSet {
            key: Arc::from(key.as_str()),
            value: Some(value.clone()),
        });
    }
    Ok(Plan {
        ops,
        warnings: Vec::new(),
    })
}
