//! The generated benchmark cluster shared by the benchmarks: `n1..nN` in rack groups of 100
//! (`rack<k>`, with `location.rack` and `location.row`) plus `compute`; 20 attributes per node,
//! 5 of them expressions inherited from `compute`, 7 set on each node.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use confluent::config::engine::{ConfigEngine, EngineOptions};
use confluent::config::model::{ExpressionValue, Op, Stored};
use confluent::config::plan;

pub fn value(text: &str) -> Stored {
    Stored::Value(Arc::from(text))
}

pub fn expression(text: &str) -> Stored {
    Stored::Expression(Arc::new(
        ExpressionValue::parse(text).expect("valid expression"),
    ))
}

/// The ops that build the benchmark cluster.
pub fn cluster_ops(nodes: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(nodes * 10);
    let compute: Arc<str> = Arc::from("compute");
    ops.push(Op::GroupCreate {
        group: compute.clone(),
    });
    let group_values = [
        ("hardwaremanagement.method", value("ipmi")),
        ("console.method", value("ipmi")),
        ("console.logging", value("full")),
        ("dns.domain", value("cluster.local")),
        ("ntp.servers", value("10.0.0.1")),
        ("deployment.useinsecureprotocols", value("firmware")),
        ("hardwaremanagement.manager", expression("{node}-bmc")),
        (
            "net.mgt.ipv4_address",
            expression("172.16.{(n1-1)/250}.{(n1-1)%250+1}/16"),
        ),
        ("location.u", expression("{(n1-1)%42+1}")),
        ("id.serial", expression("SN{n1:06d}")),
        ("net.mgt.hostname", expression("{node}.mgt")),
    ];
    for (attribute, stored) in group_values {
        ops.push(Op::GroupSet {
            group: compute.clone(),
            attribute: Arc::from(attribute),
            stored,
        });
    }
    for rack in 1..=nodes.div_ceil(100) {
        let group: Arc<str> = Arc::from(format!("rack{rack}"));
        ops.push(Op::GroupCreate {
            group: group.clone(),
        });
        ops.push(Op::GroupSet {
            group: group.clone(),
            attribute: Arc::from("location.rack"),
            stored: value(&rack.to_string()),
        });
        ops.push(Op::GroupSet {
            group,
            attribute: Arc::from("location.row"),
            stored: value(&(rack / 10).to_string()),
        });
    }
    for index in 1..=nodes {
        let node: Arc<str> = Arc::from(format!("n{index}"));
        let rack = (index - 1) / 100 + 1;
        ops.push(Op::NodeCreate { node: node.clone() });
        ops.push(Op::NodeSetGroups {
            node: node.clone(),
            groups: vec![Arc::from(format!("rack{rack}")), compute.clone()],
        });
        let mac = format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            index >> 16 & 0xff,
            index >> 8 & 0xff,
            index & 0xff
        );
        let direct = [
            ("net.mgt.hwaddr", mac),
            ("id.uuid", format!("00000000-0000-4000-8000-{index:012x}")),
            ("location.room", "hall-a".to_string()),
            ("info.note", format!("node number {index}")),
            ("custom.asset", format!("A{index:07}")),
            ("custom.owner", "hpc".to_string()),
            (
                "net.data.ipv4_address",
                format!(
                    "10.{}.{}.{}/8",
                    index >> 16 & 0xff,
                    index >> 8 & 0xff,
                    index & 0xff
                ),
            ),
        ];
        for (attribute, text) in direct {
            ops.push(Op::NodeSet {
                node: node.clone(),
                attribute: Arc::from(attribute),
                stored: value(&text),
            });
        }
    }
    ops
}

/// Write the cluster into a state directory as the daemon would (journal, then a snapshot).
pub fn prepare_state(dir: &Path, nodes: usize) {
    let engine = ConfigEngine::open(
        &dir.join("etc/cfg"),
        &dir.join("etc/keys/master.key"),
        EngineOptions::default(),
    )
    .unwrap();
    let ops = cluster_ops(nodes);
    for chunk in ops.chunks(50_000) {
        let chunk = chunk.to_vec();
        engine
            .commit_blocking(move |_, _| {
                Ok(plan::Plan {
                    ops: chunk,
                    warnings: Vec::new(),
                })
            })
            .unwrap();
    }
    engine.close();
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|index| {
            fields
                .get(*index)
                .and_then(|value| value.parse::<f64>().ok())
        })
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / per_second
}

/// CPU time used by terminated children of this process so far, in milliseconds.
pub fn children_cpu_ms() -> f64 {
    // SAFETY: rusage is a plain C struct of integers, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let millis = |time: libc::timeval| time.tv_sec as f64 * 1000.0 + time.tv_usec as f64 / 1000.0;
    millis(usage.ru_utime) + millis(usage.ru_stime)
}

/// Start the real daemon on `dir` (network listeners off) and wait until its socket answers.
/// `binary` is the bench's `env!("CARGO_BIN_EXE_confluentd")`.
pub fn start_daemon(binary: &str, dir: &Path) -> (std::process::Child, std::path::PathBuf) {
    let child = std::process::Command::new(binary)
        .arg("--state-dir")
        .arg(dir)
        .args([
            "--log-level",
            "warn",
            "--http",
            "off",
            "--https",
            "off",
            "--tls-socket",
            "off",
        ])
        .spawn()
        .unwrap();
    let socket = dir.join("run/api.sock");
    let started = std::time::Instant::now();
    while confluent::cli::client::Client::connect_to(&socket).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child, socket)
}
