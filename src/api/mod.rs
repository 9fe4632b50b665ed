//! The one resource tree (reference section 1): requests `{operation, path, parameters}`
//! answered by JSON messages, whatever the transport. Every request of every transport (the
//! unix and TLS sockets, HTTP, the WebSocket) goes through [`handle`], whose [`authorize`] is
//! the only authorization decision, before the route table ([`routes::ROUTES`], which the
//! authorization matrix test enumerates) hands it to its handler.
//!
//! The transports live elsewhere: [`socket`] (Confluent's TLV framing) here, HTTP and the
//! WebSocket in `http`.

pub mod attributes;
pub mod audit;
pub mod commit;
pub mod dhcp;
pub mod error;
pub mod events;
pub mod fanout;
pub mod groups;
pub mod nodes;
pub mod routes;
pub mod socket;
pub mod users;

use std::pin::Pin;

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Identity;
use crate::auth::roles::{Role, RoleTable};

/// What the API's handlers share, passed explicitly: the configuration, who callers are, the
/// event logs, and the DHCP service's tables the `/networking/dhcp/` routes show and change.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<crate::config::ConfigEngine>,
    /// Users, sessions, roles: who callers are.
    pub auth: Arc<crate::auth::Authenticator>,
    pub admin_token: Arc<crate::auth::token::AdminToken>,
    /// The `events` and `audit` logs.
    pub events: Arc<crate::eventlog::EventLogs>,
    /// Recent DHCP exchanges (empty when DHCP is not served).
    pub dhcp_exchanges: Arc<crate::dhcp::ExchangeLog>,
    /// The interfaces the DHCP service serves now.
    pub dhcp_interfaces: Arc<crate::dhcp::interfaces::InterfaceTable>,
    /// The daemon's metrics (`/metrics`); requests are counted by route pattern.
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub use crate::auth::Operation;
pub use error::{ApiError, ErrorCode};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Local root or the daemon's own user on the unix socket: fully trusted, no checks.
    LocalTrusted { uid: u32 },
    /// A network client presenting the administrator token (`etc/keys/admin.token`, readable
    /// only by the daemon's user): an Administrator of the default tenant.
    AdminToken,
    /// An authenticated user (password, PAM, session or unix-socket peer).
    User(Arc<Identity>),
    /// A node authenticated by its API key: only `/self/...`.
    Node { name: Arc<str> },
}

impl Caller {
    /// The caller's tenant; `None` for the default tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::User(identity) => identity.tenant.as_deref(),
            _ => None,
        }
    }

    /// The role authorization applies (`None`: trusted, or a node).
    pub fn role(&self) -> Option<&Role> {
        match self {
            Caller::User(identity) => Some(&identity.role),
            Caller::AdminToken => Some(&Role::Administrator),
            Caller::LocalTrusted { .. } | Caller::Node { .. } => None,
        }
    }

    /// Whether the caller may manage users of every tenant (and usergroups).
    pub fn is_site_administrator(&self) -> bool {
        match self {
            Caller::LocalTrusted { .. } | Caller::AdminToken => true,
            Caller::User(identity) => {
                identity.tenant.is_none() && identity.role == Role::Administrator
            }
            Caller::Node { .. } => false,
        }
    }
}

/// A request on the tree.
#[derive(Debug, Clone)]
pub struct Request {
    pub operation: Operation,
    pub path: String,
    pub parameters: Value,
}

/// Messages produced over time; dropping the stream cancels the work behind it.
pub type MessageStream = Pin<Box<dyn futures_util::Stream<Item = Value> + Send>>;

/// An answer.
pub enum Answer {
    /// JSON messages, in the order they are sent.
    Values(Vec<Value>),
    /// Messages already encoded as JSON text (the hot path of large attribute reads, which
    /// never builds a `Value` per attribute).
    Encoded(Vec<Vec<u8>>),
    /// One message that is already the whole document a merging transport would build (a
    /// single node's attributes): HTTP sends it as is, the sockets as one message.
    Document(Vec<u8>),
    /// A text document (the metrics): HTTP sends it with its content type, the sockets as
    /// `{"text": ...}`.
    Text {
        content_type: &'static str,
        body: String,
    },
    /// Messages produced over time (following a log, watching attributes, results per node as
    /// they arrive): transports send each as it comes until the stream ends or the client
    /// goes away.
    Stream(MessageStream),
}

impl Answer {
    /// The messages as values (transports that merge or inspect them). A stream is not
    /// collected: it yields nothing here.
    pub fn into_values(self) -> Vec<Value> {
        match self {
            Answer::Values(values) => values,
            Answer::Encoded(encoded) => encoded
                .iter()
                .filter_map(|bytes| serde_json::from_slice(bytes).ok())
                .collect(),
            Answer::Document(bytes) => serde_json::from_slice(&bytes).into_iter().collect(),
            Answer::Text { body, .. } => vec![serde_json::json!({ "text": body })],
            Answer::Stream(_) => Vec::new(),
        }
    }
}

/// Routes every authenticated caller may use, whatever its role (its own session).
const SESSION_ROUTES: [&str; 2] = ["/sessions/current/info", "/sessions/current/logout"];

/// The path as authorization sees it: a leading `/`, no empty segments, no `.` or `..`
/// segments (refused: a pattern such as `/nodes/*/attributes/*` must not be satisfiable by
/// `/nodes/../users/x`).
pub fn canonical_path(path: &str) -> Result<String, ApiError> {
    let mut canonical = String::with_capacity(path.len() + 1);
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(ApiError::bad_request(format!(
                "path {path} contains a relative segment"
            )));
        }
        canonical.push('/');
        canonical.push_str(segment);
    }
    if path.ends_with('/') || canonical.is_empty() {
        canonical.push('/');
    }
    Ok(canonical)
}

/// The single authorization decision every request passes through (reference 5.6): trusted
/// local callers may do everything; nodes only their `/self/` routes; users what their role
/// allows for the operation and path, within their tenant's reach.
pub fn authorize(roles: &RoleTable, caller: &Caller, request: &Request) -> Result<(), ApiError> {
    let path = canonical_path(&request.path)?;
    let operation = request.operation;
    let refuse = |who: String| {
        Err(ApiError::forbidden(format!(
            "{who} may not {} {path}",
            operation.as_str()
        )))
    };
    let role = match caller {
        Caller::LocalTrusted { .. } => return Ok(()),
        Caller::Node { name } => {
            return if path.starts_with("/self/") && operation != Operation::Shutdown {
                Ok(())
            } else {
                refuse(format!("node {name}"))
            };
        }
        Caller::AdminToken | Caller::User(_) => caller.role().unwrap_or(&Role::Stub),
    };
    let who = || match caller {
        Caller::User(identity) => format!("{} (role {})", identity.login(), identity.role),
        _ => "the administrator token".to_string(),
    };
    if operation == Operation::Shutdown || path.starts_with("/self/") {
        return refuse(who());
    }
    if SESSION_ROUTES.contains(&path.trim_end_matches('/')) {
        return Ok(());
    }
    if caller.tenant().is_some()
        && ["/events", "/networking", "/usergroups"]
            .iter()
            .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
    {
        return refuse(format!("{} (a tenant user)", who()));
    }
    if roles.allows(role, operation, &path) {
        Ok(())
    } else {
        refuse(who())
    }
}

/// Where a request came from, as far as the tree cares.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `unix-socket`, `tls-socket`, `http`, `https`, `websocket`: for the request's span.
    pub transport: &'static str,
    /// The HTTP session the request came with (`/sessions/current/...`).
    pub session: Option<&'a str>,
}

/// Authorize, then answer a request with its route's handler. The only call of
/// [`authorize`]: every transport answers every request through here, in a tracing span with
/// the transport, the caller and the path.
pub async fn handle(
    context: &Context,
    caller: &Caller,
    origin: Origin<'_>,
    request: Request,
) -> Result<Answer, ApiError> {
    use tracing::Instrument as _;
    let span = tracing::debug_span!(
        "api",
        transport = origin.transport,
        user = tracing::field::Empty,
        operation = request.operation.as_str(),
        path = %request.path,
    );
    if !span.is_disabled() {
        span.record("user", audit::describe(caller));
    }
    handle_in_span(context, caller, origin.session, request)
        .instrument(span)
        .await
}

async fn handle_in_span(
    context: &Context,
    caller: &Caller,
    session: Option<&str>,
    mut request: Request,
) -> Result<Answer, ApiError> {
    // Handlers see the canonical path authorization decides on.
    let canonical = canonical_path(&request.path);
    let matched = canonical.as_deref().ok().and_then(routes::route_of);
    // Labelled by the route pattern the path matches, never the path itself, so that the
    // number of series stays bounded whatever callers ask for.
    let route = matched.map_or("other", |route| route.path);
    let operation = request.operation.as_str();
    let count = |status: u16| {
        context
            .metrics
            .api_requests
            .get_or_create(&crate::metrics::ApiRequestLabels {
                route,
                operation,
                status,
            })
            .inc();
    };
    if let Err(error) = authorize(&context.auth.roles, caller, &request) {
        count(error.status());
        audit::record(context, caller, &request, true, Err(&error)).await;
        return Err(error);
    }
    if let Ok(path) = canonical {
        request.path = path;
    }
    let result = routes::dispatch(context, caller, session, &request, matched).await;
    let hidden = result.as_ref().err().is_some_and(|error| error.hidden);
    if audit::audited(request.operation) || hidden {
        audit::record(
            context,
            caller,
            &request,
            hidden,
            result.as_ref().map(|_| ()),
        )
        .await;
    }
    count(match &result {
        Err(error) => error.status(),
        Ok(_) => 200,
    });
    result
}
