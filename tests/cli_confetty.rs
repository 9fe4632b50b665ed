//! `confetty` as users run it: the built `confluent` binary against a real daemon, one-shot
//! and with commands piped on stdin.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::DaemonProcess;

fn run(socket: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confluent"))
        .arg("confetty")
        .args(args)
        .env("CONFLUENT_HOST", socket)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn confluent confetty");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(input.as_bytes()).expect("write commands");
    }
    child.wait_with_output().expect("wait for confetty")
}

/// One-shot command that must succeed; returns stdout.
fn ok(socket: &Path, args: &[&str]) -> String {
    let output = run(socket, args, None);
    assert!(
        output.status.success(),
        "confetty {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One-shot command that must fail; returns stderr.
fn fails(socket: &Path, args: &[&str]) -> String {
    let output = run(socket, args, None);
    assert_eq!(
        output.status.code(),
        Some(1),
        "confetty {args:?} should fail"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn one_shot_commands_change_and_show_the_tree() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = DaemonProcess::start(dir.path());
    let socket = daemon.socket();

    let root = ok(&socket, &["ls", "/"]);
    assert!(lines(&root).contains(&"nodes/"), "{root}");

    let created = ok(
        &socket,
        &["create", "/nodes/", "name=n1", "location.rack=3"],
    );
    assert_eq!(created, "Created: nodes/n1\n");
    let shown = ok(&socket, &["show", "/nodes/n1/attributes/current"]);
    assert!(lines(&shown).contains(&"location.rack=3"), "{shown}");

    ok(
        &socket,
        &["set", "/nodes/n1/attributes/current", "location.rack=4"],
    );
    let shown = ok(&socket, &["show", "/nodes/n1/attributes/current"]);
    assert!(lines(&shown).contains(&"location.rack=4"), "{shown}");
    let listed = ok(&socket, &["ls", "/nodes/n1/attributes/current"]);
    assert!(lines(&listed).contains(&"location.rack: 4"), "{listed}");

    assert_eq!(ok(&socket, &["ls", "/nodes/"]), "n1/\n");
    assert_eq!(ok(&socket, &["ls", "/nodes/n1"]), "attributes/\n");

    // The last component of a path without a trailing slash names the new resource.
    assert_eq!(
        ok(&socket, &["create", "/nodes/n2", "groups=rack1,compute"]),
        "Created: nodes/n2\n"
    );
    let shown = ok(&socket, &["show", "/nodes/n2/attributes/current"]);
    assert!(
        lines(&shown).contains(&"groups=rack1,compute,everything"),
        "{shown}"
    );

    // Noderange paths answer per node.
    ok(
        &socket,
        &[
            "set",
            "/noderange/n1,n2/attributes/current",
            "location.room=lab",
        ],
    );
    let shown = ok(&socket, &["show", "/noderange/n1,n2/attributes/current"]);
    assert!(lines(&shown).contains(&"n1: location.room=lab"), "{shown}");
    assert!(lines(&shown).contains(&"n2: location.room=lab"), "{shown}");

    ok(
        &socket,
        &["unset", "/nodes/n1/attributes/current", "location.room"],
    );
    let shown = ok(&socket, &["show", "/nodes/n1/attributes/current"]);
    assert!(!shown.contains("location.room"), "{shown}");

    assert_eq!(ok(&socket, &["rm", "/nodes/n1"]), "Deleted: n1\n");
    assert_eq!(ok(&socket, &["ls", "/nodes/"]), "n2/\n");
}

#[test]
fn one_shot_errors_go_to_stderr_with_a_failure_status() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = DaemonProcess::start(dir.path());
    let socket = daemon.socket();

    let error = fails(&socket, &["show", "/nodes/nosuch/attributes/current"]);
    assert!(error.starts_with("Error: "), "{error}");
    assert!(error.contains("nosuch"), "{error}");

    ok(&socket, &["create", "/nodes/", "name=n1"]);
    let error = fails(&socket, &["create", "/nodes/", "name=n1"]);
    assert!(error.starts_with("Error: "), "{error}");
    let error = fails(
        &socket,
        &["set", "/nodes/n1/attributes/current", "no.such.attribute=1"],
    );
    assert!(error.starts_with("Error: "), "{error}");
    let error = fails(&socket, &["set", "/nodes/n1/attributes/current", "rack"]);
    assert!(error.contains("name=value"), "{error}");
    let error = fails(&socket, &["start", "/nodes/n1/console/session"]);
    assert!(error.contains("not supported"), "{error}");
    let error = fails(&socket, &["frobnicate", "/"]);
    assert!(error.contains("command not found"), "{error}");
    let error = fails(&socket, &["n1"]);
    assert!(error.contains("console sessions"), "{error}");
    let error = fails(&socket, &["cd", "/nodes/n1/attributes/current"]);
    assert!(error.contains("not a collection"), "{error}");

    let missing = dir.path().join("no-daemon.sock");
    let error = fails(&missing, &["ls", "/"]);
    assert!(error.starts_with("Error: cannot connect"), "{error}");
}

#[test]
fn commands_piped_on_stdin_share_a_current_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let daemon = DaemonProcess::start(dir.path());
    let socket = daemon.socket();

    let script = "\
# a comment line
cd nodes
create n5 location.rack=7 'info.note=rack seven'
create n6
ls
cd n5/attributes
pwd
show current
set current location.rack=8
ls current
cd ../../..
pwd
cd ..
pwd
bogus
cd /nodes/n6
rm ../n6
exit
ls
";
    let output = run(&socket, &[], Some(script));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // One command failed (bogus), so the run fails, but everything else ran.
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        lines(&stderr),
        ["Error: bogus: command not found (try 'help')"]
    );
    let out = lines(&stdout);
    // No prompt: stdin is not a terminal.
    assert!(!stdout.contains("> "), "{stdout}");
    let position = |line: &str| {
        out.iter()
            .position(|candidate| *candidate == line)
            .unwrap_or_else(|| panic!("{line:?} missing from {stdout}"))
    };
    assert!(position("Created: nodes/n5") < position("Created: nodes/n6"));
    assert!(position("n6/") > position("Created: nodes/n6"));
    assert!(out.contains(&"n5/"));
    assert!(position("/nodes/n5/attributes/") < position("location.rack=7"));
    assert!(out.contains(&"info.note=rack seven"), "{stdout}");
    assert!(out.contains(&"location.rack: 8"), "{stdout}");
    // `cd ../../..` from /nodes/n5/attributes/ is the root; `cd ..` stays there.
    assert_eq!(
        out.iter().filter(|line| **line == "/").count(),
        2,
        "{stdout}"
    );
    assert!(out.contains(&"Deleted: n6"), "{stdout}");
    // `exit` stops before the final `ls`, which would list n5/ a second time.
    assert_eq!(
        out.iter().filter(|line| **line == "n5/").count(),
        1,
        "{stdout}"
    );

    let listed = ok(&socket, &["ls", "/nodes/"]);
    assert_eq!(listed, "n5/\n");
}
