//! Behaviour of whole logs on real files: recovery, rotation, retention, queries across
//! segments, subscriptions, boot timelines and syslog forwarding to real sockets.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::segment::{self, SegmentHeader};
use super::writer::BulkWriter;
use super::*;

const T0: i64 = 1_800_000_000_000;

fn small_segments() -> LogOptions {
    LogOptions {
        max_segment_bytes: 4096,
        ..LogOptions::default()
    }
}

fn event(kind: &str, node: &str, time_ms: i64) -> Event {
    Event::new(kind, json!({"n": time_ms}))
        .node(node)
        .at(time_ms)
}

fn seqs(page: &Page) -> Vec<u64> {
    page.records.iter().map(|record| record.seq).collect()
}

#[tokio::test]
async fn durable_appends_survive_reopen_and_seqs_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
        for index in 0..10 {
            let seq = log
                .append_durable(Event::new("test.event", json!({"i": index})).user("alice"))
                .await
                .unwrap();
            assert_eq!(seq, index + 1);
        }
    }
    let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    let page = log.query(&Query {
        limit: 100,
        ..Query::default()
    });
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>());
    assert_eq!(page.records[3].detail, json!({"i": 3}));
    assert_eq!(page.records[3].user.as_deref(), Some("alice"));
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        log.append_durable(Event::new("x", json!({})))
            .await
            .unwrap(),
        11
    );
}

#[tokio::test]
async fn torn_tail_is_cut_and_damaged_index_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
        for index in 0..5 {
            log.append_durable(event("a.b", "n1", T0 + index))
                .await
                .unwrap();
        }
    }
    // A crash in the middle of a write: half a frame at the end of the segment and a stray
    // half index entry.
    let log_file = segment::log_path(dir.path(), 1);
    let whole = std::fs::metadata(&log_file).unwrap().len();
    let mut frame = Vec::new();
    Record {
        seq: 6,
        time_ms: T0 + 6,
        kind: "a.b".into(),
        node: None,
        user: None,
        detail: json!({"lost": true}),
    }
    .encode_into(&mut frame);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_file)
        .unwrap();
    file.write_all(&frame[..frame.len() / 2]).unwrap();
    let mut index = std::fs::OpenOptions::new()
        .append(true)
        .open(segment::index_path(dir.path(), 1))
        .unwrap();
    index.write_all(&[7u8; 17]).unwrap();
    drop((file, index));

    let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&log_file).unwrap().len(), whole);
    assert_eq!(seqs(&log.query(&Query::default())), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        log.append_durable(event("a.b", "n1", T0 + 9))
            .await
            .unwrap(),
        6
    );
    let page = log.query(&Query {
        order: Order::NewestFirst,
        limit: 1,
        ..Query::default()
    });
    assert_eq!(page.records[0].time_ms, T0 + 9);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        BulkWriter::open("events", dir.path(), LogOptions::default()),
        Err(LogOpenError::Locked { .. })
    ));
}

#[test]
fn rotation_by_size_links_segments_and_queries_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut bulk = BulkWriter::open("events", dir.path(), small_segments()).unwrap();
    for index in 0..500 {
        let node = format!("n{}", index % 5);
        let kind = if index % 2 == 0 {
            "dhcp.discover"
        } else {
            "tftp.read"
        };
        bulk.append(event(kind, &node, T0 + index * 1000)).unwrap();
    }
    bulk.finish().unwrap();

    let firsts = segment::list(dir.path()).unwrap();
    assert!(
        firsts.len() > 10,
        "expected many segments, got {}",
        firsts.len()
    );
    // Walk back from the newest segment through the previous-segment links.
    let mut walked = Vec::new();
    let mut next = firsts.last().copied();
    while let Some(first) = next {
        let bytes = std::fs::read(segment::log_path(dir.path(), first)).unwrap();
        let header = SegmentHeader::decode(&bytes).unwrap();
        assert!(bytes.len() as u64 <= 4096 || header.first_seq == first);
        walked.push(first);
        next = header.previous;
    }
    walked.reverse();
    assert_eq!(walked, firsts);

    let log = EventLog::open("events", dir.path(), small_segments()).unwrap();
    // A time window spanning several segments, filtered by node and exact type.
    let query = Query {
        start: Some(T0 + 100_000),
        end: Some(T0 + 300_000),
        filter: Filter {
            nodes: Some(HashSet::from(["n0".to_string()])),
            types: vec!["dhcp.discover".into()],
            text: None,
        },
        limit: 7,
        ..Query::default()
    };
    let expected: Vec<u64> = (100..=300)
        .filter(|index| index % 5 == 0 && index % 2 == 0)
        .map(|index| index as u64 + 1)
        .collect();
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = log.query(&Query {
            cursor,
            ..query.clone()
        });
        assert!(page.records.len() <= 7);
        got.extend(seqs(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(got, expected);
    // Newest first with prefix types and pagination gives the reverse.
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = log.query(&Query {
            cursor,
            order: Order::NewestFirst,
            filter: Filter {
                types: vec!["dhcp.*".into()],
                ..query.filter.clone()
            },
            ..query.clone()
        });
        got.extend(seqs(&page));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    got.reverse();
    assert_eq!(got, expected);
    // Text search reads payloads (case-insensitive).
    let page = log.query(&Query {
        filter: Filter {
            text: Some("\"N\":".to_string() + &(T0 + 42_000).to_string()),
            ..Filter::default()
        },
        ..Query::default()
    });
    assert_eq!(seqs(&page), vec![43]);
}

#[test]
fn rotation_by_age_and_retention_by_count_age_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000;
    let options = LogOptions {
        max_segment_age: Duration::from_secs(3600),
        retain_segments: 3,
        ..LogOptions::default()
    };
    let mut bulk = BulkWriter::open("events", dir.path(), options.clone()).unwrap();
    let now = timestamp::now_ms();
    for index in 0..6 {
        bulk.append(event("x.y", "n1", now - (6 - index) * hour))
            .unwrap();
    }
    bulk.finish().unwrap();
    // One segment per hour, only the newest three kept.
    let firsts = segment::list(dir.path()).unwrap();
    assert_eq!(firsts, vec![4, 5, 6]);
    let log = EventLog::open("events", dir.path(), options).unwrap();
    assert_eq!(seqs(&log.query(&Query::default())), vec![4, 5, 6]);
    drop(log);

    // Age: segments whose newest record is older than a day go.
    let options = LogOptions {
        max_segment_age: Duration::from_secs(3600),
        retain_age: Duration::from_secs(86_400),
        ..LogOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut bulk = BulkWriter::open("events", dir.path(), options.clone()).unwrap();
    for days_ago in [5, 3, 0] {
        bulk.append(event("x.y", "n1", now - days_ago * 24 * hour))
            .unwrap();
    }
    bulk.finish().unwrap();
    assert_eq!(segment::list(dir.path()).unwrap(), vec![3]);

    // Total bytes: a cap of roughly three segments keeps at most three.
    let options = LogOptions {
        max_segment_bytes: 4096,
        retain_bytes: 3 * 4096 + 3 * 40 * 40,
        ..LogOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut bulk = BulkWriter::open("events", dir.path(), options).unwrap();
    for index in 0..400 {
        bulk.append(event("x.y", "n1", now + index)).unwrap();
    }
    bulk.finish().unwrap();
    let firsts = segment::list(dir.path()).unwrap();
    assert!(firsts.len() <= 4 && firsts.len() >= 2, "{firsts:?}");
    let total: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 3 * 4096 + 3 * 40 * 40 + 4096 + 4096, "{total}");
}

async fn next(subscription: &mut Subscription) -> String {
    match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
        Ok(Some(Delivery::Record(record))) => format!("{}@{}", record.kind, record.seq),
        other => panic!("unexpected delivery {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_get_filtered_live_records_and_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    log.append_durable(event("dhcp.discover", "n1", T0))
        .await
        .unwrap();
    log.append_durable(event("dhcp.discover", "n2", T0 + 1))
        .await
        .unwrap();
    log.append_durable(event("power.on", "n1", T0 + 2))
        .await
        .unwrap();

    let filter = Filter {
        nodes: Some(HashSet::from(["n1".to_string()])),
        types: vec!["dhcp.*".into()],
        text: None,
    };
    let mut with_backlog = log.subscribe(filter.clone(), Some(T0));
    let mut live_only = log.subscribe(filter, None);
    log.append(event("dhcp.offer", "n2", T0 + 3)).unwrap();
    log.append(event("dhcp.offer", "n1", T0 + 4)).unwrap();
    log.append(event("tftp.read", "n1", T0 + 5)).unwrap();
    log.append(event("dhcp.ack", "n1", T0 + 6)).unwrap();

    assert_eq!(next(&mut with_backlog).await, "dhcp.discover@1");
    assert_eq!(next(&mut with_backlog).await, "dhcp.offer@5");
    assert_eq!(next(&mut with_backlog).await, "dhcp.ack@7");
    assert_eq!(next(&mut live_only).await, "dhcp.offer@5");
    assert_eq!(next(&mut live_only).await, "dhcp.ack@7");
    assert!(live_only.try_next().is_none());
}

#[tokio::test]
async fn a_slow_subscriber_gets_a_missed_marker_and_never_slows_writers() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fanout_capacity: 16,
        publish_interval: Duration::ZERO,
        ..LogOptions::default()
    };
    let log = Arc::new(EventLog::open("events", dir.path(), options).unwrap());
    // Never read while the writers run.
    let mut stalled = log.subscribe(Filter::default(), None);
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let log = log.clone();
        writers.push(std::thread::spawn(move || {
            for index in 0..2000 {
                let event = Event::new("load.tick", json!({"w": writer, "i": index}));
                if index % 100 == 99 {
                    log.append_durable_blocking(event).unwrap();
                } else {
                    while let Err(AppendError::QueueFull) = log.append(event.clone()) {
                        std::thread::yield_now();
                    }
                }
            }
        }));
    }
    for writer in writers {
        writer.join().unwrap();
    }
    log.flush().await;
    let elapsed = started.elapsed();
    // 8000 records with a stalled subscriber attached: far below a second even on a busy box;
    // a writer waiting for the subscriber would never finish.
    assert!(
        elapsed < Duration::from_secs(20),
        "writers took {elapsed:?}"
    );
    assert_eq!(log.stats()["appended"], 8000);
    assert_eq!(log.stats()["dropped"], 0);

    let missed = match stalled.next().await {
        Some(Delivery::Missed(missed)) => missed,
        other => panic!("expected a missed marker, got {other:?}"),
    };
    // Then it continues with the newest records (what the ring still holds), in order, up to
    // the last one, with nothing lost besides what the marker counted.
    let mut last = missed;
    while let Some(Delivery::Record(record)) = stalled.try_next() {
        assert_eq!(record.seq, last + 1);
        last = record.seq;
    }
    assert_eq!(last, 8000);
    assert!(missed > 1000, "missed {missed}");
}

#[tokio::test]
async fn boot_timeline_is_the_latest_attempt_with_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    let steps = [
        ("dhcp.discover", "n1", 0),
        ("dhcp.offer", "n1", 10),
        ("tftp.read", "n1", 300),
        ("dhcp.discover", "n2", 310),
        // Second attempt of n1: a retransmitted discover, then the exchange.
        ("dhcp.discover", "n1", 5000),
        ("dhcp.discover", "n1", 9000),
        ("power.on", "n1", 9001),
        ("dhcp.offer", "n1", 9005),
        ("dhcp.request", "n1", 9100),
        ("dhcp.ack", "n1", 9102),
        ("http.get", "n1", 9500),
        ("tftp.read", "n2", 9600),
    ];
    for (kind, node, offset) in steps {
        log.append(event(kind, node, T0 + offset)).unwrap();
    }
    log.flush().await;
    let timeline = log.boot_timeline("n1");
    let summary: Vec<(String, i64)> = timeline
        .steps
        .iter()
        .map(|step| (step.record.kind.clone(), step.gap_ms))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dhcp.discover".to_string(), 0),
            ("dhcp.discover".to_string(), 4000),
            ("dhcp.offer".to_string(), 5),
            ("dhcp.request".to_string(), 95),
            ("dhcp.ack".to_string(), 2),
            ("http.get".to_string(), 398),
        ]
    );
    assert_eq!(timeline.last_step(), Some("http.get"));
    let json = timeline.to_json(T0 + 10_000);
    assert_eq!(json["duration_ms"], 4500);
    assert_eq!(json["since_last_step_ms"], 500);
    assert!(log.boot_timeline("n3").steps.is_empty());
}

#[tokio::test]
async fn syslog_frames_reach_udp_and_tcp_collectors() {
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(EventLogs::open(dir.path(), LogOptions::default()).unwrap());
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    for target in [
        format!("udp://{}", udp.local_addr().unwrap()),
        format!("tcp://{}", tcp.local_addr().unwrap()),
    ] {
        let forwarder = syslog::SyslogForwarder::bind(target.parse().unwrap(), logs.clone())
            .await
            .unwrap();
        let token = shutdown.clone();
        tokio::spawn(async move { crate::service::Service::run(Box::new(forwarder), token).await });
    }
    // Subscriptions exist once the forwarders have started running; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    logs.events
        .append_durable(Event::new("dhcp.discover", json!({"mac": "aa"})).node("n1"))
        .await
        .unwrap();
    logs.audit
        .append_durable(Event::new("api.denied", json!({"path": "/nodes/"})).user("uid=1000"))
        .await
        .unwrap();

    let mut datagrams = Vec::new();
    for _ in 0..2 {
        let mut buffer = vec![0u8; 9000];
        let length = tokio::time::timeout(Duration::from_secs(10), udp.recv(&mut buffer))
            .await
            .expect("a datagram")
            .unwrap();
        datagrams.push(String::from_utf8(buffer[..length].to_vec()).unwrap());
    }
    datagrams.sort();
    assert!(datagrams[0].starts_with("<108>1 "), "{}", datagrams[0]);
    assert!(datagrams[0].contains(" confluent "));
    assert!(
        datagrams[0]
            .contains("api.denied [confluent@32473 log=\"audit\" seq=\"1\" user=\"uid=1000\"] {")
    );
    assert!(datagrams[1].starts_with("<30>1 "), "{}", datagrams[1]);
    assert!(
        datagrams[1]
            .contains("dhcp.discover [confluent@32473 log=\"events\" seq=\"1\" node=\"n1\"] {")
    );
    let json_part = &datagrams[1][datagrams[1].find("] ").unwrap() + 2..];
    let payload: serde_json::Value = serde_json::from_str(json_part).unwrap();
    assert_eq!(payload["detail"]["mac"], "aa");

    // TCP: octet counting, `LEN SP MSG`, two messages on one connection.
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), tcp.accept())
        .await
        .unwrap()
        .unwrap();
    let mut received = Vec::new();
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let mut chunk = [0u8; 4096];
        let length = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(length > 0, "collector connection closed");
        received.extend_from_slice(&chunk[..length]);
        while let Some(space) = received.iter().position(|byte| *byte == b' ') {
            let count: usize = std::str::from_utf8(&received[..space])
                .unwrap()
                .parse()
                .unwrap();
            if received.len() < space + 1 + count {
                break;
            }
            messages
                .push(String::from_utf8(received[space + 1..space + 1 + count].to_vec()).unwrap());
            received.drain(..space + 1 + count);
        }
    }
    messages.sort();
    assert!(messages[0].starts_with("<108>1 "));
    assert!(messages[1].starts_with("<30>1 "));
    shutdown.cancel();
}

#[tokio::test]
async fn batch_deliveries_filter_report_gaps_and_apply_text() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fanout_capacity: 16,
        publish_interval: Duration::ZERO,
        ..LogOptions::default()
    };
    let log = EventLog::open("events", dir.path(), options).unwrap();
    let mut batches = log.subscribe(
        Filter {
            types: vec!["dhcp.*".into()],
            ..Filter::default()
        },
        None,
    );
    let mut texts = log.subscribe(
        Filter {
            text: Some("NEEDLE".into()),
            ..Filter::default()
        },
        None,
    );
    // Enough single-record batches to lap the 16-batch ring.
    for index in 0..40 {
        let kind = if index % 2 == 0 {
            "dhcp.offer"
        } else {
            "power.on"
        };
        let detail = if index == 39 {
            json!({"note": "a needle"})
        } else {
            json!({})
        };
        log.append_durable(Event::new(kind, detail).at(T0 + index))
            .await
            .unwrap();
    }
    match batches.next_batch().await {
        Some(BatchDelivery::Missed(missed)) => assert_eq!(missed, 24),
        _ => panic!("expected a missed marker first"),
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&39) {
        match batches.next_batch().await {
            Some(BatchDelivery::Records(view)) => {
                seen.extend(view.iter().map(|record| record.seq));
            }
            _ => panic!("unexpected delivery"),
        }
    }
    assert_eq!(seen, (25..=39).step_by(2).collect::<Vec<u64>>());
    // Text filters apply to live records too (case-insensitively).
    loop {
        match texts.next().await {
            Some(Delivery::Missed(_)) => continue,
            Some(Delivery::Record(record)) => {
                assert_eq!(record.seq, 40);
                break;
            }
            None => panic!("log closed"),
        }
    }
}

#[tokio::test]
async fn a_segment_cut_off_during_creation_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
        log.append_durable(event("a.b", "n1", T0)).await.unwrap();
    }
    // A crash right after creating the next segment, before its header reached the disk.
    std::fs::write(segment::log_path(dir.path(), 2), b"CNFL").unwrap();
    std::fs::write(segment::index_path(dir.path(), 2), b"").unwrap();
    let log = EventLog::open("events", dir.path(), LogOptions::default()).unwrap();
    assert_eq!(seqs(&log.query(&Query::default())), vec![1]);
    assert_eq!(
        log.append_durable(event("a.b", "n1", T0 + 1))
            .await
            .unwrap(),
        2
    );
    assert_eq!(segment::list(dir.path()).unwrap(), vec![1]);
}
