//! Roles and their permissions (reference 5.6): `Administrator`, `Operator`, `Monitor`, `Stub`,
//! plus custom roles from `etc/authorization.yaml`. A permission is an fnmatch pattern on the
//! request path, per operation; `deniedbyrole` patterns win over `allowedbyrole` ones.
//!
//! Pure: no I/O except [`RoleTable::load`], which reads the YAML file once at start-up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::Operation;

/// A role a user or user group holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Administrator,
    Operator,
    Monitor,
    /// No permissions of its own: the user's OS groups decide (reference 5.6).
    Stub,
    /// A role defined in `authorization.yaml`.
    Custom(Arc<str>),
}

impl Role {
    pub fn name(&self) -> &str {
        match self {
            Role::Administrator => "Administrator",
            Role::Operator => "Operator",
            Role::Monitor => "Monitor",
            Role::Stub => "Stub",
            Role::Custom(name) => name,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The built-in roles, most privileged first.
pub const BUILTIN_ROLES: [Role; 4] = [
    Role::Administrator,
    Role::Operator,
    Role::Monitor,
    Role::Stub,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoleLookupError {
    #[error("unknown role '{0}' (roles: {1})")]
    Unknown(String, String),
    #[error("role '{0}' is ambiguous: {1}")]
    Ambiguous(String, String),
}

#[derive(Debug, thiserror::Error)]
pub enum RoleTableLoadError {
    #[error("failed to read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid role file {path}: {reason}")]
    Parse {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Patterns per operation name (`retrieve`, `create`, ...).
type Rules = BTreeMap<String, Vec<String>>;

/// The YAML document (Confluent's `authorization.yaml` shape).
#[derive(Debug, Default, serde::Deserialize)]
struct RoleFile {
    #[serde(default)]
    allowedbyrole: BTreeMap<String, Rules>,
    #[serde(default)]
    deniedbyrole: BTreeMap<String, Rules>,
}

/// Every role with its allowed and denied patterns.
#[derive(Debug, Clone)]
pub struct RoleTable {
    allowed: BTreeMap<String, Rules>,
    denied: BTreeMap<String, Rules>,
    /// Custom role names, as written in the file.
    custom: Vec<Arc<str>>,
}

fn rules(entries: &[(&str, &[&str])]) -> Rules {
    entries
        .iter()
        .map(|(operation, patterns)| {
            (
                operation.to_string(),
                patterns.iter().map(|pattern| pattern.to_string()).collect(),
            )
        })
        .collect()
}

impl Default for RoleTable {
    /// The built-in roles of reference 5.6 (Confluent's `auth.py`), with the
    /// `attributes/all` read that the reference grants Monitors.
    fn default() -> RoleTable {
        let mut allowed = BTreeMap::new();
        allowed.insert(
            "Operator".to_string(),
            rules(&[
                ("retrieve", &["*"]),
                (
                    "create",
                    &[
                        "/noderange/",
                        "/noderange/*/abbreviate",
                        "/noderange/abbreviate",
                        "/noderange/*/media/uploads/",
                        "/nodes/*/media/uploads/",
                        "/node*/*/firmware/updates/active/",
                        "/node*/*/support/servicedata*",
                        "/node*/*/attributes/expression",
                        "/nodes/*/shell/sessions*",
                        "/nodes/*/console/session*",
                        "/node*/*/configuration/*",
                        "/nodes/",
                    ],
                ),
                (
                    "start",
                    &[
                        "/sessions/current/async",
                        "/nodes/*/console/session*",
                        "/nodes/*/shell/sessions*",
                        // Following a log or attributes: reading them over time.
                        "/events/*",
                        "/noderange/*/attributes/all",
                    ],
                ),
                (
                    "update",
                    &[
                        "/discovery/*",
                        "/networking/macs/rescan",
                        "/node*/*/power/state",
                        "/node*/*/power/reseat",
                        "/node*/*/attributes/*",
                        "/node*/*/media/*tach",
                        "/node*/*/boot/nextdevice",
                        "/node*/*/identify",
                        "/node*/*/configuration/*",
                    ],
                ),
                ("delete", &["/discovery/*", "/node*"]),
            ]),
        );
        allowed.insert(
            "Monitor".to_string(),
            rules(&[
                (
                    "start",
                    &["/sessions/current/async", "/noderange/*/attributes/all"],
                ),
                (
                    "retrieve",
                    &[
                        "/node*/health/hardware",
                        "/node*/power/state",
                        "/node*/sensors/*",
                        "/node*/attributes/current",
                        "/node*/attributes/all",
                        "/node*/description",
                        "/noderange/*/nodes/",
                        "/nodes/",
                        "/",
                        "/metrics",
                    ],
                ),
            ]),
        );
        let mut denied = BTreeMap::new();
        denied.insert(
            "Operator".to_string(),
            rules(&[(
                "update",
                &["/node*/*/configuration/management_controller/users/*"],
            )]),
        );
        RoleTable {
            allowed,
            denied,
            custom: Vec::new(),
        }
    }
}

impl RoleTable {
    /// The built-in roles plus those of `path` when it exists. Rules for a built-in role name
    /// are added to its own.
    pub fn load(path: &Path) -> Result<RoleTable, RoleTableLoadError> {
        let mut table = RoleTable::default();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(table),
            Err(source) => {
                return Err(RoleTableLoadError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        table
            .merge_yaml(&text)
            .map_err(|reason| RoleTableLoadError::Parse {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(table)
    }

    /// Merge a YAML document of custom roles.
    pub fn merge_yaml(&mut self, text: &str) -> Result<(), String> {
        let file: RoleFile = if text.trim().is_empty() {
            RoleFile::default()
        } else {
            serde_saphyr::from_str(text).map_err(|error| error.to_string())?
        };
        for (source, target) in [
            (file.allowedbyrole, &mut self.allowed),
            (file.deniedbyrole, &mut self.denied),
        ] {
            for (role, operations) in source {
                if role.is_empty() || role.contains(['/', ' ']) {
                    return Err(format!("invalid role name '{role}'"));
                }
                for operation in operations.keys() {
                    if Operation::parse(operation).is_none() {
                        return Err(format!("role {role}: unknown operation '{operation}'"));
                    }
                }
                let builtin = BUILTIN_ROLES.iter().any(|known| known.name() == role);
                if !builtin && !self.custom.iter().any(|known| **known == *role) {
                    self.custom.push(Arc::from(role.as_str()));
                }
                let entry = target.entry(role).or_default();
                for (operation, patterns) in operations {
                    entry.entry(operation).or_default().extend(patterns);
                }
            }
        }
        Ok(())
    }

    /// Every role name, built-in first.
    pub fn role_names(&self) -> Vec<&str> {
        BUILTIN_ROLES
            .iter()
            .map(Role::name)
            .chain(self.custom.iter().map(|name| &**name))
            .collect()
    }

    /// Resolve a role name: exact, or a unique case-insensitive prefix (`admin`, `op`, `mon`).
    pub fn resolve(&self, name: &str) -> Result<Role, RoleLookupError> {
        let wanted = name.trim().to_ascii_lowercase();
        let names = self.role_names();
        if let Some(exact) = names
            .iter()
            .find(|known| known.to_ascii_lowercase() == wanted)
        {
            return Ok(self.role_from_exact(exact));
        }
        let matches: Vec<&str> = names
            .iter()
            .copied()
            .filter(|known| !wanted.is_empty() && known.to_ascii_lowercase().starts_with(&wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok(self.role_from_exact(one)),
            [] => Err(RoleLookupError::Unknown(name.to_string(), names.join(", "))),
            many => Err(RoleLookupError::Ambiguous(
                name.to_string(),
                many.join(", "),
            )),
        }
    }

    fn role_from_exact(&self, name: &str) -> Role {
        BUILTIN_ROLES
            .iter()
            .find(|role| role.name() == name)
            .cloned()
            .unwrap_or_else(|| Role::Custom(Arc::from(name)))
    }

    /// Whether `role` may perform `operation` on `path`. Administrators may do everything not
    /// explicitly denied; every other role only what a pattern allows and none denies.
    pub fn allows(&self, role: &Role, operation: Operation, path: &str) -> bool {
        let name = role.name();
        let operation = operation.as_str();
        let matches = |table: &BTreeMap<String, Rules>| {
            table
                .get(name)
                .and_then(|rules| rules.get(operation))
                .is_some_and(|patterns| patterns.iter().any(|pattern| path_matches(pattern, path)))
        };
        if matches(&self.denied) {
            return false;
        }
        *role == Role::Administrator || matches(&self.allowed)
    }
}

/// fnmatch on a request path, Python style (`*` also matches `/`). A path is tried as given and
/// with its trailing slash toggled, because collections are written both ways.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if fnmatch(pattern.as_bytes(), path.as_bytes()) {
        return true;
    }
    match path.strip_suffix('/') {
        Some(bare) if !bare.is_empty() => fnmatch(pattern.as_bytes(), bare.as_bytes()),
        Some(_) => false,
        None => fnmatch(pattern.as_bytes(), format!("{path}/").as_bytes()),
    }
}

/// `*` any run of bytes, `?` one byte, `[abc]`/`[a-z]`/`[!x]` a class; everything else literal.
/// Iterative with single backtracking point for `*`: linear-ish, no recursion on input.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class_matches(pattern, p, text[t]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unterminated class is a literal '['.
                None => (text[t] == b'[').then_some(p + 1),
            },
            Some(byte) => (*byte == text[t]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|byte| *byte == b'*')
}

/// Match `byte` against the class starting at `pattern[start] == '['`: whether it matched and
/// where the class ends, or `None` if the class is not terminated.
fn class_matches(pattern: &[u8], start: usize, byte: u8) -> Option<(bool, usize)> {
    let mut index = start + 1;
    let negated = matches!(pattern.get(index), Some(b'!' | b'^'));
    if negated {
        index += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let current = *pattern.get(index)?;
        if current == b']' && !first {
            return Some((matched != negated, index + 1));
        }
        first = false;
        if pattern.get(index + 1) == Some(&b'-')
            && let Some(&end) = pattern.get(index + 2)
            && end != b']'
        {
            matched |= (current..=end).contains(&byte);
            index += 3;
        } else {
            matched |= current == byte;
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch(b"*", b"/a/b"));
        assert!(fnmatch(
            b"/node*/*/attributes/*",
            b"/nodes/n1/attributes/all"
        ));
        assert!(fnmatch(
            b"/node*/*/attributes/*",
            b"/noderange/n[1-2]/attributes/current"
        ));
        assert!(fnmatch(
            b"/node*/attributes/current",
            b"/nodes/n1/attributes/current"
        ));
        assert!(!fnmatch(b"/nodes/", b"/nodegroups/"));
        assert!(fnmatch(b"/node*/*/media/*tach", b"/nodes/n1/media/detach"));
        assert!(fnmatch(b"n[0-9]", b"n5"));
        assert!(!fnmatch(b"n[!0-9]", b"n5"));
        assert!(fnmatch(b"a[", b"a["));
        assert!(!fnmatch(b"a?", b"a"));
        assert!(path_matches("/nodes/", "/nodes"));
        assert!(path_matches("/noderange/*/nodes/", "/noderange/n1/nodes"));
        assert!(!path_matches("/", "/version"));
    }

    #[test]
    fn role_prefixes_are_case_insensitive_and_unique() {
        let mut table = RoleTable::default();
        assert_eq!(table.resolve("admin"), Ok(Role::Administrator));
        assert_eq!(table.resolve("OPERATOR"), Ok(Role::Operator));
        assert_eq!(table.resolve("m"), Ok(Role::Monitor));
        assert!(matches!(
            table.resolve("x"),
            Err(RoleLookupError::Unknown(..))
        ));
        table
            .merge_yaml("allowedbyrole:\n  Maintainer:\n    retrieve: ['/nodes/']\n")
            .unwrap();
        assert!(matches!(
            table.resolve("m"),
            Err(RoleLookupError::Ambiguous(..))
        ));
        assert_eq!(
            table.resolve("main"),
            Ok(Role::Custom(Arc::from("Maintainer")))
        );
        assert!(table.allows(
            &Role::Custom(Arc::from("Maintainer")),
            Operation::Retrieve,
            "/nodes/"
        ));
        assert!(!table.allows(
            &Role::Custom(Arc::from("Maintainer")),
            Operation::Retrieve,
            "/nodegroups/"
        ));
        assert!(
            table
                .merge_yaml("allowedbyrole:\n  X:\n    frobnicate: ['*']\n")
                .is_err()
        );
    }

    #[test]
    fn builtin_permissions() {
        let table = RoleTable::default();
        let monitor = Role::Monitor;
        assert!(table.allows(
            &monitor,
            Operation::Retrieve,
            "/nodes/n1/attributes/current"
        ));
        assert!(!table.allows(&monitor, Operation::Update, "/nodes/n1/attributes/current"));
        assert!(!table.allows(&monitor, Operation::Retrieve, "/users/"));
        assert!(table.allows(
            &Role::Operator,
            Operation::Update,
            "/noderange/n1/attributes/all"
        ));
        assert!(!table.allows(
            &Role::Operator,
            Operation::Update,
            "/nodes/n1/configuration/management_controller/users/1"
        ));
        assert!(!table.allows(&Role::Operator, Operation::Create, "/users/"));
        assert!(table.allows(&Role::Administrator, Operation::Create, "/users/"));
        assert!(!table.allows(&Role::Stub, Operation::Retrieve, "/"));
    }
}
