//! The client side of the socket API: connects to the daemon's unix socket (or the one named by
//! `CONFLUENT_HOST`), checks the banner, and sends requests, collecting each one's messages.

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
    #[error(
        "remote servers ({0}) need TLS, which this version cannot do yet; use a unix socket path"
    )]
    RemoteUnsupported(String),
}

pub struct Client {
    stream: UnixStream,
}

/// The socket to use: `CONFLUENT_HOST` when it is a path, else the default state directory's
/// socket when present, else the system one.
pub fn default_socket() -> Result<PathBuf, ClientError> {
    if let Ok(host) = std::env::var("CONFLUENT_HOST")
        && !host.is_empty()
    {
        if host.contains('/') {
            return Ok(PathBuf::from(host));
        }
        return Err(ClientError::RemoteUnsupported(host));
    }
    let local = PathBuf::from(crate::daemon::paths::DEFAULT_STATE_DIR)
        .join("run")
        .join("api.sock");
    if local.exists() {
        return Ok(local);
    }
    Ok(crate::daemon::StatePaths::system().api_socket())
}

impl Client {
    pub fn connect() -> Result<Client, ClientError> {
        let path = default_socket()?;
        Client::connect_to(&path)
    }

    pub fn connect_to(path: &std::path::Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut client = Client { stream };
        match client.read_frame()? {
            Some((FrameType::Text, banner)) if banner.starts_with(b"Confluent -- v") => {}
            other => {
                let text = other
                    .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_default();
                return Err(ClientError::Banner(text));
            }
        }
        let auth = client.read_json()?;
        if auth.get("authpassed").and_then(Value::as_u64) != Some(1) {
            return Err(ClientError::NotAuthorized);
        }
        Ok(client)
    }

    fn read_frame(&mut self) -> Result<Option<(FrameType, Vec<u8>)>, ClientError> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        let (frame_type, length) = tlv::decode_header(header)?;
        let mut payload = vec![0u8; length];
        self.stream.read_exact(&mut payload)?;
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

    /// Send a request and return every message until `_requestdone`.
    pub fn request(
        &mut self,
        operation: &str,
        path: &str,
        parameters: Value,
    ) -> Result<Vec<Value>, ClientError> {
        let request = json!({"operation": operation, "path": path, "parameters": parameters});
        let payload = serde_json::to_vec(&request)?;
        self.stream
            .write_all(&tlv::encode(FrameType::Json, &payload)?)?;
        let mut messages = Vec::new();
        loop {
            let message = self.read_json()?;
            if message.get("_requestdone").is_some() {
                return Ok(messages);
            }
            messages.push(message);
        }
    }
}
