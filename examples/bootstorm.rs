//! Boot storm simulator (issue 7 benchmark): plays N machines that each do what a PXE BIOS
//! machine chained into iPXE does — DHCP DISCOVER/OFFER/REQUEST/ACK (through a relay address,
//! as perfdhcp does, so one process can be many machines), a TFTP fetch of the boot file named
//! in the ACK, then over HTTP the node's iPXE script and every kernel and initrd it names —
//! and reports how many completed and how fast.
//!
//! ```text
//! bootstorm --server 10.92.0.1 --relay 10.92.0.2 --machines 2000 [--mac-prefix 02:10]
//!           [--concurrency 2000] [--timeout-seconds 300]
//! ```
//! The relay address must be local (the simulator binds its port 67 to receive replies).
//! Machine `k` (1-based) uses MAC `<prefix>:<k/65536>:<k/256>:<k%256>` (bytes in hex).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Mutex, Semaphore, oneshot};

struct Options {
    server: Ipv4Addr,
    relay: Ipv4Addr,
    machines: u32,
    mac_prefix: [u8; 3],
    concurrency: usize,
    timeout: Duration,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        server: Ipv4Addr::new(10, 92, 0, 1),
        relay: Ipv4Addr::new(10, 92, 0, 2),
        machines: 2000,
        mac_prefix: [0x02, 0x10, 0x00],
        concurrency: 2000,
        timeout: Duration::from_secs(300),
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => options.server = value()?.parse().map_err(|_| "bad --server")?,
            "--relay" => options.relay = value()?.parse().map_err(|_| "bad --relay")?,
            "--machines" => options.machines = value()?.parse().map_err(|_| "bad --machines")?,
            "--concurrency" => {
                options.concurrency = value()?.parse().map_err(|_| "bad --concurrency")?;
            }
            "--timeout-seconds" => {
                options.timeout =
                    Duration::from_secs(value()?.parse().map_err(|_| "bad --timeout-seconds")?);
            }
            "--mac-prefix" => {
                let text = value()?;
                let bytes: Vec<u8> = text
                    .split(':')
                    .map(|part| u8::from_str_radix(part, 16))
                    .collect::<Result<_, _>>()
                    .map_err(|_| "bad --mac-prefix")?;
                if bytes.len() != 2 {
                    return Err("--mac-prefix takes two bytes, e.g. 02:10".into());
                }
                options.mac_prefix = [bytes[0], bytes[1], 0];
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn mac_of(options: &Options, machine: u32) -> [u8; 6] {
    [
        options.mac_prefix[0],
        options.mac_prefix[1],
        (machine >> 16) as u8,
        (machine >> 8) as u8,
        machine as u8,
        0x01,
    ]
}

/// Replies routed to waiting machines by xid.
type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<v4::Message>>>>;

struct Dhcp {
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    relay: Ipv4Addr,
    waiters: Waiters,
}

impl Dhcp {
    async fn exchange(&self, message: &v4::Message) -> Option<v4::Message> {
        let mut bytes = Vec::new();
        message.encode(&mut Encoder::new(&mut bytes)).ok()?;
        for attempt in 0..6u32 {
            let (sender, receiver) = oneshot::channel();
            self.waiters.lock().await.insert(message.xid(), sender);
            self.socket.send_to(&bytes, self.server).await.ok()?;
            let wait = Duration::from_millis(1000 << attempt.min(3));
            if let Ok(Ok(reply)) = tokio::time::timeout(wait, receiver).await {
                return Some(reply);
            }
            self.waiters.lock().await.remove(&message.xid());
        }
        None
    }

    fn request(&self, mac: &[u8; 6], xid: u32, kind: v4::MessageType) -> v4::Message {
        let mut message = v4::Message::default();
        message
            .set_opcode(v4::Opcode::BootRequest)
            .set_xid(xid)
            .set_chaddr(mac)
            .set_giaddr(self.relay)
            .set_hops(1);
        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        options.insert(DhcpOption::ClientSystemArchitecture(
            v4::Architecture::X86_Bios,
        ));
        message
    }
}

fn boot_file(message: &v4::Message) -> Option<String> {
    if let Some(DhcpOption::BootfileName(name)) = message.opts().get(v4::OptionCode::BootfileName) {
        return String::from_utf8(name.clone()).ok();
    }
    let name = message.fname()?;
    let end = name
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(name.len());
    (end > 0).then(|| String::from_utf8_lossy(&name[..end]).to_string())
}

/// Fetch `path` over TFTP (blksize 1468), returning its size.
async fn tftp_get(server: Ipv4Addr, path: &str) -> Result<u64, String> {
    let socket = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut request = vec![0, 1];
    request.extend_from_slice(path.as_bytes());
    request.push(0);
    request.extend_from_slice(b"octet\0blksize\x001468\0");
    let mut peer = SocketAddr::V4(SocketAddrV4::new(server, 69));
    socket
        .send_to(&request, peer)
        .await
        .map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 2048];
    let mut expected: u16 = 1;
    let mut total = 0u64;
    let mut block_size = 512usize;
    let mut last_sent = request;
    let mut first = true;
    loop {
        let mut tries = 0;
        let (length, from) = loop {
            match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await
            {
                Ok(Ok(received)) => break received,
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => {
                    tries += 1;
                    if tries > 5 {
                        return Err(format!("tftp timeout at block {expected}"));
                    }
                    socket
                        .send_to(&last_sent, peer)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        };
        if first {
            peer = from;
            first = false;
        }
        let packet = &buffer[..length];
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        match opcode {
            6 => {
                // OACK: blksize accepted.
                let text = String::from_utf8_lossy(&packet[2..]);
                let fields: Vec<&str> = text.split('\0').collect();
                for pair in fields.chunks(2) {
                    if pair.len() == 2 && pair[0].eq_ignore_ascii_case("blksize") {
                        block_size = pair[1].parse().unwrap_or(512);
                    }
                }
                last_sent = vec![0, 4, 0, 0];
                socket
                    .send_to(&last_sent, peer)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            3 => {
                let block = u16::from_be_bytes([packet[2], packet[3]]);
                if block == expected {
                    let data = length - 4;
                    total += data as u64;
                    last_sent = vec![0, 4, packet[2], packet[3]];
                    socket
                        .send_to(&last_sent, peer)
                        .await
                        .map_err(|e| e.to_string())?;
                    expected = expected.wrapping_add(1);
                    if data < block_size {
                        return Ok(total);
                    }
                } else {
                    socket
                        .send_to(&last_sent, peer)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            5 => {
                return Err(format!(
                    "tftp error: {}",
                    String::from_utf8_lossy(&packet[4..]).trim_end_matches('\0')
                ));
            }
            _ => return Err(format!("tftp: unexpected opcode {opcode}")),
        }
    }
}

/// GET over HTTP/1.1 (one connection per request, as firmware does); returns the body.
async fn http_get(url: &str, keep_body: bool) -> Result<(Vec<u8>, u64), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (host, path) = rest.split_at(rest.find('/').ok_or("no path")?);
    let mut stream = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut body = Vec::new();
    let mut count = 0u64;
    let mut in_body = false;
    let mut content_length = None;
    loop {
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if read == 0 {
            break;
        }
        let mut chunk = &buffer[..read];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..end]).to_string();
            if !text.starts_with("HTTP/1.1 200") {
                return Err(format!(
                    "{url}: {}",
                    text.lines().next().unwrap_or_default()
                ));
            }
            content_length = text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<u64>().ok())?
            });
            let rest = head[end + 4..].to_vec();
            in_body = true;
            count += rest.len() as u64;
            if keep_body {
                body.extend_from_slice(&rest);
            }
            chunk = &[];
        }
        count += chunk.len() as u64;
        if keep_body {
            body.extend_from_slice(chunk);
        }
    }
    if content_length.is_some_and(|length| length != count) {
        return Err(format!("{url}: short body ({count} of {content_length:?})"));
    }
    Ok((body, count))
}

#[derive(Default)]
struct Stats {
    completed: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    tftp_retries: AtomicU64,
    phase_ms: [parking_lot::Mutex<Vec<u64>>; 4],
}

async fn machine(
    dhcp: Arc<Dhcp>,
    options: Arc<Options>,
    stats: Arc<Stats>,
    index: u32,
) -> Result<(), String> {
    let mac = mac_of(&options, index);
    let xid = 0x5a00_0000 | index;
    let started = Instant::now();
    let offer = dhcp
        .exchange(&dhcp.request(&mac, xid, v4::MessageType::Discover))
        .await
        .ok_or("no OFFER")?;
    let mut request = dhcp.request(&mac, xid, v4::MessageType::Request);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    if let Some(DhcpOption::ServerIdentifier(server)) =
        offer.opts().get(v4::OptionCode::ServerIdentifier)
    {
        request
            .opts_mut()
            .insert(DhcpOption::ServerIdentifier(*server));
    }
    let ack = dhcp.exchange(&request).await.ok_or("no ACK")?;
    if ack.opts().msg_type() != Some(v4::MessageType::Ack) {
        return Err("REQUEST not ACKed".into());
    }
    let file = boot_file(&ack).ok_or("no boot file in the ACK")?;
    stats.phase_ms[0]
        .lock()
        .push(started.elapsed().as_millis() as u64);
    let phase = Instant::now();
    let tftp_server = if ack.siaddr().is_unspecified() {
        options.server
    } else {
        ack.siaddr()
    };
    // A busy server is retried after a pause, as firmware that retries its network boot does.
    let mut tries = 0;
    let loader = loop {
        match tftp_get(tftp_server, &file).await {
            Ok(size) => break size,
            Err(error) if error.contains("busy") && tries < 10 => {
                tries += 1;
                stats.tftp_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500 * tries)).await;
            }
            Err(error) => return Err(error),
        }
    };
    stats.phase_ms[1]
        .lock()
        .push(phase.elapsed().as_millis() as u64);
    // What the loaded iPXE then does: its script, then every kernel and initrd it names.
    let phase = Instant::now();
    let mac_text = mac
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let port = std::env::var("BOOTSTORM_HTTP_PORT").unwrap_or_else(|_| "80".into());
    let (script, _) = http_get(
        &format!(
            "http://{}:{port}/boot/by-mac/{mac_text}/boot.ipxe",
            options.server
        ),
        true,
    )
    .await?;
    let script = String::from_utf8_lossy(&script).to_string();
    let mut bytes = loader;
    let mut fetched = 0;
    for line in script.lines() {
        let url = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["kernel", url, ..] => url.to_string(),
            ["initrd", "--name", _, url, ..] => url.to_string(),
            _ => continue,
        };
        let (_, count) = http_get(&url, false).await?;
        bytes += count;
        fetched += 1;
    }
    if fetched < 2 {
        return Err(format!("the boot script named {fetched} files:\n{script}"));
    }
    stats.phase_ms[2]
        .lock()
        .push(phase.elapsed().as_millis() as u64);
    stats.phase_ms[3]
        .lock()
        .push(started.elapsed().as_millis() as u64);
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

fn percentile(values: &mut [u64], fraction: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * fraction).round() as usize;
    values[index.min(values.len() - 1)]
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => Arc::new(options),
        Err(error) => {
            eprintln!("bootstorm: {error}");
            std::process::exit(2);
        }
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(options.relay, 67))
        .await
        .unwrap_or_else(|error| panic!("bind {}:67: {error}", options.relay));
    let socket = Arc::new(socket);
    let waiters: Waiters = Arc::default();
    {
        let socket = socket.clone();
        let waiters = waiters.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 1500];
            loop {
                let Ok((length, _)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(message) = v4::Message::decode(&mut Decoder::new(&buffer[..length])) else {
                    continue;
                };
                if let Some(sender) = waiters.lock().await.remove(&message.xid()) {
                    let _ = sender.send(message);
                }
            }
        });
    }
    let dhcp = Arc::new(Dhcp {
        socket,
        server: SocketAddr::V4(SocketAddrV4::new(options.server, 67)),
        relay: options.relay,
        waiters,
    });
    let stats = Arc::new(Stats::default());
    let limit = Arc::new(Semaphore::new(options.concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let errors = Arc::new(parking_lot::Mutex::new(HashMap::<String, u64>::new()));
    for index in 1..=options.machines {
        let (dhcp, options, stats, limit, errors) = (
            dhcp.clone(),
            options.clone(),
            stats.clone(),
            limit.clone(),
            errors.clone(),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            match tokio::time::timeout(
                options.timeout,
                machine(dhcp, options.clone(), stats.clone(), index),
            )
            .await
            {
                Ok(Ok(())) => {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let key: String = error.chars().take(80).collect();
                    *errors.lock().entry(key).or_default() += 1;
                }
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    *errors.lock().entry("timed out".into()).or_default() += 1;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let completed = stats.completed.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    println!(
        "machines: {} completed, {failed} failed, in {elapsed:.2} s: {:.1} machines/s, {:.0} MB moved",
        completed,
        completed as f64 / elapsed,
        stats.bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    for (name, values) in [
        "DHCP DORA",
        "TFTP loader",
        "HTTP script+kernel+initrd",
        "whole boot",
    ]
    .iter()
    .zip(stats.phase_ms.iter())
    {
        let mut values = values.lock();
        println!(
            "  {name:<26} p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms",
            percentile(&mut values, 0.5),
            percentile(&mut values, 0.99),
            percentile(&mut values, 1.0)
        );
    }
    println!(
        "  TFTP requests retried after \"server busy\": {}",
        stats.tftp_retries.load(Ordering::Relaxed)
    );
    for (error, count) in errors.lock().iter() {
        println!("  failure x{count}: {error}");
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
