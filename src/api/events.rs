//! The event log in the resource tree: `retrieve /events/log` and `/events/audit` (queries),
//! `/noderange/<r>/boottimeline`, and the parsing of subscription filters shared with the
//! WebSocket and the unix socket's `start /events/log` stream.
//!
//! Query parameters (strings from a URL, or JSON values): `start`, `end`, `since` (RFC 3339,
//! epoch ms, or `-1h` style durations), `noderange`, `types` (comma-separated or a list
//! of the kinds of `docs/events.md`, or prefixes such as `dhcp.*`; a pattern matching no
//! documented kind is refused), `text`, `order` (`oldest`|`newest`, default newest), `limit` (default
//! 100, at most 10,000), `cursor` (the `next_cursor` of the previous page).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::ApiError;
use super::Context;
use crate::eventlog::{Delivery, EventLog, Filter, Order, Query, domain, timestamp};

pub const MAX_LIMIT: usize = 10_000;

fn text(parameters: &Value, key: &str) -> Option<String> {
    match parameters.get(key)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn time(parameters: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match text(parameters, key) {
        None => Ok(None),
        Some(value) => timestamp::parse(&value, timestamp::now_ms())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{key}: '{value}' is not a time (RFC 3339, epoch milliseconds, or a duration ago like -1h)"
                ))
            }),
    }
}

/// Node set and types of a query or subscription.
pub fn filter(context: &Context, parameters: &Value) -> Result<Filter, ApiError> {
    let nodes = match text(parameters, "noderange") {
        None => None,
        Some(range) => {
            let nodes = context
                .config
                .read(|store| store.expand(&range))
                .map_err(|error| {
                    ApiError::bad_request(format!("invalid noderange {range}: {error}"))
                })?;
            Some(
                nodes
                    .iter()
                    .map(|node| node.to_string())
                    .collect::<HashSet<_>>(),
            )
        }
    };
    let types = match parameters.get("types").or_else(|| parameters.get("type")) {
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|kind| !kind.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "types: expected a list or a comma-separated string",
            ));
        }
    };
    // A type no daemon writes would silently match nothing; name it instead.
    for pattern in &types {
        domain::check_type_pattern(pattern)
            .map_err(|error| ApiError::bad_request(format!("types: {error}")))?;
    }
    Ok(Filter {
        nodes,
        types,
        text: text(parameters, "text"),
    })
}

/// `since`/`start` of a subscription's backlog.
pub fn since(parameters: &Value) -> Result<Option<i64>, ApiError> {
    Ok(time(parameters, "since")?.or(time(parameters, "start")?))
}

pub fn query(
    context: &Context,
    log: &EventLog,
    parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    let order = match text(parameters, "order").as_deref() {
        None | Some("newest") | Some("desc") => Order::NewestFirst,
        Some("oldest") | Some("asc") => Order::OldestFirst,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order: '{other}' (want oldest or newest)"
            )));
        }
    };
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        text(parameters, key)
            .map(|value| {
                value
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("{key}: '{value}' is not a number")))
            })
            .transpose()
    };
    let limit = number("limit")?.map_or(100, |limit| limit.clamp(1, MAX_LIMIT as u64) as usize);
    let query = Query {
        start: time(parameters, "start")?.or(time(parameters, "since")?),
        end: time(parameters, "end")?,
        filter: filter(context, parameters)?,
        order,
        limit,
        cursor: number("cursor")?,
        max_seq: None,
    };
    let page = log.query(&query);
    let mut messages: Vec<Value> = page
        .records
        .iter()
        .map(|record| json!({"event": record.to_json()}))
        .collect();
    messages.push(json!({"next_cursor": page.next_cursor, "count": page.records.len()}));
    Ok(messages)
}

/// One message per node: `{"databynode": {node: timeline}}`.
pub fn boot_timelines(context: &Context, nodes: &[std::sync::Arc<str>]) -> Vec<Value> {
    let now = timestamp::now_ms();
    nodes
        .iter()
        .map(|node| {
            let timeline = context.events.events.boot_timeline(node);
            json!({"databynode": {node.to_string(): timeline.to_json(now)}})
        })
        .collect()
}

/// `/events/{log}`: `retrieve` queries the log, `start` follows it: `{"event": record}`
/// messages (and `{"missed": N}` when the client fell behind), newer records only unless
/// `since` says otherwise, until the client goes away.
pub async fn log(call: &super::routes::Call<'_>) -> Result<super::Answer, ApiError> {
    let context = call.context;
    let log = context
        .events
        .by_name(call.segment(1))
        .ok_or_else(|| ApiError::not_found(format!("no log named {}", call.segment(1))))?;
    let parameters = call.parameters();
    if call.operation() != super::Operation::Start {
        return query(context, log, parameters).map(super::Answer::Values);
    }
    let subscription = log.subscribe(filter(context, parameters)?, since(parameters)?);
    let stream = futures_util::stream::unfold(subscription, |mut subscription| async move {
        let message = match subscription.next().await? {
            Delivery::Record(record) => json!({"event": record.to_json()}),
            Delivery::Missed(count) => json!({"missed": count}),
        };
        Some((message, subscription))
    });
    Ok(super::Answer::Stream(Box::pin(stream)))
}
