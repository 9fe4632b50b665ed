//! Node and group commands: `nodelist`, `nodeattrib`, `nodegroupattrib`, `nodedefine`,
//! `nodegroupdefine`, `noderemove`, `nodegroupremove`, `noderename`, `nodegrouprename`,
//! `nodegrouplist` (reference section 17, items 1-4).

use std::io::{BufRead, Write};

use serde_json::{Map, Value, json};

use super::client::Client;
use super::output::Printer;
use crate::config::catalogue;

/// Split command arguments into flags and positionals. Flags that take a value are listed in
/// `with_value`.
struct Parsed {
    positionals: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Parsed {
    fn has(&self, names: &[&str]) -> bool {
        self.flags
            .iter()
            .any(|(flag, _)| names.contains(&flag.as_str()))
    }

    fn values(&self, names: &[&str]) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(flag, _)| names.contains(&flag.as_str()))
            .filter_map(|(_, value)| value.clone())
            .collect()
    }
}

fn parse(args: &[String], with_value: &[&str]) -> Result<Parsed, String> {
    let mut parsed = Parsed {
        positionals: Vec::new(),
        flags: Vec::new(),
    };
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        if arg == "--" {
            parsed.positionals.extend(args[index + 1..].iter().cloned());
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 && !arg.starts_with("-(") {
            if with_value.contains(&arg.as_str()) {
                let Some(value) = args.get(index + 1) else {
                    return Err(format!("option {arg} needs a value"));
                };
                parsed.flags.push((arg.clone(), Some(value.clone())));
                index += 2;
                continue;
            }
            parsed.flags.push((arg.clone(), None));
        } else {
            parsed.positionals.push(arg.clone());
        }
        index += 1;
    }
    Ok(parsed)
}

/// Print every error message of a response; returns the non-error messages.
fn report(printer: &mut Printer, messages: Vec<Value>) -> Vec<Value> {
    let mut rest = Vec::with_capacity(messages.len());
    for mut message in messages {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            printer.error(None, error);
            continue;
        }
        if let Some(warning) = message.get("warning").and_then(Value::as_str) {
            eprintln!("Warning: {warning}");
            continue;
        }
        if let Some(Value::Object(by_node)) = message.get_mut("databynode") {
            by_node.retain(
                |node, data| match data.get("error").and_then(Value::as_str) {
                    Some(error) => {
                        printer.error(Some(node), error);
                        false
                    }
                    None => true,
                },
            );
            if by_node.is_empty() {
                continue;
            }
        }
        rest.push(message);
    }
    rest
}

fn connect(printer: &mut Printer) -> Option<Client> {
    match Client::connect() {
        Ok(client) => Some(client),
        Err(error) => {
            let text = crate::error::Chain(&error).to_string();
            printer.error(None, &text);
            None
        }
    }
}

fn request(
    printer: &mut Printer,
    client: &mut Client,
    operation: &str,
    path: &str,
    parameters: Value,
) -> Option<Vec<Value>> {
    match client.request(operation, path, parameters) {
        Ok(messages) => Some(report(printer, messages)),
        Err(error) => {
            printer.error(None, &error.to_string());
            None
        }
    }
}

/// Render one attribute value as Confluent's CLI does.
pub fn format_value(value: &Value, blame: bool) -> String {
    let mut text = match value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| item.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(map) => {
            if map.contains_key("broken") {
                "*ERROR* BROKEN EXPRESSION".to_string()
            } else if let Some(is_set) = map.get("isset") {
                if is_set.as_bool() == Some(true) {
                    "********".to_string()
                } else {
                    String::new()
                }
            } else {
                match map.get("value") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            }
        }
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if blame && let Value::Object(map) = value {
        if let Some(group) = map.get("inheritedfrom").and_then(Value::as_str) {
            text.push_str(&format!(" (inherited from group {group})"));
        }
        if let Some(expression) = map.get("expression").and_then(Value::as_str) {
            text.push_str(&format!(" (derived from expression \"{expression}\")"));
        }
        if let Some(reason) = map.get("broken").and_then(Value::as_str) {
            text.push_str(&format!(" ({reason})"));
        }
    }
    text
}

/// The attribute names a user asked for (wildcards and aliases allowed), resolved once.
struct Wanted {
    exact: std::collections::HashSet<String>,
    patterns: Vec<String>,
}

impl Wanted {
    fn new(requested: &[String]) -> Wanted {
        let mut exact = std::collections::HashSet::new();
        let mut patterns = Vec::new();
        for name in requested {
            if catalogue::is_wildcard(name) {
                patterns.push(name.clone());
            } else {
                if let Ok(canonical) = catalogue::canonical_name(name) {
                    exact.insert(canonical);
                }
                exact.insert(name.clone());
            }
        }
        Wanted { exact, patterns }
    }

    fn matches(&self, name: &str) -> bool {
        self.exact.contains(name)
            || self
                .patterns
                .iter()
                .any(|pattern| catalogue::wildcard_match(pattern, name))
    }
}

/// Does attribute `name` match one of the requested names (wildcards and aliases allowed)?
fn wanted(requested: &[String], name: &str) -> bool {
    Wanted::new(requested).matches(name)
}

fn print_attributes(printer: &mut Printer, messages: &[Value], requested: &[String], blame: bool) {
    let wanted = Wanted::new(requested);
    for message in messages {
        let Some(Value::Object(by_node)) = message.get("databynode") else {
            continue;
        };
        for (node, attributes) in by_node {
            let Value::Object(attributes) = attributes else {
                continue;
            };
            for (name, value) in attributes {
                if !requested.is_empty() && !wanted.matches(name) {
                    continue;
                }
                // The common case, a plain value, is written without building a String.
                if !blame
                    && let Value::Object(map) = value
                    && map.len() == 1
                    && let Some(Value::String(text)) = map.get("value")
                {
                    let _ = writeln!(printer.out(), "{node}: {name}: {text}");
                    continue;
                }
                printer.line(&format!("{node}: {name}: {}", format_value(value, blame)));
            }
        }
    }
}

/// One node's attribute message, borrowed from the received frame.
#[derive(serde::Deserialize)]
struct RawNodeMessage<'a> {
    #[serde(borrow)]
    databynode: std::collections::BTreeMap<
        std::borrow::Cow<'a, str>,
        std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>,
    >,
}

/// A plain attribute value object (provenance ignored); secrets (`isset`) and broken
/// expressions (`broken`) are refused so that they take the general path.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainValue<'a> {
    #[serde(borrow)]
    value: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, rename = "inheritedfrom")]
    _inherited_from: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "expression")]
    _expression: Option<serde::de::IgnoredAny>,
}

/// Print a `databynode` message without building a JSON tree (10,000 nodes answer with
/// 10,000 of them). Returns false when the message needs the general path (errors, warnings).
fn print_fast(
    printer: &mut Printer,
    payload: &[u8],
    requested: &[String],
    wanted: &Wanted,
    blame: bool,
) -> bool {
    let Ok(message) = serde_json::from_slice::<RawNodeMessage<'_>>(payload) else {
        return false;
    };
    if message
        .databynode
        .values()
        .any(|attributes| attributes.contains_key("error") || attributes.contains_key("errorcode"))
    {
        return false;
    }
    for (node, attributes) in &message.databynode {
        for (name, raw) in attributes {
            if !requested.is_empty() && !wanted.matches(name) {
                continue;
            }
            // Only objects: serde would also read a struct from a list such as `groups`.
            if !blame
                && raw.get().starts_with('{')
                && let Ok(plain) = serde_json::from_str::<PlainValue<'_>>(raw.get())
            {
                let text = plain.value.as_deref().unwrap_or_default();
                let _ = writeln!(printer.out(), "{node}: {name}: {text}");
                continue;
            }
            let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            printer.line(&format!("{node}: {name}: {}", format_value(&value, blame)));
        }
    }
    true
}

/// `name=value`, `name,=value` (prepend), `name^=value` (remove) into a JSON parameter.
fn setting(arg: &str) -> Option<(String, Value)> {
    let (name, value) = arg.split_once('=')?;
    if let Some(name) = name.strip_suffix(',') {
        return Some((name.to_string(), json!({"prepend": value})));
    }
    if let Some(name) = name.strip_suffix('^') {
        return Some((name.to_string(), json!({"remove": value})));
    }
    Some((name.to_string(), Value::String(value.to_string())))
}

fn confirm(count: usize, limit: Option<usize>) -> bool {
    let Some(limit) = limit else { return true };
    if count <= limit {
        return true;
    }
    eprint!("Command is about to affect {count} nodes, continue (y/n)? ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn max_nodes(parsed: &Parsed) -> Result<Option<usize>, String> {
    match parsed.values(&["-m", "--maxnodes"]).first() {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("-m needs a number, not '{text}'")),
        None => Ok(None),
    }
}

fn count_nodes(printer: &mut Printer, client: &mut Client, range: &str) -> Option<usize> {
    let messages = request(
        printer,
        client,
        "retrieve",
        &format!("/noderange/{range}/nodes/"),
        json!({}),
    )?;
    Some(
        messages
            .iter()
            .filter(|message| message.get("item").is_some())
            .count(),
    )
}

fn prompt_secret(name: &str) -> Option<String> {
    eprint!("Enter value for {name}: ");
    let _ = std::io::stderr().flush();
    let mut value = String::new();
    std::io::stdin().lock().read_line(&mut value).ok()?;
    Some(value.trim_end_matches('\n').to_string())
}

fn usage_error(printer: &mut Printer, text: &str) -> i32 {
    printer.error(None, text);
    2
}

/// `nodeattrib` and `nodegroupattrib`.
pub fn attrib(args: &[String], group: bool) -> i32 {
    let mut printer = Printer::default();
    let parsed = match parse(
        args,
        &["-m", "--maxnodes", "-e", "--environment", "-p", "--prompt"],
    ) {
        Ok(parsed) => parsed,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(target) = parsed.positionals.first().cloned() else {
        let command = if group {
            "nodegroupattrib <group>"
        } else {
            "nodeattrib <noderange>"
        };
        return usage_error(
            &mut printer,
            &format!(
                "usage: {command} [attribute ...|attribute=value ...] [-c attribute ...] [-b]"
            ),
        );
    };
    let rest: Vec<String> = parsed.positionals[1..].to_vec();
    let blame = parsed.has(&["-b", "--blame"]);
    let clear = parsed.has(&["-c", "--clear"]);
    let limit = match max_nodes(&parsed) {
        Ok(limit) => limit,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let base = if group {
        format!("/nodegroups/{target}/attributes")
    } else {
        format!("/noderange/{target}/attributes")
    };
    let mut parameters = Map::new();
    for name in parsed.values(&["-e", "--environment"]) {
        match std::env::var(&name) {
            Ok(value) => {
                parameters.insert(name, Value::String(value));
            }
            Err(_) => {
                return usage_error(
                    &mut printer,
                    &format!("environment variable {name} is not set"),
                );
            }
        }
    }
    for name in parsed.values(&["-p", "--prompt"]) {
        match prompt_secret(&name) {
            Some(value) => {
                parameters.insert(name, Value::String(value));
            }
            None => return usage_error(&mut printer, "no value entered"),
        }
    }
    if clear {
        for name in &rest {
            parameters.insert(name.clone(), Value::Null);
        }
    } else {
        for arg in &rest {
            if let Some((name, value)) = setting(arg) {
                parameters.insert(name, value);
            }
        }
    }
    if !parameters.is_empty() {
        if !group {
            let Some(count) = count_nodes(&mut printer, &mut client, &target) else {
                return printer.status().max(1);
            };
            if !confirm(count, limit) {
                eprintln!("Aborted");
                return 1;
            }
        }
        request(
            &mut printer,
            &mut client,
            "update",
            &format!("{base}/all"),
            Value::Object(parameters),
        );
        return printer.status();
    }
    let kind = if rest.is_empty() { "current" } else { "all" };
    // Nodes: the daemon narrows the answer to the requested attributes.
    let narrowing = if group || rest.is_empty() {
        json!({})
    } else {
        json!({ "attributes": rest })
    };
    if !group {
        // Print each node's answer as it arrives.
        let path = format!("{base}/{kind}");
        let wanted = Wanted::new(&rest);
        let result = client.request_each_raw("retrieve", &path, narrowing, |payload| {
            if !print_fast(&mut printer, payload, &rest, &wanted, blame) {
                let message: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
                let kept = report(&mut printer, vec![message]);
                print_attributes(&mut printer, &kept, &rest, blame);
            }
        });
        if let Err(error) = result {
            printer.error(None, &error.to_string());
        }
        return printer.status();
    }
    let Some(messages) = request(
        &mut printer,
        &mut client,
        "retrieve",
        &format!("{base}/{kind}"),
        narrowing,
    ) else {
        return printer.status().max(1);
    };
    for message in &messages {
        if let Value::Object(attributes) = message {
            for (name, value) in attributes {
                if !rest.is_empty() && !wanted(&rest, name) {
                    continue;
                }
                if kind == "current" && value.get("value").is_some_and(Value::is_null) {
                    continue;
                }
                printer.line(&format!("{target}: {name}: {}", format_value(value, blame)));
            }
        }
    }
    printer.status()
}

/// `nodelist [noderange] [attribute ...]`.
pub fn list(args: &[String]) -> i32 {
    let mut printer = Printer::default();
    let parsed = match parse(args, &[]) {
        Ok(parsed) => parsed,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let path = match parsed.positionals.first() {
        Some(range) => format!("/noderange/{range}/nodes/"),
        None => "/nodes/".to_string(),
    };
    if parsed.positionals.len() > 1 {
        let range = &parsed.positionals[0];
        let requested = parsed.positionals[1..].to_vec();
        if let Some(messages) = request(
            &mut printer,
            &mut client,
            "retrieve",
            &format!("/noderange/{range}/attributes/all"),
            json!({}),
        ) {
            print_attributes(
                &mut printer,
                &messages,
                &requested,
                parsed.has(&["-b", "--blame"]),
            );
        }
        return printer.status();
    }
    if let Some(messages) = request(&mut printer, &mut client, "retrieve", &path, json!({})) {
        for message in messages {
            if let Some(href) = message.pointer("/item/href").and_then(Value::as_str) {
                printer.line(href.trim_end_matches('/'));
            }
        }
    }
    printer.status()
}

/// `nodegrouplist`.
pub fn group_list(_args: &[String]) -> i32 {
    let mut printer = Printer::default();
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    if let Some(messages) = request(
        &mut printer,
        &mut client,
        "retrieve",
        "/nodegroups/",
        json!({}),
    ) {
        for message in messages {
            if let Some(href) = message.pointer("/item/href").and_then(Value::as_str) {
                printer.line(href.trim_end_matches('/'));
            }
        }
    }
    printer.status()
}

/// `nodedefine <noderange> [attr=value ...]` and `nodegroupdefine <group> [attr=value ...]`.
pub fn define(args: &[String], group: bool) -> i32 {
    let mut printer = Printer::default();
    let parsed = match parse(args, &[]) {
        Ok(parsed) => parsed,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(target) = parsed.positionals.first() else {
        return usage_error(
            &mut printer,
            if group {
                "usage: nodegroupdefine <group> [attribute=value ...]"
            } else {
                "usage: nodedefine <noderange> [attribute=value ...]"
            },
        );
    };
    let mut parameters = Map::new();
    parameters.insert("name".into(), Value::String(target.clone()));
    for arg in &parsed.positionals[1..] {
        match setting(arg) {
            Some((name, value)) => {
                parameters.insert(name, value);
            }
            None => {
                return usage_error(
                    &mut printer,
                    &format!("'{arg}' is not of the form attribute=value"),
                );
            }
        }
    }
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let path = if group { "/nodegroups/" } else { "/noderange/" };
    if let Some(messages) = request(
        &mut printer,
        &mut client,
        "create",
        path,
        Value::Object(parameters),
    ) {
        for message in messages {
            if let Some(created) = message.get("created").and_then(Value::as_str) {
                let name = created.rsplit('/').next().unwrap_or(created);
                printer.line(&format!("{name}: created"));
            }
        }
    }
    printer.status()
}

/// `noderemove <noderange>` and `nodegroupremove <group>`.
pub fn remove(args: &[String], group: bool) -> i32 {
    let mut printer = Printer::default();
    let parsed = match parse(args, &["-m", "--maxnodes"]) {
        Ok(parsed) => parsed,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(target) = parsed.positionals.first().cloned() else {
        return usage_error(
            &mut printer,
            if group {
                "usage: nodegroupremove <group>"
            } else {
                "usage: noderemove <noderange>"
            },
        );
    };
    let limit = match max_nodes(&parsed) {
        Ok(limit) => limit,
        Err(text) => return usage_error(&mut printer, &text),
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let path = if group {
        format!("/nodegroups/{target}")
    } else {
        let Some(count) = count_nodes(&mut printer, &mut client, &target) else {
            return printer.status().max(1);
        };
        if !confirm(count, limit) {
            eprintln!("Aborted");
            return 1;
        }
        format!("/noderange/{target}")
    };
    if let Some(messages) = request(&mut printer, &mut client, "delete", &path, json!({})) {
        for message in messages {
            if let Some(deleted) = message.get("deleted").and_then(Value::as_str) {
                printer.line(&format!("{deleted}: deleted"));
            }
        }
    }
    printer.status()
}

/// `noderename <noderange> <newname|expression>` and `nodegrouprename <group> <newname>`.
pub fn rename(args: &[String], group: bool) -> i32 {
    let mut printer = Printer::default();
    let (Some(target), Some(new_name)) = (args.first(), args.get(1)) else {
        return usage_error(
            &mut printer,
            if group {
                "usage: nodegrouprename <group> <newname>"
            } else {
                "usage: noderename <noderange> <newname or expression>"
            },
        );
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let path = if group {
        format!("/nodegroups/{target}/attributes/rename")
    } else {
        format!("/noderange/{target}/attributes/rename")
    };
    if let Some(messages) = request(
        &mut printer,
        &mut client,
        "update",
        &path,
        json!({"rename": new_name}),
    ) {
        for message in messages {
            if let (Some(old), Some(new)) = (
                message.get("oldname").and_then(Value::as_str),
                message.get("newname").and_then(Value::as_str),
            ) {
                printer.line(&format!("{old}: renamed to {new}"));
            } else if let Some(new) = message.get("newname").and_then(Value::as_str) {
                printer.line(&format!("{target}: renamed to {new}"));
            }
        }
    }
    printer.status()
}
