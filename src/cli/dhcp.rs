//! `confluent dhcpsubnet`: list, show, set and remove the DHCP subnet objects
//! (`/networking/dhcp/subnets/`); `confluent dhcpinterface`: list the served interfaces, set or
//! remove an interface's mode (`/networking/dhcp/interfaces/`).
//!
//! One line per subnet, `CIDR: field=value ...` with lists comma-separated, sorted by subnet;
//! `set` takes the same `field=value` words (`field=` clears a field) and prints the result.
//! One line per interface, `NAME: mode=... source=... serving=... address=... subnet=...`.

use serde_json::{Map, Value};

use super::client::Client;
use super::output::{Printer, error_text};

const USAGE: &str = "usage: confluent dhcpsubnet list|show CIDR|set CIDR FIELD=VALUE...|remove CIDR
  fields: pools=FIRST-LAST[,FIRST-LAST...] (or none) routers=A[,B] dns_servers=A[,B]
          domain=NAME ntp_servers=A[,B] mtu=N lease_time=SECONDS mode=full|proxy|off
  FIELD= (empty) clears a field; a subnet without pools gets the default pool (upper half)";

const LIST_FIELDS: &[&str] = &["pools", "routers", "dns_servers", "ntp_servers"];
const NUMBER_FIELDS: &[&str] = &["mtu", "lease_time"];
const TEXT_FIELDS: &[&str] = &["domain", "mode"];

/// `CIDR: field=value ...`
fn format_subnet(object: &Value) -> String {
    let mut line = format!("{}:", object["subnet"].as_str().unwrap_or("?"));
    if let Value::Object(fields) = object {
        for (name, value) in fields {
            if name == "subnet" {
                continue;
            }
            let text = match value {
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_string)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            line.push_str(&format!(" {name}={text}"));
        }
    }
    line
}

/// `field=value` words to the API's fields.
fn fields(words: &[String]) -> Result<Map<String, Value>, String> {
    let mut fields = Map::new();
    for word in words {
        let (name, text) = word
            .split_once('=')
            .ok_or_else(|| format!("'{word}' is not FIELD=VALUE"))?;
        let value = if text.is_empty() {
            Value::Null
        } else if LIST_FIELDS.contains(&name) {
            Value::Array(
                text.split(',')
                    .map(|item| Value::String(item.trim().to_string()))
                    .collect(),
            )
        } else if NUMBER_FIELDS.contains(&name) {
            Value::Number(
                text.parse::<u32>()
                    .map_err(|_| format!("{name} must be a number, not '{text}'"))?
                    .into(),
            )
        } else if TEXT_FIELDS.contains(&name) {
            Value::String(text.to_string())
        } else {
            return Err(format!("unknown field '{name}'"));
        };
        fields.insert(name.to_string(), value);
    }
    Ok(fields)
}

fn subnet_path(cidr: &str) -> String {
    format!("/networking/dhcp/subnets/{cidr}")
}

const INTERFACE_USAGE: &str =
    "usage: confluent dhcpinterface list|show IFACE|set IFACE full|proxy|auto|off|remove IFACE
  set stores the mode in the configuration (it overrides confluentd --dhcp); remove deletes it";

/// `NAME: mode=... source=... serving=... address=... subnet=... error=...`
fn format_interface(entry: &Value) -> String {
    let mut line = format!("{}:", entry["name"].as_str().unwrap_or("?"));
    for field in ["mode", "source", "serving", "address", "subnet", "error"] {
        match &entry[field] {
            Value::Null => {}
            Value::String(text) => line.push_str(&format!(" {field}={text}")),
            other => line.push_str(&format!(" {field}={other}")),
        }
    }
    line
}

/// Print the subnet objects, interfaces and errors in `messages`.
fn report(printer: &mut Printer, messages: &[Value]) {
    for message in messages {
        if let Some(error) = message.get("error").and_then(Value::as_str) {
            printer.error(None, error);
        } else if let Some(object) = message.get("subnet") {
            printer.line(&format_subnet(object));
        } else if let Some(entry) = message.get("interface") {
            printer.line(&format_interface(entry));
        } else if let Some(deleted) = message.get("deleted").and_then(Value::as_str) {
            printer.line(&format!("{deleted}: removed"));
        }
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut printer = Printer::default();
    let (operation, path, parameters) = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] | [] => (
            "retrieve",
            "/networking/dhcp/subnets/".to_string(),
            Value::Object(Map::new()),
        ),
        ["show", cidr] => ("retrieve", subnet_path(cidr), Value::Object(Map::new())),
        ["remove", cidr] => ("delete", subnet_path(cidr), Value::Object(Map::new())),
        ["set", cidr, ..] => match fields(&args[2..]) {
            Ok(fields) => ("update", subnet_path(cidr), Value::Object(fields)),
            Err(error) => {
                printer.error(None, &error);
                eprintln!("{USAGE}");
                return 2;
            }
        },
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            return 0;
        }
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    request(printer, operation, &path, parameters)
}

/// `confluent dhcpinterface ...`
pub fn interfaces_main(args: &[String]) -> i32 {
    let path = |name: &str| format!("/networking/dhcp/interfaces/{name}");
    let empty = || Value::Object(Map::new());
    let (operation, path, parameters) = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] | [] => (
            "retrieve",
            "/networking/dhcp/interfaces/".to_string(),
            empty(),
        ),
        ["show", name] => ("retrieve", path(name), empty()),
        ["remove", name] => ("delete", path(name), empty()),
        ["set", name, mode] => ("update", path(name), serde_json::json!({ "mode": mode })),
        ["-h" | "--help" | "help"] => {
            println!("{INTERFACE_USAGE}");
            return 0;
        }
        _ => {
            eprintln!("{INTERFACE_USAGE}");
            return 2;
        }
    };
    request(Printer::default(), operation, &path, parameters)
}

/// Send one request and print what comes back.
fn request(mut printer: Printer, operation: &str, path: &str, parameters: Value) -> i32 {
    let mut client = match Client::connect() {
        Ok(client) => client,
        Err(error) => {
            printer.error(None, &error_text(&error));
            return printer.status();
        }
    };
    match client.request(operation, path, parameters) {
        Ok(messages) => report(&mut printer, &messages),
        Err(error) => printer.error(None, &error_text(&error)),
    }
    printer.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_fields_and_objects_become_lines() {
        let words: Vec<String> = [
            "pools=10.1.0.10-10.1.0.20,10.1.0.30-10.1.0.31",
            "mtu=9000",
            "domain=",
        ]
        .iter()
        .map(|word| word.to_string())
        .collect();
        let fields = fields(&words).unwrap();
        assert_eq!(
            fields["pools"],
            serde_json::json!(["10.1.0.10-10.1.0.20", "10.1.0.30-10.1.0.31"])
        );
        assert_eq!(fields["mtu"], 9000);
        assert!(fields["domain"].is_null());
        assert!(super::fields(&["colour=blue".to_string()]).is_err());
        assert_eq!(
            format_subnet(&serde_json::json!({
                "subnet": "10.1.0.0/24", "pools": ["10.1.0.10-10.1.0.20"], "routers": ["10.1.0.254"], "mtu": 9000
            })),
            "10.1.0.0/24: mtu=9000 pools=10.1.0.10-10.1.0.20 routers=10.1.0.254"
        );
    }
}
