//! Event log benchmarks (issue 5), on real files:
//! - append throughput: small records from 4 concurrent writer threads (fire-and-forget
//!   appends, retried when the queue is full so that nothing is dropped), until all are
//!   written and synced; and durable appends from 64 threads;
//! - query: a one-hour window inside a 10-million-record log (11.6 days at 10 records/s,
//!   written with the bulk writer): first page of 1,000 records both orders, and every record
//!   of one node in that hour (index prefilter);
//! - fan-out: 1,000 subscribers (tokio tasks using `next_batch`) while one producer appends
//!   10,000 records/s; latency from the `append` call to the subscriber's receipt, p50/p99/max.
//!
//! Run: `cargo bench --bench eventlog` (set `EVENTLOG_BENCH_DIR` to choose the disk; default
//! under the system temporary directory; about 2.5 GB are written and removed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use confluent::eventlog::writer::BulkWriter;
use confluent::eventlog::{
    AppendError, BatchDelivery, Event, EventLog, Filter, LogOptions, Order, Query,
};
use serde_json::json;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("EVENTLOG_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            tempfile::tempdir_in(dir).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    }
}

fn append_throughput() {
    let dir = bench_dir();
    let log = Arc::new(EventLog::open("events", dir.path(), LogOptions::default()).unwrap());
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 500_000;
    let started = Instant::now();
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = log.clone();
            std::thread::spawn(move || {
                let node = format!("n{writer}");
                for index in 0..PER_WRITER {
                    // Built per attempt: a rejected event is consumed. A producer finding the
                    // queue full backs off instead of spinning on the cores the writer needs.
                    loop {
                        let event =
                            Event::new("bench.tick", json!({"i": index})).node(node.as_str());
                        match log.append(event) {
                            Err(AppendError::QueueFull) => {
                                std::thread::sleep(Duration::from_micros(200))
                            }
                            other => break other.unwrap(),
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(log.flush());
    let elapsed = started.elapsed();
    let total = WRITERS * PER_WRITER;
    let stats = log.stats();
    println!(
        "append: {total} records from {WRITERS} threads in {:.2} s = {:.0} records/s ({} bytes on disk; {} appends refused by a full queue and retried)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        stats["bytes"],
        stats["dropped"]
    );

    // Durable appends: each caller waits for fdatasync; group commit shares syncs.
    const DURABLE_THREADS: usize = 64;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..DURABLE_THREADS)
        .map(|_| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    log.append_durable_blocking(Event::new("bench.audit", json!({"c": count})))
                        .unwrap();
                    count += 1;
                }
                count
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let durable: u64 = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum();
    let elapsed = started.elapsed();
    println!(
        "append_durable: {durable} acknowledged-after-fdatasync records from {DURABLE_THREADS} threads in {:.2} s = {:.0} records/s",
        elapsed.as_secs_f64(),
        durable as f64 / elapsed.as_secs_f64()
    );
    log.close();
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn query_window() {
    const RECORDS: i64 = 10_000_000;
    const STEP_MS: i64 = 100;
    const NODES: i64 = 1000;
    let dir = bench_dir();
    let start_ms = 1_800_000_000_000;
    let started = Instant::now();
    let mut bulk = BulkWriter::open("events", dir.path(), LogOptions::default()).unwrap();
    let kinds = [
        "dhcp.discover",
        "dhcp.offer",
        "tftp.read",
        "http.get",
        "deploy.state",
    ];
    for index in 0..RECORDS {
        let node = format!("n{}", index % NODES);
        let kind = kinds[(index % 5) as usize];
        bulk.append(
            Event::new(kind, json!({"i": index}))
                .node(node)
                .at(start_ms + index * STEP_MS),
        )
        .unwrap();
    }
    bulk.finish().unwrap();
    let generated = started.elapsed();
    let log = EventLog::open(
        "events",
        dir.path(),
        LogOptions {
            retain_age: Duration::from_secs(100 * 365 * 86_400),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let stats = log.stats();
    println!(
        "query: generated {} records in {} segments ({:.1} GB) in {:.1} s",
        stats["records"],
        stats["segments"],
        stats["bytes"].as_f64().unwrap_or(0.0) / 1e9,
        generated.as_secs_f64()
    );
    let hour = 3_600_000;
    let span = RECORDS * STEP_MS;
    let mut windows = Vec::new();
    for sample in 0..21 {
        // Windows spread over the whole log (different segments and positions).
        windows.push(start_ms + (span - hour) * sample / 21);
    }
    for order in [Order::OldestFirst, Order::NewestFirst] {
        let mut samples = Vec::new();
        for window in &windows {
            let begin = Instant::now();
            let page = log.query(&Query {
                start: Some(*window),
                end: Some(window + hour),
                order,
                limit: 1000,
                ..Query::default()
            });
            samples.push(begin.elapsed());
            assert_eq!(page.records.len(), 1000);
        }
        let worst = *samples.iter().max().unwrap();
        println!(
            "query: one-hour window of 10M records, first page of 1000 ({order:?}): median {:.2} ms, max {:.2} ms",
            median(samples).as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    let mut samples = Vec::new();
    let mut matched = 0;
    for (index, window) in windows.iter().enumerate() {
        let node = format!("n{}", index * 37 % 1000);
        let begin = Instant::now();
        let page = log.query(&Query {
            start: Some(*window),
            end: Some(window + hour),
            filter: Filter {
                nodes: Some(std::iter::once(node).collect()),
                ..Filter::default()
            },
            limit: 10_000,
            ..Query::default()
        });
        samples.push(begin.elapsed());
        matched = page.records.len();
    }
    println!(
        "query: one-hour window (36,000 records) filtered to one node, all {matched} matches: median {:.2} ms, max {:.2} ms",
        median(samples.clone()).as_secs_f64() * 1e3,
        samples.iter().max().unwrap().as_secs_f64() * 1e3
    );
    let begin = Instant::now();
    let page = log.query(&Query {
        order: Order::NewestFirst,
        limit: 100,
        ..Query::default()
    });
    assert_eq!(page.records.len(), 100);
    println!(
        "query: last 100 records of 10M: {:.2} ms",
        begin.elapsed().as_secs_f64() * 1e3
    );
    log.close();
}

fn fan_out() {
    const SUBSCRIBERS: usize = 1000;
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 5;
    let dir = bench_dir();
    let log = Arc::new(EventLog::open("events", dir.path(), LogOptions::default()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let epoch = Instant::now();
    let cpu_before = cpu_seconds();
    // Latencies go to a per-subscriber histogram of 10 µs buckets (up to 1 s): 50 million
    // samples in vectors would measure page faults rather than the log.
    const BUCKETS: usize = 100_001;
    let mut tasks = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut subscription = log.subscribe(Filter::default(), None);
        tasks.push(runtime.spawn(async move {
            let mut histogram = vec![0u32; BUCKETS];
            let mut missed = 0;
            let mut done = false;
            while !done {
                match subscription.next_batch().await {
                    Some(BatchDelivery::Records(records)) => {
                        let now = epoch.elapsed().as_micros() as u64;
                        for record in records.iter() {
                            let sent = record.detail["t"].as_u64().unwrap_or(0);
                            let bucket = (now.saturating_sub(sent) / 10) as usize;
                            histogram[bucket.min(BUCKETS - 1)] += 1;
                            done |= record.detail["last"] == true;
                        }
                    }
                    Some(BatchDelivery::Missed(count)) => missed += count,
                    None => break,
                }
            }
            (histogram, missed)
        }));
    }
    // Paced producer: RATE records per second in 1 ms ticks.
    let producer_log = log.clone();
    let producer = std::thread::spawn(move || {
        let per_tick = RATE / 1000;
        let started = Instant::now();
        for tick in 0..(SECONDS * 1000) {
            let due = started + Duration::from_millis(tick);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for index in 0..per_tick {
                let last = tick == SECONDS * 1000 - 1 && index == per_tick - 1;
                let t = epoch.elapsed().as_micros() as u64;
                producer_log
                    .append(Event::new("bench.fanout", json!({"t": t, "last": last})))
                    .unwrap();
            }
        }
    });
    producer.join().unwrap();
    let mut histogram = vec![0u64; BUCKETS];
    let mut missed = 0;
    runtime.block_on(async {
        for task in tasks {
            let (partial, lost) = task.await.unwrap();
            for (total, count) in histogram.iter_mut().zip(partial) {
                *total += u64::from(count);
            }
            missed += lost;
        }
    });
    let cpu = cpu_seconds() - cpu_before;
    let deliveries: u64 = histogram.iter().sum();
    let percentile = |p: f64| {
        let wanted = (deliveries as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in histogram.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return (bucket as f64 + 1.0) * 0.01;
            }
        }
        f64::INFINITY
    };
    println!(
        "fan-out: {SUBSCRIBERS} subscribers, {RATE} records/s for {SECONDS} s: {deliveries} deliveries, {missed} missed; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {:.1} CPU-seconds used",
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0),
        cpu,
    );
    log.close();
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() {
    // Test runners list targets with `--list` (cargo-nextest with --all-targets): there are
    // no tests here, and the benchmarks must not run in that case.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; a name filter selects one benchmark.
    let filter: Option<String> = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|filter| name.contains(filter));
    if wanted("append") {
        append_throughput();
    }
    if wanted("fanout") {
        fan_out();
    }
    if wanted("query") {
        query_window();
    }
}
