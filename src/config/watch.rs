//! Change watchers: code inside the daemon subscribes to attribute patterns for a set of nodes,
//! or to node/group creation, deletion and rename, and receives what changed after each commit.
//!
//! A commit's [`ChangeSet`] is computed while the change is applied (under the engine's write
//! lock, so it describes exactly that transaction) and delivered by the journal thread once the
//! transaction is durable, in commit order. Delivery is a non-blocking channel send: a slow
//! watcher never delays a writer.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::catalogue;
use super::model::{Op, Store};

/// What one committed transaction changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    pub seq: u64,
    /// Node (by its name after the commit) → attributes whose effective value may have changed,
    /// including expressions that depend on a changed attribute or on a renamed node's name.
    pub node_attributes: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Group → attributes set or cleared on the group itself.
    pub group_attributes: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    pub nodes_created: Vec<Arc<str>>,
    pub nodes_deleted: Vec<Arc<str>>,
    pub nodes_renamed: Vec<(Arc<str>, Arc<str>)>,
    pub groups_created: Vec<Arc<str>>,
    pub groups_deleted: Vec<Arc<str>>,
    pub groups_renamed: Vec<(Arc<str>, Arc<str>)>,
    pub globals: Vec<Arc<str>>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.node_attributes.is_empty()
            && self.group_attributes.is_empty()
            && self.nodes_created.is_empty()
            && self.nodes_deleted.is_empty()
            && self.nodes_renamed.is_empty()
            && self.groups_created.is_empty()
            && self.groups_deleted.is_empty()
            && self.groups_renamed.is_empty()
            && self.globals.is_empty()
    }
}

/// Applies ops to a store while recording what they change.
pub(crate) struct ChangeRecorder {
    touched: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    renamed_nodes: HashSet<Arc<str>>,
    changes: ChangeSet,
}

impl ChangeRecorder {
    pub(crate) fn new() -> ChangeRecorder {
        ChangeRecorder {
            touched: BTreeMap::new(),
            renamed_nodes: HashSet::new(),
            changes: ChangeSet::default(),
        }
    }

    fn touch(&mut self, node: &Arc<str>, attribute: &Arc<str>) {
        self.touched
            .entry(node.clone())
            .or_default()
            .insert(attribute.clone());
    }

    /// Members of `group` for which the group's value of `attribute` is the effective one
    /// (nothing set on the node, no earlier group defining it).
    fn inheritors(store: &Store, group: &Arc<str>, attribute: &str) -> Vec<Arc<str>> {
        let Some(members) = store.members.get(group) else {
            return Vec::new();
        };
        let mut result = Vec::new();
        for node_name in members {
            let Some(node) = store.node(node_name) else {
                continue;
            };
            if node.attributes.contains_key(attribute) {
                continue;
            }
            let mut shadowed = false;
            for earlier in &node.groups {
                if earlier == group {
                    break;
                }
                if store
                    .group(earlier)
                    .is_some_and(|record| record.attributes.contains_key(attribute))
                {
                    shadowed = true;
                    break;
                }
            }
            if !shadowed {
                result.push(node_name.clone());
            }
        }
        result
    }

    /// Apply one op, recording its effects.
    pub(crate) fn apply(&mut self, store: &mut Store, op: &Op) {
        // What the op touches that must be read before it is applied.
        match op {
            Op::NodeCreate { node } => {
                if store.node(node).is_none() {
                    self.changes.nodes_created.push(node.clone());
                }
            }
            Op::NodeDelete { node } => {
                if store.node(node).is_some() {
                    self.changes.nodes_deleted.push(node.clone());
                    self.touched.remove(node);
                }
            }
            Op::NodeRename { from, to } => {
                if store.node(from).is_some() && store.node(to).is_none() {
                    self.changes.nodes_renamed.push((from.clone(), to.clone()));
                    if let Some(attributes) = self.touched.remove(from) {
                        self.touched.insert(to.clone(), attributes);
                    }
                    self.renamed_nodes.insert(to.clone());
                }
            }
            Op::NodeSetGroups { node, .. } => {
                if let Some(record) = store.node(node) {
                    let names = store.effective_attribute_names(record);
                    let groups_name: Arc<str> = Arc::from("groups");
                    self.touch(node, &groups_name);
                    for name in names {
                        self.touch(node, &name);
                    }
                }
            }
            Op::NodeSet {
                node, attribute, ..
            }
            | Op::NodeClear { node, attribute } => {
                if store.node(node).is_some() {
                    self.touch(node, attribute);
                }
            }
            Op::GroupCreate { group } => {
                if store.group(group).is_none() {
                    self.changes.groups_created.push(group.clone());
                }
            }
            Op::GroupDelete { group } => {
                if let Some(record) = store.group(group) {
                    self.changes.groups_deleted.push(group.clone());
                    let names: Vec<Arc<str>> = record.attributes.keys().cloned().collect();
                    let groups_name: Arc<str> = Arc::from("groups");
                    for name in &names {
                        for node in Self::inheritors(store, group, name) {
                            self.touch(&node, name);
                        }
                    }
                    for node in store.group_static_members(group) {
                        self.touch(&node, &groups_name);
                    }
                }
            }
            Op::GroupRename { from, to } => {
                if store.group(from).is_some() && store.group(to).is_none() {
                    self.changes.groups_renamed.push((from.clone(), to.clone()));
                    let groups_name: Arc<str> = Arc::from("groups");
                    for node in store.group_static_members(from) {
                        self.touch(&node, &groups_name);
                    }
                }
            }
            Op::GroupSet {
                group, attribute, ..
            }
            | Op::GroupClear { group, attribute } => {
                if store.group(group).is_some() {
                    self.changes
                        .group_attributes
                        .entry(group.clone())
                        .or_default()
                        .insert(attribute.clone());
                    for node in Self::inheritors(store, group, attribute) {
                        self.touch(&node, attribute);
                    }
                }
            }
            Op::GroupSetNoderange { group, .. } => {
                self.changes
                    .group_attributes
                    .entry(group.clone())
                    .or_default()
                    .insert(Arc::from("noderange"));
            }
            Op::GlobalSet { key, .. } => self.changes.globals.push(key.clone()),
            // Ownership and accounts change no attribute value a watcher could see.
            Op::NodeSetTenant { .. }
            | Op::GroupSetTenant { .. }
            | Op::UserSet { .. }
            | Op::UserGroupSet { .. } => {}
        }
        store.apply(op);
        // Effects visible only afterwards: attributes a node gained through a new group list.
        if let Op::NodeSetGroups { node, .. } = op
            && let Some(record) = store.node(node)
        {
            for name in store.effective_attribute_names(record) {
                self.touch(node, &name);
            }
        }
    }

    /// Finish: extend each node's touched attributes with the expressions depending on them.
    pub(crate) fn finish(mut self, store: &Store, seq: u64) -> ChangeSet {
        let created: HashSet<Arc<str>> = self.changes.nodes_created.iter().cloned().collect();
        for (node, attributes) in std::mem::take(&mut self.touched) {
            let Some(record) = store.node(&node) else {
                continue;
            };
            let renamed = self.renamed_nodes.contains(&node);
            let all = if created.contains(&node) {
                attributes
            } else {
                store.dependents(record, &attributes, renamed)
            };
            if !all.is_empty() {
                self.changes.node_attributes.insert(node, all);
            }
        }
        for node in std::mem::take(&mut self.renamed_nodes) {
            if self.changes.node_attributes.contains_key(&node) {
                continue;
            }
            if let Some(record) = store.node(&node) {
                let all = store.dependents(record, &BTreeSet::new(), true);
                if !all.is_empty() {
                    self.changes.node_attributes.insert(node, all);
                }
            }
        }
        self.changes.seq = seq;
        self.changes
    }
}

/// What a watcher wants to hear about.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// Nodes of interest; `None` means every node.
    pub nodes: Option<HashSet<Arc<str>>>,
    /// Attribute name patterns (`*` and `?` wildcards). Empty: no attribute changes.
    pub attributes: Vec<String>,
    /// Also report node and group creation, deletion and rename.
    pub collection: bool,
    /// Global setting name patterns (`*` and `?` wildcards). Empty: no global changes.
    pub globals: Vec<String>,
}

impl WatchFilter {
    fn wants_node(&self, node: &Arc<str>) -> bool {
        self.nodes.as_ref().is_none_or(|nodes| nodes.contains(node))
    }

    fn wants_attribute(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|pattern| catalogue::wildcard_match(pattern, attribute))
    }

    /// The attributes of `attributes` this filter wants, or `None` if none.
    fn wanted_attributes(&self, attributes: &BTreeSet<Arc<str>>) -> Option<BTreeSet<Arc<str>>> {
        let wanted: BTreeSet<Arc<str>> = attributes
            .iter()
            .filter(|name| self.wants_attribute(name))
            .cloned()
            .collect();
        (!wanted.is_empty()).then_some(wanted)
    }

    /// The part of a change set this filter wants, or `None` if nothing.
    pub fn select(&self, changes: &ChangeSet) -> Option<ChangeSet> {
        let mut selected = ChangeSet {
            seq: changes.seq,
            ..ChangeSet::default()
        };
        if !self.attributes.is_empty() {
            for (node, attributes) in &changes.node_attributes {
                if !self.wants_node(node) {
                    continue;
                }
                if let Some(wanted) = self.wanted_attributes(attributes) {
                    selected.node_attributes.insert(node.clone(), wanted);
                }
            }
            // Group-level changes too: settings on a group (e.g. `everything`) matter to
            // watchers even when no node inherits them yet.
            for (group, attributes) in &changes.group_attributes {
                if let Some(wanted) = self.wanted_attributes(attributes) {
                    selected.group_attributes.insert(group.clone(), wanted);
                }
            }
            for node in &changes.nodes_deleted {
                // A deleted node loses all of its attributes.
                if self.wants_node(node) {
                    selected
                        .node_attributes
                        .entry(node.clone())
                        .or_default()
                        .insert(Arc::from("*"));
                }
            }
        }
        if self.collection {
            let nodes = |list: &Vec<Arc<str>>| -> Vec<Arc<str>> {
                list.iter()
                    .filter(|node| self.wants_node(node))
                    .cloned()
                    .collect()
            };
            selected.nodes_created = nodes(&changes.nodes_created);
            selected.nodes_deleted = nodes(&changes.nodes_deleted);
            selected.nodes_renamed = changes
                .nodes_renamed
                .iter()
                .filter(|(from, to)| self.wants_node(from) || self.wants_node(to))
                .cloned()
                .collect();
            selected.groups_created = changes.groups_created.clone();
            selected.groups_deleted = changes.groups_deleted.clone();
            selected.groups_renamed = changes.groups_renamed.clone();
        }
        selected.globals = changes
            .globals
            .iter()
            .filter(|key| {
                self.globals
                    .iter()
                    .any(|pattern| catalogue::wildcard_match(pattern, key))
            })
            .cloned()
            .collect();
        (!selected.is_empty()).then_some(selected)
    }
}

struct Watcher {
    filter: WatchFilter,
    sender: UnboundedSender<Arc<ChangeSet>>,
}

/// The registered watchers.
#[derive(Default)]
pub struct Watchers {
    watchers: parking_lot::Mutex<Vec<Watcher>>,
}

impl Watchers {
    /// Register a watcher; it receives change sets until the receiver is dropped.
    pub fn watch(&self, filter: WatchFilter) -> UnboundedReceiver<Arc<ChangeSet>> {
        let (sender, receiver) = unbounded_channel();
        self.watchers.lock().push(Watcher { filter, sender });
        receiver
    }

    /// Deliver a committed change set to every interested watcher.
    pub(crate) fn dispatch(&self, changes: &ChangeSet) {
        let mut watchers = self.watchers.lock();
        watchers.retain(|watcher| {
            if watcher.sender.is_closed() {
                return false;
            }
            if let Some(selected) = watcher.filter.select(changes) {
                return watcher.sender.send(Arc::new(selected)).is_ok();
            }
            true
        });
    }
}
