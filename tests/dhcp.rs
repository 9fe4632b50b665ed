//! The DHCP service against real clients (busybox `udhcpc`, ISC `dhclient`) in network
//! namespaces created by each test: a server namespace running `confluentd --dhcp`, a client
//! namespace joined to it by a veth pair. Needs root and the clients (`tests/run` installs
//! them); without them the tests fail with a message saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::DaemonProcess;
use common::net::{KillOnDrop, Namespaces, require, run};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

fn require_lab_tools() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the DHCP tests create network namespaces and bind port 67: run them as root (tests/run)"
    );
    require("ip", "iproute2");
    require("udhcpc", "udhcpc");
    require("dhclient", "isc-dhcp-client");
}

/// Two namespaces joined by a veth pair; deleted on drop (also when a test fails).
struct Lab {
    server: String,
    client: String,
    server_interface: String,
    client_interface: String,
}

impl Lab {
    /// `subnet_prefix` like "10.61.0" (a /24; the server is .1).
    fn new(subnet_prefix: &str) -> Lab {
        require_lab_tools();
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            server: format!("cfdhcp-s{id}"),
            client: format!("cfdhcp-c{id}"),
            server_interface: format!("ds{id}"),
            client_interface: format!("dc{id}"),
        };
        run("ip", &["netns", "add", &lab.server]);
        run("ip", &["netns", "add", &lab.client]);
        run(
            "ip",
            &[
                "link",
                "add",
                &lab.server_interface,
                "type",
                "veth",
                "peer",
                "name",
                &lab.client_interface,
            ],
        );
        run(
            "ip",
            &["link", "set", &lab.server_interface, "netns", &lab.server],
        );
        run(
            "ip",
            &["link", "set", &lab.client_interface, "netns", &lab.client],
        );
        let server_address = format!("{subnet_prefix}.1/24");
        run(
            "ip",
            &[
                "-n",
                &lab.server,
                "addr",
                "add",
                &server_address,
                "dev",
                &lab.server_interface,
            ],
        );
        for (namespace, interface) in [
            (&lab.server, &lab.server_interface),
            (&lab.client, &lab.client_interface),
        ] {
            run("ip", &["-n", namespace, "link", "set", interface, "up"]);
            run("ip", &["-n", namespace, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn set_client_mac(&self, mac: &str) {
        run(
            "ip",
            &[
                "-n",
                &self.client,
                "link",
                "set",
                &self.client_interface,
                "address",
                mac,
            ],
        );
    }

    fn start_daemon(&self, state_dir: &Path) -> DaemonProcess {
        self.start_daemon_in_mode(state_dir, "full", &[])
    }

    fn start_daemon_in_mode(&self, state_dir: &Path, mode: &str, extra: &[&str]) -> DaemonProcess {
        let dhcp = format!("{}={mode}", self.server_interface);
        let mut arguments = vec!["--dhcp", &dhcp];
        arguments.extend_from_slice(extra);
        DaemonProcess::start_wrapped(
            state_dir,
            &["ip", "netns", "exec", &self.server],
            &arguments,
        )
    }

    fn add_client_address(&self, address: &str) {
        run(
            "ip",
            &[
                "-n",
                &self.client,
                "addr",
                "add",
                address,
                "dev",
                &self.client_interface,
            ],
        );
    }

    fn in_client(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.client, program]);
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair and with it the other end.
        for namespace in [&self.client, &self.server] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A client script that writes its environment (the options it received) to a file when it
/// gets a lease.
fn env_script(dir: &Path, name: &str, trigger_variable: &str) -> (PathBuf, PathBuf) {
    let output = dir.join(format!("{name}.env"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -n \"${trigger_variable}\" ]; then env > {}.tmp; mv {}.tmp {}; fi\nexit 0\n",
            output.display(),
            output.display(),
            output.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, output)
}

fn read_env(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Run busybox udhcpc once (`-q`: quit after the lease) and return the lease environment.
fn udhcpc(
    lab: &Lab,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> std::collections::HashMap<String, String> {
    let (script, output) = env_script(dir, name, "ip");
    let status = lab
        .in_client("timeout")
        .args(["30", "udhcpc", "-i", &lab.client_interface])
        .args(["-n", "-q", "-f", "-t", "5", "-T", "2", "-s"])
        .arg(&script)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run udhcpc");
    assert!(status.success(), "udhcpc got no lease ({status})");
    read_env(&output)
}

/// Run ISC dhclient in the foreground until its script reports a bound lease.
fn dhclient(lab: &Lab, dir: &Path) -> std::collections::HashMap<String, String> {
    let (script, output) = env_script(dir, "dhclient", "new_ip_address");
    let leases = dir.join("dhclient.leases");
    let pid = dir.join("dhclient.pid");
    let child = lab
        .in_client("dhclient")
        .args(["-1", "-d", "-sf"])
        .arg(&script)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(&pid)
        .arg(&lab.client_interface)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dhclient");
    // `ip netns exec` execs dhclient, so this pid is dhclient's own.
    let _child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !output.exists() {
        assert!(Instant::now() < deadline, "dhclient got no lease in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    read_env(&output)
}

#[test]
fn udhcpc_gets_its_reservation_and_options_then_changes_apply_without_restart() {
    let lab = Lab::new("10.61.0");
    let dir = tempfile::tempdir().unwrap();
    let daemon = lab.start_daemon(&dir.path().join("state"));
    // Defined after the daemon started: the service sees it through the config watcher.
    daemon.cli_ok(&[
        "nodedefine",
        "n1",
        "net.eth0.hwaddr=52:54:00:61:00:0b",
        "net.eth0.ipv4_address=10.61.0.11/24",
        "net.eth0.ipv4_gateway=10.61.0.254",
    ]);
    daemon.cli_ok(&[
        "nodegroupattrib",
        "everything",
        "dns.servers=10.61.0.53",
        "dns.domain=cluster.example",
    ]);
    lab.set_client_mac("52:54:00:61:00:0b");
    let lease = udhcpc(&lab, dir.path(), "first", &[]);
    assert_eq!(lease.get("dns").map(String::as_str), Some("10.61.0.53"));
    assert_eq!(
        lease.get("domain").map(String::as_str),
        Some("cluster.example")
    );
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.61.0.11"));
    assert_eq!(
        lease.get("subnet").map(String::as_str),
        Some("255.255.255.0")
    );
    assert_eq!(lease.get("router").map(String::as_str), Some("10.61.0.254"));
    assert_eq!(lease.get("hostname").map(String::as_str), Some("n1"));
    assert_eq!(lease.get("serverid").map(String::as_str), Some("10.61.0.1"));
    assert_eq!(lease.get("lease").map(String::as_str), Some("3600"));
    assert!(
        lease.get("boot_file").is_none_or(String::is_empty),
        "{lease:?}"
    );

    // A new address for the node is handed out on the next exchange.
    daemon.cli_ok(&["nodeattrib", "n1", "net.eth0.ipv4_address=10.61.0.12/24"]);
    let lease = udhcpc(&lab, dir.path(), "second", &[]);
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.61.0.12"));

    // A pending profile (and insecure protocols allowed) adds the boot file for UEFI PXE.
    daemon.cli_ok(&[
        "nodeattrib",
        "n1",
        "deployment.pendingprofile=rocky-9",
        "deployment.useinsecureprotocols=firmware",
    ]);
    let lease = udhcpc(
        &lab,
        dir.path(),
        "pxe",
        &[
            "-V",
            "PXEClient:Arch:00007:UNDI:003016",
            "-x",
            "0x5d:0007",
            "-O",
            "bootfile",
        ],
    );
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.61.0.12"));
    assert_eq!(
        lease.get("boot_file").map(String::as_str),
        Some("x86_64/ipxe.efi"),
        "{lease:?}"
    );
    assert_eq!(lease.get("siaddr").map(String::as_str), Some("10.61.0.1"));
    // The iPXE stage of the same machine (same MAC) gets the same address and its script.
    let lease = udhcpc(
        &lab,
        dir.path(),
        "ipxe",
        &[
            "-V",
            "PXEClient:Arch:00007:UNDI:003016",
            "-x",
            "0x5d:0007",
            "-x",
            "0x4d:69505845",
            "-O",
            "bootfile",
        ],
    );
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.61.0.12"));
    assert_eq!(
        lease.get("boot_file").map(String::as_str),
        Some(
            format!(
                "http://10.61.0.1:{}/boot/by-mac/52:54:00:61:00:0b/boot.ipxe",
                daemon.listener("http").port()
            )
            .as_str()
        ),
        "{lease:?}"
    );

    // "Why did n1 boot?": every exchange is recorded with its decision and reason.
    let exchanges = daemon.dhcp_exchanges();
    assert!(exchanges.len() >= 8, "{exchanges:?}");
    let pxe_offer = exchanges
        .iter()
        .find(|exchange| {
            exchange["message_type"] == "DISCOVER" && exchange["boot_file"] == "x86_64/ipxe.efi"
        })
        .unwrap_or_else(|| panic!("no PXE offer recorded: {exchanges:?}"));
    assert_eq!(pxe_offer["node"], "n1");
    assert_eq!(pxe_offer["mac"], "52:54:00:61:00:0b");
    assert_eq!(pxe_offer["architecture"], 7);
    assert_eq!(pxe_offer["reply"], "OFFER");
    assert_eq!(pxe_offer["address"], "10.61.0.12");
    assert_eq!(pxe_offer["reason_code"], "boot_chain");
    assert_eq!(
        pxe_offer["vendor_class"],
        "PXEClient:Arch:00007:UNDI:003016"
    );
    assert!(
        exchanges
            .iter()
            .any(|exchange| exchange["reason_code"] == "not_a_boot_client"),
        "{exchanges:?}"
    );
    // The same exchanges feed the event log: n1's boot timeline shows its DHCP steps in order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let messages = daemon
            .client()
            .request(
                "retrieve",
                "/noderange/n1/boottimeline",
                serde_json::json!({}),
            )
            .expect("retrieve the boot timeline");
        let types: Vec<String> = messages
            .first()
            .and_then(|message| message["databynode"]["n1"]["steps"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|step| step["type"].as_str().map(str::to_string))
            .collect();
        let discover = types.iter().position(|kind| kind == "dhcp.discover");
        let request = types.iter().rposition(|kind| kind == "dhcp.request");
        if let (Some(discover), Some(request)) = (discover, request)
            && discover < request
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DHCP steps in n1's boot timeline: {messages:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    daemon.stop();
}

#[test]
fn dhclient_gets_its_reservation() {
    let lab = Lab::new("10.62.0");
    let dir = tempfile::tempdir().unwrap();
    let daemon = lab.start_daemon(&dir.path().join("state"));
    daemon.cli_ok(&[
        "nodedefine",
        "d1",
        "net.hwaddr=52:54:00:62:00:21",
        "net.ipv4_address=10.62.0.21",
    ]);
    lab.set_client_mac("52:54:00:62:00:21");
    let lease = dhclient(&lab, dir.path());
    assert_eq!(
        lease.get("new_ip_address").map(String::as_str),
        Some("10.62.0.21"),
        "{lease:?}"
    );
    assert_eq!(
        lease.get("new_subnet_mask").map(String::as_str),
        Some("255.255.255.0")
    );
    assert_eq!(lease.get("new_host_name").map(String::as_str), Some("d1"));
    assert_eq!(
        lease.get("new_dhcp_server_identifier").map(String::as_str),
        Some("10.62.0.1")
    );
    daemon.stop();
}

#[test]
fn unknown_macs_get_pool_addresses_that_survive_a_restart() {
    let lab = Lab::new("10.63.0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = lab.start_daemon(&state);
    // A reservation inside the pool is never handed to another MAC.
    daemon.cli_ok(&[
        "nodedefine",
        "r1",
        "net.hwaddr=52:54:00:63:00:99",
        "net.ipv4_address=10.63.0.128",
    ]);
    lab.set_client_mac("52:54:00:63:00:01");
    let first = udhcpc(&lab, dir.path(), "first", &[]);
    assert_eq!(first.get("ip").map(String::as_str), Some("10.63.0.129"));
    // The same MAC again: the same lease.
    let again = udhcpc(&lab, dir.path(), "again", &[]);
    assert_eq!(again.get("ip").map(String::as_str), Some("10.63.0.129"));
    // SIGKILL right after the ACK: a lease is on disk before it is acknowledged.
    daemon.kill();

    // After the restart the lease is still known: the next MAC gets the next address.
    let daemon = lab.start_daemon(&state);
    lab.set_client_mac("52:54:00:63:00:02");
    let second = udhcpc(&lab, dir.path(), "second", &[]);
    assert_eq!(second.get("ip").map(String::as_str), Some("10.63.0.130"));
    daemon.stop();
}

fn veth(left_namespace: &str, left: &str, right_namespace: &str, right: &str) {
    run(
        "ip",
        &["link", "add", left, "type", "veth", "peer", "name", right],
    );
    run("ip", &["link", "set", left, "netns", left_namespace]);
    run("ip", &["link", "set", right, "netns", right_namespace]);
    run("ip", &["-n", left_namespace, "link", "set", left, "up"]);
    run("ip", &["-n", right_namespace, "link", "set", right, "up"]);
}

#[test]
fn relayed_client_gets_an_address_on_its_own_subnet() {
    require_lab_tools();
    require("dhcrelay", "isc-dhcp-relay");
    let id = format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT_LAB.fetch_add(1, Ordering::Relaxed)
    );
    let (server, relay, client) = (
        format!("cfdhcp-s{id}"),
        format!("cfdhcp-r{id}"),
        format!("cfdhcp-c{id}"),
    );
    let _namespaces = Namespaces(vec![server.clone(), relay.clone(), client.clone()]);
    for namespace in [&server, &relay, &client] {
        run("ip", &["netns", "add", namespace]);
        run("ip", &["-n", namespace, "link", "set", "lo", "up"]);
    }
    let (server_if, relay_up, relay_down, client_if) = (
        format!("ds{id}"),
        format!("ru{id}"),
        format!("rd{id}"),
        format!("dc{id}"),
    );
    veth(&server, &server_if, &relay, &relay_up);
    veth(&relay, &relay_down, &client, &client_if);
    run(
        "ip",
        &[
            "-n",
            &server,
            "addr",
            "add",
            "10.64.0.1/24",
            "dev",
            &server_if,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &relay,
            "addr",
            "add",
            "10.64.0.2/24",
            "dev",
            &relay_up,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &relay,
            "addr",
            "add",
            "10.64.1.1/24",
            "dev",
            &relay_down,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &server,
            "route",
            "add",
            "10.64.1.0/24",
            "via",
            "10.64.0.2",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let dhcp = format!("{server_if}=full");
    let daemon = DaemonProcess::start_wrapped(
        &dir.path().join("state"),
        &["ip", "netns", "exec", &server],
        &["--dhcp", &dhcp, "--dhcp-relayed-subnet", "10.64.1.0/24"],
    );
    daemon.cli_ok(&[
        "nodedefine",
        "behind-relay",
        "net.hwaddr=52:54:00:64:01:14",
        "net.ipv4_address=10.64.1.20/24",
    ]);
    let relay_pid = dir.path().join("relay.pid");
    let relay_process = Command::new("ip")
        .args(["netns", "exec", &relay, "dhcrelay", "-4", "-d", "-q", "-a"])
        .arg("-pf")
        .arg(&relay_pid)
        .args(["-id", &relay_down, "-iu", &relay_up, "10.64.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dhcrelay");
    let _relay_process = KillOnDrop(relay_process);
    std::thread::sleep(Duration::from_millis(500));

    let lab = Lab {
        server: String::new(),
        client: client.clone(),
        server_interface: server_if.clone(),
        client_interface: client_if.clone(),
    };
    lab.set_client_mac("52:54:00:64:01:14");
    let lease = udhcpc(&lab, dir.path(), "reserved", &[]);
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.64.1.20"));
    assert_eq!(lease.get("router").map(String::as_str), Some("10.64.1.1"));
    assert_eq!(lease.get("serverid").map(String::as_str), Some("10.64.0.1"));
    lab.set_client_mac("52:54:00:64:01:99");
    let lease = udhcpc(&lab, dir.path(), "pool", &[]);
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.64.1.128"));
    // A subnet object for the relayed subnet: its pool and router, without a restart.
    daemon.cli_ok(&[
        "dhcpsubnet",
        "set",
        "10.64.1.0/24",
        "pools=10.64.1.60-10.64.1.69",
        "routers=10.64.1.254",
    ]);
    let lease = udhcpc_until(&lab, dir.path(), 0x64, |lease| {
        lease
            .get("ip")
            .is_some_and(|ip| ip.starts_with("10.64.1.6"))
    });
    assert_eq!(lease.get("router").map(String::as_str), Some("10.64.1.254"));
    daemon.stop();
}

/// Run udhcpc with fresh MACs (`52:54:00:<tag>:f0:NN`) until a lease satisfies `wanted`: a
/// configuration change reaches the service through a watcher, shortly after the commit.
fn udhcpc_until(
    lab: &Lab,
    dir: &Path,
    tag: u8,
    wanted: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> std::collections::HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0u8.. {
        lab.set_client_mac(&format!("52:54:00:{tag:02x}:f0:{attempt:02x}"));
        let lease = udhcpc(lab, dir, &format!("until{attempt}"), &[]);
        if wanted(&lease) {
            return lease;
        }
        assert!(
            Instant::now() < deadline,
            "no wanted lease; last: {lease:?}"
        );
    }
    unreachable!()
}

#[test]
fn subnet_object_set_through_the_cli_applies_without_restart_and_survives_one() {
    let lab = Lab::new("10.70.0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = lab.start_daemon(&state);
    // No object: the default pool (upper half), no router.
    lab.set_client_mac("52:54:00:70:00:01");
    let lease = udhcpc(&lab, dir.path(), "default", &[]);
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.70.0.128"));
    assert_eq!(lease.get("router"), None);
    let set = daemon.cli_ok(&[
        "dhcpsubnet",
        "set",
        "10.70.0.0/24",
        "pools=10.70.0.40-10.70.0.41,10.70.0.60-10.70.0.69",
        "routers=10.70.0.254",
        "dns_servers=10.70.0.53",
        "lease_time=600",
    ]);
    assert_eq!(
        set.trim(),
        "10.70.0.0/24: dns_servers=10.70.0.53 lease_time=600 pools=10.70.0.40-10.70.0.41,10.70.0.60-10.70.0.69 routers=10.70.0.254"
    );
    let lease = udhcpc_until(&lab, dir.path(), 0x70, |lease| {
        lease.get("ip").is_some_and(|ip| ip == "10.70.0.40")
    });
    assert_eq!(lease.get("router").map(String::as_str), Some("10.70.0.254"));
    assert_eq!(lease.get("dns").map(String::as_str), Some("10.70.0.53"));
    assert_eq!(lease.get("lease").map(String::as_str), Some("600"));
    // Invalid objects are refused with the reason.
    let refused = Command::new(env!("CARGO_BIN_EXE_confluent"))
        .args([
            "dhcpsubnet",
            "set",
            "10.70.0.0/24",
            "pools=10.71.0.1-10.71.0.9",
        ])
        .env("CONFLUENT_HOST", daemon.socket())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("invalid pool range '10.71.0.1-10.71.0.9'"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Durable: after a SIGKILL the object is still there and still served.
    daemon.kill();
    let daemon = lab.start_daemon(&state);
    assert!(
        daemon
            .cli_ok(&["dhcpsubnet", "list"])
            .contains("routers=10.70.0.254")
    );
    lab.set_client_mac("52:54:00:70:00:02");
    let lease = udhcpc(&lab, dir.path(), "after-restart", &[]);
    let ip = lease.get("ip").cloned().unwrap_or_default();
    assert!(
        ip == "10.70.0.41" || ip.starts_with("10.70.0.6"),
        "{lease:?}"
    );
    // Removed: back to the default pool.
    assert_eq!(
        daemon
            .cli_ok(&["dhcpsubnet", "remove", "10.70.0.0/24"])
            .trim(),
        "10.70.0.0/24: removed"
    );
    let lease = udhcpc_until(&lab, dir.path(), 0x71, |lease| {
        lease
            .get("ip")
            .is_some_and(|ip| ip.starts_with("10.70.0.1"))
    });
    assert_eq!(lease.get("router"), None);
    daemon.stop();
}

/// Boot a QEMU machine (TCG; PVM KVM cannot run firmware) on a tap device in a served
/// namespace and wait until the exchange log shows the ACK of the expected boot file to it.
fn firmware_gets_boot_file(subnet_prefix: &str, mac: &str, qemu_extra: &[&str], expected: &str) {
    require_lab_tools();
    require("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu ovmf");
    let id = format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT_LAB.fetch_add(1, Ordering::Relaxed)
    );
    let server = format!("cfdhcp-q{id}");
    let tap = format!("tq{id}");
    let _namespaces = Namespaces(vec![server.clone()]);
    run("ip", &["netns", "add", &server]);
    run("ip", &["-n", &server, "link", "set", "lo", "up"]);
    run(
        "ip",
        &["-n", &server, "tuntap", "add", "dev", &tap, "mode", "tap"],
    );
    let address = format!("{subnet_prefix}.1/24");
    run("ip", &["-n", &server, "addr", "add", &address, "dev", &tap]);
    run("ip", &["-n", &server, "link", "set", &tap, "up"]);
    let dir = tempfile::tempdir().unwrap();
    let dhcp = format!("{tap}=full");
    let daemon = DaemonProcess::start_wrapped(
        &dir.path().join("state"),
        &["ip", "netns", "exec", &server],
        &["--dhcp", &dhcp],
    );
    let hwaddr = format!("net.eth0.hwaddr={mac}");
    let reserved = format!("net.eth0.ipv4_address={subnet_prefix}.21/24");
    daemon.cli_ok(&[
        "nodedefine",
        "fw1",
        &hwaddr,
        &reserved,
        "deployment.pendingprofile=rocky-9",
        "deployment.useinsecureprotocols=firmware",
    ]);
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    let qemu = Command::new("ip")
        .args(["netns", "exec", &server, "qemu-system-x86_64"])
        .args([
            "-accel",
            "tcg",
            "-nographic",
            "-boot",
            "n",
            "-netdev",
            &netdev,
        ])
        .args(qemu_extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu");
    let _qemu = KillOnDrop(qemu);
    // Boot URLs carry the port the HTTP listener was bound to.
    let expected = expected.replace("{http_port}", &daemon.listener("http").port().to_string());
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let exchanges = daemon.dhcp_exchanges();
        // An ACK means the firmware accepted our OFFER (boot file included) and requested it.
        if exchanges.iter().any(|exchange| {
            exchange["reply"] == "ACK"
                && exchange["node"] == "fw1"
                && exchange["boot_file"] == expected
                && exchange["address"] == format!("{subnet_prefix}.21")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ACK with {expected} within 240 s; exchanges: {exchanges:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    daemon.stop();
}

#[test]
fn qemu_bios_ipxe_rom_gets_its_boot_script_url() {
    // QEMU's NIC option ROM is iPXE (user class iPXE, architecture 0).
    firmware_gets_boot_file(
        "10.65.0",
        "52:54:00:65:00:01",
        &[
            "-m",
            "256",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:65:00:01",
        ],
        "http://10.65.0.1:{http_port}/boot/by-mac/52:54:00:65:00:01/boot.ipxe",
    );
}

#[test]
fn qemu_ovmf_native_uefi_pxe_gets_ipxe_efi() {
    // No option ROM (romfile=): OVMF's own PXE client, architecture 7, over TFTP.
    let dir = tempfile::tempdir().unwrap();
    let variables = dir.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &variables)
        .expect("OVMF_VARS.fd: apt-get install -y ovmf");
    let code = "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd".to_string();
    let variables = format!("if=pflash,format=raw,file={}", variables.display());
    firmware_gets_boot_file(
        "10.66.0",
        "52:54:00:66:00:01",
        &[
            "-m",
            "512",
            "-drive",
            &code,
            "-drive",
            &variables,
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:66:00:01,romfile=",
        ],
        "x86_64/ipxe.efi",
    );
}

/// One segment with a site DHCP server (dnsmasq, 10.67.0.2, pool .100-.150) in its own
/// namespace, our daemon on a bridge in another (`--dhcp <bridge>=MODE`), and a QEMU machine
/// (BIOS, iPXE ROM) on a tap of that bridge booting a node with a pending profile. Waits until
/// the machine got its address from dnsmasq and its boot file from us; returns the exchanges.
fn boot_next_to_dnsmasq(
    mode: &str,
    check: impl Fn(&DaemonProcess) -> bool,
) -> Vec<serde_json::Value> {
    require_lab_tools();
    require("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu");
    require("dnsmasq", "dnsmasq-base");
    let id = format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT_LAB.fetch_add(1, Ordering::Relaxed)
    );
    let (server, site) = (format!("cfdhcp-p{id}"), format!("cfdhcp-d{id}"));
    let _namespaces = Namespaces(vec![server.clone(), site.clone()]);
    for namespace in [&server, &site] {
        run("ip", &["netns", "add", namespace]);
        run("ip", &["-n", namespace, "link", "set", "lo", "up"]);
    }
    // One segment: a bridge in the server namespace with the machine's tap and a veth to the
    // site DHCP server's namespace.
    let (bridge, tap, our_port, site_if) = (
        format!("br{id}"),
        format!("tp{id}"),
        format!("vp{id}"),
        format!("vd{id}"),
    );
    run(
        "ip",
        &["-n", &server, "link", "add", &bridge, "type", "bridge"],
    );
    run(
        "ip",
        &["-n", &server, "addr", "add", "10.67.0.1/24", "dev", &bridge],
    );
    run("ip", &["-n", &server, "link", "set", &bridge, "up"]);
    run(
        "ip",
        &["-n", &server, "tuntap", "add", "dev", &tap, "mode", "tap"],
    );
    run(
        "ip",
        &["-n", &server, "link", "set", &tap, "master", &bridge],
    );
    run("ip", &["-n", &server, "link", "set", &tap, "up"]);
    veth(&server, &our_port, &site, &site_if);
    run(
        "ip",
        &["-n", &server, "link", "set", &our_port, "master", &bridge],
    );
    run(
        "ip",
        &["-n", &site, "addr", "add", "10.67.0.2/24", "dev", &site_if],
    );
    let dir = tempfile::tempdir().unwrap();
    let _dnsmasq = dnsmasq(&site, &site_if, dir.path(), "10.67.0.100,10.67.0.150");
    // The bridge forwards only once its ports leave the learning state.
    std::thread::sleep(Duration::from_millis(500));

    let dhcp = format!("{bridge}={mode}");
    let daemon = DaemonProcess::start_wrapped(
        &dir.path().join("state"),
        &["ip", "netns", "exec", &server],
        &["--dhcp", &dhcp],
    );
    daemon.cli_ok(&[
        "nodedefine",
        "px1",
        "net.eth0.hwaddr=52:54:00:67:00:01",
        "deployment.pendingprofile=rocky-9",
        "deployment.useinsecureprotocols=firmware",
    ]);
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    let qemu = Command::new("ip")
        .args(["netns", "exec", &server, "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-nographic", "-boot", "n", "-m", "256"])
        .args(["-netdev", &netdev])
        .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:67:00:01"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run qemu");
    let _qemu = KillOnDrop(qemu);
    let expected = format!(
        "http://10.67.0.1:{}/boot/by-mac/52:54:00:67:00:01/boot.ipxe",
        daemon.listener("http").port()
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let exchanges = daemon.dhcp_exchanges();
        let offered = exchanges.iter().any(|exchange| {
            exchange["reply"] == "OFFER"
                && exchange["node"] == "px1"
                && exchange["boot_file"] == expected
                && exchange["address"].is_null()
        });
        // The REQUEST to the site server is left alone.
        let left_alone = exchanges
            .iter()
            .any(|exchange| exchange["reason_code"] == "proxy_not_addressed");
        // dnsmasq handed out the address.
        let site_lease = std::fs::read_to_string(dir.path().join("dnsmasq.leases"))
            .unwrap_or_default()
            .contains("52:54:00:67:00:01");
        if offered && left_alone && site_lease && check(&daemon) {
            daemon.stop();
            return exchanges;
        }
        assert!(
            Instant::now() < deadline,
            "proxy exchange incomplete (offered {offered}, left alone {left_alone}, site lease {site_lease}); exchanges: {exchanges:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// dnsmasq as a site DHCP server on `interface` in `namespace` (leases under `dir`).
fn dnsmasq(namespace: &str, interface: &str, dir: &Path, range: &str) -> KillOnDrop {
    let interface = format!("--interface={interface}");
    let leases = format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display());
    let pid = format!("--pid-file={}", dir.join("dnsmasq.pid").display());
    let range = format!("--dhcp-range={range},255.255.255.0,1h");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
        ])
        .args(["--port=0", "--bind-interfaces", &interface, &leases, &pid])
        .args([range.as_str(), "--no-ping"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run dnsmasq");
    KillOnDrop(child)
}

/// The `dhcp.mode` events recorded so far, oldest first.
fn mode_events(daemon: &DaemonProcess) -> Vec<serde_json::Value> {
    daemon
        .client()
        .request(
            "retrieve",
            "/events/log",
            serde_json::json!({"types": "dhcp.mode", "order": "oldest"}),
        )
        .expect("query the event log")
        .into_iter()
        .filter_map(|mut message| message.get_mut("event").map(serde_json::Value::take))
        .collect()
}

#[test]
fn proxy_mode_next_to_dnsmasq_gives_the_boot_file_and_dnsmasq_the_address() {
    // iPXE's ROM takes the boot file from the proxyDHCP OFFER and sends no boot server
    // REQUEST to port 4011; `pxe_boot_server_request_on_port_4011_...` covers that port.
    let exchanges = boot_next_to_dnsmasq("proxy", |_| true);
    assert!(
        exchanges
            .iter()
            .all(|exchange| exchange["reason_code"] != "auto_probing"),
        "{exchanges:?}"
    );
}

#[test]
fn auto_mode_serves_as_proxy_when_dnsmasq_serves_the_segment() {
    boot_next_to_dnsmasq("auto", |daemon| {
        let events = mode_events(daemon);
        let first = events.first().expect("a dhcp.mode event");
        assert_eq!(first["detail"]["mode"], "proxy", "{events:?}");
        assert_eq!(first["detail"]["foreign_server"], "10.67.0.2", "{events:?}");
        true
    });
}

/// What a PXE boot server answered.
#[derive(Debug)]
struct BootServerAnswer {
    message_type: u8,
    siaddr: std::net::Ipv4Addr,
    file: String,
}

/// Speak as a UEFI x64 PXE client that already has `client` (an address of the lab's client
/// namespace): send the boot server REQUEST (PXE 2.1 section 2.2.5, to port 4011 of the server
/// that sent the proxyDHCP OFFER) and wait `wait` for the answer.
fn pxe_boot_server_request(
    lab: &Lab,
    client: std::net::Ipv4Addr,
    server: std::net::Ipv4Addr,
    mac: [u8; 6],
    wait: Duration,
) -> Option<BootServerAnswer> {
    let xid: u32 = 0x4011_0000 | u32::from(mac[5]);
    let mut request = vec![0u8; 236];
    request[0] = 1; // BOOTREQUEST
    request[1] = 1; // Ethernet
    request[2] = 6;
    request[4..8].copy_from_slice(&xid.to_be_bytes());
    request[12..16].copy_from_slice(&client.octets()); // ciaddr
    request[28..34].copy_from_slice(&mac);
    request.extend_from_slice(&[99, 130, 83, 99]);
    let vendor_class = b"PXEClient:Arch:00007:UNDI:003016";
    request.extend_from_slice(&[53, 1, 3]);
    request.extend_from_slice(&[60, u8::try_from(vendor_class.len()).unwrap()]);
    request.extend_from_slice(vendor_class);
    request.extend_from_slice(&[93, 2, 0, 7, 94, 3, 1, 3, 16]);
    request.extend_from_slice(&[55, 6, 1, 3, 43, 60, 66, 67, 255]);
    let namespace = lab.client.clone();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let netns = std::fs::File::open(format!("/var/run/netns/{namespace}")).expect("open netns");
        // SAFETY: moves only this thread into the namespace; the descriptor is open.
        let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let socket = std::net::UdpSocket::bind((client, 0)).expect("bind the PXE client socket");
        socket.set_read_timeout(Some(wait)).unwrap();
        socket
            .send_to(&request, (server, 4011))
            .expect("send the boot server request");
        let mut buffer = [0u8; 1500];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let Ok((length, _)) = socket.recv_from(&mut buffer) else {
                return None;
            };
            let reply = &buffer[..length];
            if length < 240 || reply[0] != 2 || reply[4..8] != xid.to_be_bytes() {
                continue;
            }
            let mut message_type = 0;
            let mut offset = 240;
            while offset + 1 < length && reply[offset] != 255 {
                if reply[offset] == 0 {
                    offset += 1;
                    continue;
                }
                let option_length = usize::from(reply[offset + 1]);
                if reply[offset] == 53 && option_length == 1 {
                    message_type = reply[offset + 2];
                }
                offset += 2 + option_length;
            }
            let file = &reply[108..236];
            let file_end = file
                .iter()
                .position(|byte| *byte == 0)
                .unwrap_or(file.len());
            return Some(BootServerAnswer {
                message_type,
                siaddr: std::net::Ipv4Addr::new(reply[20], reply[21], reply[22], reply[23]),
                file: String::from_utf8_lossy(&file[..file_end]).into_owned(),
            });
        }
        None
    })
    .join()
    .expect("PXE client thread")
}

fn define_uefi_pxe_node(daemon: &DaemonProcess, name: &str, mac: &str) {
    let hwaddr = format!("net.eth0.hwaddr={mac}");
    daemon.cli_ok(&[
        "nodedefine",
        name,
        &hwaddr,
        "deployment.pendingprofile=rocky-9",
        "deployment.useinsecureprotocols=firmware",
    ]);
}

#[test]
fn pxe_boot_server_request_on_port_4011_gets_an_ack_with_the_boot_file() {
    let lab = Lab::new("10.69.0");
    let dir = tempfile::tempdir().unwrap();
    let daemon = lab.start_daemon_in_mode(&dir.path().join("state"), "proxy", &[]);
    define_uefi_pxe_node(&daemon, "pxe1", "52:54:00:69:00:01");
    // The address the site DHCP server would have handed out.
    lab.add_client_address("10.69.0.50/24");
    let client = std::net::Ipv4Addr::new(10, 69, 0, 50);
    let server = std::net::Ipv4Addr::new(10, 69, 0, 1);
    let mac = [0x52, 0x54, 0, 0x69, 0, 1];
    // Node changes reach the service through a watcher: retry until the node is known.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(answer) =
            pxe_boot_server_request(&lab, client, server, mac, Duration::from_secs(2))
        {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on port 4011: {:?}",
            daemon.dhcp_exchanges()
        );
    };
    assert_eq!(answer.message_type, 5, "not an ACK: {answer:?}");
    assert_eq!(answer.file, "x86_64/ipxe.efi");
    assert_eq!(answer.siaddr, server);
    let recorded = daemon.dhcp_exchanges();
    assert!(
        recorded
            .iter()
            .any(|exchange| exchange["server_port"] == 4011
                && exchange["message_type"] == "REQUEST"
                && exchange["reply"] == "ACK"
                && exchange["node"] == "pxe1"
                && exchange["boot_file"] == "x86_64/ipxe.efi"
                && exchange["address"].is_null()),
        "4011 exchange not recorded: {recorded:?}"
    );

    // Malformed datagrams are dropped and counted; the service keeps answering.
    let counters = |daemon: &DaemonProcess| {
        daemon
            .client()
            .request(
                "retrieve",
                "/networking/dhcp/counters",
                serde_json::json!({}),
            )
            .expect("retrieve the DHCP counters")
            .remove(0)
    };
    let before = counters(&daemon);
    let mut bad_option_length = vec![0u8; 236];
    bad_option_length[0] = 1;
    bad_option_length.extend_from_slice(&[99, 130, 83, 99, 53, 200, 3, 255]);
    send_from_client(
        &lab,
        client,
        std::net::SocketAddrV4::new(server, 4011),
        &[b"not dhcp".to_vec(), vec![1u8; 100], bad_option_length],
    );
    let again = pxe_boot_server_request(&lab, client, server, mac, Duration::from_secs(5))
        .expect("no answer after the malformed datagrams");
    assert_eq!(again.message_type, 5);
    let after = counters(&daemon);
    let delta = |name: &str| after[name].as_u64().unwrap() - before[name].as_u64().unwrap();
    assert_eq!(delta("undecodable"), 3, "{before} -> {after}");
    assert_eq!(delta("received"), 4, "{before} -> {after}");
    assert_eq!(delta("replies"), 1, "{before} -> {after}");
    assert_eq!(after["reply_failures"], 0, "{after}");
    daemon.stop();
}

/// Send `payloads` as UDP datagrams from `client` (in the lab's client namespace) to `to`.
fn send_from_client(
    lab: &Lab,
    client: std::net::Ipv4Addr,
    to: std::net::SocketAddrV4,
    payloads: &[Vec<u8>],
) {
    let namespace = lab.client.clone();
    let payloads = payloads.to_vec();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let netns = std::fs::File::open(format!("/var/run/netns/{namespace}")).expect("open netns");
        // SAFETY: moves only this thread into the namespace; the descriptor is open.
        let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let socket = std::net::UdpSocket::bind((client, 0)).expect("bind the client socket");
        for payload in &payloads {
            socket.send_to(payload, to).expect("send a datagram");
        }
    })
    .join()
    .expect("client thread");
}

#[test]
fn auto_mode_serves_full_alone_and_turns_proxy_when_another_server_appears() {
    let lab = Lab::new("10.68.0");
    let dir = tempfile::tempdir().unwrap();
    let daemon = lab.start_daemon_in_mode(
        &dir.path().join("state"),
        "auto",
        &["--dhcp-probe-interval", "1"],
    );
    define_uefi_pxe_node(&daemon, "auto1", "52:54:00:68:00:01");
    // Alone on the segment: full mode, an address from our default pool.
    lab.set_client_mac("52:54:00:68:00:0c");
    let lease = udhcpc(&lab, dir.path(), "alone", &[]);
    assert!(
        lease
            .get("ip")
            .is_some_and(|ip| ip.starts_with("10.68.0.1") || ip.starts_with("10.68.0.2")),
        "{lease:?}"
    );
    assert_eq!(lease.get("serverid").map(String::as_str), Some("10.68.0.1"));
    let events = mode_events(&daemon);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"]["mode"], "full");
    assert_eq!(
        events[0]["detail"]["interface"],
        lab.server_interface.as_str()
    );
    assert!(events[0]["detail"]["foreign_server"].is_null());
    // In full mode the boot server port answers nothing.
    lab.add_client_address("10.68.0.2/24");
    let (client, server) = (
        std::net::Ipv4Addr::new(10, 68, 0, 2),
        std::net::Ipv4Addr::new(10, 68, 0, 1),
    );
    let mac = [0x52, 0x54, 0, 0x68, 0, 1];
    assert!(pxe_boot_server_request(&lab, client, server, mac, Duration::from_secs(1)).is_none());
    // A site DHCP server appears on the segment: the next probe switches to proxy, without
    // a restart, and the boot server port answers.
    let _dnsmasq = dnsmasq(
        &lab.client,
        &lab.client_interface,
        dir.path(),
        "10.68.0.100,10.68.0.120",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = mode_events(&daemon);
        if let Some(last) = events.last()
            && last["detail"]["mode"] == "proxy"
        {
            assert_eq!(last["detail"]["foreign_server"], "10.68.0.2", "{events:?}");
            assert_eq!(last["detail"]["previous"], "full", "{events:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "auto mode did not turn proxy: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let answer = pxe_boot_server_request(&lab, client, server, mac, Duration::from_secs(3))
        .expect("boot server answer after the switch to proxy");
    assert_eq!(answer.message_type, 5, "{answer:?}");
    assert_eq!(answer.file, "x86_64/ipxe.efi");
    let recorded = daemon.dhcp_exchanges();
    assert!(
        recorded
            .iter()
            .any(|exchange| exchange["reason_code"] == "pxe_port_not_proxy"),
        "{recorded:?}"
    );
    daemon.stop();
}

/// Run udhcpc once with `tries` DISCOVERs one second apart; the lease, or `None`.
fn udhcpc_try(
    lab: &Lab,
    dir: &Path,
    name: &str,
    tries: u32,
) -> Option<std::collections::HashMap<String, String>> {
    let (script, output) = env_script(dir, name, "ip");
    let status = lab
        .in_client("timeout")
        .args(["20", "udhcpc", "-i", &lab.client_interface])
        .args(["-n", "-q", "-f", "-t", &tries.to_string(), "-T", "1", "-s"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run udhcpc");
    status.success().then(|| read_env(&output))
}

fn dhcp_interfaces(daemon: &DaemonProcess) -> Vec<serde_json::Value> {
    daemon
        .client()
        .request(
            "retrieve",
            "/networking/dhcp/interfaces/",
            serde_json::json!({}),
        )
        .expect("retrieve the DHCP interfaces")
        .into_iter()
        .filter_map(|mut message| message.get_mut("interface").map(serde_json::Value::take))
        .collect()
}

#[test]
fn interfaces_set_in_the_configuration_are_served_and_stopped_at_run_time() {
    let lab = Lab::new("10.71.0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // No --dhcp flag: nothing is served until the configuration says so.
    let daemon = DaemonProcess::start_wrapped(&state, &["ip", "netns", "exec", &lab.server], &[]);
    lab.set_client_mac("52:54:00:71:00:01");
    assert!(dhcp_interfaces(&daemon).is_empty());
    assert!(udhcpc_try(&lab, dir.path(), "before", 2).is_none());

    let interface = lab.server_interface.as_str();
    let listed = daemon.cli_ok(&["dhcpinterface", "set", interface, "full"]);
    assert!(listed.contains("mode=full"), "{listed}");
    let lease = udhcpc_try(&lab, dir.path(), "served", 10).expect("no lease once set to full");
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.71.0.128"));
    let table = dhcp_interfaces(&daemon);
    assert_eq!(table.len(), 1, "{table:?}");
    assert_eq!(table[0]["name"], interface);
    assert_eq!(table[0]["source"], "configuration");
    assert_eq!(table[0]["serving"], "full");
    assert_eq!(table[0]["address"], "10.71.0.1");
    let listed = daemon.cli_ok(&["dhcpinterface", "list"]);
    assert!(
        listed.contains(&format!(
            "{interface}: mode=full source=configuration serving=full"
        )),
        "{listed}"
    );

    // Off: the sockets close; the next client gets nothing.
    daemon.cli_ok(&["dhcpinterface", "set", interface, "off"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dhcp_interfaces(&daemon)[0]["serving"] != serde_json::Value::Null {
        assert!(Instant::now() < deadline, "{:?}", dhcp_interfaces(&daemon));
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.set_client_mac("52:54:00:71:00:02");
    assert!(udhcpc_try(&lab, dir.path(), "off", 3).is_none());

    // Bad input is refused with a reason and changes nothing.
    let refused = daemon.client().request(
        "update",
        &format!("/networking/dhcp/interfaces/{interface}"),
        serde_json::json!({"mode": "sometimes"}),
    );
    assert!(
        format!("{refused:?}").contains("unknown DHCP mode"),
        "{refused:?}"
    );

    // The setting is configuration: after a restart (SIGKILL) it is served again.
    daemon.cli_ok(&["dhcpinterface", "set", interface, "full"]);
    daemon.kill();
    let daemon = DaemonProcess::start_wrapped(&state, &["ip", "netns", "exec", &lab.server], &[]);
    let lease = udhcpc_try(&lab, dir.path(), "restarted", 10).expect("no lease after a restart");
    assert_eq!(lease.get("ip").map(String::as_str), Some("10.71.0.129"));
    daemon.cli_ok(&["dhcpinterface", "remove", interface]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dhcp_interfaces(&daemon).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", dhcp_interfaces(&daemon));
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.stop();
}
