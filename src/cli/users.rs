//! `confluent user` and `confluent usergroup`: manage the API's users and user groups through
//! `/users/` and `/usergroups/`.
//!
//! ```text
//! confluent user list [--tenant T]
//! confluent user show NAME [--tenant T]
//! confluent user add NAME --role ROLE [--password-stdin] [--tenant T]
//! confluent user set NAME [--role ROLE] [--password-stdin] [--tenant T]
//! confluent user remove NAME [--tenant T]
//! confluent usergroup list | show G | add G --role ROLE | set G --role ROLE | remove G
//! ```
//!
//! Passwords are read from the first line of standard input (`--password-stdin`), never from
//! the command line, where other local users could see them in the process list.

use std::io::BufRead;

use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::client::Client;
use super::output::{Printer, error_text};

struct Arguments {
    action: String,
    name: Option<String>,
    role: Option<String>,
    tenant: Option<String>,
    password_stdin: bool,
}

fn parse(args: &[String]) -> Result<Arguments, String> {
    let mut iter = args.iter();
    let action = iter.next().cloned().ok_or("missing action")?;
    let mut parsed = Arguments {
        action,
        name: None,
        role: None,
        tenant: None,
        password_stdin: false,
    };
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--role" | "-r" => {
                parsed.role = Some(iter.next().ok_or("--role needs a value")?.clone())
            }
            "--tenant" | "-t" => {
                parsed.tenant = Some(iter.next().ok_or("--tenant needs a value")?.clone())
            }
            "--password-stdin" => parsed.password_stdin = true,
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if parsed.name.is_none() => parsed.name = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(parsed)
}

fn read_password() -> Result<Zeroizing<String>, String> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("failed to read the password from standard input: {error}"))?;
    let password = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    if password.is_empty() {
        return Err("empty password on standard input".into());
    }
    Ok(password)
}

/// Run a request; print errors; the messages when none failed.
fn run(
    printer: &mut Printer,
    operation: &str,
    path: &str,
    parameters: Value,
) -> Option<Vec<Value>> {
    let mut client = match Client::connect() {
        Ok(client) => client,
        Err(error) => {
            printer.error(None, &error_text(&error));
            return None;
        }
    };
    match client.request(operation, path, parameters) {
        Ok(messages) => {
            let mut failed = false;
            for message in &messages {
                if let Some(error) = message.get("error").and_then(Value::as_str) {
                    printer.error(None, error);
                    failed = true;
                }
            }
            (!failed).then_some(messages)
        }
        Err(error) => {
            printer.error(None, &error_text(&error));
            None
        }
    }
}

fn usage(printer: &mut Printer, group: bool) -> i32 {
    let text = if group {
        "usage: confluent usergroup list | show GROUP | add GROUP --role ROLE | set GROUP --role ROLE | remove GROUP"
    } else {
        "usage: confluent user list | show NAME | add NAME --role ROLE [--password-stdin] | set NAME [--role ROLE] [--password-stdin] | remove NAME  (each with [--tenant T])"
    };
    printer.error(None, text);
    2
}

/// `confluent user ...` (`group` false) and `confluent usergroup ...` (`group` true).
pub fn main(args: &[String], group: bool) -> i32 {
    let mut printer = Printer::default();
    let parsed = match parse(args) {
        Ok(parsed) => parsed,
        Err(text) => {
            printer.error(None, &text);
            return usage(&mut printer, group);
        }
    };
    let collection = if group { "usergroups" } else { "users" };
    let mut parameters = Map::new();
    if let Some(tenant) = &parsed.tenant {
        parameters.insert("tenant".into(), json!(tenant));
    }
    if let Some(role) = &parsed.role {
        parameters.insert("role".into(), json!(role));
    }
    if parsed.password_stdin {
        if group {
            return usage(&mut printer, group);
        }
        match read_password() {
            Ok(password) => {
                parameters.insert("password".into(), json!(password.as_str()));
            }
            Err(text) => {
                printer.error(None, &text);
                return 1;
            }
        }
    }
    let name = parsed.name.clone();
    let outcome = match (parsed.action.as_str(), name) {
        ("list", None) => run(
            &mut printer,
            "retrieve",
            &format!("/{collection}/"),
            Value::Object(parameters),
        )
        .map(|messages| {
            for message in messages {
                if let Some(name) = message.pointer("/item/href").and_then(Value::as_str) {
                    printer.line(name);
                }
            }
        }),
        ("show", Some(name)) => run(
            &mut printer,
            "retrieve",
            &format!("/{collection}/{name}"),
            Value::Object(parameters),
        )
        .map(|messages| {
            for message in messages {
                if let Some(role) = message.get("role").and_then(Value::as_str) {
                    printer.line(&format!("{name}: role: {role}"));
                }
                if let Some(isset) = message.pointer("/password/isset").and_then(Value::as_bool) {
                    printer.line(&format!(
                        "{name}: password: {}",
                        if isset { "set" } else { "not set (PAM)" }
                    ));
                }
            }
        }),
        ("add", Some(name)) => {
            parameters.insert("name".into(), json!(name));
            run(
                &mut printer,
                "create",
                &format!("/{collection}/"),
                Value::Object(parameters),
            )
            .map(|_| printer.line(&format!("{name}: created")))
        }
        ("set", Some(name)) => run(
            &mut printer,
            "update",
            &format!("/{collection}/{name}"),
            Value::Object(parameters),
        )
        .map(|_| printer.line(&format!("{name}: updated"))),
        ("remove", Some(name)) => run(
            &mut printer,
            "delete",
            &format!("/{collection}/{name}"),
            Value::Object(parameters),
        )
        .map(|_| printer.line(&format!("{name}: removed"))),
        _ => return usage(&mut printer, group),
    };
    match outcome {
        Some(()) => printer.status(),
        None => printer.status().max(1),
    }
}
