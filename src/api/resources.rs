//! The resource tree's routes and their handlers: nodes, node ranges, groups and their
//! attributes (reference sections 1.2, 1.3 and 1.5). Handlers read one configuration view
//! per request and commit changes through the engine, so a request is atomic.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Context;
use super::{ApiError, Caller, ErrorCode, Operation, Request};
use crate::auth::tenant::{self, TenantView};
use crate::config::catalogue;
use crate::config::model::{ExpressionValue, Resolved, ResolvedValue, Store};
use crate::config::noderange::{self, Verbatim};
use crate::config::plan::{self, AttributeInput, ConfigChangeError};

/// Collections listed at the root.
const ROOT: &[&str] = &[
    "events/",
    "networking/",
    "nodegroups/",
    "noderange/",
    "nodes/",
    "usergroups/",
    "users/",
    "version",
];

/// A route of the tree and the operations it answers, for the authorization matrix test and
/// documentation. `{node}`, `{range}`, `{group}`, `{user}`, `{usergroup}` and `{log}` stand for
/// a path segment.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub operations: &'static [Operation],
}

const R: Operation = Operation::Retrieve;
const C: Operation = Operation::Create;
const U: Operation = Operation::Update;
const D: Operation = Operation::Delete;
const S: Operation = Operation::Start;

/// Every route [`dispatch`] answers (keep in step with it: the matrix test enumerates these).
pub const ROUTES: &[Route] = &[
    Route {
        path: "/",
        operations: &[R],
    },
    Route {
        path: "/version",
        operations: &[R],
    },
    Route {
        path: "/networking/",
        operations: &[R],
    },
    Route {
        path: "/networking/dhcp/",
        operations: &[R],
    },
    Route {
        path: "/networking/dhcp/exchanges",
        operations: &[R],
    },
    Route {
        path: "/networking/dhcp/counters",
        operations: &[R],
    },
    Route {
        path: "/networking/dhcp/interfaces/",
        operations: &[R],
    },
    Route {
        path: "/networking/dhcp/interfaces/{interface}",
        operations: &[R, U, D],
    },
    Route {
        path: "/networking/dhcp/subnets/",
        operations: &[R, C],
    },
    Route {
        path: "/networking/dhcp/subnets/{subnet}",
        operations: &[R, U, D],
    },
    Route {
        path: "/nodes/",
        operations: &[R, C],
    },
    Route {
        path: "/nodes/{node}/",
        operations: &[R, D],
    },
    Route {
        path: "/nodes/{node}/attributes/",
        operations: &[R],
    },
    Route {
        path: "/nodes/{node}/attributes/all",
        operations: &[R, U],
    },
    Route {
        path: "/nodes/{node}/attributes/current",
        operations: &[R, U],
    },
    Route {
        path: "/nodes/{node}/attributes/expression",
        operations: &[R, C],
    },
    Route {
        path: "/nodes/{node}/attributes/rename",
        operations: &[U],
    },
    Route {
        path: "/noderange/",
        operations: &[C],
    },
    Route {
        path: "/noderange/{range}/",
        operations: &[R, D],
    },
    Route {
        path: "/noderange/{range}/nodes/",
        operations: &[R],
    },
    Route {
        path: "/noderange/{range}/boottimeline",
        operations: &[R],
    },
    Route {
        path: "/noderange/{range}/abbreviate",
        operations: &[C],
    },
    Route {
        path: "/noderange/abbreviate",
        operations: &[C],
    },
    Route {
        path: "/noderange/{range}/attributes/",
        operations: &[R],
    },
    Route {
        path: "/noderange/{range}/attributes/all",
        operations: &[R, U],
    },
    Route {
        path: "/noderange/{range}/attributes/current",
        operations: &[R, U],
    },
    Route {
        path: "/noderange/{range}/attributes/expression",
        operations: &[R, C],
    },
    Route {
        path: "/noderange/{range}/attributes/rename",
        operations: &[U],
    },
    Route {
        path: "/nodegroups/",
        operations: &[R, C],
    },
    Route {
        path: "/nodegroups/{group}/",
        operations: &[R, D],
    },
    Route {
        path: "/nodegroups/{group}/attributes/",
        operations: &[R],
    },
    Route {
        path: "/nodegroups/{group}/attributes/all",
        operations: &[R, U],
    },
    Route {
        path: "/nodegroups/{group}/attributes/current",
        operations: &[R, U],
    },
    Route {
        path: "/nodegroups/{group}/attributes/rename",
        operations: &[U],
    },
    Route {
        path: "/events/",
        operations: &[R],
    },
    // `start` streams the log (socket transports).
    Route {
        path: "/events/{log}",
        operations: &[R, S],
    },
    Route {
        path: "/users/",
        operations: &[R, C],
    },
    Route {
        path: "/users/{user}",
        operations: &[R, U, D],
    },
    Route {
        path: "/usergroups/",
        operations: &[R, C],
    },
    Route {
        path: "/usergroups/{usergroup}",
        operations: &[R, U, D],
    },
    Route {
        path: "/self/whoami",
        operations: &[R],
    },
];

/// The route of [`ROUTES`] a canonical path falls under: `{...}` placeholders match one
/// segment (a subnet, `10.0.0.0/24`, its two), literal segments win over placeholders. For
/// labels that must not grow with what callers ask for (the API request metrics).
pub fn route_of(path: &str) -> Option<&'static Route> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    ROUTES
        .iter()
        .filter_map(|route| {
            let pattern: Vec<&str> = route.path.split('/').skip(1).collect();
            let literals = route_match(&pattern, &segments)?;
            Some((literals, route))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, route)| route)
}

/// How many literal segments of `pattern` matched `segments`, if it matches at all.
fn route_match(pattern: &[&str], segments: &[&str]) -> Option<usize> {
    let mut literals = 0;
    let mut rest = segments;
    for (index, part) in pattern.iter().enumerate() {
        let is_last = index + 1 == pattern.len();
        if *part == "{subnet}" && is_last && rest.len() == 2 {
            return Some(literals);
        }
        let (segment, after) = rest.split_first()?;
        if part.starts_with('{') && part.ends_with('}') {
            if segment.is_empty() {
                return None;
            }
        } else if part == segment {
            literals += 1;
        } else {
            return None;
        }
        rest = after;
    }
    rest.is_empty().then_some(literals)
}

/// An answer: JSON messages, or messages already encoded as JSON text (the hot path of large
/// attribute reads, which never builds a `Value` per attribute).
pub enum Answer {
    Values(Vec<Value>),
    Encoded(Vec<Vec<u8>>),
    /// One message that is already the whole document a merging transport would build (a
    /// single node's attributes): HTTP sends it as is, the socket as one message.
    Document(Vec<u8>),
}

impl Answer {
    /// The messages as values (transports that merge or inspect them).
    pub fn into_values(self) -> Vec<Value> {
        match self {
            Answer::Values(values) => values,
            Answer::Encoded(encoded) => encoded
                .iter()
                .filter_map(|bytes| serde_json::from_slice(bytes).ok())
                .collect(),
            Answer::Document(bytes) => serde_json::from_slice(&bytes).into_iter().collect(),
        }
    }
}

pub async fn dispatch(
    context: &Context,
    caller: &Caller,
    request: &Request,
) -> Result<Answer, ApiError> {
    if let Some(answer) = encoded_attribute_read(context, caller.tenant(), request)? {
        return Ok(answer);
    }
    dispatch_values(context, caller, request)
        .await
        .map(Answer::Values)
}

/// Expand a noderange as a caller of `tenant` sees the configuration. A range that fails only
/// because it names another tenant's nodes fails the same way, marked hidden for the audit.
pub fn expand_in(
    store: &Store,
    tenant: Option<&str>,
    range: &str,
) -> Result<Vec<Arc<str>>, ApiError> {
    let invalid = |error: noderange::NoderangeError| {
        ApiError::bad_request(format!("invalid noderange {range}: {error}"))
    };
    match tenant {
        None => store.expand(range).map_err(invalid),
        Some(tenant) => {
            noderange::expand(range, &TenantView::new(store, tenant)).map_err(|error| {
                let refused = invalid(error);
                if store.expand(range).is_ok() {
                    refused.hiding()
                } else {
                    refused
                }
            })
        }
    }
}

/// `retrieve /noderange/<range>/attributes/{all,current}`, serialised straight from the store.
fn encoded_attribute_read(
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
fn resolved_attributes(
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
struct NodeMessage<'a> {
    node: &'a str,
    attributes: &'a [(Arc<str>, Resolved)],
}

struct NodeAttributes<'a>(&'a [(Arc<str>, Resolved)]);

struct AttributeValue<'a>(&'a Resolved);

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
fn attribute_names(
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
fn node_catalogue_names() -> &'static [Arc<str>] {
    static NAMES: std::sync::OnceLock<Vec<Arc<str>>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: Vec<Arc<str>> = catalogue_names(true).map(Arc::from).collect();
        names.push(Arc::from("groups"));
        names.sort();
        names.dedup();
        names
    })
}

async fn dispatch_values(
    context: &Context,
    caller: &Caller,
    request: &Request,
) -> Result<Vec<Value>, ApiError> {
    let tenant = caller.tenant();
    let trimmed = request.path.trim_start_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.trim_end_matches('/').split('/').collect()
    };
    let operation = request.operation;
    let parameters = &request.parameters;
    match (operation, segments.as_slice()) {
        (Operation::Retrieve, []) => Ok(links(ROOT.iter().copied())),
        (Operation::Retrieve, ["version"]) => Ok(vec![json!({"version": crate::VERSION})]),
        (Operation::Retrieve, ["networking"]) => Ok(links(["dhcp/"])),
        (Operation::Retrieve, ["networking", "dhcp"]) => {
            Ok(links(["counters", "exchanges", "interfaces/", "subnets/"]))
        }
        (_, ["networking", "dhcp", "interfaces", rest @ ..]) => {
            super::dhcp::interfaces(context, operation, rest, parameters).await
        }
        (_, ["networking", "dhcp", "subnets", rest @ ..]) => {
            super::dhcp::subnets(context, operation, rest, parameters).await
        }
        // Datagrams received, dropped as undecodable, replies sent and failed.
        (Operation::Retrieve, ["networking", "dhcp", "counters"]) => {
            Ok(vec![context.dhcp_exchanges.counters.to_json()])
        }
        // The most recent DHCP exchanges, oldest first: "why didn't node X boot?".
        (Operation::Retrieve, ["networking", "dhcp", "exchanges"]) => Ok(context
            .dhcp_exchanges
            .snapshot()
            .into_iter()
            .map(|exchange| json!({ "exchange": exchange }))
            .collect()),
        (Operation::Retrieve, ["nodes"]) => {
            let names = context.config.read(|store| {
                let mut names = store.node_names_sorted();
                if tenant.is_some() {
                    names.retain(|name| tenant::node_in_tenant(store, name, tenant));
                }
                names
            });
            Ok(links(names.iter().map(|name| format!("{name}/"))))
        }
        (Operation::Create, ["nodes"]) => create_nodes(context, tenant, parameters, false).await,
        (Operation::Retrieve, ["nodes", node]) => {
            require_node(context, tenant, node)?;
            Ok(links(["attributes/"]))
        }
        (Operation::Delete, ["nodes", node]) => {
            let node = require_node(context, tenant, node)?;
            delete_nodes(context, &[node.to_string()]).await
        }
        (Operation::Retrieve, ["nodes", _node, "attributes"])
        | (Operation::Retrieve, ["noderange", _node, "attributes"]) => {
            Ok(links(["all", "current", "expression", "rename"]))
        }
        (_, ["nodes", node, "attributes", kind]) => {
            let node = require_node(context, tenant, node)?;
            let messages =
                node_attributes(context, tenant, operation, &[node], kind, parameters).await?;
            // Single-node requests answer without the `databynode` layer.
            Ok(messages.into_iter().map(strip_node).collect())
        }
        (Operation::Create, ["noderange"]) => create_nodes(context, tenant, parameters, true).await,
        (Operation::Retrieve, ["noderange", range]) => {
            expand(context, tenant, range)?;
            Ok(links(["attributes/", "boottimeline", "nodes/"]))
        }
        (Operation::Retrieve, ["noderange", range, "boottimeline"]) => {
            let nodes = expand(context, tenant, range)?;
            Ok(super::events::boot_timelines(context, &nodes))
        }
        (Operation::Retrieve, ["events"]) => Ok(links(["audit", "log"])),
        (Operation::Retrieve, ["events", name]) => {
            let log = context
                .events
                .by_name(name)
                .ok_or_else(|| ApiError::not_found(format!("{} not found", request.path)))?;
            super::events::query(context, log, parameters)
        }
        (Operation::Delete, ["noderange", range]) => {
            let nodes = expand(context, tenant, range)?;
            let names: Vec<String> = nodes.iter().map(|node| node.to_string()).collect();
            delete_nodes(context, &names).await
        }
        (Operation::Retrieve, ["noderange", range, "nodes"]) => {
            let nodes = expand(context, tenant, range)?;
            Ok(links(nodes.iter().map(|name| format!("{name}/"))))
        }
        // The CLI posts to `/noderange//abbreviate`, which the canonical path makes this.
        (Operation::Create, ["noderange", _, "abbreviate"] | ["noderange", "abbreviate"]) => {
            abbreviate(context, tenant, parameters)
        }
        (_, ["noderange", range, "attributes", kind]) => {
            let nodes = expand(context, tenant, range)?;
            node_attributes(context, tenant, operation, &nodes, kind, parameters).await
        }
        (Operation::Retrieve, ["nodegroups"]) => {
            let names = context.config.read(|store| {
                let mut names = store.group_names_sorted();
                if tenant.is_some() {
                    names.retain(|name| tenant::group_in_tenant(store, name, tenant));
                }
                names
            });
            Ok(links(names.iter().map(|name| format!("{name}/"))))
        }
        (Operation::Create, ["nodegroups"]) => create_group(context, tenant, parameters).await,
        (Operation::Retrieve, ["nodegroups", group]) => {
            require_group(context, tenant, group)?;
            Ok(links(["attributes/"]))
        }
        (Operation::Delete, ["nodegroups", group]) => {
            let group = require_owned_group(context, tenant, group)?.to_string();
            commit(context, move |store, _| {
                plan::delete_groups(store, std::slice::from_ref(&group))
            })
            .await
            .map(|warnings| {
                let mut messages = warnings;
                messages.push(json!({"deleted": request_tail(&request.path)}));
                messages
            })
        }
        (Operation::Retrieve, ["nodegroups", _group, "attributes"]) => {
            Ok(links(["all", "current", "rename"]))
        }
        (_, ["nodegroups", group, "attributes", kind]) => {
            group_attributes(context, tenant, operation, group, kind, parameters).await
        }
        (_, ["users", ..] | ["usergroups", ..]) => {
            super::users::dispatch(context, caller, operation, &segments, parameters).await
        }
        (Operation::Retrieve, ["self", "whoami"]) => match caller {
            Caller::Node { name } => Ok(vec![json!({"nodename": name.to_string()})]),
            _ => Err(ApiError::forbidden("only nodes have a self")),
        },
        (_, [first, ..])
            if [
                "events",
                "nodes",
                "noderange",
                "nodegroups",
                "version",
                "networking",
                "self",
            ]
            .contains(first) =>
        {
            Err(ApiError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "{} is not supported on {}",
                    operation.as_str(),
                    request.path
                ),
            ))
        }
        _ => Err(ApiError::not_found(format!("{} not found", request.path))),
    }
}

fn request_tail(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn links<I, S>(items: I) -> Vec<Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    items
        .into_iter()
        .map(|item| json!({"item": {"href": item.as_ref()}}))
        .collect()
}

/// Remove the `databynode` wrapper of a single-node message.
fn strip_node(message: Value) -> Value {
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

/// A node the caller's tenant sees; another tenant's node is "not found" (audited as denied).
fn require_node(context: &Context, tenant: Option<&str>, name: &str) -> Result<Arc<str>, ApiError> {
    let missing = || ApiError::not_found(format!("node {name} not found"));
    context.config.read(|store| {
        let node = store.canonical_node(name).ok_or_else(missing)?;
        if tenant::node_in_tenant(store, &node, tenant) {
            Ok(node)
        } else {
            Err(missing().hiding())
        }
    })
}

/// A group the caller's tenant sees (tenants see `everything`, holding their own nodes).
fn require_group(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
) -> Result<Arc<str>, ApiError> {
    let missing = || ApiError::not_found(format!("group {name} not found"));
    context.config.read(|store| {
        let group = store.group_key(name).ok_or_else(missing)?;
        if tenant::group_in_tenant(store, &group, tenant) {
            Ok(group)
        } else {
            Err(missing().hiding())
        }
    })
}

/// A group the caller's tenant owns (may change): for tenants, not `everything`.
fn require_owned_group(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
) -> Result<Arc<str>, ApiError> {
    let group = require_group(context, tenant, name)?;
    if tenant.is_some() && &*group == crate::config::model::EVERYTHING {
        return Err(ApiError::forbidden(format!(
            "group {group} belongs to the site; a tenant may not change it"
        ))
        .hiding());
    }
    Ok(group)
}

fn expand(context: &Context, tenant: Option<&str>, range: &str) -> Result<Vec<Arc<str>>, ApiError> {
    context.config.read(|store| expand_in(store, tenant, range))
}

/// For a tenant's change: the groups a node joins (`groups`) and the nodes a group lists
/// (`nodes`) must be the tenant's own, so that no tenant reaches into another's inheritance.
fn check_tenant_references(
    store: &Store,
    tenant: Option<&str>,
    inputs: &[(String, AttributeInput)],
) -> Result<(), ConfigChangeError> {
    let Some(tenant) = tenant else {
        return Ok(());
    };
    let view = TenantView::new(store, tenant);
    for (name, input) in inputs {
        let names: Vec<Arc<str>> = match input {
            AttributeInput::Auto(text) | AttributeInput::Literal(text) => {
                crate::config::model::split_list(text)
            }
            AttributeInput::List(items) | AttributeInput::Prepend(items) => {
                items.iter().map(|item| Arc::from(item.as_str())).collect()
            }
            _ => continue,
        };
        match name.as_str() {
            "groups" => {
                if let Some(foreign) = names.iter().find(|group| {
                    store.group(group).is_some()
                        && !tenant::group_in_tenant(store, group, Some(tenant))
                }) {
                    return Err(ConfigChangeError::NoSuchGroup(foreign.to_string()));
                }
            }
            "nodes" => {
                if let Some(foreign) = names.iter().find(|node| !view.owns_node(node)) {
                    return Err(ConfigChangeError::NoSuchNode(foreign.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn change_error(error: ConfigChangeError) -> ApiError {
    let code = match &error {
        ConfigChangeError::NoSuchNode(_)
        | ConfigChangeError::NoSuchGroup(_)
        | ConfigChangeError::NoSuchAccount { .. } => ErrorCode::NotFound,
        ConfigChangeError::NameInUse { .. } | ConfigChangeError::AccountExists { .. } => {
            ErrorCode::Conflict
        }
        // The journal's failure (a file path, an OS error) is for the log only.
        ConfigChangeError::JournalUnavailable(_) => {
            return ApiError::internal(
                ErrorCode::Unavailable,
                "the configuration journal is unavailable, nothing was changed",
                &error,
            );
        }
        _ => ErrorCode::InvalidChange,
    };
    // Validation errors describe the request (names, values, noderanges); their causes are
    // parse errors of the same input, safe and useful to show.
    ApiError::new(code, crate::error::Chain(&error).to_string())
}

/// [`commit`], for the other resource modules.
pub(super) async fn commit_plan(
    context: &Context,
    planner: impl FnOnce(
        &Store,
        &crate::config::secrets::MasterKey,
    ) -> Result<plan::Plan, ConfigChangeError>,
) -> Result<Vec<Value>, ApiError> {
    commit(context, planner).await
}

/// Commit a plan; returns the warnings as messages.
async fn commit(
    context: &Context,
    planner: impl FnOnce(
        &Store,
        &crate::config::secrets::MasterKey,
    ) -> Result<plan::Plan, ConfigChangeError>,
) -> Result<Vec<Value>, ApiError> {
    let receipt = context.config.commit(planner).await.map_err(change_error)?;
    Ok(receipt
        .warnings
        .into_iter()
        .map(|warning| json!({"warning": warning}))
        .collect())
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

fn attribute_inputs(
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

async fn create_nodes(
    context: &Context,
    tenant: Option<&str>,
    parameters: &Value,
    is_range: bool,
) -> Result<Vec<Value>, ApiError> {
    let Some(name) = parameters.get("name").and_then(Value::as_str) else {
        return Err(ApiError::bad_request("a name is required to create nodes"));
    };
    let names: Vec<String> = if is_range {
        noderange::expand(name, &Verbatim)
            .map_err(|error| ApiError::bad_request(format!("invalid noderange {name}: {error}")))?
            .iter()
            .map(|node| node.to_string())
            .collect()
    } else {
        if name.contains(char::is_whitespace) {
            return Err(ApiError::bad_request(format!(
                "node name '{name}' contains a space"
            )));
        }
        vec![name.to_string()]
    };
    let inputs = attribute_inputs(parameters, &["name"])?;
    let created = names.clone();
    let owner: Option<Arc<str>> = tenant.map(Arc::from);
    let mut messages = commit(context, move |store, key| {
        check_tenant_references(store, owner.as_deref(), &inputs)?;
        let mut plan = plan::create_nodes(store, key, &names, &inputs)?;
        if let Some(owner) = owner {
            // Tag before any other op of the plan could make the node visible.
            let tags = names
                .iter()
                .map(|node| crate::config::model::Op::NodeSetTenant {
                    node: Arc::from(node.as_str()),
                    tenant: Some(owner.clone()),
                });
            let position = names.len().min(plan.ops.len());
            plan.ops.splice(position..position, tags);
        }
        Ok(plan)
    })
    .await?;
    messages.extend(
        created
            .iter()
            .map(|name| json!({"created": format!("nodes/{name}")})),
    );
    Ok(messages)
}

async fn delete_nodes(context: &Context, names: &[String]) -> Result<Vec<Value>, ApiError> {
    let names: Vec<Arc<str>> = names.iter().map(|name| Arc::from(name.as_str())).collect();
    let deleted = names.clone();
    let mut messages = commit(context, move |store, _| plan::delete_nodes(store, &names)).await?;
    messages.extend(
        deleted
            .iter()
            .map(|name| json!({"deleted": name.to_string()})),
    );
    Ok(messages)
}

async fn create_group(
    context: &Context,
    tenant: Option<&str>,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let Some(name) = parameters.get("name").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "a name is required to create a group",
        ));
    };
    let name = name.to_string();
    let inputs = attribute_inputs(parameters, &["name"])?;
    let created = name.clone();
    let owner: Option<Arc<str>> = tenant.map(Arc::from);
    let mut messages = commit(context, move |store, key| {
        check_tenant_references(store, owner.as_deref(), &inputs)?;
        let mut plan = plan::create_group(store, key, &name, &inputs)?;
        if let Some(owner) = owner {
            plan.ops.insert(
                1.min(plan.ops.len()),
                crate::config::model::Op::GroupSetTenant {
                    group: Arc::from(name.as_str()),
                    tenant: Some(owner),
                },
            );
        }
        Ok(plan)
    })
    .await?;
    messages.push(json!({"created": format!("nodegroups/{created}")}));
    Ok(messages)
}

fn abbreviate(
    context: &Context,
    tenant: Option<&str>,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let nodes: Vec<Arc<str>> = match parameters.get("nodes") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Arc::from)
            .collect(),
        Some(Value::String(text)) => crate::config::model::split_list(text),
        _ => {
            return Err(ApiError::bad_request(
                "nodes must be a list or a comma-separated string",
            ));
        }
    };
    let text = context.config.read(|store| match tenant {
        None => noderange::abbreviate(&nodes, store),
        Some(tenant) => noderange::abbreviate(&nodes, &TenantView::new(store, tenant)),
    });
    Ok(vec![json!({"noderange": text})])
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
fn catalogue_names(for_node: bool) -> impl Iterator<Item = &'static str> {
    catalogue::all().iter().filter_map(move |spec| {
        let applies = if for_node { spec.node } else { spec.group };
        (applies && !spec.name.contains('*')).then_some(spec.name)
    })
}

/// Requested attribute names (`attributes` parameter: a list or comma string; wildcards and
/// aliases allowed). `None` when the request does not narrow the answer.
fn requested_attributes(parameters: &Value) -> Result<Option<Vec<String>>, ApiError> {
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

fn node_attribute_map(
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

async fn node_attributes(
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
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "{} is not supported on attributes/{kind}",
                operation.as_str()
            ),
        )),
    }
}

async fn group_attributes(
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
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "{} is not supported on attributes/{kind}",
                operation.as_str()
            ),
        )),
    }
}

fn stored_json(stored: &crate::config::model::Stored) -> Value {
    use crate::config::model::Stored;
    match stored {
        Stored::Value(text) => json!({"value": text.to_string()}),
        Stored::Expression(expression) => json!({"expression": expression.text.to_string()}),
        Stored::Sealed(_) | Stored::Hashed { .. } => json!({"isset": true}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_route_pattern() {
        let route = |path| route_of(path).map(|route| route.path);
        assert_eq!(route("/"), Some("/"));
        assert_eq!(
            route("/noderange/n[1-4]/attributes/all"),
            Some("/noderange/{range}/attributes/all")
        );
        assert_eq!(
            route("/noderange/abbreviate"),
            Some("/noderange/abbreviate")
        );
        assert_eq!(route("/nodes/n1/"), Some("/nodes/{node}/"));
        assert_eq!(
            route("/networking/dhcp/subnets/10.0.0.0/24"),
            Some("/networking/dhcp/subnets/{subnet}")
        );
        assert_eq!(route("/nodes/n1/nonsense/deeper"), None);
    }
}
