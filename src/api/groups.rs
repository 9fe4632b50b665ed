//! Node groups: lookup within the caller's tenant, creation.

use std::sync::Arc;

use serde_json::{Value, json};

use super::attributes::attribute_inputs;
use super::commit::commit;
use super::nodes::check_tenant_references;
use super::{ApiError, Context};
use crate::auth::tenant::{self};
use crate::config::plan::{self};

/// A group the caller's tenant sees (tenants see `everything`, holding their own nodes).
pub(super) fn require_group(
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
pub(super) fn require_owned_group(
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

pub(super) async fn create_group(
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
