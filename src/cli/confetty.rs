//! `confetty`: browse and change the resource tree like a file system (reference sections 1
//! and 7.5), over the same socket client as every other command. Interactive when run without
//! arguments (one command a line on stdin, a `/path> ` prompt when stdin is a terminal), or
//! one-shot as `confetty <command> [arguments]`.
//!
//! Commands: `cd`, `pwd`, `ls`/`dir`, `show`/`cat`, `set`, `unset`/`clear`, `create`,
//! `rm`/`remove`/`delete`, `start` (refused: console and shell sessions do not exist yet),
//! `help`/`?`, `exit`/`quit`. Paths are relative to the current collection; `.` and `..` work
//! as in a shell.
//!
//! Path handling, word splitting and message formatting are pure functions (tested below);
//! the rest only sends requests and prints. Differences from Confluent's confetty: the prompt
//! is `/path> `; one-shot arguments are used as given instead of being joined and split
//! again; `show` prints `name=value` without quotes; a line whose first word starts with `#`
//! is a comment; the exit status is 1 when any command failed (also for piped scripts).

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};

use serde_json::{Map, Value, json};

use super::client::Client;
use super::nodes::format_value;
use super::output::error_text;

const HELP: &str = "\
confetty: browse and change the confluent resource tree like a file system

usage: confetty                       read commands from stdin (prompt on a terminal)
       confetty <command> [arguments] run one command

commands:
  cd [PATH]                           change the current collection (/ without PATH)
  pwd                                 print the current collection
  ls [PATH]                           list a collection's children, or a resource's values
  show [PATH]                         show a resource, attributes as name=value
  set [PATH] name=value ...           change attributes of a resource
  unset PATH name ...                 clear attributes of a resource
  create PATH [name=value ...]        create a resource: PATH/ is the collection to create
                                      in; otherwise the last component is the new name
  rm PATH ...                         delete resources
  start PATH                          console and shell sessions (not supported yet)
  help                                this text
  exit, quit                          leave
";

/// Every command word (and alias) confetty answers to.
const COMMAND_WORDS: &[&str] = &[
    "cd", "pwd", "ls", "dir", "show", "cat", "set", "unset", "clear", "create", "rm", "remove",
    "delete", "start", "help", "?", "exit", "quit",
];

/// What the caller should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// `confetty [command [arguments]]`.
pub fn main(args: Vec<OsString>) -> i32 {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut shell = Shell::new();
    match words.first().map(String::as_str) {
        Some("-h" | "--help") => {
            print_out(HELP);
            0
        }
        Some(first)
            if words.len() == 1 && !COMMAND_WORDS.contains(&first.to_lowercase().as_str()) =>
        {
            // Confluent's `confetty <node>` opens the node's console.
            shell.error(&format!(
                "{first}: not a command (console sessions, 'confetty <node>', are not supported yet)"
            ));
            shell.status()
        }
        Some(_) => {
            shell.execute(&words);
            shell.status()
        }
        None => interactive(&mut shell),
    }
}

fn interactive(shell: &mut Shell) -> i32 {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut raw = Vec::new();
    loop {
        if terminal {
            print_out(&format!("{}> ", shell.cwd));
        }
        raw.clear();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) => {
                if terminal {
                    print_out("\n");
                }
                break;
            }
            Ok(_) => {}
            Err(error) => {
                shell.error(&format!("cannot read standard input: {error}"));
                break;
            }
        }
        let line = String::from_utf8_lossy(&raw);
        if shell.run_line(&line) == Flow::Exit {
            break;
        }
    }
    shell.status()
}

fn print_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`confetty ls / | head -1`) is not worth a panic or a message.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn print_lines(lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    print_out(&text);
}

/// The state of one confetty run: the current collection and a connection opened on first
/// use (and opened again after a failure).
struct Shell {
    client: Option<Client>,
    cwd: String,
    failed: bool,
}

impl Shell {
    fn new() -> Shell {
        Shell {
            client: None,
            cwd: "/".to_string(),
            failed: false,
        }
    }

    fn status(&self) -> i32 {
        i32::from(self.failed)
    }

    fn error(&mut self, text: &str) {
        self.failed = true;
        eprintln!("Error: {text}");
    }

    fn run_line(&mut self, line: &str) -> Flow {
        match split_words(line) {
            Ok(words) if words.is_empty() => Flow::Continue,
            Ok(words) => self.execute(&words),
            Err(text) => {
                self.error(&text);
                Flow::Continue
            }
        }
    }

    fn execute(&mut self, words: &[String]) -> Flow {
        let Some((command, args)) = words.split_first() else {
            return Flow::Continue;
        };
        match command.to_lowercase().as_str() {
            "exit" | "quit" => return Flow::Exit,
            "help" | "?" => print_out(HELP),
            "pwd" => print_out(&format!("{}\n", self.cwd)),
            "cd" => self.change_directory(args),
            "ls" | "dir" => self.retrieve(args, Style::Listing),
            "show" | "cat" => self.retrieve(args, Style::Showing),
            "set" => self.set(args),
            "unset" | "clear" => self.unset(args),
            "create" => self.create(args),
            "rm" | "remove" | "delete" => self.remove(args),
            "start" => self.error(
                "start is not supported yet (console and shell sessions are not implemented)",
            ),
            other => self.error(&format!("{other}: command not found (try 'help')")),
        }
        Flow::Continue
    }

    /// Sends a request; prints and counts a failure to connect or to talk to the daemon.
    fn request(&mut self, operation: &str, path: &str, parameters: Value) -> Option<Vec<Value>> {
        if self.client.is_none() {
            match Client::connect() {
                Ok(client) => self.client = Some(client),
                Err(error) => {
                    self.error(&error_text(&error));
                    return None;
                }
            }
        }
        let client = self.client.as_mut()?;
        match client.request(operation, path, parameters) {
            Ok(messages) => Some(messages),
            Err(error) => {
                // After a broken exchange the stream may be mid-message; the next command
                // connects again rather than read garbage.
                self.client = None;
                self.error(&error_text(&error));
                None
            }
        }
    }

    /// Prints the errors and warnings among `messages` (to stderr) and returns the rest, with
    /// failed nodes removed from `databynode` messages. Sets the failure status on errors.
    fn take_errors(&mut self, messages: Vec<Value>) -> (Vec<Value>, usize) {
        let mut kept = Vec::new();
        let mut errors = 0;
        for message in messages {
            if let Some(error) = message.get("error") {
                errors += 1;
                self.error(&value_text(error));
                continue;
            }
            if let Some(warning) = message.get("warning") {
                eprintln!("Warning: {}", value_text(warning));
                continue;
            }
            if let Some(Value::Object(by_node)) = message.get("databynode") {
                let mut remaining = Map::new();
                for (node, data) in by_node {
                    if let Some(error) = data.get("error") {
                        errors += 1;
                        self.failed = true;
                        eprintln!("{node}: Error: {}", value_text(error));
                    } else {
                        remaining.insert(node.clone(), data.clone());
                    }
                }
                if !remaining.is_empty() {
                    kept.push(json!({ "databynode": remaining }));
                }
                continue;
            }
            kept.push(message);
        }
        (kept, errors)
    }

    fn change_directory(&mut self, args: &[String]) {
        if args.len() > 1 {
            return self.error("usage: cd [PATH]");
        }
        let target = match args.first() {
            Some(path) => resolve(&self.cwd, path, true),
            None => "/".to_string(),
        };
        let Some(messages) = self.request("retrieve", &target, json!({})) else {
            return;
        };
        let (messages, errors) = self.take_errors(messages);
        if errors > 0 {
            return;
        }
        // A collection answers only with links; anything else is a resource one cannot enter.
        if messages.iter().any(|message| message.get("item").is_none()) {
            return self.error(&format!("{target} is not a collection"));
        }
        self.cwd = target;
    }

    fn retrieve(&mut self, args: &[String], style: Style) {
        let usage = match style {
            Style::Listing => "usage: ls [PATH]",
            Style::Showing => "usage: show [PATH]",
        };
        if args.len() > 1 {
            return self.error(usage);
        }
        let target = match args.first() {
            Some(path) => resolve(&self.cwd, path, false),
            None => self.cwd.clone(),
        };
        let Some(messages) = self.request("retrieve", &target, json!({})) else {
            return;
        };
        let (messages, _) = self.take_errors(messages);
        print_lines(&format_messages(&messages, style));
    }

    fn set(&mut self, args: &[String]) {
        let Some(first) = args.first() else {
            return self.error("usage: set [PATH] name=value ...");
        };
        let (target, settings) = if is_setting(first) {
            (self.cwd.clone(), args)
        } else {
            (resolve(&self.cwd, first, false), &args[1..])
        };
        if settings.is_empty() {
            return self.error("usage: set [PATH] name=value ...");
        }
        let parameters = match parse_settings(settings) {
            Ok(parameters) => parameters,
            Err(text) => return self.error(&text),
        };
        self.change("update", &target, Value::Object(parameters));
    }

    fn unset(&mut self, args: &[String]) {
        let (Some(path), true) = (args.first(), args.len() > 1) else {
            return self.error("usage: unset PATH name ...");
        };
        let target = resolve(&self.cwd, path, false);
        let parameters: Map<String, Value> = args[1..]
            .iter()
            .map(|name| (name.clone(), Value::Null))
            .collect();
        self.change("update", &target, Value::Object(parameters));
    }

    fn create(&mut self, args: &[String]) {
        let Some(path) = args.first() else {
            return self.error("usage: create PATH [name=value ...]");
        };
        let mut parameters = match parse_settings(&args[1..]) {
            Ok(parameters) => parameters,
            Err(text) => return self.error(&text),
        };
        let target = resolve(&self.cwd, path, false);
        let collection = match target.trim_end_matches('/').rsplit_once('/') {
            // `create /nodes/n1 ...` means: create n1 in /nodes/, as in Confluent.
            Some((parent, name)) if !target.ends_with('/') && !name.is_empty() => {
                parameters
                    .entry("name")
                    .or_insert_with(|| Value::String(name.to_string()));
                format!("{parent}/")
            }
            _ => target,
        };
        self.change("create", &collection, Value::Object(parameters));
    }

    fn remove(&mut self, args: &[String]) {
        if args.is_empty() {
            return self.error("usage: rm PATH ...");
        }
        for path in args {
            let target = resolve(&self.cwd, path, false);
            self.change("delete", &target, json!({}));
        }
    }

    /// Sends a change and prints what the daemon reports back.
    fn change(&mut self, operation: &str, target: &str, parameters: Value) {
        let Some(messages) = self.request(operation, target, parameters) else {
            return;
        };
        let (messages, _) = self.take_errors(messages);
        let mut lines = Vec::new();
        for message in &messages {
            if let Some(created) = message.get("created") {
                lines.push(format!("Created: {}", value_text(created)));
            } else if let Some(deleted) = message.get("deleted") {
                lines.push(format!("Deleted: {}", value_text(deleted)));
            } else if let (Some(old), Some(new)) = (message.get("oldname"), message.get("newname"))
            {
                lines.push(format!(
                    "Renamed: {} -> {}",
                    value_text(old),
                    value_text(new)
                ));
            } else {
                lines.extend(format_messages(
                    std::slice::from_ref(message),
                    Style::Showing,
                ));
            }
        }
        print_lines(&lines);
    }
}

/// Text of a JSON value meant to be read: strings without quotes, anything else as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An argument of `set` that is a setting rather than the resource path: it has a `=` and no
/// `/` before it (`/noderange/location.rack=3/attributes/current` is a path).
fn is_setting(arg: &str) -> bool {
    match arg.find('=') {
        Some(equals) => !arg[..equals].contains('/'),
        None => false,
    }
}

/// `name=value` arguments into request parameters. `groups` takes a comma-separated list,
/// sent as a JSON list as Confluent's confetty does.
fn parse_settings(args: &[String]) -> Result<Map<String, Value>, String> {
    let mut parameters = Map::new();
    for arg in args {
        let Some((name, value)) = arg.split_once('=').filter(|(name, _)| !name.is_empty()) else {
            return Err(format!("'{arg}' is not of the form name=value"));
        };
        let value = if name == "groups" {
            Value::Array(
                value
                    .split(',')
                    .filter(|group| !group.is_empty())
                    .map(|group| Value::String(group.to_string()))
                    .collect(),
            )
        } else {
            Value::String(value.to_string())
        };
        parameters.insert(name.to_string(), value);
    }
    Ok(parameters)
}

/// The absolute path of `path` seen from the collection `cwd` (which ends with `/`). `.` and
/// empty components are dropped and `..` goes up (never above `/`). The result ends with `/`
/// when `collection` is asked for or `path` itself ends with `/`, `.` or `..`. An absolute
/// path without `.` or `..` components is kept verbatim, so that noderange text containing
/// `/` (regular expressions) survives.
pub fn resolve(cwd: &str, path: &str, collection: bool) -> String {
    let components: Vec<&str> = path.split('/').collect();
    let navigates = components.iter().any(|part| matches!(*part, "." | ".."));
    let mut result = if path.starts_with('/') && !navigates {
        path.to_string()
    } else {
        let mut parts: Vec<&str> = if path.starts_with('/') {
            Vec::new()
        } else {
            cwd.split('/').filter(|part| !part.is_empty()).collect()
        };
        for part in components.iter().copied() {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        let ends_as_collection = path.is_empty()
            || path.ends_with('/')
            || matches!(components.last().copied(), Some("." | ".."));
        let mut text = format!("/{}", parts.join("/"));
        if ends_as_collection && !parts.is_empty() {
            text.push('/');
        }
        text
    };
    if collection && !result.ends_with('/') {
        result.push('/');
    }
    result
}

/// Splits a command line into words as a POSIX shell would for plain words: blanks separate,
/// `'…'` is literal, `"…"` allows `\"` and `\\`, a backslash escapes the next character, and
/// a `#` starting a word begins a comment.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut characters = line.chars();
    while let Some(character) = characters.next() {
        match character {
            blank if blank.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match characters.next() {
                        Some('\'') => break,
                        Some(quoted) => current.push(quoted),
                        None => return Err("unterminated ' quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match characters.next() {
                        Some('"') => break,
                        Some('\\') => match characters.next() {
                            Some(escaped @ ('"' | '\\')) => current.push(escaped),
                            Some(other) => {
                                current.push('\\');
                                current.push(other);
                            }
                            None => return Err("unterminated \" quote".to_string()),
                        },
                        Some(quoted) => current.push(quoted),
                        None => return Err("unterminated \" quote".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(escaped) = characters.next() {
                    current.push(escaped);
                }
            }
            other => {
                in_word = true;
                current.push(other);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// How `ls` and `show` print a resource's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `name: value`, as the node commands print attributes.
    Listing,
    /// `name=value`, with where an inherited or derived value comes from.
    Showing,
}

/// Lines for a response: child links as their `href`, `databynode` messages as one
/// `node: ...` line per value, other messages one line per field.
fn format_messages(messages: &[Value], style: Style) -> Vec<String> {
    let mut lines = Vec::new();
    for message in messages {
        if let Some(href) = message.pointer("/item/href") {
            lines.push(value_text(href));
        } else if let Some(Value::Object(by_node)) = message.get("databynode") {
            for (node, data) in by_node {
                for line in format_fields(data, style) {
                    lines.push(format!("{node}: {line}"));
                }
            }
        } else {
            lines.extend(format_fields(message, style));
        }
    }
    lines
}

fn format_fields(value: &Value, style: Style) -> Vec<String> {
    let Value::Object(fields) = value else {
        return vec![value_text(value)];
    };
    fields
        .iter()
        .map(|(name, value)| {
            let text = if is_plain(value) {
                format_value(value, style == Style::Showing)
            } else {
                value.to_string()
            };
            match style {
                Style::Listing => format!("{name}: {text}"),
                Style::Showing => format!("{name}={text}"),
            }
        })
        .collect()
}

/// Values the attribute formatting of the node commands renders faithfully: scalars, lists of
/// scalars, and attribute objects (`value`, `isset`, `broken`, ...). Anything else is printed
/// as JSON rather than lose information.
fn is_plain(value: &Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .all(|item| !matches!(item, Value::Array(_) | Value::Object(_))),
        Value::Object(map) => {
            !map.is_empty()
                && map.keys().all(|key| {
                    matches!(
                        key.as_str(),
                        "value" | "isset" | "broken" | "expression" | "inheritedfrom"
                    )
                })
                && map
                    .get("value")
                    .is_none_or(|value| !matches!(value, Value::Array(_) | Value::Object(_)))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_absolute_paths() {
        assert_eq!(resolve("/", "nodes", false), "/nodes");
        assert_eq!(resolve("/", "nodes/", false), "/nodes/");
        assert_eq!(resolve("/", "nodes", true), "/nodes/");
        assert_eq!(
            resolve("/nodes/", "n1/attributes", false),
            "/nodes/n1/attributes"
        );
        assert_eq!(resolve("/nodes/n1/", "..", false), "/nodes/");
        assert_eq!(resolve("/nodes/n1/", "../..", false), "/");
        assert_eq!(resolve("/", "../../..", true), "/");
        assert_eq!(resolve("/nodes/", ".", false), "/nodes/");
        assert_eq!(resolve("/nodes/", "", false), "/nodes/");
        assert_eq!(
            resolve("/nodes/n1/", "../n2/./attributes", false),
            "/nodes/n2/attributes"
        );
        assert_eq!(resolve("/nodes/n1/", "/nodegroups/", false), "/nodegroups/");
        assert_eq!(
            resolve("/nodes/n1/", "/nodes/../version", false),
            "/version"
        );
        assert_eq!(resolve("/x/", "//a//b", false), "//a//b");
    }

    #[test]
    fn noderange_regular_expressions_survive_absolute_paths() {
        assert_eq!(
            resolve("/", "/noderange//n[1-3]/nodes/", false),
            "/noderange//n[1-3]/nodes/"
        );
    }

    #[test]
    fn splits_words_like_a_shell() {
        let words = |line: &str| split_words(line).expect("valid line");
        assert_eq!(words("  ls   /nodes/ "), ["ls", "/nodes/"]);
        assert_eq!(
            words("set n1 'description=a b' \"x=\\\"q\\\"\""),
            ["set", "n1", "description=a b", "x=\"q\""]
        );
        assert_eq!(words(r"set n1 a=b\ c"), ["set", "n1", "a=b c"]);
        assert_eq!(words("set n1 a=''"), ["set", "n1", "a="]);
        assert_eq!(words("# a comment"), Vec::<String>::new());
        assert_eq!(words("ls # trailing"), ["ls"]);
        assert_eq!(words("show a#b"), ["show", "a#b"]);
        assert!(split_words("set 'open").is_err());
        assert!(split_words("set \"open").is_err());
    }

    #[test]
    fn settings_become_parameters() {
        let args: Vec<String> = ["location.rack=3", "groups=a,b", "description="]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        let parameters = parse_settings(&args).expect("valid settings");
        assert_eq!(
            Value::Object(parameters),
            json!({"location.rack": "3", "groups": ["a", "b"], "description": ""})
        );
        assert!(parse_settings(&["rack".to_string()]).is_err());
        assert!(parse_settings(&["=3".to_string()]).is_err());
    }

    #[test]
    fn tells_settings_from_paths() {
        assert!(is_setting("location.rack=3"));
        assert!(is_setting("description=a/b"));
        assert!(!is_setting("current"));
        assert!(!is_setting("/noderange/location.rack=3/attributes/current"));
    }

    #[test]
    fn formats_links_attributes_and_other_messages() {
        let messages = [
            json!({"item": {"href": "n1/"}}),
            json!({"item": {"href": "version"}}),
        ];
        assert_eq!(
            format_messages(&messages, Style::Listing),
            ["n1/", "version"]
        );
        let attributes = json!({
            "groups": ["everything", "rack1"],
            "location.rack": {"value": "3", "inheritedfrom": "rack1"},
            "secret.hardwaremanagementpassword": {"isset": true},
            "id.serial": {"value": null},
        });
        assert_eq!(
            format_messages(std::slice::from_ref(&attributes), Style::Showing),
            [
                "groups=everything,rack1",
                "id.serial=",
                "location.rack=3 (inherited from group rack1)",
                "secret.hardwaremanagementpassword=********",
            ]
        );
        assert_eq!(
            format_messages(std::slice::from_ref(&attributes), Style::Listing),
            [
                "groups: everything,rack1",
                "id.serial: ",
                "location.rack: 3",
                "secret.hardwaremanagementpassword: ********",
            ]
        );
        let by_node = json!({"databynode": {"n1": {"location.rack": {"value": "4"}}}});
        assert_eq!(
            format_messages(&[by_node], Style::Showing),
            ["n1: location.rack=4"]
        );
        let nested = json!({"version": "1.0", "sensors": [{"name": "t", "value": 20}]});
        assert_eq!(
            format_messages(&[nested], Style::Showing),
            ["sensors=[{\"name\":\"t\",\"value\":20}]", "version=1.0"]
        );
    }
}
