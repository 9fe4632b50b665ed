//! The `confluent` multi-call CLI against a real daemon: output conventions
//! (`node: attr: value`, natural order, `node: Error: text` on stderr, exit status).

mod common;

use std::path::Path;
use std::process::Command;

use common::DaemonProcess;

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn confluent(socket: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_confluent"))
        .args(args)
        .env("CONFLUENT_HOST", socket)
        .output()
        .expect("run confluent");
    Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code().unwrap_or(-1),
    }
}

fn ok(socket: &Path, args: &[&str]) -> String {
    let run = confluent(socket, args);
    assert_eq!(run.code, 0, "{args:?} failed: {}", run.stderr);
    run.stdout
}

#[test]
fn node_commands_follow_confluent_output_conventions() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path());
    let socket = daemon.socket();
    ok(
        &socket,
        &[
            "nodegroupdefine",
            "compute",
            "hardwaremanagement.manager={node}-bmc",
            "console.method=ipmi",
        ],
    );
    let created = ok(
        &socket,
        &[
            "nodedefine",
            "n[1-3],n10",
            "groups=compute",
            "location.rack=7",
        ],
    );
    assert_eq!(
        created,
        "n1: created\nn2: created\nn3: created\nn10: created\n"
    );
    assert_eq!(ok(&socket, &["nodelist"]), "n1\nn2\nn3\nn10\n");
    assert_eq!(ok(&socket, &["nodelist", "compute,-n2"]), "n1\nn3\nn10\n");
    assert_eq!(
        ok(&socket, &["nodeattrib", "n1,n10", "bmc", "location.rack"]),
        "n1: hardwaremanagement.manager: n1-bmc\nn1: location.rack: 7\nn10: hardwaremanagement.manager: n10-bmc\nn10: location.rack: 7\n"
    );
    assert_eq!(
        ok(
            &socket,
            &["nodeattrib", "n2", "hardwaremanagement.manager", "-b"]
        ),
        "n2: hardwaremanagement.manager: n2-bmc (inherited from group compute) (derived from expression \"{node}-bmc\")\n"
    );
    // Secrets are shown as stars, never in clear.
    ok(&socket, &["nodeattrib", "n1", "bmcpass=Passw0rd!"]);
    assert_eq!(
        ok(&socket, &["nodeattrib", "n1", "bmcpass"]),
        "n1: secret.hardwaremanagementpassword: ********\n"
    );
    // Clear versus mask.
    ok(&socket, &["nodeattrib", "n3", "console.method="]);
    assert_eq!(
        ok(&socket, &["nodeattrib", "n3", "console.method"]),
        "n3: console.method: \n"
    );
    let cleared = confluent(&socket, &["nodeattrib", "n3", "-c", "console.method"]);
    assert_eq!(cleared.code, 0);
    assert!(
        cleared.stderr.contains("inherited from group compute"),
        "{}",
        cleared.stderr
    );
    assert_eq!(
        ok(&socket, &["nodeattrib", "n3", "console.method"]),
        "n3: console.method: ipmi\n"
    );
    // Group membership edits: ,= prepends, ^= removes.
    ok(&socket, &["nodegroupdefine", "rack7", "location.row=3"]);
    ok(&socket, &["nodeattrib", "n1", "groups,=rack7"]);
    assert_eq!(
        ok(&socket, &["nodeattrib", "n1", "groups"]),
        "n1: groups: rack7,compute,everything\n"
    );
    ok(&socket, &["nodeattrib", "n1", "groups^=rack7"]);
    assert_eq!(
        ok(&socket, &["nodeattrib", "n1", "groups"]),
        "n1: groups: compute,everything\n"
    );
    // Errors: stderr, non-zero exit, a hint for typos.
    let bad = confluent(&socket, &["nodeattrib", "n1", "loction.rack=4"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("Error:") && bad.stderr.contains("location.rack"),
        "{}",
        bad.stderr
    );
    let unknown = confluent(&socket, &["nodelist", "nosuchnode"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("nosuchnode"), "{}", unknown.stderr);
    // Rename with an expression, then remove.
    let renamed = ok(&socket, &["noderename", "n10", "x{n1}"]);
    assert_eq!(renamed, "n10: renamed to x10\n");
    assert_eq!(
        ok(&socket, &["noderemove", "x10,n3"]),
        "n3: deleted\nx10: deleted\n"
    );
    assert_eq!(ok(&socket, &["nodelist"]), "n1\nn2\n");
    assert_eq!(
        ok(&socket, &["nodegrouplist"]),
        "compute\neverything\nrack7\n"
    );
}

#[test]
fn multi_call_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(&dir.path().join("state"));
    let bin = dir.path().join("bin");
    let run = confluent(&daemon.socket(), &["install-links", bin.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let output = Command::new(bin.join("nodedefine"))
        .args(["r1u[01-02]"])
        .env("CONFLUENT_HOST", daemon.socket())
        .output()
        .unwrap();
    assert!(output.status.success());
    let output = Command::new(bin.join("nodelist"))
        .env("CONFLUENT_HOST", daemon.socket())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "r1u01\nr1u02\n");
}
