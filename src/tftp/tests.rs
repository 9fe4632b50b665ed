//! The service in-process on 127.0.0.1 port 0, driven by a raw UDP client: virtual files,
//! counters, window rewinds, duplicate ACKs, block number rollover, the transfer cap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::proto::tftp::{self as wire, Mode, Options, Packet, Request};

/// Serves `grub.cfg` to 127.0.0.1 only, and a large generated file to everyone.
struct TestFiles {
    large: Bytes,
}

impl VirtualFiles for TestFiles {
    fn lookup(&self, path: &str, client: IpAddr) -> Option<Result<VirtualFile, TftpOpenError>> {
        let bytes = match path {
            "grub.cfg" if client == IpAddr::from([127, 0, 0, 1]) => {
                Bytes::from_static(b"set timeout=0\nboot\n")
            }
            "large.bin" => self.large.clone(),
            "refused" => return Some(Err(TftpOpenError::Escapes)),
            _ => return None,
        };
        Some(Ok(VirtualFile::Memory(bytes)))
    }
}

struct Running {
    address: SocketAddr,
    stats: Arc<TftpStats>,
    shutdown: CancellationToken,
    root: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn large() -> Bytes {
    // 65,600 blocks of 512 bytes and a bit: the block number rolls over once.
    (0..512 * 65_600 + 100)
        .map(|index: u32| (index % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn start(limits: TftpLimits) -> Running {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("ten-blocks.bin"),
        (0..5120u32).map(|i| (i % 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let files = Arc::new(TestFiles { large: large() });
    let service =
        TftpService::bind("127.0.0.1:0".parse().unwrap(), root.path(), files, limits).unwrap();
    let address = service.local_addr();
    let stats = service.stats();
    let shutdown = CancellationToken::new();
    tokio::spawn(service.serve(shutdown.clone()));
    Running {
        address,
        stats,
        shutdown,
        root,
    }
}

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    async fn new(server: SocketAddr) -> Client {
        Client {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    async fn read_request(&self, name: &str, mode: Mode, options: Options) {
        let mut bytes = Vec::new();
        wire::encode_request(
            false,
            &Request {
                filename: name.as_bytes(),
                mode,
                options,
            },
            &mut bytes,
        );
        self.socket.send_to(&bytes, self.server).await.unwrap();
    }

    /// The next datagram within `wait`, with its source.
    async fn receive(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buffer = vec![0u8; 70_000];
        let (length, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buffer))
            .await
            .ok()?
            .unwrap();
        buffer.truncate(length);
        Some((buffer, from))
    }

    async fn expect(&self) -> (Vec<u8>, SocketAddr) {
        self.receive(Duration::from_secs(5))
            .await
            .expect("a packet from the server")
    }

    async fn ack(&self, block: u16, to: SocketAddr) {
        let mut bytes = Vec::new();
        wire::encode_ack(block, &mut bytes);
        self.socket.send_to(&bytes, to).await.unwrap();
    }
}

fn data_block(bytes: &[u8]) -> (u16, Vec<u8>) {
    match wire::decode(bytes) {
        Ok(Packet::Data { block, data }) => (block, data.to_vec()),
        other => panic!("expected DATA, got {other:?}"),
    }
}

async fn eventually(stats: &TftpStats, check: impl Fn(&TftpCounts) -> bool) -> TftpCounts {
    for _ in 0..200 {
        let counts = stats.snapshot();
        if check(&counts) {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("counters never matched: {:?}", stats.snapshot());
}

#[tokio::test]
async fn virtual_files_come_first_and_see_the_client() {
    let server = start(TftpLimits::default()).await;
    std::fs::write(server.root.path().join("grub.cfg"), b"from disk").unwrap();
    let client = Client::new(server.address).await;
    client
        .read_request("/grub.cfg", Mode::Octet, Options::default())
        .await;
    let (packet, tid) = client.expect().await;
    assert_ne!(tid, server.address, "a transfer uses its own port");
    assert_eq!(data_block(&packet), (1, b"set timeout=0\nboot\n".to_vec()));
    client.ack(1, tid).await;
    eventually(&server.stats, |counts| counts.completed == 1).await;

    // Netascii converts line ends of virtual files too.
    client
        .read_request("grub.cfg", Mode::Netascii, Options::default())
        .await;
    let (packet, tid) = client.expect().await;
    assert_eq!(
        data_block(&packet),
        (1, b"set timeout=0\r\nboot\r\n".to_vec())
    );
    client.ack(1, tid).await;
    eventually(&server.stats, |counts| counts.completed == 2).await;

    // A virtual name can be refused as such, even when the root has a file of that name.
    std::fs::write(server.root.path().join("refused"), b"from disk").unwrap();
    client
        .read_request("refused", Mode::Octet, Options::default())
        .await;
    let (packet, _) = client.expect().await;
    assert!(matches!(
        wire::decode(&packet),
        Ok(Packet::Error {
            code: ErrorCode::AccessViolation,
            ..
        })
    ));
}

#[tokio::test]
async fn client_error_after_oack_ends_the_transfer() {
    let server = start(TftpLimits::default()).await;
    let client = Client::new(server.address).await;
    let options = Options {
        tsize: Some(0),
        blksize: Some(1468),
        ..Options::default()
    };
    client
        .read_request("ten-blocks.bin", Mode::Octet, options)
        .await;
    let (packet, tid) = client.expect().await;
    let Ok(Packet::Oack(oack)) = wire::decode(&packet) else {
        panic!("expected OACK: {packet:?}");
    };
    assert_eq!(oack.tsize, Some(5120));
    assert_eq!(oack.blksize, Some(1468));
    // What EDK2 does after learning the size.
    let mut error = Vec::new();
    wire::encode_error(ErrorCode::OptionRefused, "tsize only", &mut error);
    client.socket.send_to(&error, tid).await.unwrap();
    let counts = eventually(&server.stats, |counts| counts.aborted == 1).await;
    assert_eq!(counts.failed, 0);
    assert!(
        client.receive(Duration::from_millis(1500)).await.is_none(),
        "no OACK retransmission after the client's ERROR"
    );
}

#[tokio::test]
async fn duplicate_acks_do_not_duplicate_data() {
    let server = start(TftpLimits::default()).await;
    let client = Client::new(server.address).await;
    client
        .read_request("ten-blocks.bin", Mode::Octet, Options::default())
        .await;
    let (packet, tid) = client.expect().await;
    assert_eq!(data_block(&packet).0, 1);
    client.ack(1, tid).await;
    client.ack(1, tid).await;
    client.ack(1, tid).await;
    let (packet, _) = client.expect().await;
    assert_eq!(data_block(&packet).0, 2);
    assert!(
        client.receive(Duration::from_millis(500)).await.is_none(),
        "a duplicate ACK must not trigger another DATA"
    );
}

#[tokio::test]
async fn an_early_ack_rewinds_the_window() {
    let server = start(TftpLimits::default()).await;
    let client = Client::new(server.address).await;
    let options = Options {
        windowsize: Some(4),
        ..Options::default()
    };
    client
        .read_request("ten-blocks.bin", Mode::Octet, options)
        .await;
    let (packet, tid) = client.expect().await;
    assert!(matches!(wire::decode(&packet), Ok(Packet::Oack(_))));
    client.ack(0, tid).await;
    for expected in 1..=4 {
        assert_eq!(data_block(&client.expect().await.0).0, expected);
    }
    // Block 3 "was lost": the client acknowledges 2 and the server resends from 3.
    client.ack(2, tid).await;
    for expected in 3..=6 {
        assert_eq!(data_block(&client.expect().await.0).0, expected);
    }
    client.ack(6, tid).await;
    for expected in 7..=10 {
        assert_eq!(data_block(&client.expect().await.0).0, expected);
    }
    client.ack(10, tid).await;
    // 5120 bytes is exactly ten blocks: an empty eleventh ends the file.
    let (block, data) = data_block(&client.expect().await.0);
    assert_eq!((block, data.len()), (11, 0));
    client.ack(11, tid).await;
    eventually(&server.stats, |counts| counts.completed == 1).await;
}

#[tokio::test]
async fn block_numbers_roll_over() {
    let server = start(TftpLimits::default()).await;
    let client = Client::new(server.address).await;
    let options = Options {
        windowsize: Some(64),
        tsize: Some(0),
        ..Options::default()
    };
    // Built before the request: in a debug build this takes long enough for the server to
    // retransmit its OACK.
    let expected = large();
    client.read_request("large.bin", Mode::Octet, options).await;
    let (packet, tid) = client.expect().await;
    let Ok(Packet::Oack(oack)) = wire::decode(&packet) else {
        panic!("expected OACK");
    };
    assert_eq!(oack.tsize, Some(expected.len() as u64));
    client.ack(0, tid).await;
    let mut received = Vec::with_capacity(expected.len());
    let mut next: u16 = 1;
    loop {
        let (packet, _) = client.expect().await;
        let (block, data) = data_block(&packet);
        assert_eq!(block, next, "blocks arrive in order on loopback");
        received.extend_from_slice(&data);
        let last = data.len() < 512;
        if last || block % 64 == 0 {
            client.ack(block, tid).await;
        }
        if last {
            break;
        }
        next = next.wrapping_add(1);
    }
    assert!(received == expected, "the file arrives intact");
    eventually(&server.stats, |counts| counts.completed == 1).await;
}

#[tokio::test]
async fn refusals_and_the_transfer_cap_are_counted() {
    let limits = TftpLimits {
        max_transfers: 1,
        ..TftpLimits::default()
    };
    let server = start(limits).await;
    let holder = Client::new(server.address).await;
    holder
        .read_request("ten-blocks.bin", Mode::Octet, Options::default())
        .await;
    assert_eq!(data_block(&holder.expect().await.0).0, 1);

    let client = Client::new(server.address).await;
    client
        .read_request("ten-blocks.bin", Mode::Octet, Options::default())
        .await;
    let (packet, _) = client.expect().await;
    assert_eq!(
        wire::decode(&packet),
        Ok(Packet::Error {
            code: ErrorCode::Undefined,
            message: b"server busy: 1 transfers in progress",
        })
    );

    let mut write = Vec::new();
    wire::encode_request(
        true,
        &Request {
            filename: b"upload",
            mode: Mode::Octet,
            options: Options::default(),
        },
        &mut write,
    );
    client.socket.send_to(&write, server.address).await.unwrap();
    let (packet, _) = client.expect().await;
    assert!(matches!(
        wire::decode(&packet),
        Ok(Packet::Error {
            code: ErrorCode::AccessViolation,
            ..
        })
    ));
    client
        .socket
        .send_to(b"\x00\x01no-mode\x00", server.address)
        .await
        .unwrap();
    let (packet, _) = client.expect().await;
    assert!(matches!(
        wire::decode(&packet),
        Ok(Packet::Error {
            code: ErrorCode::IllegalOperation,
            ..
        })
    ));
    let counts = eventually(&server.stats, |counts| counts.malformed == 1).await;
    assert_eq!(counts.busy, 1);
    assert_eq!(counts.refused, 1);
    assert_eq!(counts.requests, 3);
}

#[tokio::test]
async fn bad_names_are_refused_with_access_violation() {
    let server = start(TftpLimits::default()).await;
    std::os::unix::fs::symlink("/etc", server.root.path().join("etc")).unwrap();
    let client = Client::new(server.address).await;
    let long = "a".repeat(300);
    for name in ["../etc/passwd", "/../../etc/passwd", "etc/passwd", &long] {
        client
            .read_request(name, Mode::Octet, Options::default())
            .await;
        let (packet, _) = client.expect().await;
        assert!(
            matches!(
                wire::decode(&packet),
                Ok(Packet::Error {
                    code: ErrorCode::AccessViolation,
                    ..
                })
            ),
            "{name}: {packet:?}"
        );
    }
    client
        .read_request("missing", Mode::Octet, Options::default())
        .await;
    let (packet, _) = client.expect().await;
    assert!(matches!(
        wire::decode(&packet),
        Ok(Packet::Error {
            code: ErrorCode::FileNotFound,
            ..
        })
    ));
    let counts = eventually(&server.stats, |counts| counts.not_found == 1).await;
    assert_eq!(counts.refused, 4);
}
