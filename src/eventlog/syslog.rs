//! Forwarding records to a syslog collector (`--syslog udp://host:port` or `tcp://host:port`):
//! RFC 5424 messages, one per UDP datagram (RFC 5426) or octet-counted on TCP (RFC 6587
//! section 3.4.1). The forwarder is an ordinary subscriber of every log, so a slow or absent
//! collector costs the writers nothing: records it cannot take are counted and dropped.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::EventLogs;
use super::query::Filter;
use super::record::Record;
use super::subscribe::{Delivery, Subscription};
use super::timestamp;

/// Larger messages are cut (RFC 5426 section 3.2 asks receivers to take at least 2048 bytes;
/// most take far more).
const MAX_MESSAGE: usize = 8192;
/// IANA enterprise number reserved for documentation (RFC 5612), naming our SD-ID.
const SD_ID: &str = "confluent@32473";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    pub transport: Transport,
    /// `host:port`, resolved when the forwarder starts.
    pub address: String,
}

impl std::str::FromStr for SyslogTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<SyslogTarget, String> {
        let (transport, address) = if let Some(rest) = text.strip_prefix("udp://") {
            (Transport::Udp, rest)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            (Transport::Tcp, rest)
        } else {
            return Err(format!(
                "invalid syslog target '{text}' (want udp://HOST:PORT or tcp://HOST:PORT)"
            ));
        };
        let address = address.trim_end_matches('/');
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("syslog target '{text}' needs HOST:PORT")),
        }
        Ok(SyslogTarget {
            transport,
            address: address.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogBindError {
    #[error("failed to resolve syslog collector {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("syslog collector {0} resolves to no address")]
    NoAddress(String),
    #[error("failed to open a UDP socket for syslog")]
    Socket(#[source] std::io::Error),
}

/// Severity from the type: failures are errors, denials and drops warnings, the rest notices
/// (audit) or informational.
fn severity(log: &str, record: &Record) -> u8 {
    let kind = record.kind.as_str();
    if let Some(severity) = record
        .detail
        .get("severity")
        .and_then(serde_json::Value::as_u64)
    {
        return u8::try_from(severity.min(7)).unwrap_or(6);
    }
    if kind.ends_with(".error") || kind.ends_with(".failed") || kind.ends_with(".failure") {
        3
    } else if kind.ends_with(".denied") || kind.ends_with(".warning") {
        4
    } else if log == "audit" {
        5
    } else {
        6
    }
}

/// PRINTUSASCII without space, `=`, `]` and `"` (RFC 5424 section 6: SD-NAME and header fields).
fn header_field(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".to_string()
    } else {
        cleaned
    }
}

/// PARAM-VALUE escaping (RFC 5424 section 6.3.3).
fn param_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME confluent PROCID TYPE [SD] JSON`.
/// Facility: daemon (3) for events, log audit (13) for the audit log.
pub fn format_rfc5424(log: &str, record: &Record, hostname: &str, pid: u32) -> String {
    let facility: u8 = if log == "audit" { 13 } else { 3 };
    let pri = u16::from(facility) * 8 + u16::from(severity(log, record));
    let mut message = format!(
        "<{pri}>1 {} {} confluent {pid} {} [{SD_ID} log=\"{}\" seq=\"{}\"",
        timestamp::rfc3339(record.time_ms),
        header_field(hostname, 255),
        header_field(&record.kind, 32),
        param_value(log),
        record.seq,
    );
    if let Some(node) = &record.node {
        let _ = write!(message, " node=\"{}\"", param_value(node));
    }
    if let Some(user) = &record.user {
        let _ = write!(message, " user=\"{}\"", param_value(user));
    }
    message.push_str("] ");
    message.push_str(&record.to_json().to_string());
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

/// The forwarder service.
pub struct SyslogForwarder {
    target: SyslogTarget,
    address: SocketAddr,
    udp: Option<UdpSocket>,
    /// Subscribed at bind time, so that nothing written after start-up is missed.
    events: Subscription,
    audit: Subscription,
    hostname: String,
}

impl SyslogForwarder {
    /// Resolve the collector (and bind the UDP socket): a wrong target stops start-up.
    pub async fn bind(
        target: SyslogTarget,
        logs: Arc<EventLogs>,
    ) -> Result<SyslogForwarder, SyslogBindError> {
        let address = tokio::net::lookup_host(&target.address)
            .await
            .map_err(|error| SyslogBindError::Resolve(target.address.clone(), error))?
            .next()
            .ok_or_else(|| SyslogBindError::NoAddress(target.address.clone()))?;
        let udp = match target.transport {
            Transport::Udp => {
                let local: SocketAddr = if address.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap_or(address)
                } else {
                    "[::]:0".parse().unwrap_or(address)
                };
                let socket = UdpSocket::bind(local)
                    .await
                    .map_err(SyslogBindError::Socket)?;
                socket
                    .connect(address)
                    .await
                    .map_err(SyslogBindError::Socket)?;
                Some(socket)
            }
            Transport::Tcp => None,
        };
        Ok(SyslogForwarder {
            target,
            address,
            udp,
            events: logs.events.subscribe(Filter::default(), None),
            audit: logs.audit.subscribe(Filter::default(), None),
            hostname: hostname(),
        })
    }

    async fn forward(self, shutdown: CancellationToken) {
        let pid = std::process::id();
        let SyslogForwarder {
            target,
            address,
            udp,
            mut events,
            mut audit,
            hostname,
        } = self;
        let mut tcp: Option<TcpStream> = None;
        let mut retry_at = tokio::time::Instant::now();
        let mut dropped: u64 = 0;
        loop {
            let (log, delivery) = tokio::select! {
                delivery = events.next() => ("events", delivery),
                delivery = audit.next() => ("audit", delivery),
                () = shutdown.cancelled() => break,
            };
            let record = match delivery {
                Some(Delivery::Record(record)) => record,
                Some(Delivery::Missed(count)) => {
                    dropped += count;
                    tracing::warn!(
                        log,
                        missed = count,
                        "syslog forwarder fell behind; records not forwarded"
                    );
                    continue;
                }
                None => break,
            };
            let message = format_rfc5424(log, &record, &hostname, pid);
            let sent = match &udp {
                Some(socket) => socket.send(message.as_bytes()).await.map(|_| ()),
                None => {
                    if tcp.is_none() && tokio::time::Instant::now() >= retry_at {
                        match tokio::time::timeout(
                            Duration::from_secs(5),
                            TcpStream::connect(address),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => {
                                tracing::info!(collector = %address, "connected to the syslog collector");
                                tcp = Some(stream);
                            }
                            _ => retry_at = tokio::time::Instant::now() + Duration::from_secs(5),
                        }
                    }
                    match tcp.as_mut() {
                        Some(stream) => {
                            let framed = format!("{} {message}", message.len());
                            stream.write_all(framed.as_bytes()).await
                        }
                        None => Err(std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            "collector unreachable",
                        )),
                    }
                }
            };
            if let Err(error) = sent {
                dropped += 1;
                if tcp.take().is_some() || dropped.is_power_of_two() {
                    tracing::warn!(collector = %target.address, error = %crate::error::Chain(&error), dropped, "failed to forward to syslog");
                }
            }
        }
    }
}

impl crate::service::Service for SyslogForwarder {
    fn name(&self) -> &'static str {
        "syslog-forwarder"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            self.forward(shutdown).await;
            Ok(())
        })
    }
}

fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into the buffer we own.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "-".to_string();
    }
    let end = buffer
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_targets() {
        let target: SyslogTarget = "udp://127.0.0.1:514".parse().unwrap();
        assert_eq!(target.transport, Transport::Udp);
        assert_eq!(target.address, "127.0.0.1:514");
        assert_eq!(
            "tcp://[::1]:6514"
                .parse::<SyslogTarget>()
                .unwrap()
                .transport,
            Transport::Tcp
        );
        for bad in ["127.0.0.1:514", "udp://host", "udp://:514", "http://h:1"] {
            assert!(bad.parse::<SyslogTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_rfc5424_with_escaped_structured_data() {
        let record = Record {
            seq: 9,
            time_ms: 0,
            kind: "api.denied".into(),
            node: Some("n\"1]".into()),
            user: Some("uid=1000".into()),
            detail: json!({"path": "/nodes/"}),
        };
        let message = format_rfc5424("audit", &record, "mgr 1", 42);
        assert!(
            message.starts_with(
                "<108>1 1970-01-01T00:00:00.000Z mgr1 confluent 42 api.denied [confluent@32473 log=\"audit\" seq=\"9\" node=\"n\\\"1\\]\" user=\"uid=1000\"] {"
            ),
            "{message}"
        );
    }
}
