//! The one resource tree (reference section 1): requests `{operation, path, parameters}`
//! answered by a stream of JSON messages, whatever the transport. Every request goes through
//! [`authorize`] before it reaches a handler.
//!
//! This module knows nothing of sockets; [`socket`] serves it over the unix socket with
//! Confluent's TLV framing.

pub mod audit;
pub mod dhcp;
pub mod events;
pub mod resources;
pub mod socket;

use serde_json::{Value, json};

use crate::daemon::Context;

/// The operation of a request (HTTP verbs map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Retrieve,
    Update,
    Delete,
    Start,
    Shutdown,
}

impl Operation {
    pub fn parse(text: &str) -> Option<Operation> {
        Some(match text {
            "create" => Operation::Create,
            "retrieve" => Operation::Retrieve,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            "start" => Operation::Start,
            "shutdown" => Operation::Shutdown,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Retrieve => "retrieve",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Start => "start",
            Operation::Shutdown => "shutdown",
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Local root or the daemon's own user on the unix socket: fully trusted.
    LocalTrusted { uid: u32 },
    /// Any other local user (refused until authentication is implemented).
    LocalUser { uid: u32 },
    /// A network client presenting the administrator token (`etc/keys/admin.token`, readable
    /// only by the daemon's user): trusted like local root until users and roles exist.
    AdminToken,
}

/// A request on the tree.
#[derive(Debug, Clone)]
pub struct Request {
    pub operation: Operation,
    pub path: String,
    pub parameters: Value,
}

/// An error answering a whole request: a stable code, an HTTP-like status and a safe message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }

    pub fn to_json(&self) -> Value {
        json!({"errorcode": self.status, "error": self.message, "code": self.code})
    }
}

/// The single authorization decision every request passes through. For now: trusted local
/// callers may do everything, every other caller nothing (the authentication issue fills in
/// users, roles and tenants here).
pub fn authorize(caller: &Caller, request: &Request) -> Result<(), ApiError> {
    match caller {
        Caller::LocalTrusted { .. } | Caller::AdminToken => Ok(()),
        Caller::LocalUser { uid } => Err(ApiError::new(
            403,
            "forbidden",
            format!(
                "user {uid} is not authorized to {} {}",
                request.operation.as_str(),
                request.path
            ),
        )),
    }
}

/// Authorize then answer a request; the messages are in the order they should be sent.
pub async fn handle(context: &Context, caller: &Caller, request: Request) -> resources::Answer {
    if let Err(error) = authorize(caller, &request) {
        audit::record(context, caller, &request, true, Err(&error)).await;
        return resources::Answer::Values(vec![error.to_json()]);
    }
    let result = resources::dispatch(context, &request).await;
    if audit::audited(request.operation) {
        audit::record(
            context,
            caller,
            &request,
            false,
            result.as_ref().map(|_| ()),
        )
        .await;
    }
    match result {
        Ok(answer) => answer,
        Err(error) => resources::Answer::Values(vec![error.to_json()]),
    }
}
