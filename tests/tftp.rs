//! The TFTP service of a real daemon (`confluentd --tftp 127.0.0.1:0`) against real clients
//! (atftp, tftp-hpa, curl) and a raw UDP client for what the real ones will not send: names
//! escaping the root, write requests, a client ERROR after the OACK, a silent client, and the
//! transfer cap. The clients are installed by `tests/run`; without them the tests fail with a
//! message saying what to install.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::DaemonProcess;
use confluent::proto::tftp::{self as wire, ErrorCode, Mode, Options, Packet, Request};
use sha2::{Digest, Sha256};

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(
        found,
        "{tool} is missing: apt-get install -y {package} (tests/run installs it when run as root)"
    );
}

/// Deterministic bytes that are not all alike (CR and LF included, so that a netascii
/// mix-up would show).
fn pattern(length: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Served {
    daemon: DaemonProcess,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut arguments = vec!["--tftp", "127.0.0.1:0"];
        arguments.extend_from_slice(extra);
        let daemon = DaemonProcess::start_with(dir.path(), &arguments);
        Served { daemon, _dir: dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.daemon.state_dir.join("lib/tftpboot")
    }

    fn address(&self) -> SocketAddr {
        self.daemon.listener("tftp")
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.root().join(name), bytes).unwrap();
    }
}

fn run_client(program: &str, arguments: &[&str], cwd: &Path) {
    let output = Command::new(program)
        .args(arguments)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A raw client on its own port.
struct Raw {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    fn new(server: SocketAddr) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Raw { socket, server }
    }

    fn send_bytes(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    fn read_request(&self, name: &[u8], options: Options) {
        let mut bytes = Vec::new();
        wire::encode_request(
            false,
            &Request {
                filename: name,
                mode: Mode::Octet,
                options,
            },
            &mut bytes,
        );
        self.send_bytes(&bytes);
    }

    fn receive(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buffer = vec![0u8; 70_000];
        match self.socket.recv_from(&mut buffer) {
            Ok((length, from)) => {
                buffer.truncate(length);
                Some((buffer, from))
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(error) => panic!("receive failed: {error}"),
        }
    }

    fn expect(&self) -> (Vec<u8>, SocketAddr) {
        self.receive(Duration::from_secs(5))
            .expect("a packet from the server")
    }

    fn send_to(&self, packet: &Packet<'_>, to: SocketAddr) {
        let mut bytes = Vec::new();
        wire::encode(packet, &mut bytes);
        self.socket.send_to(&bytes, to).unwrap();
    }
}

fn expect_error(packet: &[u8]) -> (ErrorCode, String) {
    match wire::decode(packet) {
        Ok(Packet::Error { code, message }) => (code, String::from_utf8_lossy(message).into()),
        other => panic!("expected an ERROR packet, got {other:?}"),
    }
}

#[test]
fn atftp_windowed_transfer_is_exact() {
    require("atftp", "atftp");
    let served = Served::start(&[]);
    let content = pattern(5 << 20);
    served.put("big.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let port = served.address().port().to_string();
    run_client(
        "atftp",
        &[
            "--option",
            "blksize 1468",
            "--option",
            "tsize 0",
            "--option",
            "windowsize 16",
            "-g",
            "-r",
            "big.bin",
            "-l",
            "big.bin",
            "127.0.0.1",
            &port,
        ],
        out.path(),
    );
    let received = std::fs::read(out.path().join("big.bin")).unwrap();
    assert_eq!(received.len(), content.len());
    assert_eq!(sha256(&received), sha256(&content));
}

#[test]
fn tftp_hpa_default_blocks_in_octet_and_netascii() {
    require("tftp", "tftp-hpa");
    let served = Served::start(&[]);
    let content = pattern(1 << 20);
    served.put("1m.bin", &content);
    let text = b"#!ipxe\nchain http://10.0.0.1/boot.ipxe\r\necho done\n".repeat(40);
    served.put("boot.txt", &text);
    let out = tempfile::tempdir().unwrap();
    let port = served.address().port().to_string();
    run_client(
        "tftp",
        &[
            "-m",
            "binary",
            "127.0.0.1",
            &port,
            "-c",
            "get",
            "1m.bin",
            "1m.bin",
        ],
        out.path(),
    );
    let received = std::fs::read(out.path().join("1m.bin")).unwrap();
    assert_eq!(sha256(&received), sha256(&content));
    // tftp-hpa's default mode is netascii: the server converts, the client converts back.
    run_client(
        "tftp",
        &["127.0.0.1", &port, "-c", "get", "boot.txt", "boot.txt"],
        out.path(),
    );
    assert_eq!(std::fs::read(out.path().join("boot.txt")).unwrap(), text);
}

#[test]
fn curl_with_blksize() {
    let served = Served::start(&[]);
    let content = pattern(3 << 20);
    served.put("image.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let url = format!("tftp://{}/image.bin", served.address());
    run_client(
        "curl",
        &["-sS", "--tftp-blksize", "1468", "-o", "image.bin", &url],
        out.path(),
    );
    let received = std::fs::read(out.path().join("image.bin")).unwrap();
    assert_eq!(sha256(&received), sha256(&content));
    // A missing file is an error for curl too.
    let status = Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://{}/missing.bin", served.address()))
        .status()
        .unwrap();
    assert!(!status.success());
}

#[test]
fn names_escaping_the_root_get_errors_and_nothing_leaks() {
    let served = Served::start(&[]);
    served.put("inside.bin", b"inside");
    std::os::unix::fs::symlink("/etc", served.root().join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", served.root().join("passwd")).unwrap();
    let raw = Raw::new(served.address());
    let long = vec![b'a'; 300];
    let names: [&[u8]; 9] = [
        b"../etc/passwd",
        b"/../../etc/passwd",
        b"..\\..\\etc\\passwd",
        b"etc/passwd",
        b"passwd",
        b"etc/does-not-exist",
        b"\xff\xfepasswd",
        &long,
        // A NUL inside the name: the rest becomes the mode, which is not one.
        b"passwd\x00.txt",
    ];
    for name in names {
        raw.read_request(name, Options::default());
        let (packet, _) = raw.expect();
        let (code, message) = expect_error(&packet);
        assert!(
            matches!(
                code,
                ErrorCode::AccessViolation | ErrorCode::FileNotFound | ErrorCode::IllegalOperation
            ),
            "{name:?}: {code:?} {message}"
        );
        assert!(
            !message.contains("/etc") && !message.contains(&*served.root().to_string_lossy()),
            "an error message names a server path: {message}"
        );
        assert!(
            raw.receive(Duration::from_millis(100)).is_none(),
            "{name:?}: more than one packet"
        );
    }
    // And a legitimate name still works after all that.
    raw.read_request(b"/inside.bin", Options::default());
    let (packet, tid) = raw.expect();
    assert_eq!(
        wire::decode(&packet),
        Ok(Packet::Data {
            block: 1,
            data: b"inside"
        })
    );
    raw.send_to(&Packet::Ack { block: 1 }, tid);
}

#[test]
fn write_requests_are_refused() {
    let served = Served::start(&[]);
    let raw = Raw::new(served.address());
    let mut bytes = Vec::new();
    wire::encode_request(
        true,
        &Request {
            filename: b"upload.bin",
            mode: Mode::Octet,
            options: Options::default(),
        },
        &mut bytes,
    );
    raw.send_bytes(&bytes);
    let (code, message) = expect_error(&raw.expect().0);
    assert_eq!(code, ErrorCode::AccessViolation);
    assert!(message.contains("read-only"), "{message}");
    assert!(!served.root().join("upload.bin").exists());
}

#[test]
fn client_error_after_oack_ends_the_transfer_and_frees_its_slot() {
    let served = Served::start(&["--tftp-max-transfers", "1"]);
    served.put("shim.efi", &pattern(100_000));
    let raw = Raw::new(served.address());
    let options = Options {
        tsize: Some(0),
        blksize: Some(1468),
        ..Options::default()
    };
    raw.read_request(b"shim.efi", options);
    let (packet, tid) = raw.expect();
    let Ok(Packet::Oack(oack)) = wire::decode(&packet) else {
        panic!("expected an OACK: {packet:?}");
    };
    assert_eq!(oack.tsize, Some(100_000));
    // What EDK2 sends once it has the size.
    raw.send_to(
        &Packet::Error {
            code: ErrorCode::OptionRefused,
            message: b"tsize probe",
        },
        tid,
    );
    assert!(
        raw.receive(Duration::from_millis(2500)).is_none(),
        "the server retransmitted after the client's ERROR"
    );
    // The one transfer slot is free again: the real download goes through.
    raw.read_request(b"shim.efi", Options::default());
    let (packet, _) = raw.expect();
    assert!(
        matches!(wire::decode(&packet), Ok(Packet::Data { block: 1, .. })),
        "{packet:?}"
    );
}

#[test]
fn a_silent_client_gets_retransmissions_with_backoff_then_an_error() {
    let served = Served::start(&[]);
    served.put("kernel", &pattern(10_000));
    let raw = Raw::new(served.address());
    let started = Instant::now();
    raw.read_request(b"kernel", Options::default());
    let mut arrivals = Vec::new();
    let error = loop {
        let Some((packet, _)) = raw.receive(Duration::from_secs(40)) else {
            panic!("the server neither retransmitted nor gave up: {arrivals:?}");
        };
        let elapsed = started.elapsed().as_secs_f64();
        match wire::decode(&packet) {
            Ok(Packet::Data { block: 1, .. }) => arrivals.push(elapsed),
            Ok(Packet::Error { message, .. }) => {
                break (elapsed, String::from_utf8_lossy(message).into_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(arrivals.len(), 5, "five sends of block 1: {arrivals:?}");
    let gaps: Vec<f64> = arrivals.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Timers only fire late on a loaded machine: never early, and not much later.
    for (gap, expected) in gaps.iter().zip([1.0, 2.0, 4.0, 8.0]) {
        assert!(
            *gap > expected * 0.9 && *gap < expected + 2.0,
            "gaps {gaps:?} should double from 1 s"
        );
    }
    let last_wait = error.0 - arrivals[4];
    assert!(
        (last_wait - 16.0).abs() < 1.0,
        "gave up {last_wait} s after the last send"
    );
    assert!(error.1.contains("timed out"), "{}", error.1);
    assert!(raw.receive(Duration::from_secs(2)).is_none());
}

#[test]
fn past_the_transfer_cap_requests_get_a_busy_error() {
    let served = Served::start(&["--tftp-max-transfers", "2"]);
    served.put("undionly.kpxe", &pattern(70_000));
    let holders: Vec<Raw> = (0..2).map(|_| Raw::new(served.address())).collect();
    for holder in &holders {
        holder.read_request(b"undionly.kpxe", Options::default());
        let (packet, _) = holder.expect();
        assert!(matches!(
            wire::decode(&packet),
            Ok(Packet::Data { block: 1, .. })
        ));
    }
    let third = Raw::new(served.address());
    third.read_request(b"undionly.kpxe", Options::default());
    let (code, message) = expect_error(&third.expect().0);
    assert_eq!(code, ErrorCode::Undefined);
    assert_eq!(message, "server busy: 2 transfers in progress");
}

#[test]
fn grub_gets_a_configuration_chaining_to_its_node_over_tftp() {
    let served = Served::start(&[]);
    let out = tempfile::tempdir().unwrap();
    // GRUB asks for its configuration in its prefix (Debian's signed network GRUB:
    // `grub/grub.cfg`), others per MAC first; none exist on disk.
    for name in [
        "grub/grub.cfg",
        "grub/grub.cfg-01-52-54-00-12-34-56",
        "x86_64/grub.cfg",
    ] {
        let url = format!("tftp://{}/{name}", served.address());
        run_client("curl", &["-sS", "-o", "grub.cfg", &url], out.path());
        let config = std::fs::read_to_string(out.path().join("grub.cfg")).unwrap();
        assert_eq!(
            config,
            "configfile (tftp,${net_default_server})/boot/by-mac/${net_default_mac}/grub.cfg\n",
            "{name}"
        );
    }
}

/// What a raw client reads of `name`, or the ERROR it gets.
fn read_all(raw: &Raw, name: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
    raw.read_request(name.as_bytes(), Options::default());
    let mut content = Vec::new();
    loop {
        let (packet, tid) = raw.expect();
        match wire::decode(&packet) {
            Ok(Packet::Data { block, data }) => {
                content.extend_from_slice(data);
                let last = data.len() < 512;
                raw.send_to(&Packet::Ack { block }, tid);
                if last {
                    return Ok(content);
                }
            }
            _ => return Err(expect_error(&packet)),
        }
    }
}

#[test]
fn the_node_grub_configuration_and_profile_boot_files_are_served_over_tftp() {
    let served = Served::start(&[]);
    let lib = served.daemon.state_dir.join("lib");
    let profile = lib.join("public/os/sb1");
    std::fs::create_dir_all(profile.join("boot/initramfs")).unwrap();
    std::fs::write(
        profile.join("profile.yaml"),
        "label: SB\nkernelargs: console=ttyS0\nbootloader: shim\n",
    )
    .unwrap();
    // The kernel is a symlink into imported media, as imported profiles have.
    std::fs::create_dir_all(lib.join("distributions/d1")).unwrap();
    std::fs::write(lib.join("distributions/d1/vmlinuz"), pattern(3000)).unwrap();
    std::os::unix::fs::symlink(
        lib.join("distributions/d1/vmlinuz"),
        profile.join("boot/kernel"),
    )
    .unwrap();
    std::fs::write(profile.join("boot/initramfs/a.cpio"), b"initramfs").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", profile.join("boot/passwd")).unwrap();
    served.daemon.cli_ok(&[
        "nodedefine",
        "n1",
        "net.eth0.hwaddr=52:54:00:12:34:56",
        "deployment.pendingprofile=sb1",
    ]);
    served
        .daemon
        .cli_ok(&["nodedefine", "idle1", "net.eth0.hwaddr=52:54:00:12:34:57"]);
    let raw = Raw::new(served.address());
    let config = String::from_utf8(
        read_all(&raw, "boot/by-mac/52:54:00:12:34:56/grub.cfg").expect("node config"),
    )
    .unwrap();
    assert!(
        config.contains("linux (tftp,${net_default_server})/os/sb1/boot/kernel console=ttyS0\n"),
        "{config}"
    );
    assert!(
        config.contains("initrd (tftp,${net_default_server})/os/sb1/boot/initramfs/a.cpio\n"),
        "{config}"
    );
    let idle = String::from_utf8(
        read_all(&raw, "boot/by-mac/52:54:00:12:34:57/grub.cfg").expect("idle config"),
    )
    .unwrap();
    assert!(idle.contains("\nexit\n"), "{idle}");
    let unknown = read_all(&raw, "boot/by-mac/52:54:00:12:34:58/grub.cfg").unwrap_err();
    assert_eq!(unknown.0, ErrorCode::FileNotFound);
    // The files the configuration names, through the symlink into lib/distributions.
    assert_eq!(
        read_all(&raw, "os/sb1/boot/kernel").expect("kernel"),
        pattern(3000)
    );
    assert_eq!(
        read_all(&raw, "/os/sb1/boot/initramfs/a.cpio").expect("initramfs"),
        b"initramfs"
    );
    // Nothing of the profile outside boot/, nothing through a symlink out, no escapes.
    for name in [
        "os/sb1/profile.yaml",
        "os/sb1/boot/passwd",
        "os/sb1/boot/../profile.yaml",
        "os/../../../etc/passwd",
        "os/.hidden/boot/kernel",
        "os/sb1/boot",
        "os/missing/boot/kernel",
    ] {
        let (code, message) = read_all(&raw, name).unwrap_err();
        assert!(
            matches!(code, ErrorCode::AccessViolation | ErrorCode::FileNotFound),
            "{name}: {code:?} {message}"
        );
        assert!(!message.contains('/'), "{name}: {message}");
    }
    // The node's configuration was recorded for its boot timeline (appends are queued: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = served
            .daemon
            .client()
            .request(
                "retrieve",
                "/events/log",
                serde_json::json!({"type": "boot.tftp", "noderange": "n1"}),
            )
            .expect("query the event log");
        if format!("{events:?}").contains("boot script") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no boot.tftp event for n1: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
