//! Nodes and node ranges: expansion as the caller's tenant sees the configuration, creation,
//! deletion, abbreviation.

use std::sync::Arc;

use serde_json::{Value, json};

use super::attributes::attribute_inputs;
use super::commit::commit;
use super::{ApiError, Context};
use crate::auth::tenant::{self, TenantView};
use crate::config::model::Store;
use crate::config::noderange::{self, Verbatim};
use crate::config::plan::{self, AttributeInput, ConfigChangeError};

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

/// A node the caller's tenant sees; another tenant's node is "not found" (audited as denied).
pub(super) fn require_node(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
) -> Result<Arc<str>, ApiError> {
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

pub(super) fn expand(
    context: &Context,
    tenant: Option<&str>,
    range: &str,
) -> Result<Vec<Arc<str>>, ApiError> {
    context.config.read(|store| expand_in(store, tenant, range))
}

/// For a tenant's change: the groups a node joins (`groups`) and the nodes a group lists
/// (`nodes`) must be the tenant's own, so that no tenant reaches into another's inheritance.
pub(super) fn check_tenant_references(
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

pub(super) async fn create_nodes(
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

pub(super) async fn delete_nodes(
    context: &Context,
    names: &[String],
) -> Result<Vec<Value>, ApiError> {
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

pub(super) fn abbreviate(
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
