//! Turning requested changes into journaled [`Op`]s: every validation happens here, against one
//! consistent view of the [`Store`], before anything is applied. A plan either produces all of
//! its ops or fails as a whole, so a request is atomic.
//!
//! Rules implemented here follow Confluent (reference sections 3.3 and 3.4): the first group in a
//! node's list that defines an attribute wins; setting a group's `nodes` puts the group at the
//! front of each new member's list; clearing re-inherits while setting "" masks; a group with a
//! dynamic `noderange` has neither static members nor attributes; names are unique across nodes,
//! groups and node aliases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::catalogue::{self, Sensitivity, ValueKind};
use super::model::{ALIAS_ATTRIBUTE, EVERYTHING, ExpressionValue, Op, Store, Stored, split_list};
use super::noderange;
use super::secrets::{self, MasterKey};

/// A requested value for one attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeInput {
    /// A value as typed by a user: an expression if it contains `{field}`s, else a literal.
    Auto(String),
    /// An explicit literal (`{"value": ...}`): braces are not interpreted.
    Literal(String),
    /// An explicit expression (`{"expression": ...}`).
    Expression(String),
    /// Remove the value set at this level, so that it is inherited again.
    Clear,
    /// For list attributes (`groups`, `nodes`): the whole new list.
    List(Vec<String>),
    /// For list attributes: add these at the front (`groups,=g`).
    Prepend(Vec<String>),
    /// For list attributes: remove these (`groups^=g`).
    Remove(Vec<String>),
}

/// Ops to commit plus warnings to show the user (for example "cleared, now inherited from g").
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigChangeError {
    #[error(transparent)]
    UnknownAttribute(#[from] catalogue::UnknownAttributeError),
    #[error(transparent)]
    InvalidValue(#[from] catalogue::InvalidValueError),
    #[error("invalid expression for {attribute}: {reason}")]
    BadExpression { attribute: String, reason: String },
    #[error("{attribute} does not support expressions")]
    ExpressionNotAllowed { attribute: String },
    #[error("{attribute} cannot be set on a {target}")]
    NotSettableHere {
        attribute: String,
        target: &'static str,
    },
    #[error("wildcard attribute name {0} can only be read or cleared")]
    WildcardSet(String),
    #[error("node {0} does not exist")]
    NoSuchNode(String),
    #[error("group {0} does not exist")]
    NoSuchGroup(String),
    #[error("name {name} is already used by a {owner}")]
    NameInUse { name: String, owner: &'static str },
    #[error("invalid name {name}")]
    BadName {
        name: String,
        #[source]
        source: noderange::NoderangeError,
    },
    #[error("group {group} has a dynamic noderange, so it cannot have {what}")]
    DynamicGroup { group: String, what: &'static str },
    #[error("invalid noderange for group {group}")]
    BadGroupNoderange {
        group: String,
        #[source]
        source: noderange::NoderangeError,
    },
    #[error("the built-in group everything cannot be {0}")]
    BuiltinGroup(&'static str),
    #[error("{attribute} takes a list; {operation} is not possible")]
    ListOperation {
        attribute: String,
        operation: &'static str,
    },
    #[error("{0} is not a list attribute; add or remove is not possible")]
    NotAList(String),
    #[error("the configuration journal is unavailable, nothing was changed")]
    JournalUnavailable(#[source] super::journal::JournalError),
    #[error("{kind} {name} does not exist")]
    NoSuchAccount { kind: &'static str, name: String },
    #[error("{kind} {name} already exists")]
    AccountExists { kind: &'static str, name: String },
}

/// Which kind of record an attribute is being set on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Node,
    Group,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Node => "node",
            Target::Group => "group",
        }
    }
}

/// An attribute change already validated, independent of which node it lands on.
enum Prepared {
    Store(Stored),
    Clear,
    Groups(ListChange),
    Members(ListChange),
    Noderange(Option<Arc<str>>),
    Aliases(Vec<Arc<str>>),
}

enum ListChange {
    Replace(Vec<Arc<str>>),
    Prepend(Vec<Arc<str>>),
    Remove(Vec<Arc<str>>),
}

/// Validate an attribute name and value once, so that setting it on 10,000 nodes costs one
/// validation (and one password hash for `crypted.*`).
fn prepare(
    name: &str,
    input: &AttributeInput,
    target: Target,
    key: &MasterKey,
) -> Result<(Arc<str>, Prepared), ConfigChangeError> {
    if catalogue::is_wildcard(name) {
        if *input == AttributeInput::Clear {
            return Err(ConfigChangeError::WildcardSet(name.to_string()));
        }
        return Err(ConfigChangeError::WildcardSet(name.to_string()));
    }
    let canonical = catalogue::canonical_name(name)?;
    let spec = catalogue::spec(&canonical);
    if let Some(spec) = spec {
        let allowed = match target {
            Target::Node => spec.node,
            Target::Group => spec.group,
        };
        if !allowed {
            return Err(ConfigChangeError::NotSettableHere {
                attribute: canonical,
                target: target.label(),
            });
        }
    }
    let canonical_arc: Arc<str> = Arc::from(canonical.as_str());
    let list_change = |input: &AttributeInput| -> Result<ListChange, ConfigChangeError> {
        let to_arcs = |items: &[String]| -> Vec<Arc<str>> {
            items
                .iter()
                .flat_map(|item| split_list(item))
                .collect::<Vec<_>>()
        };
        Ok(match input {
            AttributeInput::Auto(text) | AttributeInput::Literal(text) => {
                ListChange::Replace(split_list(text))
            }
            AttributeInput::List(items) => ListChange::Replace(to_arcs(items)),
            AttributeInput::Prepend(items) => ListChange::Prepend(to_arcs(items)),
            AttributeInput::Remove(items) => ListChange::Remove(to_arcs(items)),
            AttributeInput::Clear => ListChange::Replace(Vec::new()),
            AttributeInput::Expression(_) => {
                return Err(ConfigChangeError::ExpressionNotAllowed {
                    attribute: canonical.clone(),
                });
            }
        })
    };
    match canonical.as_str() {
        "groups" => return Ok((canonical_arc, Prepared::Groups(list_change(input)?))),
        "nodes" => return Ok((canonical_arc, Prepared::Members(list_change(input)?))),
        "noderange" => {
            let text = match input {
                AttributeInput::Clear => None,
                AttributeInput::Auto(text) | AttributeInput::Literal(text) => {
                    if text.trim().is_empty() {
                        None
                    } else {
                        Some(text.trim().to_string())
                    }
                }
                _ => {
                    return Err(ConfigChangeError::ListOperation {
                        attribute: canonical,
                        operation: "a list edit or an expression",
                    });
                }
            };
            if let Some(text) = &text {
                noderange::NodeRange::parse(text).map_err(|source| {
                    ConfigChangeError::BadGroupNoderange {
                        group: String::new(),
                        source,
                    }
                })?;
            }
            return Ok((canonical_arc, Prepared::Noderange(text.map(Arc::from))));
        }
        ALIAS_ATTRIBUTE => {
            let names = match input {
                AttributeInput::Clear => Vec::new(),
                AttributeInput::Auto(text) | AttributeInput::Literal(text) => split_list(text),
                AttributeInput::List(items) => {
                    items.iter().flat_map(|item| split_list(item)).collect()
                }
                _ => {
                    return Err(ConfigChangeError::ExpressionNotAllowed {
                        attribute: canonical,
                    });
                }
            };
            for alias in &names {
                noderange::validate_name(alias).map_err(|source| ConfigChangeError::BadName {
                    name: alias.to_string(),
                    source,
                })?;
            }
            return Ok((canonical_arc, Prepared::Aliases(names)));
        }
        _ => {}
    }
    let (text, mode) = match input {
        AttributeInput::Clear => return Ok((canonical_arc, Prepared::Clear)),
        AttributeInput::Auto(text) => (text.as_str(), InputMode::Auto),
        AttributeInput::Literal(text) => (text.as_str(), InputMode::Literal),
        AttributeInput::Expression(text) => (text.as_str(), InputMode::Expression),
        AttributeInput::List(items) => {
            if spec.is_some_and(|spec| matches!(spec.kind, ValueKind::List | ValueKind::IpList)) {
                let joined = items.join(",");
                let value = catalogue::validate(&canonical, &joined)?;
                return Ok((
                    canonical_arc,
                    Prepared::Store(Stored::Value(Arc::from(value))),
                ));
            }
            return Err(ConfigChangeError::NotAList(canonical));
        }
        AttributeInput::Prepend(_) | AttributeInput::Remove(_) => {
            return Err(ConfigChangeError::NotAList(canonical));
        }
    };
    match catalogue::sensitivity(&canonical) {
        Sensitivity::Secret => {
            if mode == InputMode::Expression {
                return Err(ConfigChangeError::ExpressionNotAllowed {
                    attribute: canonical,
                });
            }
            let sealed = key.seal(text.as_bytes(), canonical.as_bytes());
            return Ok((
                canonical_arc,
                Prepared::Store(Stored::Sealed(Box::new(sealed))),
            ));
        }
        Sensitivity::Crypted => {
            if mode == InputMode::Expression {
                return Err(ConfigChangeError::ExpressionNotAllowed {
                    attribute: canonical,
                });
            }
            let hash = secrets::sha512_crypt(text);
            let grub_hash = secrets::grub_pbkdf2(text);
            return Ok((
                canonical_arc,
                Prepared::Store(Stored::Hashed {
                    hash: Arc::from(hash),
                    grub_hash: Some(Arc::from(grub_hash)),
                }),
            ));
        }
        Sensitivity::Plain => {}
    }
    let wants_expression = match mode {
        InputMode::Literal => false,
        InputMode::Expression => true,
        InputMode::Auto => text.contains('{') || text.contains('}'),
    };
    if wants_expression {
        let parsed =
            ExpressionValue::parse(text).map_err(|reason| ConfigChangeError::BadExpression {
                attribute: canonical.clone(),
                reason,
            })?;
        let is_expression = parsed
            .compiled
            .as_ref()
            .is_ok_and(|template| template.is_expression());
        if is_expression {
            if !catalogue::supports_expressions(&canonical) {
                return Err(ConfigChangeError::ExpressionNotAllowed {
                    attribute: canonical,
                });
            }
            return Ok((
                canonical_arc,
                Prepared::Store(Stored::Expression(Arc::new(parsed))),
            ));
        }
        // Only escaped braces: the value is the unescaped literal.
        let literal = parsed
            .compiled
            .ok()
            .and_then(|template| template.literal())
            .unwrap_or_default();
        let value = catalogue::validate(&canonical, &literal)?;
        return Ok((
            canonical_arc,
            Prepared::Store(Stored::Value(Arc::from(value))),
        ));
    }
    let value = catalogue::validate(&canonical, text)?;
    Ok((
        canonical_arc,
        Prepared::Store(Stored::Value(Arc::from(value))),
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum InputMode {
    Auto,
    Literal,
    Expression,
}

/// Names allocated within one plan (new groups, aliases) so that later steps of the same plan
/// see them and duplicates inside one request are caught.
#[derive(Default)]
struct Pending {
    new_groups: HashSet<Arc<str>>,
    new_nodes: HashSet<Arc<str>>,
    aliases: HashMap<Arc<str>, Arc<str>>,
}

impl Pending {
    fn group_exists(&self, store: &Store, name: &str) -> bool {
        store.group(name).is_some() || self.new_groups.contains(name)
    }
}

fn check_new_name(store: &Store, pending: &Pending, name: &str) -> Result<(), ConfigChangeError> {
    noderange::validate_name(name).map_err(|source| ConfigChangeError::BadName {
        name: name.to_string(),
        source,
    })?;
    let owner = if store.node(name).is_some() || pending.new_nodes.contains(name) {
        Some("node")
    } else if pending.group_exists(store, name) {
        Some("group")
    } else if store.aliases.contains_key(name) || pending.aliases.contains_key(name) {
        Some("node alias")
    } else {
        None
    };
    match owner {
        Some(owner) => Err(ConfigChangeError::NameInUse {
            name: name.to_string(),
            owner,
        }),
        None => Ok(()),
    }
}

/// Ensure every group in `names` exists, creating the missing ones (as Confluent does when a
/// node is put in a group that does not exist yet).
fn ensure_groups(
    store: &Store,
    pending: &mut Pending,
    names: &[Arc<str>],
    ops: &mut Vec<Op>,
) -> Result<(), ConfigChangeError> {
    for name in names {
        if pending.group_exists(store, name) {
            if let Some(group) = store.group(name)
                && group.noderange.is_some()
            {
                return Err(ConfigChangeError::DynamicGroup {
                    group: name.to_string(),
                    what: "static members",
                });
            }
            continue;
        }
        check_new_name(store, pending, name)?;
        pending.new_groups.insert(name.clone());
        ops.push(Op::GroupCreate {
            group: name.clone(),
        });
    }
    Ok(())
}

/// Create nodes with initial attributes.
pub fn create_nodes(
    store: &Store,
    key: &MasterKey,
    names: &[String],
    attributes: &[(String, AttributeInput)],
) -> Result<Plan, ConfigChangeError> {
    let mut pending = Pending::default();
    let mut plan = Plan::default();
    let mut created: Vec<Arc<str>> = Vec::with_capacity(names.len());
    for name in names {
        check_new_name(store, &pending, name)?;
        let name: Arc<str> = Arc::from(name.as_str());
        pending.new_nodes.insert(name.clone());
        plan.ops.push(Op::NodeCreate { node: name.clone() });
        created.push(name);
    }
    set_node_attributes_inner(store, key, &created, attributes, &mut pending, &mut plan)?;
    Ok(plan)
}

/// Set or clear attributes on existing nodes.
pub fn set_node_attributes(
    store: &Store,
    key: &MasterKey,
    nodes: &[Arc<str>],
    attributes: &[(String, AttributeInput)],
) -> Result<Plan, ConfigChangeError> {
    for node in nodes {
        if store.node(node).is_none() {
            return Err(ConfigChangeError::NoSuchNode(node.to_string()));
        }
    }
    let mut pending = Pending::default();
    let mut plan = Plan::default();
    set_node_attributes_inner(store, key, nodes, attributes, &mut pending, &mut plan)?;
    Ok(plan)
}

fn set_node_attributes_inner(
    store: &Store,
    key: &MasterKey,
    nodes: &[Arc<str>],
    attributes: &[(String, AttributeInput)],
    pending: &mut Pending,
    plan: &mut Plan,
) -> Result<(), ConfigChangeError> {
    for (name, input) in attributes {
        // Clearing with a wildcard clears every matching attribute set on each node.
        if catalogue::is_wildcard(name) && *input == AttributeInput::Clear {
            for node in nodes {
                if let Some(record) = store.node(node) {
                    for attribute in record.attributes.keys() {
                        if catalogue::wildcard_match(name, attribute) {
                            plan.ops.push(Op::NodeClear {
                                node: node.clone(),
                                attribute: attribute.clone(),
                            });
                        }
                    }
                }
            }
            continue;
        }
        let (attribute, prepared) = prepare(name, input, Target::Node, key)?;
        match prepared {
            Prepared::Store(stored) => {
                for node in nodes {
                    plan.ops.push(Op::NodeSet {
                        node: node.clone(),
                        attribute: attribute.clone(),
                        stored: stored.clone(),
                    });
                }
            }
            Prepared::Clear => {
                for node in nodes {
                    let record = store.node(node);
                    let set_here =
                        record.is_some_and(|record| record.attributes.contains_key(&attribute));
                    if set_here {
                        plan.ops.push(Op::NodeClear {
                            node: node.clone(),
                            attribute: attribute.clone(),
                        });
                        if let Some(record) = record {
                            let mut without = record.clone();
                            without.attributes.remove(&attribute);
                            if let Some((_, Some(group))) =
                                store.effective_stored(&without, &attribute)
                            {
                                plan.warnings.push(format!(
                                    "{node}: {attribute} is now inherited from group {group}"
                                ));
                            }
                        }
                    } else if let Some(record) = record
                        && let Some((_, Some(group))) = store.effective_stored(record, &attribute)
                    {
                        plan.warnings.push(format!(
                            "{node}: {attribute} is inherited from group {group} and was not cleared; clear it on the group or set it on the node"
                        ));
                    }
                }
            }
            Prepared::Groups(change) => {
                let mentioned: Vec<Arc<str>> = match &change {
                    ListChange::Replace(list) | ListChange::Prepend(list) => list.clone(),
                    ListChange::Remove(_) => Vec::new(),
                };
                if let ListChange::Remove(list) = &change
                    && list.iter().any(|group| &**group == EVERYTHING)
                {
                    return Err(ConfigChangeError::BuiltinGroup("removed from a node"));
                }
                ensure_groups(store, pending, &mentioned, &mut plan.ops)?;
                for node in nodes {
                    let current: Vec<Arc<str>> = store
                        .node(node)
                        .map(|record| record.groups.clone())
                        .unwrap_or_else(|| vec![Arc::from(EVERYTHING)]);
                    let groups = apply_list_change(&current, &change);
                    plan.ops.push(Op::NodeSetGroups {
                        node: node.clone(),
                        groups,
                    });
                }
            }
            Prepared::Aliases(aliases) => {
                if nodes.len() > 1 && !aliases.is_empty() {
                    return Err(ConfigChangeError::NameInUse {
                        name: aliases
                            .iter()
                            .map(|alias| alias.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        owner: "request for several nodes (an alias names one node)",
                    });
                }
                for node in nodes {
                    for alias in &aliases {
                        let owned_by_this_node =
                            store.aliases.get(alias).is_some_and(|owner| owner == node);
                        if !owned_by_this_node {
                            check_new_name(store, pending, alias)?;
                        }
                        pending.aliases.insert(alias.clone(), node.clone());
                    }
                    if aliases.is_empty() {
                        plan.ops.push(Op::NodeClear {
                            node: node.clone(),
                            attribute: attribute.clone(),
                        });
                    } else {
                        plan.ops.push(Op::NodeSet {
                            node: node.clone(),
                            attribute: attribute.clone(),
                            stored: Stored::Value(Arc::from(super::model::join_list(&aliases))),
                        });
                    }
                }
            }
            Prepared::Members(_) | Prepared::Noderange(_) => {
                return Err(ConfigChangeError::NotSettableHere {
                    attribute: attribute.to_string(),
                    target: "node",
                });
            }
        }
    }
    Ok(())
}

fn apply_list_change(current: &[Arc<str>], change: &ListChange) -> Vec<Arc<str>> {
    match change {
        ListChange::Replace(list) => list.clone(),
        ListChange::Prepend(list) => {
            let mut result: Vec<Arc<str>> = list.clone();
            for item in current {
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
            result
        }
        ListChange::Remove(list) => current
            .iter()
            .filter(|item| !list.contains(item))
            .cloned()
            .collect(),
    }
}

/// Delete nodes.
pub fn delete_nodes(store: &Store, nodes: &[Arc<str>]) -> Result<Plan, ConfigChangeError> {
    let mut plan = Plan::default();
    for node in nodes {
        if store.node(node).is_none() {
            return Err(ConfigChangeError::NoSuchNode(node.to_string()));
        }
        plan.ops.push(Op::NodeDelete { node: node.clone() });
    }
    Ok(plan)
}

/// Rename nodes: `renames` maps old names to new names. All renames are checked together so
/// that swapping or shifting names inside one request is refused clearly rather than half done.
pub fn rename_nodes(
    store: &Store,
    renames: &BTreeMap<String, String>,
) -> Result<Plan, ConfigChangeError> {
    let mut plan = Plan::default();
    let mut pending = Pending::default();
    for (from, to) in renames {
        let Some(from_key) = store.node_key(from) else {
            return Err(ConfigChangeError::NoSuchNode(from.clone()));
        };
        if from == to {
            continue;
        }
        let own_alias = store
            .aliases
            .get(to.as_str())
            .is_some_and(|owner| owner == &from_key);
        if !own_alias {
            check_new_name(store, &pending, to)?;
        }
        let to: Arc<str> = Arc::from(to.as_str());
        pending.new_nodes.insert(to.clone());
        plan.ops.push(Op::NodeRename { from: from_key, to });
    }
    Ok(plan)
}

/// Create a group with initial attributes (`nodes`, `noderange` and inheritable attributes).
pub fn create_group(
    store: &Store,
    key: &MasterKey,
    name: &str,
    attributes: &[(String, AttributeInput)],
) -> Result<Plan, ConfigChangeError> {
    let mut pending = Pending::default();
    check_new_name(store, &pending, name)?;
    let group: Arc<str> = Arc::from(name);
    pending.new_groups.insert(group.clone());
    let mut plan = Plan {
        ops: vec![Op::GroupCreate {
            group: group.clone(),
        }],
        warnings: Vec::new(),
    };
    set_group_attributes_inner(store, key, &group, attributes, &mut pending, &mut plan)?;
    Ok(plan)
}

/// Set or clear attributes of a group.
pub fn set_group_attributes(
    store: &Store,
    key: &MasterKey,
    group: &str,
    attributes: &[(String, AttributeInput)],
) -> Result<Plan, ConfigChangeError> {
    let Some(group) = store.group_key(group) else {
        return Err(ConfigChangeError::NoSuchGroup(group.to_string()));
    };
    let mut pending = Pending::default();
    let mut plan = Plan::default();
    set_group_attributes_inner(store, key, &group, attributes, &mut pending, &mut plan)?;
    Ok(plan)
}

fn set_group_attributes_inner(
    store: &Store,
    key: &MasterKey,
    group: &Arc<str>,
    attributes: &[(String, AttributeInput)],
    pending: &mut Pending,
    plan: &mut Plan,
) -> Result<(), ConfigChangeError> {
    let existing = store.group(group);
    let mut dynamic = existing.is_some_and(|record| record.noderange.is_some());
    let mut has_attributes = existing.is_some_and(|record| !record.attributes.is_empty());
    let mut has_members = !store.group_static_members(group).is_empty() && &**group != EVERYTHING;
    for (name, input) in attributes {
        if catalogue::is_wildcard(name) && *input == AttributeInput::Clear {
            if let Some(record) = existing {
                for attribute in record.attributes.keys() {
                    if catalogue::wildcard_match(name, attribute) {
                        plan.ops.push(Op::GroupClear {
                            group: group.clone(),
                            attribute: attribute.clone(),
                        });
                    }
                }
            }
            continue;
        }
        let (attribute, prepared) = prepare(name, input, Target::Group, key)?;
        match prepared {
            Prepared::Store(stored) => {
                if dynamic {
                    return Err(ConfigChangeError::DynamicGroup {
                        group: group.to_string(),
                        what: "attributes",
                    });
                }
                has_attributes = true;
                plan.ops.push(Op::GroupSet {
                    group: group.clone(),
                    attribute,
                    stored,
                });
            }
            Prepared::Clear => {
                plan.ops.push(Op::GroupClear {
                    group: group.clone(),
                    attribute,
                });
            }
            Prepared::Noderange(text) => {
                if &**group == EVERYTHING {
                    return Err(ConfigChangeError::BuiltinGroup("made dynamic"));
                }
                if text.is_some() && (has_attributes || has_members) {
                    return Err(ConfigChangeError::DynamicGroup {
                        group: group.to_string(),
                        what: if has_members {
                            "static members"
                        } else {
                            "attributes"
                        },
                    });
                }
                if let Some(text) = &text {
                    noderange::NodeRange::parse(text).map_err(|source| {
                        ConfigChangeError::BadGroupNoderange {
                            group: group.to_string(),
                            source,
                        }
                    })?;
                }
                dynamic = text.is_some();
                plan.ops.push(Op::GroupSetNoderange {
                    group: group.clone(),
                    noderange: text,
                });
            }
            Prepared::Members(change) => {
                if &**group == EVERYTHING {
                    return Err(ConfigChangeError::BuiltinGroup("given explicit members"));
                }
                if dynamic {
                    return Err(ConfigChangeError::DynamicGroup {
                        group: group.to_string(),
                        what: "static members",
                    });
                }
                let current: Vec<Arc<str>> = store.group_static_members(group);
                let wanted = match &change {
                    ListChange::Replace(list) => list.clone(),
                    ListChange::Prepend(list) => {
                        apply_list_change(&current, &ListChange::Prepend(list.clone()))
                    }
                    ListChange::Remove(list) => {
                        apply_list_change(&current, &ListChange::Remove(list.clone()))
                    }
                };
                let mut wanted_nodes: Vec<Arc<str>> = Vec::with_capacity(wanted.len());
                for name in &wanted {
                    let Some(node) = store.canonical_node(name) else {
                        return Err(ConfigChangeError::NoSuchNode(name.to_string()));
                    };
                    wanted_nodes.push(node);
                }
                let wanted_set: HashSet<&Arc<str>> = wanted_nodes.iter().collect();
                let current_set: HashSet<&Arc<str>> = current.iter().collect();
                for node in &wanted_nodes {
                    if current_set.contains(node) {
                        continue;
                    }
                    let mut groups = vec![group.clone()];
                    if let Some(record) = store.node(node) {
                        groups.extend(record.groups.iter().filter(|name| *name != group).cloned());
                    }
                    plan.ops.push(Op::NodeSetGroups {
                        node: node.clone(),
                        groups,
                    });
                }
                for node in &current {
                    if wanted_set.contains(node) {
                        continue;
                    }
                    if let Some(record) = store.node(node) {
                        let groups = record
                            .groups
                            .iter()
                            .filter(|name| *name != group)
                            .cloned()
                            .collect();
                        plan.ops.push(Op::NodeSetGroups {
                            node: node.clone(),
                            groups,
                        });
                    }
                }
                has_members = !wanted_nodes.is_empty();
            }
            Prepared::Groups(_) | Prepared::Aliases(_) => {
                return Err(ConfigChangeError::NotSettableHere {
                    attribute: attribute.to_string(),
                    target: "group",
                });
            }
        }
    }
    let _ = pending;
    Ok(())
}

/// Delete groups; members simply stop inheriting from them.
pub fn delete_groups(store: &Store, groups: &[String]) -> Result<Plan, ConfigChangeError> {
    let mut plan = Plan::default();
    for name in groups {
        if name == EVERYTHING {
            return Err(ConfigChangeError::BuiltinGroup("deleted"));
        }
        let Some(group) = store.group_key(name) else {
            return Err(ConfigChangeError::NoSuchGroup(name.clone()));
        };
        plan.ops.push(Op::GroupDelete { group });
    }
    Ok(plan)
}

/// Rename a group; members' group lists are rewritten in place, keeping their priority.
pub fn rename_group(store: &Store, from: &str, to: &str) -> Result<Plan, ConfigChangeError> {
    if from == EVERYTHING {
        return Err(ConfigChangeError::BuiltinGroup("renamed"));
    }
    let Some(from_key) = store.group_key(from) else {
        return Err(ConfigChangeError::NoSuchGroup(from.to_string()));
    };
    check_new_name(store, &Pending::default(), to)?;
    Ok(Plan {
        ops: vec![Op::GroupRename {
            from: from_key,
            to: Arc::from(to),
        }],
        warnings: Vec::new(),
    })
}

/// Set (or with `None` remove) a global setting.
pub fn set_global(key: &str, value: Option<serde_json::Value>) -> Plan {
    Plan {
        ops: vec![Op::GlobalSet {
            key: Arc::from(key),
            value,
        }],
        warnings: Vec::new(),
    }
}
