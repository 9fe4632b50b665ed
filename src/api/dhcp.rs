//! `/networking/dhcp/subnets/`: the DHCP subnet objects ([`crate::dhcp::subnets`]), stored as
//! configuration globals `dhcp.subnet.<cidr>`.
//!
//! - retrieve `subnets/`: one `{"subnet": {...}}` per object, by subnet;
//! - create `subnets/` with the object's fields (`subnet` required): refused if it exists;
//! - retrieve, update, delete `subnets/<address>/<prefix>` (or `<address>_<prefix>`); update
//!   creates the object if needed and merges the given fields into it (`null` clears one).
//!
//! Every change is validated before it is committed, and the DHCP service applies it to the next
//! packet (it watches these globals).
//!
//! `/networking/dhcp/interfaces/`: the interfaces served ([`crate::dhcp::interfaces`]):
//! retrieve lists every interface given by `--dhcp` or the configuration with what is served
//! now; update `interfaces/<name>` with `{"mode": "full|proxy|auto|off"}` stores the global
//! `dhcp.interface.<name>` (which overrides the flag), delete removes it. The service opens and
//! closes sockets to match at once.

use serde_json::{Map, Value, json};

use super::Context;
use super::commit::commit;
use super::{ApiError, ErrorCode};
use crate::config::plan;
use crate::dhcp::interfaces as served;
use crate::dhcp::subnets::{self, SubnetObject, SubnetObjectError};

fn invalid(error: &SubnetObjectError) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidChange,
        crate::error::Chain(error).to_string(),
    )
}

/// `10.1.0.0/24` from the path segments after `subnets/` (`10.1.0.0`, `24`, or `10.1.0.0_24`).
fn subnet_of(segments: &[&str]) -> Result<ipnet::Ipv4Net, ApiError> {
    let text = segments.join("/").replace('_', "/");
    text.parse::<ipnet::Ipv4Net>()
        .map(|subnet| subnet.trunc())
        .map_err(|_| {
            ApiError::bad_request(format!("invalid subnet '{text}' (want ADDRESS/PREFIX)"))
        })
}

fn stored(context: &Context, subnet: ipnet::Ipv4Net) -> Option<Value> {
    let key = subnets::key_of(subnet);
    context.config.read(|store| store.global(&key).cloned())
}

/// Validate `fields` as a whole object and commit it.
async fn store(context: &Context, fields: Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let object: SubnetObject = serde_json::from_value(Value::Object(fields))
        .map_err(|error| invalid(&SubnetObjectError::Json(error)))?;
    let validated = object.validate().map_err(|error| invalid(&error))?;
    let key = validated.object.key();
    let value = serde_json::to_value(&validated.object).map_err(|error| {
        ApiError::internal(
            ErrorCode::Internal,
            "cannot encode the subnet object",
            &error,
        )
    })?;
    commit(context, move |_, _| {
        Ok(plan::set_global(&key, Some(value.clone())))
    })
    .await?;
    Ok(vec![json!({ "subnet": validated.object })])
}

fn parameters(request: &Value) -> Result<Map<String, Value>, ApiError> {
    match request {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(ApiError::bad_request("parameters must be an object")),
    }
}

/// Answer a request under `/networking/dhcp/subnets`; `rest` is the path after `subnets`.
pub async fn subnets(
    context: &Context,
    operation: super::Operation,
    rest: &[&str],
    request_parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    use super::Operation;
    match (operation, rest) {
        (Operation::Retrieve, []) => {
            let mut objects: Vec<(ipnet::Ipv4Net, Value)> = context.config.read(|store| {
                store
                    .globals()
                    .iter()
                    .filter(|(key, _)| key.starts_with(subnets::GLOBAL_PREFIX))
                    .filter_map(|(_, value)| {
                        let subnet = value.get("subnet")?.as_str()?.parse().ok()?;
                        Some((subnet, value.clone()))
                    })
                    .collect()
            });
            objects.sort_by_key(|(subnet, _)| (subnet.network(), subnet.prefix_len()));
            Ok(objects
                .into_iter()
                .map(|(_, object)| json!({ "subnet": object }))
                .collect())
        }
        (Operation::Create, []) => {
            let fields = parameters(request_parameters)?;
            let subnet = fields
                .get("subnet")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("missing 'subnet' (ADDRESS/PREFIX)"))
                .and_then(|text| subnet_of(&[text]))?;
            if stored(context, subnet).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("subnet {subnet} already exists; update it instead"),
                ));
            }
            store(context, fields).await
        }
        (Operation::Retrieve, path) => {
            let subnet = subnet_of(path)?;
            let object = stored(context, subnet).ok_or_else(|| no_such(subnet))?;
            Ok(vec![json!({ "subnet": object })])
        }
        (Operation::Update, path) => {
            let subnet = subnet_of(path)?;
            let mut fields = match stored(context, subnet) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            for (name, value) in parameters(request_parameters)? {
                if value.is_null() {
                    fields.remove(&name);
                } else {
                    fields.insert(name, value);
                }
            }
            fields.insert("subnet".into(), Value::String(subnet.to_string()));
            store(context, fields).await
        }
        (Operation::Delete, path) => {
            let subnet = subnet_of(path)?;
            if stored(context, subnet).is_none() {
                return Err(no_such(subnet));
            }
            let key = subnets::key_of(subnet);
            commit(context, move |_, _| Ok(plan::set_global(&key, None))).await?;
            Ok(vec![json!({ "deleted": subnet.to_string() })])
        }
        (Operation::Create, _) => Err(ApiError::bad_request(
            "create subnets on /networking/dhcp/subnets/",
        )),
        (Operation::Start | Operation::Shutdown, _) => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            "subnets support retrieve, create, update and delete",
        )),
    }
}

fn no_such(subnet: ipnet::Ipv4Net) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no DHCP subnet object for {subnet}"),
    )
}

/// Answer a request under `/networking/dhcp/interfaces`; `rest` is the path after `interfaces`.
pub async fn interfaces(
    context: &Context,
    operation: super::Operation,
    rest: &[&str],
    request_parameters: &Value,
) -> Result<Vec<Value>, ApiError> {
    use super::Operation;
    match (operation, rest) {
        (Operation::Retrieve, []) => Ok(context
            .dhcp_interfaces
            .snapshot()
            .iter()
            .map(|entry| json!({ "interface": entry }))
            .collect()),
        (Operation::Retrieve, [name]) => context
            .dhcp_interfaces
            .snapshot()
            .iter()
            .find(|entry| entry.name == *name)
            .map(|entry| vec![json!({ "interface": entry })])
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("interface {name} is not configured for DHCP"),
                )
            }),
        (Operation::Update, [name]) => {
            if !served::valid_name(name) {
                return Err(ApiError::bad_request(format!(
                    "'{name}' is not an interface name"
                )));
            }
            let fields = parameters(request_parameters)?;
            if let Some(unknown) = fields.keys().find(|field| field.as_str() != "mode") {
                return Err(ApiError::bad_request(format!(
                    "unknown field '{unknown}' (only 'mode')"
                )));
            }
            let mode: crate::dhcp::policy::Mode = fields
                .get("mode")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("missing 'mode' (full, proxy, auto or off)"))?
                .parse()
                .map_err(|error: String| ApiError::new(ErrorCode::BadRequest, error))?;
            let key = served::key_of(name);
            let value = json!({ "mode": mode.name() });
            commit(context, move |_, _| {
                Ok(plan::set_global(&key, Some(value.clone())))
            })
            .await?;
            Ok(vec![
                json!({ "interface": { "name": name, "mode": mode.name(), "source": "configuration" } }),
            ])
        }
        (Operation::Delete, [name]) => {
            let key = served::key_of(name);
            if context.config.read(|store| store.global(&key).is_none()) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("interface {name} has no DHCP setting in the configuration"),
                ));
            }
            commit(context, move |_, _| Ok(plan::set_global(&key, None))).await?;
            Ok(vec![json!({ "deleted": name })])
        }
        (Operation::Retrieve | Operation::Update | Operation::Delete, _) => Err(
            ApiError::bad_request("use /networking/dhcp/interfaces/<name>"),
        ),
        (Operation::Create | Operation::Start | Operation::Shutdown, _) => Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            "interfaces support retrieve, update and delete",
        )),
    }
}
