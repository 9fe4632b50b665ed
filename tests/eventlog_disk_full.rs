//! A full disk under the event log: appends fail loudly (errors and counters), nothing blocks
//! or panics, a failed write leaves no partial record behind (seqs stay contiguous), logging
//! resumes when space returns, and the daemon keeps answering API requests whose audit records
//! cannot be written. The disk is a small tmpfs mounted by the test (needs root).

mod common;

use common::{DaemonProcess, SmallDisk};
use confluent::eventlog::{AppendError, Event, EventLog, LogOptions, Order, Query};
use serde_json::json;

#[tokio::test]
async fn full_disk_fails_appends_loudly_without_partial_records_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "128k");
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; 48 * 1024]).unwrap();
    let log_dir = disk.path.join("events");
    let log = EventLog::open("events", &log_dir, LogOptions::default()).unwrap();
    let mut acknowledged = 0;
    let mut failure = None;
    for index in 0..1000 {
        let event = Event::new("fill.up", json!({"i": index, "pad": "x".repeat(900)}));
        match log.append_durable(event).await {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(failure, Some(AppendError::Write(_))),
        "{failure:?}"
    );
    assert!(acknowledged > 10);
    let stats = log.stats();
    assert!(stats["write_errors"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["disk_full"].as_u64().unwrap() >= 1, "{stats}");
    // Fire-and-forget appends never block, whatever the disk does.
    for _ in 0..100 {
        let _ = log.append(Event::new("fill.more", json!({})));
    }
    log.flush().await;
    // Reads keep working and show exactly the acknowledged records so far.
    let page = log.query(&Query {
        limit: 10_000,
        ..Query::default()
    });
    assert_eq!(page.records.len(), acknowledged);

    // Space comes back: logging resumes with the next seq.
    std::fs::remove_file(&filler).unwrap();
    let seq = log
        .append_durable(Event::new("disk.freed", json!({})))
        .await
        .unwrap();
    assert_eq!(seq, acknowledged as u64 + 1);
    drop(log);
    // And a reopen finds contiguous, whole records only.
    let log = EventLog::open("events", &log_dir, LogOptions::default()).unwrap();
    let page = log.query(&Query {
        limit: 10_000,
        order: Order::OldestFirst,
        ..Query::default()
    });
    let seqs: Vec<u64> = page.records.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, (1..=seq).collect::<Vec<_>>());
    drop(log);
    drop(disk);
}

#[test]
fn daemon_keeps_serving_when_the_log_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("log"), "64k");
    let daemon = DaemonProcess::start(dir.path());
    let mut client = daemon.client();
    for index in 0..300 {
        let reply = client
            .request(
                "create",
                "/nodes/",
                json!({"name": format!("node-with-a-rather-long-name-{index:04}")}),
            )
            .unwrap();
        assert!(
            reply.iter().all(|message| message.get("error").is_none()),
            "request {index} failed: {reply:?}"
        );
    }
    let nodes = client.request("retrieve", "/nodes/", json!({})).unwrap();
    assert_eq!(nodes.len(), 300);
    // The audit log holds what fitted and still answers.
    let audit = client
        .request("retrieve", "/events/audit", json!({"limit": "1000"}))
        .unwrap();
    let records = audit
        .iter()
        .filter(|message| message.get("event").is_some())
        .count();
    assert!(records > 0 && records < 300, "{records} audit records");
    assert!(daemon.stop().success());
    drop(disk);
}
