//! The in-memory configuration model: nodes, groups, globals, and how a node's effective
//! attributes are resolved (inheritance through the ordered `groups` list, expressions evaluated
//! in the node's context, secrets never decrypted unless asked).
//!
//! This module is pure: no I/O, no locking, no async. Every change to a [`Store`] goes through
//! [`Store::apply`] with a journaled [`Op`], so replaying the journal reproduces the exact state.
//! Validation (attribute names, values, expressions, name uniqueness) happens before ops are
//! produced, in [`crate::config::plan`]; `apply` itself never fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalogue::{self, Sensitivity};
use super::expression::{ExpressionContext, Template};
use super::noderange::{self, GroupMembers, Universe};
use super::secrets::Sealed;

/// Hash maps keyed by node and group names. foldhash (randomly seeded) instead of SipHash:
/// hashing names is most of the cost of expanding a 100,000-node range.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Name of the built-in group that every node belongs to.
pub const EVERYTHING: &str = "everything";

/// Deepest chain of expressions referencing expressions before evaluation is declared broken.
const MAX_EXPRESSION_DEPTH: usize = 16;

/// An expression value: the parsed template plus its references with aliases resolved, so that
/// dependency tracking compares canonical names.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpressionValue {
    pub text: Arc<str>,
    /// The parsed template, or why it no longer parses (it did when it was written; a later
    /// catalogue change may invalidate it). Such a value is reported broken, never dropped.
    pub compiled: Result<Template, String>,
    pub canonical_references: Vec<Arc<str>>,
}

impl ExpressionValue {
    /// Parse for storage: validates syntax and every referenced attribute name.
    pub fn parse(text: &str) -> Result<ExpressionValue, String> {
        let template = Template::parse(text).map_err(|error| error.to_string())?;
        let mut canonical_references = Vec::with_capacity(template.references().len());
        for reference in template.references() {
            let canonical =
                catalogue::canonical_name(reference).map_err(|error| error.to_string())?;
            if catalogue::sensitivity(&canonical) != Sensitivity::Plain {
                return Err(format!(
                    "expression may not reference the protected attribute {canonical}"
                ));
            }
            canonical_references.push(Arc::from(canonical));
        }
        Ok(ExpressionValue {
            text: Arc::from(text),
            compiled: Ok(template),
            canonical_references,
        })
    }

    /// Load a persisted expression: never fails, see [`ExpressionValue::compiled`].
    pub fn load(text: &str) -> ExpressionValue {
        ExpressionValue::parse(text).unwrap_or_else(|reason| ExpressionValue {
            text: Arc::from(text),
            compiled: Err(reason),
            canonical_references: Vec::new(),
        })
    }

    fn uses_node_name(&self) -> bool {
        self.compiled
            .as_ref()
            .is_ok_and(|template| template.uses_node_name())
    }
}

/// A stored attribute value as set on a node or group.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// A literal value.
    Value(Arc<str>),
    /// A template evaluated in the context of each node that sees it.
    Expression(Arc<ExpressionValue>),
    /// A secret encrypted under the master key (`secret.*`, `custom.nodesecret.*`).
    Sealed(Box<Sealed>),
    /// A one-way hash (`crypted.*`): SHA-512 crypt and, for boot loaders, GRUB's PBKDF2 form.
    Hashed {
        hash: Arc<str>,
        grub_hash: Option<Arc<str>>,
    },
}

/// The persisted ("wire") shape of a stored value, as in Confluent's records:
/// `{"value": ..}`, `{"expression": ..}`, `{"cryptvalue": ..}`, `{"hashvalue": .., "grubhashvalue": ..}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredWire {
    Value {
        value: Arc<str>,
    },
    Expression {
        expression: Arc<str>,
    },
    Sealed {
        cryptvalue: Sealed,
    },
    Hashed {
        hashvalue: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grubhashvalue: Option<Arc<str>>,
    },
}

impl Stored {
    pub fn to_wire(&self) -> StoredWire {
        match self {
            Stored::Value(value) => StoredWire::Value {
                value: value.clone(),
            },
            Stored::Expression(expression) => StoredWire::Expression {
                expression: expression.text.clone(),
            },
            Stored::Sealed(sealed) => StoredWire::Sealed {
                cryptvalue: (**sealed).clone(),
            },
            Stored::Hashed { hash, grub_hash } => StoredWire::Hashed {
                hashvalue: hash.clone(),
                grubhashvalue: grub_hash.clone(),
            },
        }
    }

    /// Rebuild a stored value from its persisted shape. An expression that no longer parses
    /// (it was valid when written) is kept as a broken expression rather than dropped, so that
    /// nothing acknowledged is ever lost.
    pub fn from_wire(wire: StoredWire) -> Stored {
        match wire {
            StoredWire::Value { value } => Stored::Value(value),
            StoredWire::Expression { expression } => {
                Stored::Expression(Arc::new(ExpressionValue::load(&expression)))
            }
            StoredWire::Sealed { cryptvalue } => Stored::Sealed(Box::new(cryptvalue)),
            StoredWire::Hashed {
                hashvalue,
                grubhashvalue,
            } => Stored::Hashed {
                hash: hashvalue,
                grub_hash: grubhashvalue,
            },
        }
    }
}

/// Custom serde so that values persist in their wire form.
impl Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stored {
    /// Hand-written rather than `untagged`: snapshots hold millions of values and the untagged
    /// form buffers every one of them.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StoredVisitor;
        impl<'de> serde::de::Visitor<'de> for StoredVisitor {
            type Value = Stored;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an attribute value object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Stored, A::Error> {
                let mut value: Option<Arc<str>> = None;
                let mut expression: Option<String> = None;
                let mut sealed: Option<Sealed> = None;
                let mut hash: Option<Arc<str>> = None;
                let mut grub_hash: Option<Arc<str>> = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "value" => value = Some(map.next_value::<Arc<str>>()?),
                        "expression" => expression = Some(map.next_value::<String>()?),
                        "cryptvalue" => sealed = Some(map.next_value::<Sealed>()?),
                        "hashvalue" => hash = Some(map.next_value::<Arc<str>>()?),
                        "grubhashvalue" => grub_hash = Some(map.next_value::<Arc<str>>()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                if let Some(expression) = expression {
                    return Ok(Stored::Expression(Arc::new(ExpressionValue::load(
                        &expression,
                    ))));
                }
                if let Some(sealed) = sealed {
                    return Ok(Stored::Sealed(Box::new(sealed)));
                }
                if let Some(hash) = hash {
                    return Ok(Stored::Hashed { hash, grub_hash });
                }
                match value {
                    Some(value) => Ok(Stored::Value(value)),
                    None => Err(serde::de::Error::custom(
                        "attribute value without value, expression, cryptvalue or hashvalue",
                    )),
                }
            }
        }
        deserializer.deserialize_map(StoredVisitor)
    }
}

/// A node: its ordered group list and the attributes set directly on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// INVARIANT: contains `everything` exactly once, no duplicates, every entry an existing group.
    pub groups: Vec<Arc<str>>,
    #[serde(default)]
    pub attributes: BTreeMap<Arc<str>, Stored>,
    /// The tenant owning the node; `None` for the site's own (default) tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Arc<str>>,
}

/// A group: attributes members inherit, and an optional dynamic `noderange`.
/// Static membership is recorded on the nodes (their `groups` lists); the store keeps a
/// reverse index in `Store::members`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Group {
    #[serde(default)]
    pub attributes: BTreeMap<Arc<str>, Stored>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noderange: Option<Arc<str>>,
    /// The tenant owning the group; `None` for the site's own (default) tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Arc<str>>,
}

/// A user of the API (reference 1.2 `/users/`): a role and, for local accounts, an argon2id
/// password hash (PHC string). Keyed in the store by login name, `tenant/name` for tenant users.
/// Accounts without a hash authenticate through PAM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub role: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Arc<str>>,
}

/// A user group (reference 1.2 `/usergroups/`): members of the OS group of that name get its
/// role. Keyed like users (`tenant/group` for a tenant's groups).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserGroupRecord {
    pub role: Arc<str>,
}

/// One journaled change. Applying a sequence of ops is deterministic and never fails; ops that
/// no longer make sense (e.g. a set on a node deleted later in a torn replay) are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    NodeCreate {
        node: Arc<str>,
    },
    NodeDelete {
        node: Arc<str>,
    },
    NodeRename {
        from: Arc<str>,
        to: Arc<str>,
    },
    NodeSetGroups {
        node: Arc<str>,
        groups: Vec<Arc<str>>,
    },
    NodeSet {
        node: Arc<str>,
        attribute: Arc<str>,
        stored: Stored,
    },
    NodeClear {
        node: Arc<str>,
        attribute: Arc<str>,
    },
    GroupCreate {
        group: Arc<str>,
    },
    GroupDelete {
        group: Arc<str>,
    },
    GroupRename {
        from: Arc<str>,
        to: Arc<str>,
    },
    GroupSet {
        group: Arc<str>,
        attribute: Arc<str>,
        stored: Stored,
    },
    GroupClear {
        group: Arc<str>,
        attribute: Arc<str>,
    },
    GroupSetNoderange {
        group: Arc<str>,
        noderange: Option<Arc<str>>,
    },
    GlobalSet {
        key: Arc<str>,
        value: Option<serde_json::Value>,
    },
    /// Tag a node with its tenant (right after its creation by a tenant user).
    NodeSetTenant {
        node: Arc<str>,
        tenant: Option<Arc<str>>,
    },
    GroupSetTenant {
        group: Arc<str>,
        tenant: Option<Arc<str>>,
    },
    /// Create, replace (`Some`) or delete (`None`) a user.
    UserSet {
        user: Arc<str>,
        record: Option<UserRecord>,
    },
    UserGroupSet {
        group: Arc<str>,
        record: Option<UserGroupRecord>,
    },
}

/// What a node's attribute resolves to, with its provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub value: ResolvedValue,
    /// The group the value comes from, when it is not set on the node itself.
    pub inherited_from: Option<Arc<str>>,
    /// The expression text, when the value was computed from one.
    pub expression: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResolvedValue {
    /// Not set anywhere.
    Unset,
    Text(Arc<str>),
    /// A list attribute (`groups`).
    List(Vec<Arc<str>>),
    /// Secrets and hashes: only whether they are set.
    Protected {
        is_set: bool,
    },
    /// The expression could not be evaluated.
    Broken(String),
}

/// The whole configuration of one tenant (the default tenant for now).
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub(crate) nodes: FastMap<Arc<str>, Arc<Node>>,
    pub(crate) groups: FastMap<Arc<str>, Arc<Group>>,
    /// Reverse index: group → static member nodes (derived from the nodes' group lists).
    pub(crate) members: FastMap<Arc<str>, FastSet<Arc<str>>>,
    /// Alias → canonical node (derived from the nodes' `alias` attributes).
    pub(crate) aliases: FastMap<Arc<str>, Arc<str>>,
    pub(crate) globals: BTreeMap<Arc<str>, serde_json::Value>,
    pub(crate) users: BTreeMap<Arc<str>, Arc<UserRecord>>,
    pub(crate) usergroups: BTreeMap<Arc<str>, Arc<UserGroupRecord>>,
    /// Interned attribute names, so 100,000 nodes share one allocation per name.
    names: FastSet<Arc<str>>,
}

/// Attribute that lists a node's alternate names.
pub const ALIAS_ATTRIBUTE: &str = "alias";

impl Store {
    /// An empty configuration holding only the built-in group `everything`.
    pub fn new() -> Store {
        let mut store = Store::default();
        store.apply(&Op::GroupCreate {
            group: Arc::from(EVERYTHING),
        });
        store
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).map(|node| &**node)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name).map(|group| &**group)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn global(&self, key: &str) -> Option<&serde_json::Value> {
        self.globals.get(key)
    }

    pub fn globals(&self) -> &BTreeMap<Arc<str>, serde_json::Value> {
        &self.globals
    }

    /// A user by login name (`name`, or `tenant/name`).
    pub fn user(&self, login: &str) -> Option<&Arc<UserRecord>> {
        self.users.get(login)
    }

    pub fn users(&self) -> &BTreeMap<Arc<str>, Arc<UserRecord>> {
        &self.users
    }

    pub fn usergroup(&self, name: &str) -> Option<&Arc<UserGroupRecord>> {
        self.usergroups.get(name)
    }

    pub fn usergroups(&self) -> &BTreeMap<Arc<str>, Arc<UserGroupRecord>> {
        &self.usergroups
    }

    /// Install users and user groups loaded from a snapshot (see [`Store::from_parts`]).
    pub fn set_accounts(
        &mut self,
        users: BTreeMap<Arc<str>, Arc<UserRecord>>,
        usergroups: BTreeMap<Arc<str>, Arc<UserGroupRecord>>,
    ) {
        self.users = users;
        self.usergroups = usergroups;
    }

    /// The canonical name a node is known by: the node itself or one of its aliases.
    pub fn canonical_node(&self, name: &str) -> Option<Arc<str>> {
        if let Some((key, _)) = self.nodes.get_key_value(name) {
            return Some(key.clone());
        }
        self.aliases.get(name).cloned()
    }

    /// The interned node-name `Arc` for an existing node.
    pub fn node_key(&self, name: &str) -> Option<Arc<str>> {
        self.nodes.get_key_value(name).map(|(key, _)| key.clone())
    }

    pub fn group_key(&self, name: &str) -> Option<Arc<str>> {
        self.groups.get_key_value(name).map(|(key, _)| key.clone())
    }

    /// True if `name` is taken by a node, a group, or an alias.
    pub fn name_in_use(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
            || self.groups.contains_key(name)
            || self.aliases.contains_key(name)
    }

    /// Every node name, naturally sorted.
    pub fn node_names_sorted(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.nodes.keys().cloned().collect();
        sort_natural(&mut names);
        names
    }

    pub fn group_names_sorted(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.groups.keys().cloned().collect();
        sort_natural(&mut names);
        names
    }

    /// Static members of a group, naturally sorted.
    pub fn group_static_members(&self, group: &str) -> Vec<Arc<str>> {
        let mut members: Vec<Arc<str>> = self
            .members
            .get(group)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        sort_natural(&mut members);
        members
    }

    /// Expand a noderange against this configuration.
    pub fn expand(&self, text: &str) -> Result<Vec<Arc<str>>, noderange::NoderangeError> {
        noderange::expand(text, self)
    }

    /// Build a store from loaded records, rebuilding the derived indexes (members, aliases)
    /// and sharing one allocation per attribute name and per distinct expression.
    pub fn from_parts(
        nodes: HashMap<Arc<str>, Node>,
        groups: HashMap<Arc<str>, Group>,
        globals: BTreeMap<Arc<str>, serde_json::Value>,
    ) -> Store {
        let mut store = Store {
            globals,
            ..Store::default()
        };
        let mut expressions: HashMap<Arc<str>, Arc<ExpressionValue>> = HashMap::new();
        let mut share = |store: &mut Store, attributes: BTreeMap<Arc<str>, Stored>| {
            attributes
                .into_iter()
                .map(|(name, stored)| {
                    let name = store.intern(&name);
                    let stored = match stored {
                        Stored::Expression(expression) => Stored::Expression(
                            expressions
                                .entry(expression.text.clone())
                                .or_insert(expression)
                                .clone(),
                        ),
                        other => other,
                    };
                    (name, stored)
                })
                .collect::<BTreeMap<_, _>>()
        };
        for (name, mut group) in groups {
            group.attributes = share(&mut store, std::mem::take(&mut group.attributes));
            store.members.entry(name.clone()).or_default();
            store.groups.insert(name, Arc::new(group));
        }
        if !store.groups.contains_key(EVERYTHING) {
            store
                .groups
                .insert(Arc::from(EVERYTHING), Arc::new(Group::default()));
            store.members.entry(Arc::from(EVERYTHING)).or_default();
        }
        let group_keys: HashMap<Arc<str>, Arc<str>> = store
            .groups
            .keys()
            .map(|key| (key.clone(), key.clone()))
            .collect();
        for (name, mut node) in nodes {
            node.attributes = share(&mut store, std::mem::take(&mut node.attributes));
            // Keep the group-list invariant even for a hand-edited or older snapshot.
            let mut groups: Vec<Arc<str>> = Vec::with_capacity(node.groups.len());
            for group in &node.groups {
                if let Some(key) = group_keys.get(group)
                    && !groups.contains(key)
                {
                    groups.push(key.clone());
                }
            }
            if !groups.iter().any(|group| &**group == EVERYTHING)
                && let Some(key) = group_keys.get(EVERYTHING)
            {
                groups.push(key.clone());
            }
            node.groups = groups;
            for group in &node.groups {
                store
                    .members
                    .entry(group.clone())
                    .or_default()
                    .insert(name.clone());
            }
            store.index_aliases(&name, &node);
            store.nodes.insert(name, Arc::new(node));
        }
        store
    }

    fn intern(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(existing) = self.names.get(name) {
            return existing.clone();
        }
        self.names.insert(name.clone());
        name.clone()
    }

    /// Apply one op. Never fails; see the module documentation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::NodeCreate { node } => {
                if self.nodes.contains_key(node) {
                    return;
                }
                let everything = self
                    .group_key(EVERYTHING)
                    .unwrap_or_else(|| Arc::from(EVERYTHING));
                self.members
                    .entry(everything.clone())
                    .or_default()
                    .insert(node.clone());
                self.nodes.insert(
                    node.clone(),
                    Arc::new(Node {
                        groups: vec![everything],
                        attributes: BTreeMap::new(),
                        tenant: None,
                    }),
                );
            }
            Op::NodeDelete { node } => {
                if let Some(removed) = self.nodes.remove(node) {
                    for group in &removed.groups {
                        if let Some(set) = self.members.get_mut(group) {
                            set.remove(node);
                        }
                    }
                    self.unindex_aliases(node, &removed);
                }
            }
            Op::NodeRename { from, to } => {
                if self.nodes.contains_key(to) {
                    return;
                }
                if let Some(record) = self.nodes.remove(from) {
                    for group in &record.groups {
                        if let Some(set) = self.members.get_mut(group) {
                            set.remove(from);
                            set.insert(to.clone());
                        }
                    }
                    self.unindex_aliases(from, &record);
                    self.index_aliases(to, &record);
                    self.nodes.insert(to.clone(), record);
                }
            }
            Op::NodeSetGroups { node, groups } => {
                let Some(record) = self.nodes.get(node) else {
                    return;
                };
                let old_groups = record.groups.clone();
                let mut new_groups: Vec<Arc<str>> = Vec::with_capacity(groups.len() + 1);
                for group in groups {
                    if let Some(key) = self.group_key(group)
                        && !new_groups.contains(&key)
                    {
                        new_groups.push(key);
                    }
                }
                if !new_groups.iter().any(|group| &**group == EVERYTHING)
                    && let Some(everything) = self.group_key(EVERYTHING)
                {
                    new_groups.push(everything);
                }
                for group in &old_groups {
                    if let Some(set) = self.members.get_mut(group) {
                        set.remove(node);
                    }
                }
                for group in &new_groups {
                    self.members
                        .entry(group.clone())
                        .or_default()
                        .insert(node.clone());
                }
                if let Some(record) = self.nodes.get_mut(node) {
                    Arc::make_mut(record).groups = new_groups;
                }
            }
            Op::NodeSet {
                node,
                attribute,
                stored,
            } => {
                let attribute = self.intern(attribute);
                let stored = stored.clone();
                let Some(record) = self.nodes.get(node).cloned() else {
                    return;
                };
                let is_alias = &*attribute == ALIAS_ATTRIBUTE;
                if is_alias {
                    self.unindex_aliases(node, &record);
                }
                let record = self.nodes.get_mut(node).map(Arc::make_mut);
                if let Some(record) = record {
                    record.attributes.insert(attribute, stored);
                }
                if is_alias && let Some(record) = self.nodes.get(node).cloned() {
                    self.index_aliases(node, &record);
                }
            }
            Op::NodeClear { node, attribute } => {
                let Some(record) = self.nodes.get(node).cloned() else {
                    return;
                };
                let is_alias = &**attribute == ALIAS_ATTRIBUTE;
                if is_alias {
                    self.unindex_aliases(node, &record);
                }
                if let Some(record) = self.nodes.get_mut(node) {
                    Arc::make_mut(record).attributes.remove(attribute);
                }
            }
            Op::GroupCreate { group } => {
                if !self.groups.contains_key(group) {
                    self.groups
                        .insert(group.clone(), Arc::new(Group::default()));
                    self.members.entry(group.clone()).or_default();
                }
            }
            Op::GroupDelete { group } => {
                if self.groups.remove(group).is_some()
                    && let Some(members) = self.members.remove(group)
                {
                    for node in members {
                        if let Some(record) = self.nodes.get_mut(&node) {
                            Arc::make_mut(record).groups.retain(|name| name != group);
                        }
                    }
                }
            }
            Op::GroupRename { from, to } => {
                if self.groups.contains_key(to) {
                    return;
                }
                if let Some(record) = self.groups.remove(from) {
                    self.groups.insert(to.clone(), record);
                    let members = self.members.remove(from).unwrap_or_default();
                    for node in &members {
                        if let Some(record) = self.nodes.get_mut(node) {
                            for name in &mut Arc::make_mut(record).groups {
                                if name == from {
                                    *name = to.clone();
                                }
                            }
                        }
                    }
                    self.members.insert(to.clone(), members);
                }
            }
            Op::GroupSet {
                group,
                attribute,
                stored,
            } => {
                let attribute = self.intern(attribute);
                if let Some(record) = self.groups.get_mut(group) {
                    Arc::make_mut(record)
                        .attributes
                        .insert(attribute, stored.clone());
                }
            }
            Op::GroupClear { group, attribute } => {
                if let Some(record) = self.groups.get_mut(group) {
                    Arc::make_mut(record).attributes.remove(attribute);
                }
            }
            Op::GroupSetNoderange { group, noderange } => {
                if let Some(record) = self.groups.get_mut(group) {
                    Arc::make_mut(record).noderange = noderange.clone();
                }
            }
            Op::GlobalSet { key, value } => match value {
                Some(value) => {
                    self.globals.insert(key.clone(), value.clone());
                }
                None => {
                    self.globals.remove(key);
                }
            },
            Op::NodeSetTenant { node, tenant } => {
                if let Some(record) = self.nodes.get_mut(node) {
                    Arc::make_mut(record).tenant = tenant.clone();
                }
            }
            Op::GroupSetTenant { group, tenant } => {
                if let Some(record) = self.groups.get_mut(group) {
                    Arc::make_mut(record).tenant = tenant.clone();
                }
            }
            Op::UserSet { user, record } => match record {
                Some(record) => {
                    self.users.insert(user.clone(), Arc::new(record.clone()));
                }
                None => {
                    self.users.remove(user);
                }
            },
            Op::UserGroupSet { group, record } => match record {
                Some(record) => {
                    self.usergroups
                        .insert(group.clone(), Arc::new(record.clone()));
                }
                None => {
                    self.usergroups.remove(group);
                }
            },
        }
    }

    fn alias_list(record: &Node) -> Vec<Arc<str>> {
        match record.attributes.get(ALIAS_ATTRIBUTE) {
            Some(Stored::Value(text)) => split_list(text),
            _ => Vec::new(),
        }
    }

    fn index_aliases(&mut self, node: &Arc<str>, record: &Node) {
        for alias in Self::alias_list(record) {
            self.aliases.insert(alias, node.clone());
        }
    }

    fn unindex_aliases(&mut self, node: &str, record: &Node) {
        for alias in Self::alias_list(record) {
            if self
                .aliases
                .get(&alias)
                .is_some_and(|owner| &**owner == node)
            {
                self.aliases.remove(&alias);
            }
        }
    }

    /// The stored value a node sees for an attribute: its own, else the first group in its
    /// list that defines it. Returns the value and the group it came from.
    pub fn effective_stored<'a>(
        &'a self,
        node: &'a Node,
        attribute: &str,
    ) -> Option<(&'a Stored, Option<&'a Arc<str>>)> {
        if let Some(stored) = node.attributes.get(attribute) {
            return Some((stored, None));
        }
        for group_name in &node.groups {
            if let Some(group) = self.groups.get(group_name)
                && let Some(stored) = group.attributes.get(attribute)
            {
                return Some((stored, Some(group_name)));
            }
        }
        None
    }

    /// Resolve one attribute (canonical name) of a node.
    pub fn resolve(&self, node_name: &str, attribute: &str) -> Option<Resolved> {
        let node = self.nodes.get(node_name)?;
        Some(self.resolve_in(node_name, node, attribute))
    }

    pub(crate) fn resolve_in(&self, node_name: &str, node: &Node, attribute: &str) -> Resolved {
        if attribute == "groups" {
            return Resolved {
                value: ResolvedValue::List(node.groups.clone()),
                inherited_from: None,
                expression: None,
            };
        }
        match self.effective_stored(node, attribute) {
            None => Resolved {
                value: ResolvedValue::Unset,
                inherited_from: None,
                expression: None,
            },
            Some((stored, inherited_from)) => {
                let inherited_from = inherited_from.cloned();
                match stored {
                    Stored::Value(text) => Resolved {
                        value: ResolvedValue::Text(text.clone()),
                        inherited_from,
                        expression: None,
                    },
                    Stored::Sealed(_) | Stored::Hashed { .. } => Resolved {
                        value: ResolvedValue::Protected { is_set: true },
                        inherited_from,
                        expression: None,
                    },
                    Stored::Expression(expression) => {
                        let mut stack = Vec::new();
                        let value = match self
                            .evaluate(node_name, node, expression, attribute, &mut stack)
                        {
                            Ok(text) => ResolvedValue::Text(Arc::from(text)),
                            Err(reason) => ResolvedValue::Broken(reason),
                        };
                        Resolved {
                            value,
                            inherited_from,
                            expression: Some(expression.text.clone()),
                        }
                    }
                }
            }
        }
    }

    /// Effective plain text of an attribute, evaluating expressions; `Ok(None)` when unset.
    /// Used by noderange filters and by expressions referencing other attributes.
    fn text_value(
        &self,
        node_name: &str,
        node: &Node,
        attribute: &str,
        stack: &mut Vec<Arc<str>>,
    ) -> Result<Option<String>, String> {
        if attribute == "groups" {
            return Ok(Some(join_list(&node.groups)));
        }
        match self.effective_stored(node, attribute) {
            None => Ok(None),
            Some((Stored::Value(text), _)) => Ok(Some(text.to_string())),
            Some((Stored::Sealed(_) | Stored::Hashed { .. }, _)) => {
                Err(format!("{attribute} is protected and cannot be read here"))
            }
            Some((Stored::Expression(expression), _)) => self
                .evaluate(node_name, node, expression, attribute, stack)
                .map(Some),
        }
    }

    fn evaluate(
        &self,
        node_name: &str,
        node: &Node,
        expression: &ExpressionValue,
        attribute: &str,
        stack: &mut Vec<Arc<str>>,
    ) -> Result<String, String> {
        if stack.iter().any(|seen| &**seen == attribute) {
            let mut chain: Vec<&str> = stack.iter().map(|name| &**name).collect();
            chain.push(attribute);
            return Err(format!("expression cycle: {}", chain.join(" -> ")));
        }
        if stack.len() >= MAX_EXPRESSION_DEPTH {
            return Err(format!(
                "expressions nested deeper than {MAX_EXPRESSION_DEPTH} levels"
            ));
        }
        let template = match &expression.compiled {
            Ok(template) => template,
            Err(reason) => return Err(reason.clone()),
        };
        stack.push(Arc::from(attribute));
        let context = NodeContext {
            store: self,
            node_name,
            node,
            stack: std::cell::RefCell::new(std::mem::take(stack)),
        };
        let result = template
            .evaluate(&context)
            .map_err(|error| error.to_string());
        *stack = context.stack.into_inner();
        stack.pop();
        result
    }

    /// Evaluate an ad-hoc expression in a node's context without storing it
    /// (`attributes/expression`, templated file names, rename expressions).
    pub fn evaluate_for_node(
        &self,
        node_name: &str,
        expression: &ExpressionValue,
    ) -> Result<String, String> {
        let Some((key, node)) = self.nodes.get_key_value(node_name) else {
            return Err(format!("node {node_name} not found"));
        };
        let mut stack = Vec::new();
        self.evaluate(key, node, expression, "(expression)", &mut stack)
    }

    /// Names of every attribute a node has a value for (own or inherited), sorted.
    pub fn effective_attribute_names(&self, node: &Node) -> BTreeSet<Arc<str>> {
        let mut names: BTreeSet<Arc<str>> = node.attributes.keys().cloned().collect();
        for group_name in &node.groups {
            if let Some(group) = self.groups.get(group_name) {
                names.extend(group.attributes.keys().cloned());
            }
        }
        names
    }

    /// Expression attributes (canonical names) of a node whose value depends, directly or
    /// transitively, on one of `changed`, or on the node name when `name_changed`.
    /// The result includes `changed` itself.
    pub fn dependents(
        &self,
        node: &Node,
        changed: &BTreeSet<Arc<str>>,
        name_changed: bool,
    ) -> BTreeSet<Arc<str>> {
        let mut result = changed.clone();
        let mut expressions: Vec<(Arc<str>, &ExpressionValue)> = Vec::new();
        for name in self.effective_attribute_names(node) {
            if let Some((Stored::Expression(expression), _)) = self.effective_stored(node, &name) {
                expressions.push((name, expression));
            }
        }
        if expressions.is_empty() {
            return result;
        }
        // Iterate to a fixpoint: chains are short (bounded by the expression depth limit).
        loop {
            let mut grew = false;
            for (name, expression) in &expressions {
                if result.contains(name) && !(changed.contains(name)) {
                    continue;
                }
                let depends = (name_changed && expression.uses_node_name())
                    || expression
                        .canonical_references
                        .iter()
                        .any(|reference| result.contains(reference) && reference != name);
                if depends && result.insert(name.clone()) {
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        result
    }
}

/// Evaluation context for a node's expressions.
struct NodeContext<'a> {
    store: &'a Store,
    node_name: &'a str,
    node: &'a Node,
    stack: std::cell::RefCell<Vec<Arc<str>>>,
}

impl ExpressionContext for NodeContext<'_> {
    fn node_name(&self) -> &str {
        self.node_name
    }

    fn attribute(&self, name: &str) -> Result<Option<std::borrow::Cow<'_, str>>, String> {
        let canonical = catalogue::canonical_name(name).map_err(|error| error.to_string())?;
        let mut stack = self.stack.borrow_mut();
        let value = self
            .store
            .text_value(self.node_name, self.node, &canonical, &mut stack)
            .map_err(|reason| format!("{canonical}: {reason}"))?;
        Ok(value.map(std::borrow::Cow::Owned))
    }
}

impl Universe for Store {
    fn node(&self, name: &str) -> Option<Arc<str>> {
        self.canonical_node(name)
    }

    fn group(&self, name: &str) -> Option<GroupMembers> {
        let record = self.groups.get(name)?;
        let nodes = self
            .members
            .get(name)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        Some(GroupMembers {
            nodes,
            noderange: record.noderange.as_ref().map(|text| text.to_string()),
        })
    }

    fn group_names(&self) -> Vec<Arc<str>> {
        self.groups.keys().cloned().collect()
    }

    fn for_each_node(&self, visit: &mut dyn FnMut(&Arc<str>)) {
        for name in self.nodes.keys() {
            visit(name);
        }
    }

    fn filter_nodes(
        &self,
        attribute_pattern: &str,
        accepts: &dyn Fn(&str) -> bool,
        select: &mut dyn FnMut(&Arc<str>),
    ) -> Result<(), String> {
        if catalogue::is_wildcard(attribute_pattern) {
            return filter_nodes_slowly(self, attribute_pattern, accepts, select);
        }
        // Resolve the name once, then walk the nodes in one pass.
        let canonical =
            catalogue::canonical_name(attribute_pattern).map_err(|error| error.to_string())?;
        if catalogue::sensitivity(&canonical) != Sensitivity::Plain {
            return Err(format!(
                "{canonical} is protected and cannot be used in a filter"
            ));
        }
        if canonical == "groups" {
            return filter_nodes_slowly(self, &canonical, accepts, select);
        }
        // Attribute names are interned: compare pointers, not strings. No interned name means
        // no node or group sets the attribute at all.
        let Some(interned) = self.names.get(canonical.as_str()).cloned() else {
            if accepts("") {
                for name in self.nodes.keys() {
                    select(name);
                }
            }
            return Ok(());
        };
        // What each group contributes, keyed by the address of its (interned) name: whether it
        // defines the attribute, and for a plain value whether that value is accepted.
        let mut groups: FastMap<usize, Option<(&Stored, Option<bool>)>> = FastMap::default();
        for (name, node) in &self.nodes {
            let mut stored = find_interned(&node.attributes, &interned);
            let mut cached_verdict = None;
            if stored.is_none() {
                for group_name in &node.groups {
                    let key = Arc::as_ptr(group_name) as *const u8 as usize;
                    let contribution = *groups.entry(key).or_insert_with(|| {
                        let group = self.groups.get(group_name)?;
                        let value = group
                            .attributes
                            .iter()
                            .find(|(k, _)| Arc::ptr_eq(k, &interned))?
                            .1;
                        let verdict = match value {
                            Stored::Value(text) => Some(accepts(text)),
                            Stored::Sealed(_) | Stored::Hashed { .. } => Some(false),
                            Stored::Expression(_) => None,
                        };
                        Some((value, verdict))
                    });
                    if let Some((value, verdict)) = contribution {
                        stored = Some(value);
                        cached_verdict = verdict;
                        break;
                    }
                }
            }
            let matched = match (cached_verdict, stored) {
                (Some(verdict), _) => verdict,
                (None, None) => accepts(""),
                (None, Some(Stored::Value(text))) => accepts(text),
                (None, Some(Stored::Expression(expression))) => {
                    let mut stack = Vec::new();
                    self.evaluate(name, node, expression, &canonical, &mut stack)
                        .is_ok_and(|value| accepts(&value))
                }
                (None, Some(Stored::Sealed(_) | Stored::Hashed { .. })) => false,
            };
            if matched {
                select(name);
            }
        }
        Ok(())
    }

    fn attribute_matches(
        &self,
        node_name: &str,
        attribute_pattern: &str,
        visit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<bool, String> {
        let Some(node) = self.nodes.get(node_name) else {
            return Ok(false);
        };
        let check_name = |name: &str| -> Result<(), String> {
            if catalogue::sensitivity(name) != Sensitivity::Plain {
                return Err(format!(
                    "{name} is protected and cannot be used in a filter"
                ));
            }
            Ok(())
        };
        if catalogue::is_wildcard(attribute_pattern) {
            if catalogue::sensitivity(attribute_pattern) != Sensitivity::Plain {
                return Err(format!(
                    "{attribute_pattern} matches protected attributes, which cannot be filtered"
                ));
            }
            for name in self.effective_attribute_names(node) {
                if !catalogue::wildcard_match(attribute_pattern, &name)
                    || catalogue::sensitivity(&name) != Sensitivity::Plain
                {
                    continue;
                }
                let mut stack = Vec::new();
                let value = self
                    .text_value(node_name, node, &name, &mut stack)
                    .unwrap_or_default();
                if let Some(value) = value
                    && visit(&value)
                {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        // Names already in canonical form (the common case) skip the alias resolution.
        let canonical: std::borrow::Cow<'_, str> = if node
            .attributes
            .contains_key(attribute_pattern)
            || catalogue::spec(attribute_pattern).is_some_and(|spec| spec.name == attribute_pattern)
        {
            std::borrow::Cow::Borrowed(attribute_pattern)
        } else {
            std::borrow::Cow::Owned(
                catalogue::canonical_name(attribute_pattern).map_err(|error| error.to_string())?,
            )
        };
        check_name(&canonical)?;
        // A broken expression never matches a filter; it is not an error for the whole range.
        match self.effective_stored(node, &canonical) {
            None => Ok(false),
            Some((Stored::Value(text), _)) => Ok(visit(text)),
            Some((Stored::Sealed(_) | Stored::Hashed { .. }, _)) => Ok(false),
            Some((Stored::Expression(expression), _)) => {
                let mut stack = Vec::new();
                match self.evaluate(node_name, node, expression, &canonical, &mut stack) {
                    Ok(value) => Ok(visit(&value)),
                    Err(_) => Ok(false),
                }
            }
        }
    }
}

/// A value by interned attribute name: pointer comparisons over a node's few entries avoid
/// touching every key's text.
fn find_interned<'a>(
    attributes: &'a BTreeMap<Arc<str>, Stored>,
    interned: &Arc<str>,
) -> Option<&'a Stored> {
    attributes
        .iter()
        .find(|(key, _)| Arc::ptr_eq(key, interned))
        .map(|(_, stored)| stored)
}

/// The trait's generic filter, for wildcard attribute names.
fn filter_nodes_slowly(
    store: &Store,
    attribute_pattern: &str,
    accepts: &dyn Fn(&str) -> bool,
    select: &mut dyn FnMut(&Arc<str>),
) -> Result<(), String> {
    for name in store.nodes.keys() {
        let mut visited = false;
        let matched = store.attribute_matches(name, attribute_pattern, &mut |value| {
            visited = true;
            accepts(value)
        })?;
        if matched || (!visited && accepts("")) {
            select(name);
        }
    }
    Ok(())
}

/// Split a comma-separated list, trimming blanks.
pub fn split_list(text: &str) -> Vec<Arc<str>> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(Arc::from)
        .collect()
}

pub fn join_list(items: &[Arc<str>]) -> String {
    let mut out = String::new();
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out
}

/// Sort names in natural order, computing each sort key once.
pub fn sort_natural(names: &mut Vec<Arc<str>>) {
    noderange::sort_naturally(names);
}
