//! The one route table of the resource tree: every path the API serves, the operations it
//! answers and its handler. [`dispatch`] finds the route of a request (after
//! [`super::authorize`]); `tests/authorization_matrix.rs` enumerates [`ROUTES`], so what the
//! matrix checks is exactly what is served. `{node}`, `{range}`, `{group}`, `{user}`,
//! `{usergroup}`, `{log}`, `{interface}` and `{subnet}` stand for a path segment (`{subnet}`
//! for two: `10.1.0.0/24`).
//!
//! A handler gets the request in a [`Call`] and answers with messages, an encoded document, or
//! a stream of messages produced over time ([`Answer::Stream`]: following a log, watching
//! attributes, fan-out results per node).

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use super::{Answer, ApiError, Caller, Context, Operation, Request};
use super::{attributes, commit, dhcp, events, groups, nodes, users};
use crate::config::plan;

/// What a handler is given.
pub struct Call<'a> {
    pub context: &'a Context,
    pub caller: &'a Caller,
    /// The HTTP session of the request, if it came with one.
    pub session: Option<&'a str>,
    pub request: &'a Request,
    /// The canonical path's segments, without a trailing empty one (`nodes`, `n1`).
    pub segments: Vec<&'a str>,
}

impl<'a> Call<'a> {
    /// The path segment at `index` (`""` past the end).
    pub fn segment(&self, index: usize) -> &'a str {
        self.segments.get(index).copied().unwrap_or_default()
    }

    pub fn operation(&self) -> Operation {
        self.request.operation
    }

    pub fn parameters(&self) -> &'a Value {
        &self.request.parameters
    }

    pub fn tenant(&self) -> Option<&'a str> {
        self.caller.tenant()
    }
}

/// A handler's future.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Answer, ApiError>> + Send + 'a>>;
/// A route's handler.
pub type Handler = for<'a> fn(&'a Call<'a>) -> Reply<'a>;

/// A route of the tree: its path pattern, the operations it answers, its handler.
#[derive(Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub operations: &'static [Operation],
    pub handler: Handler,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("path", &self.path)
            .field("operations", &self.operations)
            .finish()
    }
}

/// A handler from an `async fn(&Call<'_>) -> Result<Answer, ApiError>`.
macro_rules! handler {
    ($function:path) => {{
        fn boxed<'a>(call: &'a Call<'a>) -> Reply<'a> {
            Box::pin($function(call))
        }
        boxed as Handler
    }};
}

const R: Operation = Operation::Retrieve;
const C: Operation = Operation::Create;
const U: Operation = Operation::Update;
const D: Operation = Operation::Delete;
const S: Operation = Operation::Start;

/// Every route of the tree.
pub static ROUTES: &[Route] = &[
    Route {
        path: "/",
        operations: &[R],
        handler: handler!(root),
    },
    Route {
        path: "/version",
        operations: &[R],
        handler: handler!(version),
    },
    Route {
        path: "/metrics",
        operations: &[R],
        handler: handler!(metrics),
    },
    Route {
        path: "/networking/",
        operations: &[R],
        handler: handler!(networking),
    },
    Route {
        path: "/networking/dhcp/",
        operations: &[R],
        handler: handler!(networking_dhcp),
    },
    Route {
        path: "/networking/dhcp/exchanges",
        operations: &[R],
        handler: handler!(dhcp_exchanges),
    },
    Route {
        path: "/networking/dhcp/counters",
        operations: &[R],
        handler: handler!(dhcp_counters),
    },
    Route {
        path: "/networking/dhcp/interfaces/",
        operations: &[R],
        handler: handler!(dhcp_interfaces),
    },
    Route {
        path: "/networking/dhcp/interfaces/{interface}",
        operations: &[R, U, D],
        handler: handler!(dhcp_interfaces),
    },
    Route {
        path: "/networking/dhcp/subnets/",
        operations: &[R, C],
        handler: handler!(dhcp_subnets),
    },
    Route {
        path: "/networking/dhcp/subnets/{subnet}",
        operations: &[R, U, D],
        handler: handler!(dhcp_subnets),
    },
    Route {
        path: "/nodes/",
        operations: &[R, C],
        handler: handler!(nodes_collection),
    },
    Route {
        path: "/nodes/{node}/",
        operations: &[R, D],
        handler: handler!(node),
    },
    Route {
        path: "/nodes/{node}/attributes/",
        operations: &[R],
        handler: handler!(node_attribute_kinds),
    },
    Route {
        path: "/nodes/{node}/attributes/all",
        operations: &[R, U],
        handler: handler!(node_attributes),
    },
    Route {
        path: "/nodes/{node}/attributes/current",
        operations: &[R, U],
        handler: handler!(node_attributes),
    },
    Route {
        path: "/nodes/{node}/attributes/expression",
        operations: &[R, C],
        handler: handler!(node_attributes),
    },
    Route {
        path: "/nodes/{node}/attributes/rename",
        operations: &[U],
        handler: handler!(node_attributes),
    },
    Route {
        path: "/noderange/",
        operations: &[C],
        handler: handler!(noderange_create),
    },
    Route {
        path: "/noderange/abbreviate",
        operations: &[C],
        handler: handler!(abbreviate),
    },
    Route {
        path: "/noderange/{range}/",
        operations: &[R, D],
        handler: handler!(noderange),
    },
    Route {
        path: "/noderange/{range}/nodes/",
        operations: &[R],
        handler: handler!(noderange_nodes),
    },
    Route {
        path: "/noderange/{range}/boottimeline",
        operations: &[R],
        handler: handler!(boottimeline),
    },
    // The CLI posts to `/noderange//abbreviate`, which the canonical path makes the route
    // above; a range before it is ignored.
    Route {
        path: "/noderange/{range}/abbreviate",
        operations: &[C],
        handler: handler!(abbreviate),
    },
    Route {
        path: "/noderange/{range}/attributes/",
        operations: &[R],
        handler: handler!(node_attribute_kinds),
    },
    // `start` follows the attributes: a `{"watching": ...}` message, then the new values
    // after every commit that changes them.
    Route {
        path: "/noderange/{range}/attributes/all",
        operations: &[R, U, S],
        handler: handler!(noderange_attributes),
    },
    Route {
        path: "/noderange/{range}/attributes/current",
        operations: &[R, U],
        handler: handler!(noderange_attributes),
    },
    Route {
        path: "/noderange/{range}/attributes/expression",
        operations: &[R, C],
        handler: handler!(noderange_attributes),
    },
    Route {
        path: "/noderange/{range}/attributes/rename",
        operations: &[U],
        handler: handler!(noderange_attributes),
    },
    Route {
        path: "/nodegroups/",
        operations: &[R, C],
        handler: handler!(groups_collection),
    },
    Route {
        path: "/nodegroups/{group}/",
        operations: &[R, D],
        handler: handler!(group),
    },
    Route {
        path: "/nodegroups/{group}/attributes/",
        operations: &[R],
        handler: handler!(group_attribute_kinds),
    },
    Route {
        path: "/nodegroups/{group}/attributes/all",
        operations: &[R, U],
        handler: handler!(group_attributes),
    },
    Route {
        path: "/nodegroups/{group}/attributes/current",
        operations: &[R, U],
        handler: handler!(group_attributes),
    },
    Route {
        path: "/nodegroups/{group}/attributes/rename",
        operations: &[U],
        handler: handler!(group_attributes),
    },
    Route {
        path: "/events/",
        operations: &[R],
        handler: handler!(events_collection),
    },
    // `start` follows the log: `{"event": record}` messages (and `{"missed": N}` when the
    // client fell behind) until the client goes away.
    Route {
        path: "/events/{log}",
        operations: &[R, S],
        handler: handler!(events::log),
    },
    Route {
        path: "/users/",
        operations: &[R, C],
        handler: handler!(accounts),
    },
    Route {
        path: "/users/{user}",
        operations: &[R, U, D],
        handler: handler!(accounts),
    },
    Route {
        path: "/usergroups/",
        operations: &[R, C],
        handler: handler!(accounts),
    },
    Route {
        path: "/usergroups/{usergroup}",
        operations: &[R, U, D],
        handler: handler!(accounts),
    },
    Route {
        path: "/self/whoami",
        operations: &[R],
        handler: handler!(whoami),
    },
    // The caller's own session (every authenticated caller, whatever its role).
    Route {
        path: "/sessions/current/async",
        operations: &[S],
        handler: handler!(session_async),
    },
    Route {
        path: "/sessions/current/info",
        operations: &[R],
        handler: handler!(session_info),
    },
    Route {
        path: "/sessions/current/logout",
        operations: &[R, C, D],
        handler: handler!(session_logout),
    },
];

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

/// Path segments without the leading and trailing `/` (the root has none).
fn segments(path: &str) -> Vec<&str> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// The route a canonical path falls under: `{...}` placeholders match one non-empty segment
/// (`{subnet}` its two), literal segments win over placeholders; a trailing `/` is optional.
/// It runs for every request: the patterns are split once, and nothing is allocated but the
/// path's segment list.
pub fn route_of(path: &str) -> Option<&'static Route> {
    let wanted = segments(path);
    let mut best: Option<(usize, &'static Route)> = None;
    for (pattern, route) in PATTERNS.iter() {
        if let Some(literals) = route_match(pattern, &wanted)
            && best.is_none_or(|(most, _)| literals > most)
        {
            best = Some((literals, *route));
        }
    }
    best.map(|(_, route)| route)
}

/// The route patterns split into segments once (immutable, derived from [`ROUTES`]).
static PATTERNS: std::sync::LazyLock<Vec<(Vec<&'static str>, &'static Route)>> =
    std::sync::LazyLock::new(|| {
        ROUTES
            .iter()
            .map(|route| (segments(route.path), route))
            .collect()
    });

/// How many literal segments of `pattern` matched `segments`, if it matches at all.
fn route_match(pattern: &[&str], segments: &[&str]) -> Option<usize> {
    // Most routes differ from the path in their first segment: a cheap early exit.
    if let (Some(first), Some(wanted)) = (pattern.first(), segments.first())
        && !first.starts_with('{')
        && first != wanted
    {
        return None;
    }
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

/// Answer an authorized request (its path already canonical) with its route's handler.
pub async fn dispatch(
    context: &Context,
    caller: &Caller,
    session: Option<&str>,
    request: &Request,
    route: Option<&'static Route>,
) -> Result<Answer, ApiError> {
    let Some(route) = route else {
        return Err(ApiError::not_found(format!("{} not found", request.path)));
    };
    if !route.operations.contains(&request.operation) {
        return Err(ApiError::unsupported(
            request.operation.as_str(),
            &request.path,
        ));
    }
    let call = Call {
        context,
        caller,
        session,
        request,
        segments: segments(&request.path),
    };
    (route.handler)(&call).await
}

pub(super) fn links<I, S>(items: I) -> Vec<Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    items
        .into_iter()
        .map(|item| json!({"item": {"href": item.as_ref()}}))
        .collect()
}

fn values(messages: Vec<Value>) -> Result<Answer, ApiError> {
    Ok(Answer::Values(messages))
}

async fn root(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(ROOT.iter().copied()))
}

async fn version(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(vec![json!({"version": crate::VERSION})])
}

/// The Prometheus text of every metric (Monitor and above).
async fn metrics(call: &Call<'_>) -> Result<Answer, ApiError> {
    Ok(Answer::Text {
        content_type: crate::metrics::CONTENT_TYPE,
        body: call.context.metrics.encode(),
    })
}

async fn networking(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(["dhcp/"]))
}

async fn networking_dhcp(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(["counters", "exchanges", "interfaces/", "subnets/"]))
}

/// The most recent DHCP exchanges, oldest first: "why didn't node X boot?".
async fn dhcp_exchanges(call: &Call<'_>) -> Result<Answer, ApiError> {
    values(
        call.context
            .dhcp_exchanges
            .snapshot()
            .into_iter()
            .map(|exchange| json!({ "exchange": exchange }))
            .collect(),
    )
}

/// Datagrams received, dropped as undecodable, replies sent and failed.
async fn dhcp_counters(call: &Call<'_>) -> Result<Answer, ApiError> {
    values(vec![call.context.dhcp_exchanges.counters.to_json()])
}

async fn dhcp_interfaces(call: &Call<'_>) -> Result<Answer, ApiError> {
    let rest = call.segments.get(3..).unwrap_or_default();
    dhcp::interfaces(call.context, call.operation(), rest, call.parameters())
        .await
        .map(Answer::Values)
}

async fn dhcp_subnets(call: &Call<'_>) -> Result<Answer, ApiError> {
    let rest = call.segments.get(3..).unwrap_or_default();
    dhcp::subnets(call.context, call.operation(), rest, call.parameters())
        .await
        .map(Answer::Values)
}

async fn nodes_collection(call: &Call<'_>) -> Result<Answer, ApiError> {
    let tenant = call.tenant();
    match call.operation() {
        Operation::Create => nodes::create_nodes(call.context, tenant, call.parameters(), false)
            .await
            .map(Answer::Values),
        _ => {
            let names = call.context.config.read(|store| {
                let mut names = store.node_names_sorted();
                if tenant.is_some() {
                    names.retain(|name| crate::auth::tenant::node_in_tenant(store, name, tenant));
                }
                names
            });
            values(links(names.iter().map(|name| format!("{name}/"))))
        }
    }
}

async fn node(call: &Call<'_>) -> Result<Answer, ApiError> {
    let node = nodes::require_node(call.context, call.tenant(), call.segment(1))?;
    match call.operation() {
        Operation::Delete => nodes::delete_nodes(call.context, &[node.to_string()])
            .await
            .map(Answer::Values),
        _ => values(links(["attributes/"])),
    }
}

async fn node_attribute_kinds(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(["all", "current", "expression", "rename"]))
}

/// One node's attributes: answered without the `databynode` layer.
async fn node_attributes(call: &Call<'_>) -> Result<Answer, ApiError> {
    let tenant = call.tenant();
    if let Some(answer) = attributes::encoded_attribute_read(call.context, tenant, call.request)? {
        return Ok(answer);
    }
    let node = nodes::require_node(call.context, tenant, call.segment(1))?;
    let messages = attributes::node_attributes(
        call.context,
        tenant,
        call.operation(),
        &[node],
        call.segment(3),
        call.parameters(),
    )
    .await?;
    values(messages.into_iter().map(attributes::strip_node).collect())
}

async fn noderange_create(call: &Call<'_>) -> Result<Answer, ApiError> {
    nodes::create_nodes(call.context, call.tenant(), call.parameters(), true)
        .await
        .map(Answer::Values)
}

async fn abbreviate(call: &Call<'_>) -> Result<Answer, ApiError> {
    nodes::abbreviate(call.context, call.tenant(), call.parameters()).map(Answer::Values)
}

async fn noderange(call: &Call<'_>) -> Result<Answer, ApiError> {
    let nodes = nodes::expand(call.context, call.tenant(), call.segment(1))?;
    match call.operation() {
        Operation::Delete => {
            let names: Vec<String> = nodes.iter().map(|node| node.to_string()).collect();
            nodes::delete_nodes(call.context, &names)
                .await
                .map(Answer::Values)
        }
        _ => values(links(["attributes/", "boottimeline", "nodes/"])),
    }
}

async fn noderange_nodes(call: &Call<'_>) -> Result<Answer, ApiError> {
    let nodes = nodes::expand(call.context, call.tenant(), call.segment(1))?;
    values(links(nodes.iter().map(|name| format!("{name}/"))))
}

async fn boottimeline(call: &Call<'_>) -> Result<Answer, ApiError> {
    let nodes = nodes::expand(call.context, call.tenant(), call.segment(1))?;
    values(events::boot_timelines(call.context, &nodes))
}

async fn noderange_attributes(call: &Call<'_>) -> Result<Answer, ApiError> {
    let tenant = call.tenant();
    if call.operation() == Operation::Start {
        return attributes::watch(call.context, tenant, call.segment(1), call.parameters());
    }
    if let Some(answer) = attributes::encoded_attribute_read(call.context, tenant, call.request)? {
        return Ok(answer);
    }
    let nodes = nodes::expand(call.context, tenant, call.segment(1))?;
    attributes::node_attributes(
        call.context,
        tenant,
        call.operation(),
        &nodes,
        call.segment(3),
        call.parameters(),
    )
    .await
    .map(Answer::Values)
}

async fn groups_collection(call: &Call<'_>) -> Result<Answer, ApiError> {
    let tenant = call.tenant();
    match call.operation() {
        Operation::Create => groups::create_group(call.context, tenant, call.parameters())
            .await
            .map(Answer::Values),
        _ => {
            let names = call.context.config.read(|store| {
                let mut names = store.group_names_sorted();
                if tenant.is_some() {
                    names.retain(|name| crate::auth::tenant::group_in_tenant(store, name, tenant));
                }
                names
            });
            values(links(names.iter().map(|name| format!("{name}/"))))
        }
    }
}

async fn group(call: &Call<'_>) -> Result<Answer, ApiError> {
    let tenant = call.tenant();
    match call.operation() {
        Operation::Delete => {
            let group =
                groups::require_owned_group(call.context, tenant, call.segment(1))?.to_string();
            let shown = group.clone();
            let mut messages = commit::commit(call.context, move |store, _| {
                plan::delete_groups(store, std::slice::from_ref(&group))
            })
            .await?;
            messages.push(json!({ "deleted": shown }));
            values(messages)
        }
        _ => {
            groups::require_group(call.context, tenant, call.segment(1))?;
            values(links(["attributes/"]))
        }
    }
}

async fn group_attribute_kinds(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(["all", "current", "rename"]))
}

async fn group_attributes(call: &Call<'_>) -> Result<Answer, ApiError> {
    attributes::group_attributes(
        call.context,
        call.tenant(),
        call.operation(),
        call.segment(1),
        call.segment(3),
        call.parameters(),
    )
    .await
    .map(Answer::Values)
}

async fn events_collection(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(links(["audit", "log"]))
}

async fn accounts(call: &Call<'_>) -> Result<Answer, ApiError> {
    users::dispatch(
        call.context,
        call.caller,
        call.operation(),
        &call.segments,
        call.parameters(),
    )
    .await
    .map(Answer::Values)
}

async fn whoami(call: &Call<'_>) -> Result<Answer, ApiError> {
    match call.caller {
        Caller::Node { name } => values(vec![json!({"nodename": name.to_string()})]),
        _ => Err(ApiError::forbidden("only nodes have a self")),
    }
}

/// Opening the asynchronous WebSocket: the transport upgrades after this answers.
async fn session_async(_call: &Call<'_>) -> Result<Answer, ApiError> {
    values(Vec::new())
}

async fn session_info(call: &Call<'_>) -> Result<Answer, ApiError> {
    let mut info = serde_json::Map::new();
    match call.caller {
        Caller::User(identity) => {
            info.insert("username".into(), identity.login().into());
            info.insert("tenant".into(), json!(identity.tenant.as_deref()));
            info.insert("role".into(), identity.role.name().into());
            info.insert("method".into(), identity.method.as_str().into());
        }
        Caller::AdminToken => {
            info.insert("username".into(), "admin-token".into());
            info.insert("role".into(), "Administrator".into());
        }
        other => {
            info.insert("username".into(), super::audit::describe(other).into());
        }
    }
    if let Some(id) = call.session {
        info.insert("sessionid".into(), id.into());
        info.insert(
            "idletimeout".into(),
            call.context.auth.sessions.idle_timeout().as_secs().into(),
        );
    }
    values(vec![Value::Object(info)])
}

async fn session_logout(call: &Call<'_>) -> Result<Answer, ApiError> {
    if let Some(id) = call.session {
        call.context.auth.sessions.remove(id);
    }
    values(vec![json!({"loggedout": true})])
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
        assert_eq!(route("/nodes/n1"), Some("/nodes/{node}/"));
        assert_eq!(
            route("/networking/dhcp/subnets/10.0.0.0/24"),
            Some("/networking/dhcp/subnets/{subnet}")
        );
        assert_eq!(route("/nodes/n1/nonsense/deeper"), None);
    }

    #[test]
    fn no_two_routes_share_a_pattern() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert(route.path.trim_end_matches('/')),
                "{}",
                route.path
            );
            assert!(!route.operations.is_empty(), "{}", route.path);
        }
    }
}
