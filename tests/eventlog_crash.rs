//! Crash safety of the event log: a child process appends heavily from several threads
//! (durable and fire-and-forget appends, small segments so that rotation happens too) and is
//! SIGKILLed mid-stream, several times over the same directory. After each kill the log must
//! reopen, hold every record whose durable append was acknowledged, keep seqs contiguous, and
//! ignore a torn tail.
//!
//! Runs without the libtest harness: the same executable is the child when given `child DIR`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confluent::eventlog::{Event, EventLog, LogOptions, Order, Query, segment};
use serde_json::json;

fn options() -> LogOptions {
    LogOptions {
        max_segment_bytes: 256 * 1024,
        ..LogOptions::default()
    }
}

/// Append until killed; print `writer index seq` for every acknowledged durable append.
fn child(dir: &str) {
    let log = std::sync::Arc::new(EventLog::open("events", dir.as_ref(), options()).unwrap());
    let mut threads = Vec::new();
    for writer in 0..4u32 {
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            let stdout = std::io::stdout();
            for index in 0u64.. {
                let detail = json!({"w": writer, "i": index, "pad": "x".repeat(64)});
                if index % 4 == 0 {
                    let seq = log
                        .append_durable_blocking(Event::new("crash.durable", detail))
                        .unwrap();
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{writer} {index} {seq}");
                    let _ = out.flush();
                } else {
                    let _ = log.append(Event::new("crash.fast", detail));
                }
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
}

fn round(dir: &std::path::Path, round: usize, acknowledged: &mut HashMap<u64, (u64, u64)>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut seen = 0;
    // Kill at a different point each round.
    let target = 500 + round * 700;
    while seen < target && started.elapsed() < Duration::from_secs(60) {
        let Some(Ok(line)) = lines.next() else { break };
        let parts: Vec<u64> = line.split(' ').map(|part| part.parse().unwrap()).collect();
        acknowledged.insert(parts[2], (parts[0], parts[1]));
        seen += 1;
    }
    assert!(
        seen >= target,
        "child produced only {seen} acknowledgements"
    );
    child.kill().unwrap();
    // Acknowledgements printed before the kill are still in the pipe.
    for line in lines.map_while(Result::ok) {
        let parts: Vec<u64> = line.split(' ').map(|part| part.parse().unwrap()).collect();
        if parts.len() == 3 {
            acknowledged.insert(parts[2], (parts[0], parts[1]));
        }
    }
    child.wait().unwrap();
}

fn verify(dir: &std::path::Path, acknowledged: &HashMap<u64, (u64, u64)>) -> u64 {
    let log = EventLog::open("events", dir, options()).unwrap();
    let mut cursor = None;
    let mut expected_seq = 1;
    let mut found: HashMap<u64, (u64, u64)> = HashMap::new();
    loop {
        let page = log.query(&Query {
            order: Order::OldestFirst,
            limit: 10_000,
            cursor,
            ..Query::default()
        });
        for record in &page.records {
            assert_eq!(record.seq, expected_seq, "seqs must be contiguous");
            expected_seq += 1;
            found.insert(
                record.seq,
                (
                    record.detail["w"].as_u64().unwrap(),
                    record.detail["i"].as_u64().unwrap(),
                ),
            );
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for (seq, identity) in acknowledged {
        assert_eq!(
            found.get(seq),
            Some(identity),
            "acknowledged record {seq} lost"
        );
    }
    expected_seq - 1
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2]);
        return;
    }
    // Enough of the libtest command line for `cargo test` and cargo-nextest: listing, and
    // name filters (`--exact NAME`, substrings).
    const NAME: &str = "sigkill_during_heavy_appends_loses_no_acknowledged_record";
    if args.iter().any(|arg| arg == "--list") {
        if !args.iter().any(|arg| arg == "--ignored") {
            println!("{NAME}: test");
        }
        return;
    }
    let exact = args.iter().any(|arg| arg == "--exact");
    let filters: Vec<&String> = args[1..]
        .iter()
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let selected = filters.is_empty()
        || filters.iter().any(|filter| {
            if exact {
                *filter == NAME
            } else {
                NAME.contains(filter.as_str())
            }
        });
    if !selected || args.iter().any(|arg| arg == "--ignored") {
        println!("running 0 tests");
        return;
    }
    print!("test {NAME} ... ");
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = HashMap::new();
    let mut total = 0;
    for number in 0..3 {
        round(dir.path(), number, &mut acknowledged);
        // A torn tail on top of whatever the kill left: half a frame of garbage.
        let newest = *segment::list(dir.path()).unwrap().last().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(segment::log_path(dir.path(), newest))
            .unwrap();
        file.write_all(&[0x55; 37]).unwrap();
        drop(file);
        total = verify(dir.path(), &acknowledged);
    }
    let segments = segment::list(dir.path()).unwrap().len();
    assert!(segments > 1, "rotation should have happened");
    println!(
        "ok ({} acknowledged of {total} records, {segments} segments)",
        acknowledged.len()
    );
}
