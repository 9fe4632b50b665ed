//! `/users/` and `/usergroups/` (reference 1.2): list, create, show, change and delete users
//! (role, password, tenant) and user groups (an OS group name and the role its members get).
//!
//! Authorization has already decided the operation is allowed (Administrators only for
//! changes). Here the caller's tenant scopes what it sees: a tenant's users manage only their
//! tenant's users; default-tenant callers address a tenant's users with the `tenant` parameter.
//! Passwords are checked against the policy and hashed (argon2id, on the bounded blocking pool)
//! before the change is committed; the hash is journaled, the password never.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Context;
use super::{ApiError, Caller, ErrorCode, Operation};
use crate::auth::{self, NewPasswordError};
use crate::config::model::{Op, UserGroupRecord, UserRecord};
use crate::config::plan::{ConfigChangeError, Plan};

/// Parameters that are never stored as given.
const PASSWORD: &str = "password";

pub async fn dispatch(
    context: &Context,
    caller: &Caller,
    operation: Operation,
    segments: &[&str],
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let tenant = scope(caller, parameters)?;
    let tenant = tenant.as_deref();
    match (operation, segments) {
        (Operation::Retrieve, ["users"]) => Ok(list_users(context, tenant)),
        (Operation::Create, ["users"]) => {
            let name = text(parameters, "name")?
                .ok_or_else(|| ApiError::bad_request("a name is required to create a user"))?;
            create_user(context, tenant, &name, parameters).await
        }
        (Operation::Retrieve, ["users", name]) => show_user(context, tenant, name),
        (Operation::Update, ["users", name]) => {
            update_user(context, tenant, name, parameters).await
        }
        (Operation::Delete, ["users", name]) => delete_user(context, tenant, name).await,
        (Operation::Retrieve, ["usergroups"]) => Ok(context.config.read(|store| {
            store
                .usergroups()
                .keys()
                .map(|name| json!({"item": {"href": name.to_string()}}))
                .collect()
        })),
        (Operation::Create, ["usergroups"]) => {
            let name = text(parameters, "name")?.ok_or_else(|| {
                ApiError::bad_request("a name is required to create a user group")
            })?;
            set_usergroup(context, &name, parameters, true).await
        }
        (Operation::Retrieve, ["usergroups", name]) => context
            .config
            .read(|store| {
                store
                    .usergroup(name)
                    .map(|group| json!({"name": name, "role": group.role.to_string()}))
            })
            .map(|group| vec![group])
            .ok_or_else(|| ApiError::not_found(format!("user group {name} not found"))),
        (Operation::Update, ["usergroups", name]) => {
            set_usergroup(context, name, parameters, false).await
        }
        (Operation::Delete, ["usergroups", name]) => {
            let group: Arc<str> = Arc::from(*name);
            commit(context, move |store| {
                if store.usergroup(&group).is_none() {
                    return Err(ConfigChangeError::NoSuchAccount {
                        kind: "user group",
                        name: group.to_string(),
                    });
                }
                Ok(vec![Op::UserGroupSet {
                    group: group.clone(),
                    record: None,
                }])
            })
            .await?;
            Ok(vec![json!({"deleted": name})])
        }
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "{} is not supported on /{}",
                operation.as_str(),
                segments.join("/")
            ),
        )),
    }
}

/// The tenant a request addresses: a tenant user's own; for the default tenant, the `tenant`
/// parameter if given.
fn scope(caller: &Caller, parameters: &Value) -> Result<Option<String>, ApiError> {
    let requested = text(parameters, "tenant")?.filter(|tenant| !tenant.is_empty());
    match (caller.tenant(), requested) {
        (Some(own), Some(other)) if own != other => Err(ApiError::forbidden(format!(
            "a user of tenant {own} may not manage tenant {other}"
        ))
        .hiding()),
        (Some(own), _) => Ok(Some(own.to_string())),
        (None, Some(tenant)) => {
            auth::check_name(&tenant).map_err(|error| ApiError::bad_request(error.to_string()))?;
            Ok(Some(tenant))
        }
        (None, None) => Ok(None),
    }
}

fn text(parameters: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match parameters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

fn login_of(tenant: Option<&str>, name: &str) -> Result<String, ApiError> {
    auth::check_name(name).map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(auth::qualified(tenant, name))
}

fn list_users(context: &Context, tenant: Option<&str>) -> Vec<Value> {
    context.config.read(|store| {
        store
            .users()
            .keys()
            .filter_map(|login| {
                let (owner, name) = match login.split_once('/') {
                    Some((owner, name)) => (Some(owner), name),
                    None => (None, &**login),
                };
                (owner == tenant).then(|| json!({"item": {"href": name}}))
            })
            .collect()
    })
}

fn show_user(context: &Context, tenant: Option<&str>, name: &str) -> Result<Vec<Value>, ApiError> {
    let login = login_of(tenant, name)?;
    context
        .config
        .read(|store| {
            store.user(&login).map(|user| {
                json!({
                    "name": name,
                    "tenant": tenant,
                    "role": user.role.to_string(),
                    "password": {"isset": user.password_hash.is_some()},
                })
            })
        })
        .map(|user| vec![user])
        .ok_or_else(|| ApiError::not_found(format!("user {name} not found")))
}

/// The canonical role name for a requested one (unique case-insensitive prefixes accepted).
fn role_name(context: &Context, requested: &str) -> Result<Arc<str>, ApiError> {
    context
        .auth
        .roles
        .resolve(requested)
        .map(|role| Arc::from(role.name()))
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

async fn new_hash(context: &Context, login: &str, password: &str) -> Result<Arc<str>, ApiError> {
    context
        .auth
        .hash_new_password(login, password)
        .await
        .map(Arc::from)
        .map_err(|error| match error {
            NewPasswordError::Policy(policy) => ApiError::bad_request(policy.to_string()),
            other => ApiError::internal(
                ErrorCode::Unavailable,
                "the password could not be hashed, nothing was changed",
                &other,
            ),
        })
}

async fn create_user(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let login = login_of(tenant, name)?;
    let role = match text(parameters, "role")? {
        Some(role) => role_name(context, &role)?,
        None => return Err(ApiError::bad_request("a role is required to create a user")),
    };
    if tenant.is_some() && text(parameters, PASSWORD)?.is_none() {
        return Err(ApiError::bad_request(
            "tenant users need a password (PAM serves the default tenant only)",
        ));
    }
    let password_hash = match text(parameters, PASSWORD)? {
        Some(password) => Some(new_hash(context, &login, &password).await?),
        None => None,
    };
    let key: Arc<str> = Arc::from(login.as_str());
    commit(context, move |store| {
        if store.user(&key).is_some() {
            return Err(ConfigChangeError::AccountExists {
                kind: "user",
                name: key.to_string(),
            });
        }
        Ok(vec![Op::UserSet {
            user: key.clone(),
            record: Some(UserRecord {
                role: role.clone(),
                password_hash: password_hash.clone(),
            }),
        }])
    })
    .await?;
    Ok(vec![json!({"created": format!("users/{name}")})])
}

async fn update_user(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let login = login_of(tenant, name)?;
    let role = match text(parameters, "role")? {
        Some(role) => Some(role_name(context, &role)?),
        None => None,
    };
    let password_hash = match text(parameters, PASSWORD)? {
        Some(password) => Some(new_hash(context, &login, &password).await?),
        None => None,
    };
    if role.is_none() && password_hash.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give a role or a password",
        ));
    }
    let key: Arc<str> = Arc::from(login.as_str());
    commit(context, move |store| {
        let Some(current) = store.user(&key) else {
            return Err(ConfigChangeError::NoSuchAccount {
                kind: "user",
                name: key.to_string(),
            });
        };
        let mut record = (**current).clone();
        if let Some(role) = &role {
            record.role = role.clone();
        }
        if let Some(hash) = &password_hash {
            record.password_hash = Some(hash.clone());
        }
        Ok(vec![Op::UserSet {
            user: key.clone(),
            record: Some(record),
        }])
    })
    .await?;
    // Sessions opened with the old password or role end now.
    context.auth.forget(&login);
    Ok(vec![json!({"updated": format!("users/{name}")})])
}

async fn delete_user(
    context: &Context,
    tenant: Option<&str>,
    name: &str,
) -> Result<Vec<Value>, ApiError> {
    let login = login_of(tenant, name)?;
    let key: Arc<str> = Arc::from(login.as_str());
    commit(context, move |store| {
        if store.user(&key).is_none() {
            return Err(ConfigChangeError::NoSuchAccount {
                kind: "user",
                name: key.to_string(),
            });
        }
        Ok(vec![Op::UserSet {
            user: key.clone(),
            record: None,
        }])
    })
    .await?;
    context.auth.forget(&login);
    Ok(vec![json!({"deleted": name})])
}

async fn set_usergroup(
    context: &Context,
    name: &str,
    parameters: &Value,
    create: bool,
) -> Result<Vec<Value>, ApiError> {
    auth::check_name(name).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let role = match text(parameters, "role")? {
        Some(role) => role_name(context, &role)?,
        None => return Err(ApiError::bad_request("a role is required")),
    };
    let group: Arc<str> = Arc::from(name);
    commit(context, move |store| {
        match (create, store.usergroup(&group).is_some()) {
            (true, true) => {
                return Err(ConfigChangeError::AccountExists {
                    kind: "user group",
                    name: group.to_string(),
                });
            }
            (false, false) => {
                return Err(ConfigChangeError::NoSuchAccount {
                    kind: "user group",
                    name: group.to_string(),
                });
            }
            _ => {}
        }
        Ok(vec![Op::UserGroupSet {
            group: group.clone(),
            record: Some(UserGroupRecord { role: role.clone() }),
        }])
    })
    .await?;
    let verb = if create { "created" } else { "updated" };
    Ok(vec![json!({verb: format!("usergroups/{name}")})])
}

async fn commit(
    context: &Context,
    planner: impl FnOnce(&crate::config::Store) -> Result<Vec<Op>, ConfigChangeError>,
) -> Result<(), ApiError> {
    context
        .config
        .commit(|store, _| {
            planner(store).map(|ops| Plan {
                ops,
                warnings: Vec::new(),
            })
        })
        .await
        .map(|_| ())
        .map_err(super::commit::change_error)
}
