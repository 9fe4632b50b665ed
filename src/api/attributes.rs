//! Attribute reads and writes of nodes, node ranges and groups (reference 1.4, 1.5): values
//! resolved with inheritance and expressions, the encoded fast path of large reads (serialised
//! straight from the store), and attribute inputs of changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::commit::commit;
use super::groups::{require_group, require_owned_group};
use super::nodes::{check_tenant_references, expand_in, require_node};
use super::{Answer, ApiError, Context, Operation, Request};
use crate::auth::tenant::{self};
use crate::config::catalogue;
use crate::config::model::{ExpressionValue, Resolved, ResolvedValue, Store};
use crate::config::plan::{self, AttributeInput};

/// `retrieve /noderange/<range>/attributes/{all,current}`, serialised straight from the store.
pub(super) fn encoded_attribute_read(
    context: &Context,
    tenant: Option<&str>,
    request: &Request,
) -> Result<Option<Answer>, ApiError> {
    if request.operation != Operation::Retrieve {
        return Ok(None);
    }
    let trimmed = request.path.trim_start_matches('/').trim_end_matches('/');
    let mut segments = trimmed.split('/');
    let (Some(collection), Some(range), Some("attributes"), Some(kind), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Ok(None);
    };
    if kind != "all" && kind != "current" {
        return Ok(None);
    }
    let all = kind == "all";
    let requested = requested_attributes(&request.parameters)?;
    if collection == "nodes" {
        // One node, answered without the `databynode` layer.
        let node = require_node(context, tenant, range)?;
        return context.config.read(|store| {
            let Some(record) = store.node(&node) else {
                return Ok(None);
            };
            let attributes = resolved_attributes(store, &node, record, all, requested.as_deref());
            Ok(serde_json::to_vec(&NodeAttributes(&attributes))
                .ok()
                .map(Answer::Document))
        });
    }
    if collection != "noderange" {
        return Ok(None);
    }
    context.config.read(|store| {
        let nodes = expand_in(store, tenant, range)?;
        let mut encoded = Vec::with_capacity(nodes.len());
        let mut buffer = Vec::new();
        for node in &nodes {
            let Some(record) = store.node(node) else {
                continue;
            };
            let attributes = resolved_attributes(store, node, record, all, requested.as_deref());
            buffer.clear();
            let message = NodeMessage {
                node,
                attributes: &attributes,
            };
            if serde_json::to_writer(&mut buffer, &message).is_ok() {
                encoded.push(buffer.clone());
            }
        }
        Ok(Some(Answer::Encoded(encoded)))
    })
}

/// A node's attributes for an `all` (every catalogue name) or `current` (set values) read,
/// resolved, in name order.
pub(super) fn resolved_attributes(
    store: &Store,
    node: &str,
    record: &crate::config::model::Node,
    all: bool,
    requested: Option<&[String]>,
) -> Vec<(Arc<str>, Resolved)> {
    attribute_names(store, record, all, requested)
        .into_iter()
        .filter_map(|name| {
            let resolved = store.resolve_in(node, record, &name);
            (all || resolved.value != ResolvedValue::Unset).then_some((name, resolved))
        })
        .collect()
}

/// `{"databynode": {node: {attribute: value-object}}}` serialised from borrowed data.
pub(super) struct NodeMessage<'a> {
    node: &'a str,
    attributes: &'a [(Arc<str>, Resolved)],
}

pub(super) struct NodeAttributes<'a>(&'a [(Arc<str>, Resolved)]);

pub(super) struct AttributeValue<'a>(&'a Resolved);

impl serde::Serialize for NodeMessage<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct ByNode<'a>(&'a NodeMessage<'a>);
        impl serde::Serialize for ByNode<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(self.0.node, &NodeAttributes(self.0.attributes))?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("databynode", &ByNode(self))?;
        map.end()
    }
}

impl serde::Serialize for NodeAttributes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, resolved) in self.0 {
            map.serialize_entry(&**name, &AttributeValue(resolved))?;
        }
        map.end()
    }
}

impl serde::Serialize for AttributeValue<'_> {
    /// The same shape as [`resolved_json`].
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let resolved = self.0;
        if let ResolvedValue::List(items) = &resolved.value {
            let mut seq = serializer.serialize_seq(Some(items.len()))?;
            for item in items {
                seq.serialize_element(&**item)?;
            }
            return seq.end();
        }
        let mut map = serializer.serialize_map(None)?;
        match &resolved.value {
            ResolvedValue::Unset => map.serialize_entry("value", &())?,
            ResolvedValue::Text(text) => map.serialize_entry("value", &**text)?,
            ResolvedValue::Protected { is_set } => map.serialize_entry("isset", is_set)?,
            ResolvedValue::Broken(reason) => map.serialize_entry("broken", reason)?,
            ResolvedValue::List(_) => {}
        }
        if let Some(group) = &resolved.inherited_from {
            map.serialize_entry("inheritedfrom", &**group)?;
        }
        if let Some(expression) = &resolved.expression {
            map.serialize_entry("expression", &**expression)?;
        }
        map.end()
    }
}

/// Which attributes an attribute read covers, in the order they are answered.
pub(super) fn attribute_names(
    store: &Store,
    record: &crate::config::model::Node,
    all: bool,
    requested: Option<&[String]>,
) -> Vec<Arc<str>> {
    if let Some(requested) = requested
        && requested.iter().all(|name| !catalogue::is_wildcard(name))
    {
        let mut names: Vec<Arc<str>> = requested
            .iter()
            .map(|name| Arc::from(name.as_str()))
            .collect();
        names.sort();
        names.dedup();
        return names;
    }
    let effective = store.effective_attribute_names(record);
    let mut names: Vec<Arc<str>> = if all {
        // Merge two sorted lists: the catalogue (built once) and the node's own names.
        let catalogue = node_catalogue_names();
        let mut merged = Vec::with_capacity(catalogue.len() + effective.len());
        let mut own = effective.into_iter().peekable();
        for name in catalogue {
            while let Some(next) = own.next_if(|next| next < name) {
                merged.push(next);
            }
            own.next_if(|next| next == name);
            merged.push(name.clone());
        }
        merged.extend(own);
        merged
    } else {
        let mut names: Vec<Arc<str>> = effective.into_iter().collect();
        if let Err(at) = names.binary_search_by(|name| (**name).cmp("groups")) {
            names.insert(at, Arc::from("groups"));
        }
        names
    };
    if let Some(requested) = requested {
        names.retain(|name| {
            requested
                .iter()
                .any(|pattern| catalogue::wildcard_match(pattern, name))
        });
    }
    names
}

/// Every plain node attribute of the catalogue plus `groups`, sorted, shared between requests.
pub(super) fn node_catalogue_names() -> &'static [Arc<str>] {
    static NAMES: std::sync::OnceLock<Vec<Arc<str>>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<Arc<str>> = catalogue_names(true).map(Arc::from).collect();
        names.push(Arc::from("groups"));
        names.sort();
        names.dedup();
        names
    })
}

/// Interpret a JSON attribute value of a request (reference 1.4 and 3.3).
pub fn attribute_input(name: &str, value: &Value) -> Result<AttributeInput, ApiError> {
    Ok(match value {
        Value::Null => AttributeInput::Clear,
        Value::String(text) => AttributeInput::Auto(text.clone()),
        Value::Bool(flag) => AttributeInput::Literal(flag.to_string()),
        Value::Number(number) => AttributeInput::Literal(number.to_string()),
        Value::Array(items) => AttributeInput::List(
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Ok(other.to_string()),
                })
                .collect::<Result<_, ApiError>>()?,
        ),
        Value::Object(map) => {
            let text = |key: &str| -> Option<Result<Vec<String>, ApiError>> {
                map.get(key).map(|inner| match inner {
                    Value::String(text) => Ok(vec![text.clone()]),
                    Value::Array(items) => Ok(items
                        .iter()
                        .filter_map(|item| item.as_str().map(str::to_string))
                        .collect()),
                    _ => Err(ApiError::bad_request(format!(
                        "{name}: {key} needs a string or a list"
                    ))),
                })
            };
            if let Some(value) = map.get("value") {
                match value {
                    Value::String(text) => AttributeInput::Literal(text.clone()),
                    Value::Null => AttributeInput::Clear,
                    other => AttributeInput::Literal(other.to_string()),
                }
            } else if let Some(Value::String(expression)) = map.get("expression") {
                AttributeInput::Expression(expression.clone())
            } else if let Some(items) = text("prepend") {
                AttributeInput::Prepend(items?)
            } else if let Some(items) = text("remove") {
                AttributeInput::Remove(items?)
            } else {
                return Err(ApiError::bad_request(format!(
                    "{name}: expected a string, null, a list, or an object with value, expression, prepend or remove"
                )));
            }
        }
    })
}

pub(super) fn attribute_inputs(
    parameters: &Value,
    skip: &[&str],
) -> Result<Vec<(String, AttributeInput)>, ApiError> {
    let Value::Object(map) = parameters else {
        return Err(ApiError::bad_request("parameters must be a JSON object"));
    };
    let mut inputs = Vec::with_capacity(map.len());
    for (name, value) in map {
        if skip.contains(&name.as_str()) {
            continue;
        }
        inputs.push((name.clone(), attribute_input(name, value)?));
    }
    Ok(inputs)
}

/// The JSON shape of one resolved attribute (reference 1.5).
pub fn resolved_json(resolved: &Resolved) -> Value {
    let mut map = Map::new();
    match &resolved.value {
        ResolvedValue::List(items) => {
            return Value::Array(
                items
                    .iter()
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            );
        }
        ResolvedValue::Unset => {
            map.insert("value".into(), Value::Null);
        }
        ResolvedValue::Text(text) => {
            map.insert("value".into(), Value::String(text.to_string()));
        }
        ResolvedValue::Protected { is_set } => {
            map.insert("isset".into(), Value::Bool(*is_set));
        }
        ResolvedValue::Broken(reason) => {
            map.insert("broken".into(), Value::String(reason.clone()));
        }
    }
    if let Some(group) = &resolved.inherited_from {
        map.insert("inheritedfrom".into(), Value::String(group.to_string()));
    }
    if let Some(expression) = &resolved.expression {
        map.insert("expression".into(), Value::String(expression.to_string()));
    }
    Value::Object(map)
}

/// Attribute names listed by `attributes/all`: the catalogue plus anything set.
pub(super) fn catalogue_names(for_node: bool) -> impl Iterator<Item = &'static str> {
    catalogue::all().iter().filter_map(move |spec| {
        let applies = if for_node { spec.node } else { spec.group };
        (applies && !spec.name.contains('*')).then_some(spec.name)
    })
}

/// Requested attribute names (`attributes` parameter: a list or comma string; wildcards and
/// aliases allowed). `None` when the request does not narrow the answer.
pub(super) fn requested_attributes(parameters: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let names: Vec<String> = match parameters.get("attributes") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text
            .split(',')
            .map(|name| name.trim().to_string())
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "attributes must be a list or a comma-separated string",
            ));
        }
    };
    let mut resolved = Vec::with_capacity(names.len());
    for name in names.into_iter().filter(|name| !name.is_empty()) {
        if catalogue::is_wildcard(&name) {
            resolved.push(name);
        } else {
            resolved.push(
                catalogue::canonical_name(&name)
                    .map_err(|error| ApiError::bad_request(error.to_string()))?,
            );
        }
    }
    Ok(Some(resolved))
}

pub(super) fn node_attribute_map(
    store: &Store,
    node: &str,
    all: bool,
    requested: Option<&[String]>,
) -> Map<String, Value> {
    let mut map = Map::new();
    let Some(record) = store.node(node) else {
        return map;
    };
    for name in attribute_names(store, record, all, requested) {
        let resolved = store.resolve_in(node, record, &name);
        if !all && resolved.value == ResolvedValue::Unset {
            continue;
        }
        map.insert(name.to_string(), resolved_json(&resolved));
    }
    map
}

pub(super) async fn node_attributes(
    context: &Context,
    tenant: Option<&str>,
    operation: Operation,
    nodes: &[Arc<str>],
    kind: &str,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    match (operation, kind) {
        (Operation::Retrieve, "all" | "current") => {
            let all = kind == "all";
            let requested = requested_attributes(parameters)?;
            Ok(context.config.read(|store| {
                nodes
                    .iter()
                    .map(|node| {
                        json!({"databynode": {node.to_string(): Value::Object(node_attribute_map(store, node, all, requested.as_deref()))}})
                    })
                    .collect()
            }))
        }
        (Operation::Update, "all" | "current") => {
            let inputs = attribute_inputs(parameters, &[])?;
            let nodes = nodes.to_vec();
            let owner: Option<Arc<str>> = tenant.map(Arc::from);
            commit(context, move |store, key| {
                check_tenant_references(store, owner.as_deref(), &inputs)?;
                plan::set_node_attributes(store, key, &nodes, &inputs)
            })
            .await
        }
        (Operation::Create | Operation::Retrieve, "expression") => {
            let Some(text) = parameters.get("expression").and_then(Value::as_str) else {
                return Err(ApiError::bad_request("expression is required"));
            };
            let expression = ExpressionValue::parse(text)
                .map_err(|reason| ApiError::bad_request(format!("invalid expression: {reason}")))?;
            Ok(context.config.read(|store| {
                nodes
                    .iter()
                    .map(|node| match store.evaluate_for_node(node, &expression) {
                        Ok(value) => json!({"databynode": {node.to_string(): {"value": value}}}),
                        Err(reason) => json!({"databynode": {node.to_string(): ApiError::bad_request(reason).to_json()}}),
                    })
                    .collect()
            }))
        }
        (Operation::Update, "rename") => {
            let Some(text) = parameters.get("rename").and_then(Value::as_str) else {
                return Err(ApiError::bad_request(
                    "rename needs the new name (or an expression)",
                ));
            };
            let mut renames = BTreeMap::new();
            let expression = ExpressionValue::parse(text).map_err(|reason| {
                ApiError::bad_request(format!("invalid name expression: {reason}"))
            })?;
            let is_expression = expression
                .compiled
                .as_ref()
                .is_ok_and(|template| template.is_expression());
            if !is_expression && nodes.len() > 1 {
                return Err(ApiError::bad_request(
                    "renaming several nodes needs an expression such as {node}-new",
                ));
            }
            context.config.read(|store| -> Result<(), ApiError> {
                for node in nodes {
                    let new_name = if is_expression {
                        store
                            .evaluate_for_node(node, &expression)
                            .map_err(|reason| ApiError::bad_request(format!("{node}: {reason}")))?
                    } else {
                        text.to_string()
                    };
                    renames.insert(node.to_string(), new_name);
                }
                Ok(())
            })?;
            let shown = renames.clone();
            let mut messages =
                commit(context, move |store, _| plan::rename_nodes(store, &renames)).await?;
            messages.extend(
                shown
                    .iter()
                    .map(|(old, new)| json!({"oldname": old, "newname": new})),
            );
            Ok(messages)
        }
        _ => Err(ApiError::unsupported(
            operation.as_str(),
            &format!("attributes/{kind}"),
        )),
    }
}

pub(super) async fn group_attributes(
    context: &Context,
    tenant: Option<&str>,
    operation: Operation,
    group: &str,
    kind: &str,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let group = if operation == Operation::Retrieve {
        require_group(context, tenant, group)?
    } else {
        require_owned_group(context, tenant, group)?
    };
    let owner: Option<Arc<str>> = tenant.map(Arc::from);
    match (operation, kind) {
        (Operation::Retrieve, "all" | "current") => {
            let all = kind == "all";
            Ok(context.config.read(|store| {
                let mut map = Map::new();
                if let Some(record) = store.group(&group) {
                    let members: Vec<Value> = store
                        .group_static_members(&group)
                        .iter()
                        .filter(|node| {
                            owner.is_none() || tenant::node_in_tenant(store, node, owner.as_deref())
                        })
                        .map(|node| Value::String(node.to_string()))
                        .collect();
                    map.insert("nodes".into(), Value::Array(members));
                    if let Some(range) = &record.noderange {
                        map.insert("noderange".into(), json!({"value": range.to_string()}));
                    } else if all {
                        map.insert("noderange".into(), json!({"value": null}));
                    }
                    let mut names: std::collections::BTreeSet<Arc<str>> =
                        record.attributes.keys().cloned().collect();
                    if all {
                        names.extend(catalogue_names(false).map(Arc::from));
                    }
                    for name in names {
                        if matches!(&*name, "nodes" | "noderange") {
                            continue;
                        }
                        let value = match record.attributes.get(&name) {
                            None => json!({"value": null}),
                            Some(stored) => stored_json(stored),
                        };
                        map.insert(name.to_string(), value);
                    }
                }
                vec![Value::Object(map)]
            }))
        }
        (Operation::Update, "all" | "current") => {
            let inputs = attribute_inputs(parameters, &[])?;
            commit(context, move |store, key| {
                check_tenant_references(store, owner.as_deref(), &inputs)?;
                plan::set_group_attributes(store, key, &group, &inputs)
            })
            .await
        }
        (Operation::Update, "rename") => {
            let Some(new_name) = parameters.get("rename").and_then(Value::as_str) else {
                return Err(ApiError::bad_request("rename needs the new group name"));
            };
            let new_name = new_name.to_string();
            let shown = new_name.clone();
            let mut messages = commit(context, move |store, _| {
                plan::rename_group(store, &group, &new_name)
            })
            .await?;
            messages.push(json!({"newname": shown}));
            Ok(messages)
        }
        _ => Err(ApiError::unsupported(
            operation.as_str(),
            &format!("attributes/{kind}"),
        )),
    }
}

pub(super) fn stored_json(stored: &crate::config::model::Stored) -> Value {
    use crate::config::model::Stored;
    match stored {
        Stored::Value(text) => json!({"value": text.to_string()}),
        Stored::Expression(expression) => json!({"expression": expression.text.to_string()}),
        Stored::Sealed(_) | Stored::Hashed { .. } => json!({"isset": true}),
    }
}

/// Remove the `databynode` wrapper of a single-node message.
pub(super) fn strip_node(message: Value) -> Value {
    match message {
        Value::Object(mut map) => match map.remove("databynode") {
            Some(Value::Object(by_node)) if by_node.len() == 1 => by_node
                .into_iter()
                .next()
                .map_or(Value::Null, |(_, inner)| inner),
            _ => Value::Object(map),
        },
        other => other,
    }
}

/// `start /noderange/{range}/attributes/all`: follow attributes of a noderange (`attributes`:
/// a list or comma-separated names, wildcards allowed; default all). The first message says
/// what is watched (`{"watching": {"nodes": N, "attributes": [...]}}`); then, after every
/// commit that changes them, `{"changes": {"seq", "databynode": {node: {attribute:
/// value-object}}, "created", "deleted", "renamed"}}`.
pub fn watch(
    context: &Context,
    tenant: Option<&str>,
    range: &str,
    parameters: &Value,
) -> Result<Answer, ApiError> {
    let attributes: Vec<String> = match parameters.get("attributes") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(text)) => text.split(',').map(str::to_string).collect(),
        _ => vec!["*".to_string()],
    };
    let nodes = context
        .config
        .read(|store| expand_in(store, tenant, range))?;
    let first = json!({"watching": {"nodes": nodes.len(), "attributes": attributes}});
    let filter = crate::config::watch::WatchFilter {
        nodes: Some(nodes.into_iter().collect()),
        attributes,
        collection: true,
        globals: Vec::new(),
    };
    let receiver = context.config.watch(filter);
    let config = context.config.clone();
    let changes = futures_util::stream::unfold(receiver, move |mut receiver| {
        let config = config.clone();
        async move {
            let changes = receiver.recv().await?;
            Some((describe_changes(&config, &changes), receiver))
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([first]), changes);
    Ok(Answer::Stream(Box::pin(stream)))
}

/// One commit's changes to watched attributes, with their values now.
fn describe_changes(
    config: &crate::config::ConfigEngine,
    changes: &crate::config::watch::ChangeSet,
) -> Value {
    let by_node: Map<String, Value> = config.read(|store| {
        changes
            .node_attributes
            .iter()
            .map(|(node, attributes)| {
                let values: Map<String, Value> = attributes
                    .iter()
                    .filter(|name| &***name != "*")
                    .map(|name| {
                        let value = store
                            .resolve(node, name)
                            .map(|resolved| resolved_json(&resolved))
                            .unwrap_or(Value::Null);
                        (name.to_string(), value)
                    })
                    .collect();
                (node.to_string(), Value::Object(values))
            })
            .collect()
    });
    json!({"changes": {
        "seq": changes.seq,
        "databynode": by_node,
        "created": changes.nodes_created.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "deleted": changes.nodes_deleted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "renamed": changes.nodes_renamed.iter().map(|(a, b)| vec![a.to_string(), b.to_string()]).collect::<Vec<_>>(),
    }})
}
