//! The client side of the socket API: connects to the daemon's unix socket (or the one named by
//! `CONFLUENT_HOST`), or over TLS to `CONFLUENT_HOST=host[:port]` (default port 13001), checks
//! the banner, logs in when needed, and sends requests, collecting each one's messages.
//!
//! TLS trust, as Confluent's own client: the site CA in `~/.confluent/ca.pem` when present,
//! otherwise trust on first use of the server certificate's fingerprint, remembered in
//! `~/.confluent/knownhosts` as `<port>@<host> sha512$<hex>`; a changed fingerprint is refused.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::proto::tlv::{self, FrameType};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path} (is confluentd running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the daemon failed")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent an invalid frame")]
    Framing(#[from] tlv::TlvError),
    #[error("the daemon sent invalid JSON")]
    Json(#[from] serde_json::Error),
    #[error("unexpected greeting from the server: {0}")]
    Banner(String),
    #[error("not authorized by the server")]
    NotAuthorized,
    #[error("TLS connection to {0} failed")]
    Tls(String, #[source] std::io::Error),
    #[error(
        "the certificate of {host} changed (known {known}, presented {presented}); remove its line from ~/.confluent/knownhosts if this is expected"
    )]
    FingerprintChanged {
        host: String,
        known: String,
        presented: String,
    },
}

/// A byte stream to the daemon (unix socket or TLS).
pub trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

pub struct Client {
    stream: Box<dyn Transport>,
    /// Bytes received but not consumed yet: a 10,000-node answer is 10,000 frames, read in
    /// large chunks rather than two system calls per frame.
    buffer: Vec<u8>,
    position: usize,
}

/// Where the CLI connects.
pub enum Target {
    Unix(PathBuf),
    Remote { host: String, port: u16 },
}

/// Parse `CONFLUENT_HOST`: a path, or `host`, `host:port`, `[v6]:port`.
pub fn target_from(host: &str) -> Target {
    if host.contains('/') {
        return Target::Unix(PathBuf::from(host));
    }
    if let Some(rest) = host.strip_prefix('[')
        && let Some((address, port)) = rest.split_once(']')
    {
        let port = port
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(13001);
        return Target::Remote {
            host: address.to_string(),
            port,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => Target::Remote {
            host: name.to_string(),
            port: port.parse().unwrap_or(13001),
        },
        _ => Target::Remote {
            host: host.to_string(),
            port: 13001,
        },
    }
}

/// Where to connect: `CONFLUENT_HOST` when set, else the default state directory's socket when
/// present, else the system one.
pub fn default_target() -> Target {
    if let Ok(host) = std::env::var("CONFLUENT_HOST")
        && !host.is_empty()
    {
        return target_from(&host);
    }
    let local = PathBuf::from(crate::state::paths::DEFAULT_STATE_DIR)
        .join("run")
        .join("api.sock");
    if local.exists() {
        return Target::Unix(local);
    }
    Target::Unix(crate::state::StatePaths::system().api_socket())
}

impl Client {
    pub fn connect() -> Result<Client, ClientError> {
        match default_target() {
            Target::Unix(path) => Client::connect_to(&path),
            Target::Remote { host, port } => Client::connect_remote(&host, port),
        }
    }

    pub fn connect_to(path: &std::path::Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut client = Client {
            stream: Box::new(stream),
            buffer: Vec::new(),
            position: 0,
        };
        client.greet()?;
        Ok(client)
    }

    /// Connect over TLS and log in (with `CONFLUENT_TOKEN`, or `CONFLUENT_USER` and
    /// `CONFLUENT_PASSPHRASE`).
    pub fn connect_remote(host: &str, port: u16) -> Result<Client, ClientError> {
        let tcp = std::net::TcpStream::connect((host, port))
            .map_err(|source| ClientError::Tls(format!("{host}:{port}"), source))?;
        let config = super::trust::client_config(host, port).map_err(|error| {
            ClientError::Tls(format!("{host}:{port}"), std::io::Error::other(error))
        })?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|error| ClientError::Tls(host.to_string(), std::io::Error::other(error)))?;
        let connection = rustls::ClientConnection::new(config.config, name)
            .map_err(|error| ClientError::Tls(host.to_string(), std::io::Error::other(error)))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        // Complete the handshake now, so that trust failures are reported as such.
        while stream.conn.is_handshaking() {
            if let Err(error) = stream.conn.complete_io(&mut stream.sock) {
                if let Some(changed) = config.changed.lock().ok().and_then(|mut slot| slot.take()) {
                    return Err(ClientError::FingerprintChanged {
                        host: format!("{port}@{host}"),
                        known: changed.0,
                        presented: changed.1,
                    });
                }
                return Err(ClientError::Tls(format!("{host}:{port}"), error));
            }
        }
        let mut client = Client {
            stream: Box::new(stream),
            buffer: Vec::new(),
            position: 0,
        };
        let authenticated = client.greet_allowing_login()?;
        if !authenticated {
            let login = if let Ok(token) = std::env::var("CONFLUENT_TOKEN") {
                json!({"token": token})
            } else {
                json!({
                    "username": std::env::var("CONFLUENT_USER").unwrap_or_default(),
                    "password": std::env::var("CONFLUENT_PASSPHRASE").unwrap_or_default(),
                })
            };
            let payload = serde_json::to_vec(&login)?;
            client
                .stream
                .write_all(&tlv::encode(FrameType::Json, &payload)?)?;
            let reply = client.read_json()?;
            if reply.get("authpassed").and_then(Value::as_u64) != Some(1) {
                return Err(ClientError::NotAuthorized);
            }
        }
        Ok(client)
    }

    fn greet(&mut self) -> Result<(), ClientError> {
        if self.greet_allowing_login()? {
            Ok(())
        } else {
            Err(ClientError::NotAuthorized)
        }
    }

    /// Read the banner and `authpassed`; true when already authenticated.
    fn greet_allowing_login(&mut self) -> Result<bool, ClientError> {
        match self.read_frame()? {
            Some((FrameType::Text, banner)) if banner.starts_with(b"Confluent -- v") => {}
            other => {
                let text = other
                    .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_default();
                return Err(ClientError::Banner(text));
            }
        }
        let auth = self.read_json()?;
        Ok(auth.get("authpassed").and_then(Value::as_u64) == Some(1))
    }

    /// `read_exact` through the receive buffer.
    fn read_buffered(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            if self.position == self.buffer.len() {
                self.buffer.resize(1 << 16, 0);
                let count = self.stream.read(&mut self.buffer)?;
                self.buffer.truncate(count);
                self.position = 0;
                if count == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection",
                    ));
                }
            }
            let available = &self.buffer[self.position..];
            let take = available.len().min(out.len() - filled);
            out[filled..filled + take].copy_from_slice(&available[..take]);
            filled += take;
            self.position += take;
        }
        Ok(())
    }

    fn read_frame(&mut self) -> Result<Option<(FrameType, Vec<u8>)>, ClientError> {
        let mut header = [0u8; 4];
        match self.read_buffered(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        let (frame_type, length) = tlv::decode_header(header)?;
        let mut payload = vec![0u8; length];
        self.read_buffered(&mut payload)?;
        Ok(Some((frame_type, payload)))
    }

    fn read_json(&mut self) -> Result<Value, ClientError> {
        loop {
            match self.read_frame()? {
                Some((FrameType::Json, payload)) => return Ok(serde_json::from_slice(&payload)?),
                Some(_) => continue,
                None => {
                    return Err(ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection",
                    )));
                }
            }
        }
    }

    /// Write one request frame.
    fn send_request(
        &mut self,
        operation: &str,
        path: &str,
        parameters: Value,
    ) -> Result<(), ClientError> {
        let request = json!({"operation": operation, "path": path, "parameters": parameters});
        let payload = serde_json::to_vec(&request)?;
        self.stream
            .write_all(&tlv::encode(FrameType::Json, &payload)?)?;
        Ok(())
    }

    /// Send a request and return every message until `_requestdone`.
    pub fn request(
        &mut self,
        operation: &str,
        path: &str,
        parameters: Value,
    ) -> Result<Vec<Value>, ClientError> {
        let mut messages = Vec::new();
        let mut invalid = None;
        self.request_each_raw(
            operation,
            path,
            parameters,
            |payload| match serde_json::from_slice(payload) {
                Ok(message) => messages.push(message),
                Err(error) => invalid = Some(error),
            },
        )?;
        match invalid {
            Some(error) => Err(error.into()),
            None => Ok(messages),
        }
    }

    /// Send a request and hand each message, as raw JSON text, to `each` as it arrives (a
    /// 10,000-node answer is never held in memory at once).
    pub fn request_each_raw(
        &mut self,
        operation: &str,
        path: &str,
        parameters: Value,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        self.send_request(operation, path, parameters)?;
        loop {
            match self.read_frame()? {
                Some((FrameType::Json, payload)) => {
                    // The daemon writes compact JSON, so the end marker is recognised unparsed.
                    if payload.starts_with(b"{\"_requestdone\"") {
                        return Ok(());
                    }
                    each(&payload);
                }
                Some(_) => continue,
                None => {
                    return Err(ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the daemon closed the connection",
                    )));
                }
            }
        }
    }

    /// Send a request and hand each message to `each` as it arrives, until `_requestdone`, the
    /// end of the connection, or `each` returning false (for streams such as
    /// `start /events/log`, which only end when the client leaves).
    pub fn stream(
        &mut self,
        operation: &str,
        path: &str,
        parameters: Value,
        mut each: impl FnMut(Value) -> bool,
    ) -> Result<(), ClientError> {
        self.send_request(operation, path, parameters)?;
        loop {
            let message = match self.read_json() {
                Ok(message) => message,
                Err(ClientError::Io(error))
                    if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            if message.get("_requestdone").is_some() || !each(message) {
                return Ok(());
            }
        }
    }
}
