//! The API's one error type: a stable [`ErrorCode`] (which decides the HTTP status and
//! Confluent's numeric `errorcode`), and a message that is safe to show a client. Internal
//! detail (file paths, OS errors, cause chains) never reaches the message: constructors that
//! take an internal cause log its whole chain and keep only a fixed sentence.
//!
//! Every transport renders an error the same way ([`ApiError::to_json`]): the unix and TLS
//! sockets send it as a message, HTTP as the body with the status, the WebSocket as a frame:
//! `{"errorcode": 404, "error": "...", "code": "not_found"}`.

use serde_json::{Value, json};

use crate::error::Chain;

/// Stable machine-readable error codes. Documented for clients; only ever added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, parameters, noderange, path.
    BadRequest,
    /// A configuration change was refused by validation (nothing was changed).
    InvalidChange,
    /// No valid credentials.
    Unauthenticated,
    /// The API over plain HTTP without `--http-allow-api`.
    TlsRequired,
    /// The caller's role or tenant does not allow this operation on this path.
    Forbidden,
    /// No such resource (or one the caller may not see).
    NotFound,
    /// The resource exists but does not answer this operation.
    UnsupportedOperation,
    /// The name is already in use.
    Conflict,
    /// Too many concurrent attempts (logins) or sessions.
    Throttled,
    /// A per-node operation did not finish in time.
    Timeout,
    /// The server failed; the log has the cause.
    Internal,
    /// A store the request needs (the configuration journal, the password workers) is
    /// unavailable; nothing was changed.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidChange,
        ErrorCode::Unauthenticated,
        ErrorCode::TlsRequired,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::UnsupportedOperation,
        ErrorCode::Conflict,
        ErrorCode::Throttled,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The HTTP status, also Confluent's `errorcode` on the sockets.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidChange => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::TlsRequired | ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::UnsupportedOperation => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::Throttled => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidChange => "invalid_change",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::TlsRequired => "tls_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnsupportedOperation => "unsupported_operation",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answering a whole request (or one node of a fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// Safe to show the client: says what was wrong with the request, never server internals.
    pub message: String,
    /// The target exists but belongs to another tenant: answered like a missing one, audited
    /// as a denied request.
    pub hidden: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            hidden: false,
        }
    }

    /// A failure of the server itself: `cause` (with its chain) goes to the log, the client
    /// gets `message`, a fixed sentence naming what failed.
    pub fn internal(
        code: ErrorCode,
        message: &'static str,
        cause: &(dyn std::error::Error + 'static),
    ) -> ApiError {
        tracing::warn!(code = code.as_str(), error = %Chain(cause), "{message}");
        ApiError::new(code, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn unsupported(operation: &str, path: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!("{operation} is not supported on {path}"),
        )
    }

    /// Mark an error as hiding another tenant's object (see [`ApiError::hidden`]).
    pub fn hiding(mut self) -> ApiError {
        self.hidden = true;
        self
    }

    /// The message every transport sends.
    pub fn to_json(&self) -> Value {
        json!({"errorcode": self.status(), "error": self.message, "code": self.code.as_str()})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    #[test]
    fn internal_errors_keep_the_cause_out_of_the_message() {
        let cause =
            std::io::Error::other("/var/lib/confluent/etc/cfg/journal/7.wal: No space left");
        let error =
            ApiError::internal(ErrorCode::Unavailable, "the journal is unavailable", &cause);
        let json = error.to_json().to_string();
        assert!(!json.contains("/var/lib"), "{json}");
        assert!(!json.contains("No space"), "{json}");
        assert_eq!(error.status(), 503);
    }
}
