//! The audit trail of the API: every request that changes something (create, update, delete,
//! shutdown) and every denied request becomes a record of the `audit` log, written before the
//! answer is sent (a durable append), so an acknowledged change is always accounted for.
//!
//! Parameter values are not recorded, only their names: they may hold passwords. Each record
//! names the user (`tenant/user` for tenant users), its tenant and role, the operation, the
//! target path and the outcome.

use serde_json::{Value, json};

use super::Context;
use super::{ApiError, Caller, Operation, Request};
use crate::eventlog::Event;

/// Who the caller is, as the audit log names them.
pub fn describe(caller: &Caller) -> String {
    match caller {
        Caller::LocalTrusted { uid } => format!("uid={uid}"),
        Caller::AdminToken => "admin-token".to_string(),
        Caller::User(identity) => identity.login(),
        Caller::Node { name } => format!("node:{name}"),
    }
}

/// Whether a request of this operation is audited even when allowed.
pub fn audited(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::Create | Operation::Update | Operation::Delete | Operation::Shutdown
    )
}

/// Record the outcome of a request: `api.request` when it ran, `api.denied` when refused.
pub async fn record(
    context: &Context,
    caller: &Caller,
    request: &Request,
    denied: bool,
    outcome: Result<(), &ApiError>,
) {
    let parameters: Vec<&str> = match &request.parameters {
        Value::Object(map) => map.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let detail = json!({
        "operation": request.operation.as_str(),
        "target": request.path,
        "parameters": parameters,
        "tenant": caller.tenant(),
        "role": caller.role().map(|role| role.name()),
        "allowed": !denied,
        "outcome": match outcome {
            Ok(()) => json!("ok"),
            Err(error) => json!({"status": error.status(), "code": error.code.as_str()}),
        },
    });
    let kind = if denied { "api.denied" } else { "api.request" };
    let event = Event::new(kind, detail).user(describe(caller));
    if let Err(error) = context.events.audit.append_durable(event).await {
        // The log itself reports write failures and drops loudly, with counts and at growing
        // intervals; one error line per request would bury the daemon's log when the disk is
        // full. The request itself is still answered.
        tracing::debug!(error = %crate::error::Chain(&error), operation = request.operation.as_str(), path = %request.path, "failed to write the audit record");
    }
}

/// Record a request refused before it had a caller (no or wrong credentials): `api.denied`
/// with the user it claimed to be (never its password) or the peer as far as the transport
/// knows it, and why. Not waited for: unauthenticated peers must not be able to make the daemon
/// wait on the disk.
pub fn unauthenticated(
    context: &Context,
    peer: &str,
    operation: &str,
    target: &str,
    transport: &str,
    reason: &str,
) {
    let tenant = peer.split_once('/').map(|(tenant, _)| tenant);
    let detail = json!({
        "operation": operation,
        "target": target,
        "tenant": tenant,
        "allowed": false,
        "transport": transport,
        "reason": reason,
        "outcome": {"status": 401, "code": "unauthenticated"},
    });
    let _ = context
        .events
        .audit
        .append(Event::new("api.denied", detail).user(peer));
}
