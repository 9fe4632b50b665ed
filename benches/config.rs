//! Configuration engine benchmarks (issue 2), on a generated cluster of 100,000 nodes in 1,000
//! rack groups plus `compute`, 20 attributes per node of which 5 are expressions:
//! - noderange expansion (`n1-n100000`, `rack[1-100]`, `compute@rack7`, `location.rack=7,-n5`);
//! - resolving every attribute of 10,000 nodes;
//! - loading the configuration at start-up, and the resident memory of a daemon holding it;
//! - journal throughput with durable group commit from 64 concurrent writers.
//!
//! Run: `cargo bench --bench config` (add `-- --quick` for a shorter criterion pass;
//! `CONFLUENT_BENCH_SYSTEM=0` skips the system figures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confluent::config::engine::{ConfigEngine, EngineOptions};
use confluent::config::model::Store;
use confluent::config::plan::{self, AttributeInput};
use criterion::{Criterion, criterion_group};

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{cluster_ops, prepare_state, rss_kib};

const NODES: usize = 100_000;

fn build_store() -> Store {
    let mut store = Store::new();
    for op in cluster_ops(NODES) {
        store.apply(&op);
    }
    store
}

fn resolve_all(store: &Store, first: usize, count: usize) -> usize {
    let mut resolved = 0;
    for index in first..first + count {
        let name = format!("n{index}");
        let Some(node) = store.node(&name) else {
            continue;
        };
        for attribute in store.effective_attribute_names(node) {
            let value = store.resolve(&name, &attribute);
            resolved += usize::from(value.is_some());
        }
    }
    resolved
}

fn system_figures() {
    println!("== system figures (targets from issue 2)");
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    prepare_state(dir.path(), NODES);
    println!(
        "generate + journal + snapshot of the cluster: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let snapshot = dir.path().join("etc/cfg/snapshot.json");
    println!(
        "snapshot size: {:.1} MB",
        std::fs::metadata(&snapshot).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );

    // Start-up load, in-process (median of 3).
    let mut loads = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let engine = ConfigEngine::open(
            &dir.path().join("etc/cfg"),
            &dir.path().join("etc/keys/master.key"),
            EngineOptions::default(),
        )
        .unwrap();
        loads.push(started.elapsed());
        assert_eq!(engine.read(Store::node_count), NODES);
        drop(engine);
    }
    loads.sort();
    println!(
        "load configuration at start-up (median of 3): {:.0} ms (target < 2000 ms)",
        loads[1].as_secs_f64() * 1e3
    );

    // The real daemon: time to ready and resident memory.
    let started = Instant::now();
    let (mut child, _socket) = cluster::start_daemon(env!("CARGO_BIN_EXE_confluentd"), dir.path());
    let ready = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_kib(child.id());
    println!(
        "confluentd start-up to ready: {:.0} ms; resident memory holding the cluster: {:.0} MB (target < 300 MB)",
        ready.as_secs_f64() * 1e3,
        rss as f64 / 1024.0
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();

    // Journal throughput: 64 concurrent writers, each change acknowledged only when durable.
    let engine = ConfigEngine::open(
        &dir.path().join("j/cfg"),
        &dir.path().join("j/master.key"),
        EngineOptions::default(),
    )
    .unwrap();
    let names: Vec<String> = (0..64).map(|i| format!("w{i}")).collect();
    engine
        .commit_blocking(|store, key| plan::create_nodes(store, key, &names, &[]))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let duration = Duration::from_secs(3);
    let total: u64 = runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..64 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let node: Vec<Arc<str>> = vec![Arc::from(format!("w{writer}"))];
                let deadline = Instant::now() + duration;
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let inputs = vec![(
                        "custom.counter".to_string(),
                        AttributeInput::Auto(done.to_string()),
                    )];
                    engine
                        .commit(|store, key| plan::set_node_attributes(store, key, &node, &inputs))
                        .await
                        .unwrap();
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    });
    println!(
        "journal: {:.0} durable acknowledged changes/s from 64 writers (target >= 20000)",
        total as f64 / duration.as_secs_f64()
    );
    engine.close();
}

fn expansion(c: &mut Criterion) {
    let store = build_store();
    let mut group = c.benchmark_group("noderange");
    group.sample_size(20);
    for range in [
        "n1-n100000",
        "rack[1-100]",
        "compute@rack7",
        "location.rack=7,-n5",
    ] {
        let expected = store.expand(range).unwrap().len();
        assert!(expected > 0, "{range} expands to nothing");
        group.bench_function(range, |b| b.iter(|| store.expand(range).unwrap().len()));
    }
    group.finish();
    let mut group = c.benchmark_group("resolve");
    group.sample_size(10);
    assert_eq!(resolve_all(&store, 1, 10), 200);
    group.bench_function("every attribute of 10,000 nodes", |b| {
        b.iter(|| resolve_all(&store, 1, 10_000))
    });
    group.finish();
}

criterion_group!(benches, expansion);

fn main() {
    // `cargo bench` passes --bench; test runners (cargo test, nextest --list) do not: then
    // this is not a test binary and must do nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    // CONFLUENT_BENCH_SYSTEM=0 skips the slower system figures (start-up, memory, journal).
    if std::env::var("CONFLUENT_BENCH_SYSTEM").as_deref() != Ok("0") {
        system_figures();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
