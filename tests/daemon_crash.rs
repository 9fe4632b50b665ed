//! Crash safety of the real daemon: SIGKILL in the middle of a stream of concurrent writes;
//! after a restart every acknowledged change is there and nothing is corrupted.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::DaemonProcess;
use serde_json::{Value, json};

const WRITERS: usize = 8;

/// Per writer: the nodes it created (acknowledged) and the last acknowledged counter value.
type Acknowledged = BTreeMap<usize, (Vec<String>, u64)>;

#[test]
fn sigkill_during_writes_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny snapshot threshold so that snapshots and journal rotation happen during the storm.
    let daemon = DaemonProcess::start_with(dir.path(), &["--snapshot-every", "150"]);
    let mut client = daemon.client();
    let created = client
        .request(
            "create",
            "/nodegroups/",
            json!({"name": "storm", "location.room": "lab"}),
        )
        .unwrap();
    assert!(
        created.iter().all(|m| m.get("error").is_none()),
        "{created:?}"
    );

    let acknowledged: Arc<Mutex<Acknowledged>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for writer in 0..WRITERS {
        let socket = daemon.socket();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let Ok(mut client) = confluent::cli::client::Client::connect_to(&socket) else {
                return;
            };
            let counter_node = format!("c{writer}");
            if client
                .request(
                    "create",
                    "/nodes/",
                    json!({"name": counter_node, "groups": "storm"}),
                )
                .is_err()
            {
                return;
            }
            acknowledged
                .lock()
                .unwrap()
                .entry(writer)
                .or_default()
                .0
                .push(counter_node.clone());
            let mut index: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                index += 1;
                let node = format!("w{writer}n{index}");
                let Ok(reply) = client.request(
                    "create",
                    "/nodes/",
                    json!({"name": node, "groups": "storm", "custom.index": index.to_string()}),
                ) else {
                    return;
                };
                assert!(reply.iter().all(|m| m.get("error").is_none()), "{reply:?}");
                let Ok(reply) = client.request(
                    "update",
                    &format!("/nodes/{counter_node}/attributes/all"),
                    json!({"custom.counter": index.to_string()}),
                ) else {
                    return;
                };
                assert!(reply.iter().all(|m| m.get("error").is_none()), "{reply:?}");
                let mut acknowledged = acknowledged.lock().unwrap();
                let entry = acknowledged.entry(writer).or_default();
                entry.0.push(node);
                entry.1 = index;
            }
        }));
    }
    // Let the storm run, then kill the daemon without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let count: usize = acknowledged
            .lock()
            .unwrap()
            .values()
            .map(|(nodes, _)| nodes.len())
            .sum();
        if count >= 1500 || std::time::Instant::now() > deadline {
            break;
        }
    }
    daemon.kill();
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let total: usize = acknowledged.values().map(|(nodes, _)| nodes.len()).sum();
    assert!(
        total >= 200,
        "too few writes were acknowledged before the kill ({total})"
    );

    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    let listing = client.request("retrieve", "/nodes/", json!({})).unwrap();
    let present: std::collections::HashSet<String> = listing
        .iter()
        .filter_map(|m| m.pointer("/item/href").and_then(Value::as_str))
        .map(|href| href.trim_end_matches('/').to_string())
        .collect();
    for (writer, (nodes, counter)) in &acknowledged {
        for node in nodes {
            assert!(present.contains(node), "acknowledged node {node} lost");
        }
        let reply = client
            .request(
                "retrieve",
                &format!("/nodes/c{writer}/attributes/current"),
                json!({}),
            )
            .unwrap();
        let stored: u64 = reply[0]["custom.counter"]["value"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap();
        // The counter may be one ahead (written, killed before the reply arrived), never behind.
        assert!(
            stored >= *counter && stored <= counter + 1,
            "writer {writer}: acknowledged {counter}, stored {stored}"
        );
    }
    // Values are intact and inheritance still works on a sample of nodes.
    let sample = acknowledged[&0].0.last().unwrap().clone();
    let reply = client
        .request(
            "retrieve",
            &format!("/nodes/{sample}/attributes/current"),
            json!({}),
        )
        .unwrap();
    assert_eq!(reply[0]["location.room"]["inheritedfrom"], "storm");
    // The restarted daemon accepts writes and stops cleanly.
    let reply = client
        .request("create", "/nodes/", json!({"name": "after"}))
        .unwrap();
    assert!(reply.iter().all(|m| m.get("error").is_none()), "{reply:?}");
    assert!(daemon.stop().success());
}

#[test]
fn two_daemons_never_share_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = DaemonProcess::start(dir.path());
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_confluentd"))
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("already using this state directory"),
        "{stderr}"
    );
    // The first one is unaffected.
    let mut client = first.client();
    assert!(client.request("retrieve", "/version", json!({})).is_ok());
    assert!(first.stop().success());
}
