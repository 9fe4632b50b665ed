//! The API over the unix socket (`run/api.sock`) with Confluent's TLV framing (reference 1.8):
//! banner, `{"authpassed": 0|1}`, then requests `{operation, path, parameters}` each answered by
//! one JSON frame per message and `{"_requestdone": 1}`.
//!
//! Peers are identified by SO_PEERCRED: root and the daemon's own user are trusted; everyone else
//! is refused until the authentication issue lands.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Caller, Operation, Request};
use crate::daemon::{Context, Service};
use crate::proto::tlv::{self, FrameType};

/// Banner sent first on every connection (protocol version 4).
pub const BANNER: &str = "Confluent -- v4 --";
/// Most connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum SocketBindError {
    #[error("failed to remove stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to bind unix socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set permissions of {path}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct UnixSocketService {
    listener: UnixListener,
    path: PathBuf,
    context: Context,
}

impl UnixSocketService {
    /// Bind the socket (replacing a stale one left by a killed daemon: the pid lock guarantees
    /// no live daemon owns it) with the given permission bits.
    pub fn bind(path: &Path, mode: u32, context: Context) -> Result<Self, SocketBindError> {
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(path).map_err(|source| SocketBindError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|source| SocketBindError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| SocketBindError::Permissions {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(UnixSocketService {
            listener,
            path: path.to_path_buf(),
            context,
        })
    }

    pub fn local_path(&self) -> &Path {
        &self.path
    }
}

impl Service for UnixSocketService {
    fn name(&self) -> &'static str {
        "api-unix-socket"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let tracker = TaskTracker::new();
            let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            // SAFETY: geteuid has no preconditions.
            let own_uid = unsafe { libc::geteuid() };
            loop {
                let permit = tokio::select! {
                    permit = limit.clone().acquire_owned() => permit?,
                    () = shutdown.cancelled() => break,
                };
                let accepted = tokio::select! {
                    accepted = self.listener.accept() => accepted,
                    () = shutdown.cancelled() => break,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(error = %error, "accept on the api socket failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let caller = match stream.peer_cred() {
                    Ok(credentials) if credentials.uid() == 0 || credentials.uid() == own_uid => {
                        Caller::LocalTrusted {
                            uid: credentials.uid(),
                        }
                    }
                    Ok(credentials) => Caller::LocalUser {
                        uid: credentials.uid(),
                    },
                    Err(error) => {
                        tracing::debug!(error = %error, "no peer credentials; dropping connection");
                        continue;
                    }
                };
                let context = self.context.clone();
                let token = shutdown.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    if let Err(error) = serve(stream, caller, context, token).await {
                        tracing::debug!(error = %error, "api socket connection ended with an error");
                    }
                });
            }
            tracker.close();
            let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
            let _ = std::fs::remove_file(&self.path);
            Ok(())
        })
    }
}

/// Frames read from a peer.
pub enum Frame {
    Text(Vec<u8>),
    Json(Value),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection i/o failed")]
    Io(#[from] std::io::Error),
    #[error("invalid frame")]
    Framing(#[from] tlv::TlvError),
    #[error("invalid JSON in frame")]
    Json(#[from] serde_json::Error),
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let (frame_type, length) = tlv::decode_header(header)?;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    Ok(Some(match frame_type {
        FrameType::Json => Frame::Json(serde_json::from_slice(&payload)?),
        FrameType::Text | FrameType::FileDescriptor => Frame::Text(payload),
    }))
}

pub async fn write_json(
    stream: &mut (impl AsyncWriteExt + Unpin),
    value: &Value,
) -> Result<(), FrameError> {
    let payload = serde_json::to_vec(value)?;
    stream
        .write_all(&tlv::encode(FrameType::Json, &payload)?)
        .await?;
    Ok(())
}

async fn serve(
    stream: UnixStream,
    caller: Caller,
    context: Context,
    shutdown: CancellationToken,
) -> Result<(), FrameError> {
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
    writer
        .write_all(&tlv::encode(FrameType::Text, BANNER.as_bytes())?)
        .await?;
    let trusted = matches!(caller, Caller::LocalTrusted { .. });
    write_json(&mut writer, &json!({"authpassed": u8::from(trusted)})).await?;
    writer.flush().await?;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader)) => match frame {
                Ok(frame) => frame?,
                Err(_) => return Ok(()),
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let Frame::Json(message) = frame else {
            write_json(
                &mut writer,
                &json!({"errorcode": 400, "error": "expected a JSON request frame"}),
            )
            .await?;
            writer.flush().await?;
            continue;
        };
        if !trusted {
            // Credentials are not accepted yet: the authentication issue adds them.
            write_json(
                &mut writer,
                &json!({"authpassed": 0, "errorcode": 401, "error": "this user is not authorized (password login is not available yet)"}),
            )
            .await?;
            writer.flush().await?;
            return Ok(());
        }
        let messages = match parse_request(&message) {
            Ok(request) => {
                let span = tracing::debug_span!("api", operation = request.operation.as_str(), path = %request.path);
                let _entered = span.enter();
                drop(_entered);
                super::handle(&context, &caller, request).await
            }
            Err(error) => vec![json!({"errorcode": 400, "error": error})],
        };
        for message in &messages {
            write_json(&mut writer, message).await?;
        }
        write_json(&mut writer, &json!({"_requestdone": 1})).await?;
        writer.flush().await?;
    }
}

fn parse_request(message: &Value) -> Result<Request, String> {
    let operation = message
        .get("operation")
        .and_then(Value::as_str)
        .ok_or("request without an operation")?;
    let operation =
        Operation::parse(operation).ok_or_else(|| format!("unknown operation '{operation}'"))?;
    let path = message
        .get("path")
        .and_then(Value::as_str)
        .ok_or("request without a path")?
        .to_string();
    let parameters = message
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let parameters = if parameters.is_null() {
        Value::Object(Default::default())
    } else {
        parameters
    };
    Ok(Request {
        operation,
        path,
        parameters,
    })
}
