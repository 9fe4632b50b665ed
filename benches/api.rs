//! API benchmarks (issue 3), end to end against a real `confluentd` holding 10,000 nodes of the
//! benchmark cluster (20 attributes each, 5 of them expressions):
//! - `nodeattrib` reading 20 attributes of 10,000 nodes over the unix socket (the real CLI
//!   process, median of 5 runs);
//! - setting one attribute on 10,000 nodes through a noderange, durable when acknowledged;
//! - resident memory of the daemon with 10,000 nodes, then with 1,000 idle connections.
//!
//! Run: `cargo bench --bench api`.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/cluster.rs"]
mod cluster;

const NODES: usize = 10_000;
const ATTRIBUTES: [&str; 20] = [
    "groups",
    "hardwaremanagement.method",
    "console.method",
    "console.logging",
    "dns.domain",
    "ntp.servers",
    "deployment.useinsecureprotocols",
    "hardwaremanagement.manager",
    "net.mgt.ipv4_address",
    "location.u",
    "id.serial",
    "net.mgt.hostname",
    "location.rack",
    "location.row",
    "net.mgt.hwaddr",
    "id.uuid",
    "location.room",
    "info.note",
    "custom.asset",
    "net.data.ipv4_address",
];

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; test runners (cargo test, nextest --list) do not: then
    // this is not a test binary and must do nothing.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    cluster::prepare_state(dir.path(), NODES);
    let (mut daemon, socket) = cluster::start_daemon(env!("CARGO_BIN_EXE_confluentd"), dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let at_start = cluster::rss_kib(daemon.id());
    println!(
        "daemon resident memory right after start-up with {NODES} nodes: {:.1} MB",
        at_start as f64 / 1024.0
    );
    let cli = env!("CARGO_BIN_EXE_confluent");
    let range = format!("n1-n{NODES}");

    // The server's share: the same request from an in-process client, without printing.
    let mut raw = Vec::new();
    let mut client = confluent::cli::client::Client::connect_to(&socket).unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let messages = client
            .request(
                "retrieve",
                &format!("/noderange/{range}/attributes/all"),
                serde_json::json!({ "attributes": ATTRIBUTES }),
            )
            .unwrap();
        raw.push(started.elapsed());
        assert_eq!(messages.len(), NODES);
    }
    println!(
        "unix socket: the same request from an in-process client (no CLI start-up, no printing): median {:.0} ms",
        median(raw).as_secs_f64() * 1e3
    );
    drop(client);

    let mut reads = Vec::new();
    let mut lines = 0;
    let daemon_cpu_before = cluster::cpu_ms(daemon.id());
    let cli_cpu_before = cluster::children_cpu_ms();
    for _ in 0..5 {
        let started = Instant::now();
        let output = Command::new(cli)
            .arg("nodeattrib")
            .arg(&range)
            .args(ATTRIBUTES)
            .env("CONFLUENT_HOST", &socket)
            .output()
            .unwrap();
        reads.push(started.elapsed());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        lines = output.stdout.iter().filter(|byte| **byte == b'\n').count();
    }
    assert_eq!(
        lines,
        NODES * ATTRIBUTES.len(),
        "every attribute of every node printed"
    );
    let daemon_cpu = (cluster::cpu_ms(daemon.id()) - daemon_cpu_before) / 5.0;
    let cli_cpu = (cluster::children_cpu_ms() - cli_cpu_before) / 5.0;
    println!(
        "  CPU per nodeattrib run (independent of machine load): daemon {daemon_cpu:.0} ms, CLI process {cli_cpu:.0} ms"
    );
    println!(
        "unix socket: nodeattrib {range} with {} attributes ({lines} lines): median {:.0} ms (target < 300 ms)",
        ATTRIBUTES.len(),
        median(reads).as_secs_f64() * 1e3
    );

    let mut writes = Vec::new();
    for round in 0..5 {
        let started = Instant::now();
        let output = Command::new(cli)
            .arg("nodeattrib")
            .arg(&range)
            .arg(format!("custom.benchmark=round{round}"))
            .env("CONFLUENT_HOST", &socket)
            .output()
            .unwrap();
        writes.push(started.elapsed());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!(
        "unix socket: set one attribute on {NODES} nodes through a noderange, durable: median {:.0} ms (target < 500 ms)",
        median(writes).as_secs_f64() * 1e3
    );

    std::thread::sleep(Duration::from_millis(300));
    let before = cluster::rss_kib(daemon.id());
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(confluent::cli::client::Client::connect_to(&socket).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = cluster::rss_kib(daemon.id());
    println!(
        "daemon resident memory after the runs above: {:.1} MB; with 1,000 idle connections: {:.1} MB ({:.1} KB per connection)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1000.0
    );
    drop(idle);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let _ = daemon.wait();
}
