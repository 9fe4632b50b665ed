//! The WebSocket at `/sessions/current/async` (reference 1.7, protocol `confluent.asyncweb`).
//! For now it carries change notifications: the client subscribes to attributes of a noderange
//! and receives the new values after each commit that changes them. Consoles and event
//! subscriptions will be multiplexed on the same socket by later issues.
//!
//! Frames: the server first sends ` ASYNCID: <id>`; `?` is answered with `?`; the client sends
//! `!{"operation": "watch", "noderange": "n1-n4", "attributes": ["location.*"]}` and gets
//! `!{"watching": {"nodes": N, "attributes": [...]}}`, then
//! `!{"changes": {"seq": S, "databynode": {node: {attribute: value-object}}, "deleted": [...],
//! "renamed": [[old, new]]}}` for every matching commit. A new `watch` replaces the previous one.
//!
//! Event subscriptions: `!{"operation": "subscribe", "log": "events"|"audit", "noderange": "n1-n4",
//! "types": ["dhcp.*"], "since": "-1h"}` is answered `!{"subscribed": {"log": ...}}`, then every
//! matching record arrives as `!{"event": record}`; a client too slow to keep up gets
//! `!{"missed": N}` and continues with newer records. `unsubscribe` stops it; a new `subscribe`
//! replaces the previous one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Context;
use super::{Transport, authenticate, unauthorized};
use crate::api::resources::resolved_json;
use crate::api::{self, ApiError, Caller, Operation, Request};
use crate::config::watch::{ChangeSet, WatchFilter};
use crate::eventlog::{Delivery, Subscription};

/// Interval between server pings.
const HEARTBEAT: Duration = Duration::from_secs(25);

pub async fn upgrade(
    State(context): State<Context>,
    axum::Extension(transport): axum::Extension<Transport>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let caller = match authenticate(&context, &headers).await {
        Ok(authenticated) => authenticated.caller,
        Err(refusal) => {
            api::audit::unauthenticated(
                &context.api,
                &refusal.claimed,
                "start",
                "/sessions/current/async",
                transport.name(),
                &refusal.reason,
            );
            return unauthorized(&refusal.error, &headers);
        }
    };
    let request = Request {
        operation: Operation::Start,
        path: "/sessions/current/async".into(),
        parameters: json!({}),
    };
    if let Err(error) = api::authorize(&context.api.auth.roles, &caller, &request) {
        api::audit::record(&context.api, &caller, &request, true, Err(&error)).await;
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(error.to_json()),
        )
            .into_response();
    }
    upgrade
        .protocols(["confluent.asyncweb"])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, context, caller))
}

/// Authorize what a socket operation reads as the equivalent tree request (audited if denied).
async fn authorize_read(context: &Context, caller: &Caller, path: String) -> Result<(), ApiError> {
    let request = Request {
        operation: Operation::Retrieve,
        path,
        parameters: json!({}),
    };
    let decision = api::authorize(&context.api.auth.roles, caller, &request);
    if let Err(error) = &decision {
        api::audit::record(&context.api, caller, &request, true, Err(error)).await;
    }
    decision
}

async fn send(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(format!("!{value}").into()))
        .await
        .is_ok()
}

async fn next_change(
    receiver: &mut Option<UnboundedReceiver<Arc<ChangeSet>>>,
) -> Option<Arc<ChangeSet>> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_event(subscription: &mut Option<Subscription>) -> Option<Delivery> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

fn subscribe(context: &Context, request: &Value) -> Result<(Subscription, Value), ApiError> {
    let name = request
        .get("log")
        .and_then(Value::as_str)
        .unwrap_or("events");
    let log = context
        .api
        .events
        .by_name(name)
        .ok_or_else(|| ApiError::not_found(format!("no log named {name}")))?;
    let filter = crate::api::events::filter(&context.api, request)?;
    let since = crate::api::events::since(request)?;
    Ok((
        log.subscribe(filter, since),
        json!({"subscribed": {"log": log.name()}}),
    ))
}

fn watch(
    context: &Context,
    caller: &Caller,
    request: &Value,
) -> Result<(WatchFilter, Value), ApiError> {
    let range = request
        .get("noderange")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("watch needs a noderange"))?;
    let attributes: Vec<String> = match request.get("attributes") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(text)) => text.split(',').map(str::to_string).collect(),
        _ => vec!["*".to_string()],
    };
    let nodes = context
        .api
        .config
        .read(|store| crate::api::resources::expand_in(store, caller.tenant(), range))?;
    let count = nodes.len();
    let filter = WatchFilter {
        nodes: Some(nodes.into_iter().collect::<HashSet<_>>()),
        attributes: attributes.clone(),
        collection: true,
        globals: Vec::new(),
    };
    Ok((
        filter,
        json!({"watching": {"nodes": count, "attributes": attributes}}),
    ))
}

fn describe(context: &Context, changes: &ChangeSet) -> Value {
    let by_node: Map<String, Value> = context.api.config.read(|store| {
        changes
            .node_attributes
            .iter()
            .map(|(node, attributes)| {
                let values: Map<String, Value> = attributes
                    .iter()
                    .filter(|name| &***name != "*")
                    .map(|name| {
                        let value = store
                            .resolve(node, name)
                            .map(|resolved| resolved_json(&resolved))
                            .unwrap_or(Value::Null);
                        (name.to_string(), value)
                    })
                    .collect();
                (node.to_string(), Value::Object(values))
            })
            .collect()
    });
    json!({"changes": {
        "seq": changes.seq,
        "databynode": by_node,
        "created": changes.nodes_created.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "deleted": changes.nodes_deleted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "renamed": changes.nodes_renamed.iter().map(|(a, b)| vec![a.to_string(), b.to_string()]).collect::<Vec<_>>(),
    }})
}

async fn session(mut socket: WebSocket, context: Context, caller: Caller) {
    let id: u64 = rand::random();
    if socket
        .send(Message::Text(format!(" ASYNCID: {id:016x}").into()))
        .await
        .is_err()
    {
        return;
    }
    let mut receiver: Option<UnboundedReceiver<Arc<ChangeSet>>> = None;
    let mut subscription: Option<Subscription> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let text = match message {
                    Message::Text(text) => text.to_string(),
                    Message::Close(_) => return,
                    _ => continue,
                };
                if text == "?" {
                    if socket.send(Message::Text("?".into())).await.is_err() {
                        return;
                    }
                    continue;
                }
                let Some(body) = text.strip_prefix('!') else {
                    if !send(&mut socket, &ApiError::bad_request("expected '?' or '!<json>'").to_json()).await {
                        return;
                    }
                    continue;
                };
                let request: Value = match serde_json::from_str(body) {
                    Ok(request) => request,
                    Err(error) => {
                        if !send(&mut socket, &ApiError::bad_request(format!("invalid JSON: {error}")).to_json()).await {
                            return;
                        }
                        continue;
                    }
                };
                let operation = request.get("operation").and_then(Value::as_str).unwrap_or_default();
                let range = request.get("noderange").and_then(Value::as_str).unwrap_or("everything");
                let log = request.get("log").and_then(Value::as_str).unwrap_or("events");
                let allowed = match operation {
                    "watch" => authorize_read(&context, &caller, format!("/noderange/{range}/attributes/all")).await,
                    "subscribe" => authorize_read(&context, &caller, format!("/events/{log}")).await,
                    _ => Ok(()),
                };
                let reply = match (operation, allowed) {
                    (_, Err(error)) => error.to_json(),
                    ("watch", Ok(())) => match watch(&context, &caller, &request) {
                        Ok((filter, reply)) => {
                            receiver = Some(context.api.config.watch(filter));
                            reply
                        }
                        Err(error) => error.to_json(),
                    },
                    ("subscribe", Ok(())) => match subscribe(&context, &request) {
                        Ok((new, reply)) => {
                            subscription = Some(new);
                            reply
                        }
                        Err(error) => error.to_json(),
                    },
                    ("unsubscribe", _) => {
                        subscription = None;
                        json!({"subscribed": null})
                    }
                    ("unwatch", _) => {
                        receiver = None;
                        json!({"watching": null})
                    }
                    (other, _) => ApiError::bad_request(format!("unsupported operation '{other}' on this socket")).to_json(),
                };
                if !send(&mut socket, &reply).await {
                    return;
                }
            }
            change = next_change(&mut receiver) => {
                let Some(change) = change else {
                    receiver = None;
                    continue;
                };
                if !send(&mut socket, &describe(&context, &change)).await {
                    return;
                }
            }
            delivery = next_event(&mut subscription) => {
                let message = match delivery {
                    Some(Delivery::Record(record)) => json!({"event": record.to_json()}),
                    Some(Delivery::Missed(count)) => json!({"missed": count}),
                    None => {
                        subscription = None;
                        continue;
                    }
                };
                if !send(&mut socket, &message).await {
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
