//! Event log commands: `confluent events` (query the `events` or `audit` log, or follow it with
//! `-f`) and `nodeboottimeline <noderange>` (each node's latest boot attempt, step by step).
//!
//! One line per record: `TIME TYPE [node] [user=...] DETAIL-JSON`, oldest first, so that the
//! output reads like a log file and `-f` simply continues it.

use std::io::Write;

use serde_json::{Value, json};

use super::client::Client;
use super::output::{Printer, error_text};

const USAGE: &str = "usage: confluent events [-f] [-a|--audit] [-n NODERANGE] [-t TYPE]... [-s SINCE] [-e END] [-x TEXT] [--limit N] [--json]
  -f          keep printing new records as they are written (until interrupted)
  -a          the audit log instead of the event log
  -t TYPE     only this type (repeatable; 'dhcp.*' matches a prefix)
  -s SINCE    from this time: RFC 3339, epoch ms, or a duration ago (-1h, 30m, 2d)
  --limit N   at most the newest N records (default 100)";

fn connect(printer: &mut Printer) -> Option<Client> {
    match Client::connect() {
        Ok(client) => Some(client),
        Err(error) => {
            printer.error(None, &error_text(&error));
            None
        }
    }
}

/// `TIME TYPE [node] [user=...] DETAIL`.
fn format_record(record: &Value, raw: bool) -> String {
    if raw {
        return record.to_string();
    }
    let mut line = format!(
        "{} {}",
        record["time"].as_str().unwrap_or("?"),
        record["type"].as_str().unwrap_or("?")
    );
    if let Some(node) = record["node"].as_str() {
        line.push(' ');
        line.push_str(node);
    }
    if let Some(user) = record["user"].as_str() {
        line.push_str(" user=");
        line.push_str(user);
    }
    match &record["detail"] {
        Value::Null => {}
        Value::Object(map) if map.is_empty() => {}
        detail => {
            line.push(' ');
            line.push_str(&detail.to_string());
        }
    }
    line
}

struct Options {
    follow: bool,
    audit: bool,
    raw: bool,
    parameters: serde_json::Map<String, Value>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        follow: false,
        audit: false,
        raw: false,
        parameters: serde_json::Map::new(),
    };
    let mut types = Vec::new();
    let mut index = 0;
    while index < args.len() {
        let flag = args[index].as_str();
        let mut value = || {
            index += 1;
            args.get(index)
                .cloned()
                .ok_or_else(|| format!("option {flag} needs a value"))
        };
        match flag {
            "-f" | "--follow" => options.follow = true,
            "-a" | "--audit" => options.audit = true,
            "--json" => options.raw = true,
            "-n" | "--noderange" => {
                options
                    .parameters
                    .insert("noderange".into(), value()?.into());
            }
            "-t" | "--type" => types.push(value()?),
            "-s" | "--since" => {
                options.parameters.insert("start".into(), value()?.into());
            }
            "-e" | "--end" => {
                options.parameters.insert("end".into(), value()?.into());
            }
            "-x" | "--text" => {
                options.parameters.insert("text".into(), value()?.into());
            }
            "-l" | "--limit" => {
                let limit = value()?;
                limit
                    .parse::<u64>()
                    .map_err(|_| format!("--limit: '{limit}' is not a number"))?;
                options.parameters.insert("limit".into(), limit.into());
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unexpected argument '{other}'")),
        }
        index += 1;
    }
    if !types.is_empty() {
        options.parameters.insert("types".into(), json!(types));
    }
    Ok(options)
}

/// `confluent events`.
pub fn events(args: &[String]) -> i32 {
    let mut printer = Printer::default();
    let options = match parse(args) {
        Ok(options) => options,
        Err(text) => {
            if !text.is_empty() {
                eprintln!("Error: {text}");
            }
            eprintln!("{USAGE}");
            return 2;
        }
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let path = if options.audit {
        "/events/audit"
    } else {
        "/events/log"
    };
    let mut parameters = options.parameters.clone();
    parameters.insert("order".into(), "newest".into());
    let messages = match client.request("retrieve", path, Value::Object(parameters)) {
        Ok(messages) => messages,
        Err(error) => {
            printer.error(None, &error_text(&error));
            return printer.status();
        }
    };
    let mut records = Vec::new();
    for message in messages {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            printer.error(None, error);
        } else if let Some(record) = message.get("event") {
            records.push(record.clone());
        }
    }
    records.reverse();
    let mut last_seq = 0;
    let mut since = None;
    for record in &records {
        printer.line(&format_record(record, options.raw));
        last_seq = record["seq"].as_u64().unwrap_or(last_seq);
        since = record["ms"].as_i64();
    }
    if !options.follow || printer.status() != 0 {
        return printer.status();
    }
    drop(printer);
    // Continue from the last printed record: the stream's backlog covers anything written
    // since the query, and seqs already printed are skipped.
    let mut parameters = options.parameters;
    parameters.remove("limit");
    parameters.remove("end");
    match since {
        Some(since) => {
            parameters.insert("since".into(), since.into());
        }
        None => {
            parameters.remove("start");
        }
    }
    let stdout = std::io::stdout();
    let mut failed = false;
    let result = client.stream("start", path, Value::Object(parameters), |message| {
        let mut out = stdout.lock();
        if let Some(record) = message.get("event") {
            let seq = record["seq"].as_u64().unwrap_or(0);
            if seq > last_seq {
                last_seq = seq;
                let _ = writeln!(out, "{}", format_record(record, options.raw));
            }
        } else if let Some(missed) = message.get("missed") {
            let _ = writeln!(out, "... {missed} records missed (output too slow) ...");
        } else if let Some(error) = message.get("error").and_then(Value::as_str) {
            eprintln!("Error: {error}");
            failed = true;
            return false;
        }
        out.flush().is_ok()
    });
    if let Err(error) = result {
        eprintln!("Error: {}", error_text(&error));
        return 1;
    }
    i32::from(failed)
}

/// `nodeboottimeline <noderange>`.
pub fn boot_timeline(args: &[String]) -> i32 {
    let mut printer = Printer::default();
    let raw = args.iter().any(|arg| arg == "--json");
    let positionals: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let [range] = positionals.as_slice() else {
        eprintln!("usage: nodeboottimeline [--json] <noderange>");
        return 2;
    };
    let Some(mut client) = connect(&mut printer) else {
        return 1;
    };
    let messages = match client.request(
        "retrieve",
        &format!("/noderange/{range}/boottimeline"),
        json!({}),
    ) {
        Ok(messages) => messages,
        Err(error) => {
            printer.error(None, &error_text(&error));
            return printer.status();
        }
    };
    for message in messages {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            printer.error(None, error);
            continue;
        }
        let Some(Value::Object(by_node)) = message.get("databynode") else {
            continue;
        };
        for (node, timeline) in by_node {
            if raw {
                printer.line(&format!("{node}: {timeline}"));
                continue;
            }
            let steps = timeline["steps"].as_array().cloned().unwrap_or_default();
            if steps.is_empty() {
                printer.line(&format!("{node}: no boot events recorded"));
                continue;
            }
            for step in &steps {
                let detail = match &step["detail"] {
                    Value::Null => String::new(),
                    Value::Object(map) if map.is_empty() => String::new(),
                    detail => format!(" {detail}"),
                };
                printer.line(&format!(
                    "{node}: {} +{}ms {}{detail}",
                    step["time"].as_str().unwrap_or("?"),
                    step["gap_ms"],
                    step["type"].as_str().unwrap_or("?"),
                ));
            }
            printer.line(&format!(
                "{node}: last step {} after {} ms, {} s ago",
                timeline["last_step"].as_str().unwrap_or("?"),
                timeline["duration_ms"],
                timeline["since_last_step_ms"].as_i64().unwrap_or(0) / 1000,
            ));
        }
    }
    printer.status()
}
