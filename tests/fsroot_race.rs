//! The race of issue 12: a symlink swapped, in a tight loop on another thread, between a file
//! inside a served root and a secret file outside it, while thousands of requests run. Through
//! the library ([`ConfinedRoot`]) and through a real daemon over HTTP (both the buffered path
//! and the `sendfile` path for large files) and TFTP (the root and a profile's `boot/`), not a
//! byte of the secret may ever come back. Each test also checks that both states of the link
//! were seen, so that it cannot pass without racing.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::DaemonProcess;
use confluent::fsroot::{ConfinedOpenError, ConfinedRoot};
use confluent::proto::tftp::{self as wire, Mode, Options, Packet, Request};

/// What every secret file is made of: any piece of a secret that leaks contains it.
const SECRET: &[u8] = b"TOP-SECRET:";
/// Larger than the HTTP small-file limit (256 KiB), so served with `sendfile` or streamed.
const LARGE: usize = 300 * 1024;

fn secret(length: usize) -> Vec<u8> {
    SECRET.iter().copied().cycle().take(length).collect()
}

fn public(length: usize) -> Vec<u8> {
    b"public bytes; "
        .iter()
        .copied()
        .cycle()
        .take(length)
        .collect()
}

/// Whether an answer that is not the public file (an error message) holds a piece of a
/// secret. Served files are compared whole with the public content instead.
fn leaks(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|window| window == b"SECRET")
}

/// One thing the swapper changes, over and over.
enum Swap {
    /// The symlink `link` (created here) points at one target, then the other; a fresh link
    /// is renamed over it, so it always exists.
    Link {
        link: PathBuf,
        targets: [PathBuf; 2],
    },
    /// Two existing entries trade places atomically (`renameat2(RENAME_EXCHANGE)`): a real
    /// directory on the path and a symlink out, as in the check-then-open race.
    Exchange(PathBuf, PathBuf),
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the swaps in a tight loop on its own thread until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(swaps_to_do: Vec<Swap>) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                for swap in &swaps_to_do {
                    if let Swap::Link { link, targets } = swap {
                        std::os::unix::fs::symlink(&targets[0], link).unwrap();
                    }
                }
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    turn ^= 1;
                    for swap in &swaps_to_do {
                        match swap {
                            Swap::Link { link, targets } => {
                                let fresh = link.with_extension("swapping");
                                std::os::unix::fs::symlink(&targets[turn], &fresh).unwrap();
                                std::fs::rename(&fresh, link).unwrap();
                            }
                            Swap::Exchange(a, b) => exchange(a, b).unwrap(),
                        }
                    }
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The links exist before the first request.
        while swaps.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }
}

/// A directory `flip` under `parent` holding `file` with public bytes, and beside it
/// `.flip-out`, a symlink to `outside` (which holds a secret `file`), to be exchanged.
fn flip(parent: &Path, outside: &Path, length: usize) -> Swap {
    std::fs::create_dir_all(parent.join("flip")).unwrap();
    std::fs::write(parent.join("flip/file"), public(length)).unwrap();
    std::fs::create_dir_all(outside).unwrap();
    std::fs::write(outside.join("file"), secret(length)).unwrap();
    std::os::unix::fs::symlink(outside, parent.join(".flip-out")).unwrap();
    Swap::Exchange(parent.join("flip"), parent.join(".flip-out"))
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the swapper thread panicked");
        }
        assert!(
            self.swaps.load(Ordering::Relaxed) > 1,
            "the links never swapped"
        );
    }
}

/// How many requests got the inside file and how many were refused.
#[derive(Default, Debug)]
struct Outcomes {
    served: u64,
    refused: u64,
}

impl Outcomes {
    fn assert_both_seen(&self, what: &str) {
        assert!(
            self.served > 0 && self.refused > 0,
            "{what}: the race was not exercised: {self:?}"
        );
    }
}

#[test]
fn the_library_never_opens_a_swapped_in_secret() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    for sub in ["public/sub", "distributions/media", "outside"] {
        std::fs::create_dir_all(lib.join(sub)).unwrap();
    }
    std::fs::write(lib.join("public/inside"), public(100)).unwrap();
    std::fs::write(lib.join("public/sub/file"), public(100)).unwrap();
    std::fs::write(lib.join("distributions/media/kernel"), public(100)).unwrap();
    std::fs::write(lib.join("outside/file"), secret(100)).unwrap();
    std::fs::write(lib.join("secret"), secret(100)).unwrap();
    let root = ConfinedRoot::with_link_targets(
        &lib.join("public"),
        &[&lib.join("public"), &lib.join("distributions")],
    )
    .unwrap();
    let flip = flip(&lib.join("public"), &dir.path().join("flip-out"), 100);
    let _swapper = Swapper::start(vec![
        // Relative, inside the root (the kernel's fast path) or absolute, outside.
        Swap::Link {
            link: lib.join("public/file-race"),
            targets: ["inside".into(), lib.join("secret")],
        },
        // Absolute into an allowed link target (the walk) or outside.
        Swap::Link {
            link: lib.join("public/target-race"),
            targets: [lib.join("distributions/media/kernel"), lib.join("secret")],
        },
        // A symlinked directory on the way.
        Swap::Link {
            link: lib.join("public/dir-race"),
            targets: ["sub".into(), lib.join("outside")],
        },
        // A real directory on the way, traded for a symlink out.
        flip,
    ]);
    let expected = public(100);
    for request in ["file-race", "target-race", "dir-race/file", "flip/file"] {
        let mut outcomes = Outcomes::default();
        for _ in 0..5_000 {
            match root.open_file(request) {
                Ok(mut opened) => {
                    let mut content = Vec::new();
                    opened.file.read_to_end(&mut content).unwrap();
                    assert!(content == expected, "{request}: not the public file");
                    outcomes.served += 1;
                }
                Err(ConfinedOpenError::Escapes) => outcomes.refused += 1,
                Err(error) => panic!("{request}: {error:?}"),
            }
        }
        outcomes.assert_both_seen(request);
    }
}

/// One plain HTTP/1.1 GET on its own connection: (status, body).
fn http_get(address: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head");
    let status = std::str::from_utf8(&response[..split])
        .ok()
        .and_then(|head| head.split_whitespace().nth(1)?.parse().ok())
        .expect("a status code");
    (status, response[split + 4..].to_vec())
}

/// A daemon serving HTTP and TFTP, with a profile whose boot/ may link into distributions.
fn daemon_with_files(dir: &Path) -> DaemonProcess {
    let daemon = DaemonProcess::start_with(dir, &["--tftp", "127.0.0.1:0"]);
    let lib = dir.join("lib");
    std::fs::create_dir_all(lib.join("public/os/p/boot")).unwrap();
    std::fs::create_dir_all(lib.join("distributions/media")).unwrap();
    std::fs::write(lib.join("public/small"), public(100)).unwrap();
    std::fs::write(lib.join("public/large"), public(LARGE)).unwrap();
    std::fs::write(lib.join("distributions/media/kernel"), public(100)).unwrap();
    std::fs::write(lib.join("tftpboot/inside"), public(100)).unwrap();
    std::fs::write(dir.join("small-secret"), secret(100)).unwrap();
    std::fs::write(dir.join("large-secret"), secret(LARGE)).unwrap();
    daemon
}

#[test]
fn http_never_serves_a_swapped_in_secret() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with_files(dir.path());
    let lib = dir.path().join("lib");
    let _swapper = Swapper::start(vec![
        Swap::Link {
            link: lib.join("public/small-race"),
            targets: ["small".into(), dir.path().join("small-secret")],
        },
        Swap::Link {
            link: lib.join("public/large-race"),
            targets: ["large".into(), dir.path().join("large-secret")],
        },
        Swap::Link {
            link: lib.join("public/os/p/boot/race"),
            targets: [
                lib.join("distributions/media/kernel"),
                dir.path().join("small-secret"),
            ],
        },
        flip(&lib.join("public"), &dir.path().join("flip-out"), LARGE),
    ]);
    let address = daemon.listener("http");
    // The large file goes through sendfile; the small ones through hyper (and its one-second
    // cache, which keeps a served copy: refusals are never cached, so every one of them was
    // a real open during the race).
    for (path, length, requests) in [
        ("/confluent-public/large-race", LARGE, 1_500),
        ("/confluent-public/small-race", 100, 1_500),
        ("/confluent-public/os/p/boot/race", 100, 1_500),
        ("/confluent-public/flip/file", LARGE, 1_500),
    ] {
        let expected = public(length);
        let mut outcomes = Outcomes::default();
        // At least `requests`, then on until both outcomes were seen: a small file's cached copy
        // answers for a second, so its opens are few (bounded at 30 s).
        let started = std::time::Instant::now();
        let mut sent = 0;
        while sent < requests
            || ((outcomes.served == 0 || outcomes.refused == 0)
                && started.elapsed() < std::time::Duration::from_secs(30))
        {
            sent += 1;
            let (status, body) = http_get(address, path);
            match status {
                200 => {
                    assert!(body == expected, "{path}: not the public file");
                    outcomes.served += 1;
                }
                403 => {
                    assert!(!leaks(&body), "{path}: the secret leaked");
                    outcomes.refused += 1;
                }
                other => panic!("{path}: status {other}"),
            }
        }
        outcomes.assert_both_seen(path);
    }
    daemon.stop();
}

/// Read a one-block file over TFTP, from a fresh port (so no late packet of an earlier
/// transfer is taken for an answer): its bytes, or `None` for an ERROR.
fn tftp_get(server: SocketAddr, name: &str) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    wire::encode_request(
        false,
        &Request {
            filename: name.as_bytes(),
            mode: Mode::Octet,
            options: Options::default(),
        },
        &mut request,
    );
    socket.send_to(&request, server).unwrap();
    let mut buffer = vec![0u8; 2048];
    let (length, from) = socket.recv_from(&mut buffer).expect("a TFTP answer");
    match wire::decode(&buffer[..length]) {
        Ok(Packet::Data { block: 1, data }) => {
            let data = data.to_vec();
            assert!(data.len() < 512, "{name}: test files fit one block");
            let mut ack = Vec::new();
            wire::encode_ack(1, &mut ack);
            socket.send_to(&ack, from).unwrap();
            Some(data)
        }
        Ok(Packet::Error { message, .. }) => {
            assert!(!leaks(message), "{name}: the secret leaked");
            None
        }
        other => panic!("{name}: unexpected answer {other:?}"),
    }
}

#[test]
fn tftp_never_sends_a_swapped_in_secret() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_with_files(dir.path());
    let lib = dir.path().join("lib");
    let _swapper = Swapper::start(vec![
        Swap::Link {
            link: lib.join("tftpboot/race"),
            targets: ["inside".into(), dir.path().join("small-secret")],
        },
        Swap::Link {
            link: lib.join("public/os/p/boot/race"),
            targets: [
                lib.join("distributions/media/kernel"),
                dir.path().join("small-secret"),
            ],
        },
        flip(&lib.join("tftpboot"), &dir.path().join("flip-out"), 100),
    ]);
    let server = daemon.listener("tftp");
    let expected = public(100);
    for name in ["race", "os/p/boot/race", "flip/file"] {
        let mut outcomes = Outcomes::default();
        for _ in 0..2_000 {
            match tftp_get(server, name) {
                Some(data) => {
                    assert!(data == expected, "{name}: not the public file");
                    outcomes.served += 1;
                }
                None => outcomes.refused += 1,
            }
        }
        outcomes.assert_both_seen(name);
    }
    daemon.stop();
}
