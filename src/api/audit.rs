//! The audit trail of the API: every request that changes something (create, update, delete,
//! shutdown) and every denied request becomes a record of the `audit` log, written before the
//! answer is sent (a durable append), so an acknowledged change is always accounted for.
//!
//! Parameter values are not recorded, only their names: they may hold passwords. Each record
//! names the user (`tenant/user` for tenant users), its tenant and role, the operation, the
//! target path and the outcome.

use serde_json::Value;

use super::Context;
use super::{ApiError, Caller, Operation, Request};
use crate::eventlog::Event;
use crate::eventlog::domain::{ApiCall, ApiDenial, ApiOutcome, DomainEvent, UnauthenticatedPeer};

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
    let parameters = match &request.parameters {
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let call = ApiCall {
        operation: request.operation.as_str().to_string(),
        target: request.path.to_string(),
        parameters,
        tenant: caller.tenant().map(str::to_string),
        role: caller.role().map(|role| role.name().to_string()),
        allowed: !denied,
        outcome: match outcome {
            Ok(()) => ApiOutcome::Ok,
            Err(error) => ApiOutcome::Failed {
                status: error.status(),
                code: error.code.as_str().to_string(),
            },
        },
    };
    let payload = if denied {
        DomainEvent::ApiDenied(ApiDenial::Caller(call))
    } else {
        DomainEvent::ApiRequest(call)
    };
    let event = Event::from(payload).user(describe(caller));
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
    let tenant = peer.split_once('/').map(|(tenant, _)| tenant.to_string());
    let denial = UnauthenticatedPeer {
        operation: operation.to_string(),
        target: target.to_string(),
        tenant,
        allowed: false,
        transport: transport.to_string(),
        reason: reason.to_string(),
        outcome: ApiOutcome::Failed {
            status: 401,
            code: "unauthenticated".to_string(),
        },
    };
    let _ = context
        .events
        .audit
        .append(Event::from(DomainEvent::ApiDenied(ApiDenial::Unauthenticated(denial))).user(peer));
}
