//! `collate` as users run it: the built `confluent` binary reading piped node output, compared
//! with golden text; `-a` against a real daemon.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::DaemonProcess;
use serde_json::{Value, json};

const RULE: &str = "====================================";

/// Runs `confluent collate ARGS` with `input` on stdin.
fn collate(args: &[&str], input: &str, socket: Option<&Path>) -> Output {
    collate_bytes(args, input.as_bytes(), socket)
}

fn collate_bytes(args: &[&str], input: &[u8], socket: Option<&Path>) -> Output {
    collate_as(
        Path::new(env!("CARGO_BIN_EXE_confluent")),
        &["collate"],
        args,
        input,
        socket,
    )
}

fn collate_as(
    program: &Path,
    prefix: &[&str],
    args: &[&str],
    input: &[u8],
    socket: Option<&Path>,
) -> Output {
    let mut command = Command::new(program);
    command
        .args(prefix)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match socket {
        Some(socket) => command.env("CONFLUENT_HOST", socket),
        // A path that cannot exist, so that no test ever talks to a system daemon by accident.
        None => command.env("CONFLUENT_HOST", "/nonexistent/confluent/api.sock"),
    };
    let mut child = command.spawn().expect("spawn confluent collate");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Written from a thread so that a large input cannot dead-lock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for collate");
    writer.join().expect("stdin writer");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn block(label: &str, lines: &[&str]) -> String {
    let mut text = format!("{RULE}\n{label}\n{RULE}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

/// `nodepower n1-n12` with two nodes off, in the order results arrive (not sorted).
const POWER: &str = "n10: on\nn1: on\nn2: on\nn5: off\nn3: on\nn4: on\nn7: on\nn6: off\n\
                     n8: on\nn9: on\nn12: on\nn11: on\n";

#[test]
fn groups_identical_output_most_common_first() {
    let output = collate(&[], POWER, None);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(
        stdout(&output),
        block("n[1:4,7:12]", &["on"]) + &block("n[5:6]", &["off"])
    );
    assert_eq!(stderr(&output), "");
}

#[test]
fn reverse_count_and_skip_common() {
    let output = collate(&["-r", "-c"], POWER, None);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        format!(
            "{RULE}\nn[5:6]\n{RULE}\nCount: 2\n{RULE}\noff\n\n\
             {RULE}\nn[1:4,7:12]\n{RULE}\nCount: 10\n{RULE}\non\n\n"
        )
    );
    let output = collate(&["--skipcommon"], POWER, None);
    assert_eq!(stdout(&output), block("n[5:6]", &["off"]));
    let output = collate(&["-g"], POWER, None);
    assert_eq!(stdout(&output), "2\n");
}

#[test]
fn diff_shows_changes_against_the_most_common_output() {
    let mut input = String::new();
    for node in ["n1", "n2", "n3", "n4"] {
        let smt = if node == "n3" { "Disable" } else { "Enable" };
        for line in [
            "Processors.C-States=Enable".to_string(),
            format!("Processors.Hyper-Threading={smt}"),
            "Processors.ExecuteDisableBit=Enable".to_string(),
        ] {
            input.push_str(&format!("{node}: {line}\n"));
        }
    }
    let output = collate(&["-d", "-s"], &input, None);
    assert!(output.status.success());
    // stdout is a pipe: no colour codes.
    assert_eq!(
        stdout(&output),
        block(
            "n3",
            &[
                "@@",
                "  Processors.C-States=Enable",
                "- Processors.Hyper-Threading=Enable",
                "+ Processors.Hyper-Threading=Disable",
                "  Processors.ExecuteDisableBit=Enable",
            ]
        )
    );
    let output = collate(&["-d", "-b", "n3"], &input, None);
    let text = stdout(&output);
    assert!(
        text.starts_with(&block(
            "n3",
            &[
                "Processors.C-States=Enable",
                "Processors.Hyper-Threading=Disable",
                "Processors.ExecuteDisableBit=Enable",
            ]
        )),
        "{text}"
    );
    assert!(
        text.contains("\n+ Processors.Hyper-Threading=Enable\n"),
        "{text}"
    );
}

#[test]
fn unparsable_lines_are_kept() {
    let input = "n1: ok\nTraceback (most recent call last):\nn2: ok\n  raise Oops\n";
    let output = collate(&["-s"], input, None);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        block(
            "UNKNOWN",
            &["Traceback (most recent call last):", "  raise Oops"]
        )
    );
}

#[test]
fn invalid_utf8_and_empty_input_do_not_fail() {
    let output = collate(&[], "", None);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "");
    // Latin-1 bytes from an old system: replaced, not fatal.
    let output = collate_bytes(&[], b"n1: caf\xe9\nn2: caf\xe9\n", None);
    assert!(output.status.success());
    assert_eq!(stdout(&output), block("n[1:2]", &["caf\u{fffd}"]));
}

#[test]
fn log_writes_one_file_per_node_and_prints_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let logs = dir.path().join("logs");
    let logs_text = logs.to_string_lossy().into_owned();
    let input = "n1: first\nn2: other\nn1: second\nstray line\n../evil: x\n";
    let output = collate(&["-l", &logs_text], input, None);
    assert_eq!(stdout(&output), "");
    // The escaping name is refused, the rest is written.
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("../evil: Error:"),
        "{}",
        stderr(&output)
    );
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).expect("log file");
    assert_eq!(read("n1"), "first\nsecond\n");
    assert_eq!(read("n2"), "other\n");
    assert_eq!(read("UNKNOWN"), "stray line\n");
    // Appends, as Confluent does, and accepts a {node} template.
    let template = format!("{}/{{node}}.log", logs_text);
    let output = collate(&["--log", &template], "n1: third\n", None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read("n1.log"), "third\n");
    collate(&["-l", &logs_text], "n1: third\n", None);
    assert_eq!(read("n1"), "first\nsecond\nthird\n");
}

#[test]
fn watch_ends_with_the_complete_result() {
    let output = collate(&["-w"], POWER, None);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("\x1b[2J"), "watch mode clears the screen");
    assert!(
        text.ends_with(&(block("n[1:4,7:12]", &["on"]) + &block("n[5:6]", &["off"]))),
        "{text:?}"
    );
}

#[test]
fn runs_through_a_symlink_named_collate() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let link = dir.path().join("collate");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_confluent"), &link).expect("symlink");
    let output = collate_as(&link, &[], &["-c"], b"n1: a\n", None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{RULE}\nn1\n{RULE}\nCount: 1\n{RULE}\na\n\n")
    );
}

#[test]
fn bad_options_are_usage_errors() {
    let output = collate(&["--no-such-option"], "", None);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--no-such-option"));
}

fn request(daemon: &DaemonProcess, operation: &str, path: &str, parameters: Value) {
    let messages = daemon
        .client()
        .request(operation, path, parameters)
        .expect("request");
    for message in &messages {
        assert!(message.get("error").is_none(), "{path}: {message}");
    }
}

#[test]
fn abbreviate_asks_the_daemon_which_knows_groups() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = DaemonProcess::start(dir.path());
    request(
        &daemon,
        "create",
        "/noderange/",
        json!({"name": "n1-n4", "groups": ["rack1"]}),
    );
    request(&daemon, "create", "/noderange/", json!({"name": "n5-n6"}));
    let input = "n1: on\nn2: on\nn3: on\nn4: on\nn5: off\nn6: off\n";
    let output = collate(&["-a"], input, Some(&daemon.socket()));
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    // Only the daemon knows that n1-n4 is the group rack1.
    assert_eq!(
        stdout(&output),
        block("rack1", &["on"]) + &block("n[5:6]", &["off"])
    );
    // Without -a the same input is abbreviated locally.
    let output = collate(&[], input, Some(&daemon.socket()));
    assert_eq!(
        stdout(&output),
        block("n[1:4]", &["on"]) + &block("n[5:6]", &["off"])
    );
}

#[test]
fn abbreviate_without_a_daemon_still_prints_and_fails() {
    let output = collate(&["-a"], "n1: on\nn2: on\n", None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), block("n[1:2]", &["on"]));
    let errors = stderr(&output);
    assert!(
        errors.starts_with("Error: cannot abbreviate through confluentd"),
        "{errors}"
    );
    assert_eq!(errors.lines().count(), 1, "the failure is reported once");
}
