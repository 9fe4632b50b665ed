//! The WebSocket at `/sessions/current/async` (reference 1.7, protocol `confluent.asyncweb`):
//! a transport of the resource tree like the sockets and HTTP, every request answered through
//! `api::handle`. Any request can be sent as `!{"operation": "retrieve", "path": "/nodes/",
//! "parameters": {...}}`; its messages come back one frame each, then `!{"_requestdone": 1}`
//! (errors as `!{"errorcode", "error", "code"}`, as on every transport). A request answered by
//! a stream keeps sending until it ends (then `_requestdone`) or `!{"operation": "stop"}`.
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

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::Context;
use super::{Transport, authenticate, unauthorized};
use crate::api::{self, Answer, ApiError, Caller, MessageStream, Operation, Request};

/// Interval between server pings.
const HEARTBEAT: Duration = Duration::from_secs(25);

pub async fn upgrade(
    State(context): State<Context>,
    axum::Extension(transport): axum::Extension<Transport>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let authenticated = match authenticate(&context, &headers).await {
        Ok(authenticated) => authenticated,
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
    let caller = authenticated.caller;
    let session = authenticated.session;
    if let Err(error) = api::handle(
        &context.api,
        &caller,
        api::Origin {
            transport: transport.name(),
            session: session.as_deref(),
        },
        request,
    )
    .await
    {
        return (
            axum::http::StatusCode::from_u16(error.status())
                .unwrap_or(axum::http::StatusCode::FORBIDDEN),
            axum::Json(error.to_json()),
        )
            .into_response();
    }
    upgrade
        .protocols(["confluent.asyncweb"])
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| run(socket, context, caller, session))
}

async fn send(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(format!("!{value}").into()))
        .await
        .is_ok()
}

async fn next_message(stream: &mut Option<MessageStream>) -> Option<Value> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The tree request a frame stands for: the `watch` and `subscribe` shorthands, or a plain
/// `{"operation", "path", "parameters"}` request.
fn tree_request(frame: &Value) -> Result<Request, ApiError> {
    let operation = frame
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut parameters = frame.clone();
    if let Value::Object(map) = &mut parameters {
        map.remove("operation");
    }
    match operation {
        "watch" => {
            let range = frame
                .get("noderange")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("watch needs a noderange"))?;
            Ok(Request {
                operation: Operation::Start,
                path: format!("/noderange/{range}/attributes/all"),
                parameters,
            })
        }
        "subscribe" => {
            let log = frame.get("log").and_then(Value::as_str).unwrap_or("events");
            let log = if log == "events" { "log" } else { log };
            Ok(Request {
                operation: Operation::Start,
                path: format!("/events/{log}"),
                parameters,
            })
        }
        _ => crate::api::socket::parse_request(frame).map_err(ApiError::bad_request),
    }
}

/// Which slot a streamed answer occupies: one watch, one log subscription and one other
/// stream at a time; a new one replaces the previous.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Watch,
    Subscription,
    Other,
}

async fn run(mut socket: WebSocket, context: Context, caller: Caller, session: Option<String>) {
    let id: u64 = rand::random();
    if socket
        .send(Message::Text(format!(" ASYNCID: {id:016x}").into()))
        .await
        .is_err()
    {
        return;
    }
    let mut watch: Option<MessageStream> = None;
    let mut subscription: Option<MessageStream> = None;
    let mut other: Option<MessageStream> = None;
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
                let frame: Value = match serde_json::from_str(body) {
                    Ok(frame) => frame,
                    Err(error) => {
                        if !send(&mut socket, &ApiError::bad_request(format!("invalid JSON: {error}")).to_json()).await {
                            return;
                        }
                        continue;
                    }
                };
                let operation = frame.get("operation").and_then(Value::as_str).unwrap_or_default();
                let slot = match operation {
                    "unwatch" => {
                        watch = None;
                        if !send(&mut socket, &json!({"watching": null})).await { return; }
                        continue;
                    }
                    "unsubscribe" => {
                        subscription = None;
                        if !send(&mut socket, &json!({"subscribed": null})).await { return; }
                        continue;
                    }
                    "stop" => {
                        other = None;
                        if !send(&mut socket, &json!({"stopped": true})).await { return; }
                        continue;
                    }
                    "watch" => Slot::Watch,
                    "subscribe" => Slot::Subscription,
                    _ => Slot::Other,
                };
                let answer = match tree_request(&frame) {
                    Ok(request) => {
                        let path = request.path.clone();
                        api::handle(&context.api, &caller, api::Origin { transport: "websocket", session: session.as_deref() }, request)
                            .await
                            .map(|answer| (answer, path))
                    }
                    Err(error) => Err(error),
                };
                let replies = match answer {
                    Err(error) => vec![error.to_json()],
                    Ok((Answer::Stream(stream), path)) => match slot {
                        Slot::Watch => {
                            watch = Some(stream);
                            Vec::new()
                        }
                        Slot::Subscription => {
                            subscription = Some(stream);
                            let log = path.rsplit('/').next().unwrap_or_default();
                            let log = if log == "log" { "events" } else { log };
                            vec![json!({"subscribed": {"log": log}})]
                        }
                        Slot::Other => {
                            other = Some(stream);
                            Vec::new()
                        }
                    },
                    Ok((answer, _)) => {
                        let mut messages = answer.into_values();
                        messages.push(json!({"_requestdone": 1}));
                        messages
                    }
                };
                for reply in &replies {
                    if !send(&mut socket, reply).await {
                        return;
                    }
                }
            }
            message = next_message(&mut watch) => {
                let Some(message) = message else { watch = None; continue };
                if !send(&mut socket, &message).await { return; }
            }
            message = next_message(&mut subscription) => {
                let Some(message) = message else { subscription = None; continue };
                if !send(&mut socket, &message).await { return; }
            }
            message = next_message(&mut other) => {
                let Some(message) = message else {
                    other = None;
                    if !send(&mut socket, &json!({"_requestdone": 1})).await { return; }
                    continue;
                };
                if !send(&mut socket, &message).await { return; }
            }
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
