//! The API over the unix socket (`run/api.sock`) with Confluent's TLV framing (reference 1.8):
//! banner, `{"authpassed": 0|1}`, then requests `{operation, path, parameters}` each answered by
//! one JSON frame per message and `{"_requestdone": 1}`.
//!
//! Unix peers are identified by SO_PEERCRED: root and the daemon's own user are trusted; other
//! local users act as their user record or, failing that, the user group of one of their OS
//! groups; unknown users are refused (audited). TLS peers log in with `{"username", "password"}`
//! (local users, then PAM) or the administrator token `{"token"}`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::{Answer, ApiError, Caller, Operation, Request};
use crate::proto::tlv::{self, FrameType};
use crate::service::Service;
use crate::service::serve_connections;
use futures_util::FutureExt as _;

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
            // SAFETY: geteuid has no preconditions.
            let own_uid = unsafe { libc::geteuid() };
            let listener = &self.listener;
            let context = &self.context;
            let result = serve_connections(
                "api-unix-socket",
                MAX_CONNECTIONS,
                &shutdown,
                || async move { listener.accept().await.map(|(stream, _)| stream) },
                |stream, token| {
                    let context = context.clone();
                    async move {
                        let uid = match stream.peer_cred() {
                            Ok(credentials) => credentials.uid(),
                            Err(error) => {
                                tracing::debug!(error = %crate::error::Chain(&error), "no peer credentials; dropping connection");
                                return;
                            }
                        };
                        let peer = if uid == 0 || uid == own_uid {
                            Peer::Trusted(Caller::LocalTrusted { uid })
                        } else {
                            // Reads the OS account databases (NSS): off the async workers.
                            let auth = context.auth.clone();
                            let config = context.config.clone();
                            let identity = tokio::task::spawn_blocking(move || {
                                auth.identity_for_uid(&config, uid)
                            })
                            .await
                            .ok()
                            .flatten();
                            match identity {
                                Some(identity) => Peer::Trusted(Caller::User(Arc::new(identity))),
                                None => Peer::Refused { uid },
                            }
                        };
                        if let Err(error) = serve(stream, peer, context, token).await {
                            tracing::debug!(error = %crate::error::Chain(&error), "api socket connection ended with an error");
                        }
                    }
                },
            )
            .await;
            let _ = std::fs::remove_file(&self.path);
            result
        })
    }
}

/// The same protocol over TLS on TCP (default port 13001), for remote CLI use.
pub struct TlsSocketService {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    context: Context,
}

impl TlsSocketService {
    pub async fn bind(
        address: std::net::SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        context: Context,
    ) -> Result<Self, std::io::Error> {
        Ok(TlsSocketService {
            listener: TcpListener::bind(address).await?,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            context,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

impl Service for TlsSocketService {
    fn name(&self) -> &'static str {
        "api-tls-socket"
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let listener = &self.listener;
            let acceptor = &self.acceptor;
            let context = &self.context;
            serve_connections(
                "api-tls-socket",
                MAX_CONNECTIONS,
                &shutdown,
                || async move { listener.accept().await },
                |(stream, peer), token| {
                    let acceptor = acceptor.clone();
                    let context = context.clone();
                    async move {
                        let handshake = acceptor.accept(stream);
                        let stream = match tokio::time::timeout(Duration::from_secs(30), handshake).await {
                            Ok(Ok(stream)) => stream,
                            _ => {
                                tracing::debug!(%peer, "TLS handshake on the api socket failed");
                                return;
                            }
                        };
                        if let Err(error) = serve(stream, Peer::Anonymous, context, token).await {
                            tracing::debug!(%peer, error = %crate::error::Chain(&error), "TLS api connection ended with an error");
                        }
                    }
                },
            )
            .await
        })
    }
}

/// Frames read from a peer.
pub enum Frame {
    Text(Vec<u8>),
    Json(Value),
    /// A well-framed payload that is not valid JSON: answered with a 400, not a disconnect.
    BadJson(String),
}

/// Once a frame header has arrived, its payload must follow within this time.
const PAYLOAD_TIMEOUT: Duration = Duration::from_secs(30);

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
    // Memory grows with the bytes that actually arrive: a header announcing 16 MiB costs
    // nothing until the peer sends them (thousands of idle peers could otherwise pin GBs).
    let mut payload = Vec::with_capacity(length.min(64 * 1024));
    let read = async {
        let received = (&mut *stream)
            .take(u64::try_from(length).unwrap_or(u64::MAX))
            .read_to_end(&mut payload)
            .await?;
        if received < length {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            ));
        }
        Ok(())
    };
    match tokio::time::timeout(PAYLOAD_TIMEOUT, read).await {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            return Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "frame payload not received in time",
            )));
        }
    }
    Ok(Some(match frame_type {
        FrameType::Json => match serde_json::from_slice(&payload) {
            Ok(value) => Frame::Json(value),
            Err(error) => Frame::BadJson(error.to_string()),
        },
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

/// Who the transport says a peer is.
pub enum Peer {
    /// Identified by the transport (unix peer credentials).
    Trusted(Caller),
    /// A local user with no authorization: refused and disconnected.
    Refused { uid: u32 },
    /// Must log in (TLS).
    Anonymous,
}

/// Failed log-ins before the connection is closed.
const MAX_FAILED_LOGINS: u32 = 3;

/// Serve one connection of the TLV protocol. A peer the transport did not identify must log in
/// first, with `{"username", "password"}` or the administrator token `{"token"}`.
pub async fn serve<S>(
    stream: S,
    peer: Peer,
    context: Context,
    shutdown: CancellationToken,
) -> Result<(), FrameError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let origin = super::Origin {
        transport: match peer {
            Peer::Anonymous => "tls-socket",
            _ => "unix-socket",
        },
        session: None,
    };
    let (mut reader, writer) = tokio::io::split(stream);
    let mut writer = BufWriter::new(writer);
    writer
        .write_all(&tlv::encode(FrameType::Text, BANNER.as_bytes())?)
        .await?;
    let mut caller = match peer {
        Peer::Trusted(caller) => Some(caller),
        Peer::Anonymous => None,
        Peer::Refused { uid } => {
            // Reference 6: an unknown local user's connection is closed; the refusal is audited.
            super::audit::unauthenticated(
                &context,
                &format!("uid={uid}"),
                "connect",
                "",
                "socket",
                "local user without a user record or user group",
            );
            write_json(
                &mut writer,
                &json!({"authpassed": 0, "errorcode": 403, "error": format!("local user {uid} is not authorized")}),
            )
            .await?;
            writer.flush().await?;
            return Ok(());
        }
    };
    write_json(
        &mut writer,
        &json!({"authpassed": u8::from(caller.is_some())}),
    )
    .await?;
    writer.flush().await?;
    let mut failed_logins = 0u32;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader)) => match frame {
                Ok(frame) => frame?,
                Err(_) => return Ok(()),
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let message = match frame {
            Frame::Json(message) => message,
            Frame::BadJson(reason) => {
                write_json(
                    &mut writer,
                    &ApiError::bad_request(format!("invalid JSON in request: {reason}")).to_json(),
                )
                .await?;
                write_json(&mut writer, &json!({"_requestdone": 1})).await?;
                writer.flush().await?;
                continue;
            }
            Frame::Text(_) => {
                write_json(
                    &mut writer,
                    &ApiError::bad_request("expected a JSON request frame").to_json(),
                )
                .await?;
                write_json(&mut writer, &json!({"_requestdone": 1})).await?;
                writer.flush().await?;
                continue;
            }
        };
        let Some(trusted) = caller.clone() else {
            // Log-in phase.
            match login(&context, &message).await {
                Ok(authenticated) => {
                    caller = Some(authenticated);
                    write_json(&mut writer, &json!({"authpassed": 1})).await?;
                }
                Err((claimed, reason)) => {
                    failed_logins += 1;
                    let operation = message
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("login");
                    let target = message.get("path").and_then(Value::as_str).unwrap_or("");
                    super::audit::unauthenticated(
                        &context, &claimed, operation, target, "socket", &reason,
                    );
                    write_json(
                        &mut writer,
                        &json!({"authpassed": 0, "errorcode": 401, "error": format!("authentication failed: {reason}")}),
                    )
                    .await?;
                    if failed_logins >= MAX_FAILED_LOGINS {
                        writer.flush().await?;
                        return Ok(());
                    }
                }
            }
            writer.flush().await?;
            continue;
        };
        let answer = match parse_request(&message) {
            Ok(request) => super::handle(&context, &trusted, origin, request).await,
            Err(error) => Err(ApiError::bad_request(error)),
        };
        let large = match &answer {
            Ok(Answer::Values(messages)) => messages.len() >= LARGE_ANSWER,
            Ok(Answer::Encoded(messages)) => messages.len() >= LARGE_ANSWER,
            _ => false,
        };
        match answer {
            Err(error) => write_json(&mut writer, &error.to_json()).await?,
            Ok(Answer::Values(messages)) => {
                for message in &messages {
                    write_json(&mut writer, message).await?;
                }
            }
            Ok(Answer::Encoded(messages)) => {
                for message in &messages {
                    writer
                        .write_all(&tlv::encode(FrameType::Json, message)?)
                        .await?;
                }
            }
            Ok(Answer::Document(document)) => {
                writer
                    .write_all(&tlv::encode(FrameType::Json, &document)?)
                    .await?;
            }
            Ok(Answer::Text { body, .. }) => {
                write_json(&mut writer, &json!({ "text": body })).await?;
            }
            Ok(Answer::Stream(stream)) => {
                // The connection now belongs to the stream until the client goes away.
                return forward_stream(&mut reader, &mut writer, stream, shutdown).await;
            }
        }
        write_json(&mut writer, &json!({"_requestdone": 1})).await?;
        writer.flush().await?;
        if large {
            release_freed_memory();
        }
    }
}

/// The log-in frame: `{"username", "password"}` or `{"token"}`. On failure, the user it claimed
/// to be (for the audit) and the reason.
async fn login(context: &Context, message: &Value) -> Result<Caller, (String, String)> {
    if let Some(token) = message.get("token").and_then(Value::as_str) {
        return if context.admin_token.verify(token) {
            Ok(Caller::AdminToken)
        } else {
            Err(("anonymous".into(), "wrong administrator token".into()))
        };
    }
    let username = message.get("username").and_then(Value::as_str);
    let password = message.get("password").and_then(Value::as_str);
    let (Some(username), Some(password)) = (username, password) else {
        return Err((
            "anonymous".into(),
            "log in first with username and password".into(),
        ));
    };
    context
        .auth
        .login(&context.config, username, password)
        .await
        .map(Caller::User)
        .map_err(|error| (username.chars().take(130).collect(), error.to_string()))
}

/// Answers with at least this many messages are followed by returning freed memory to the OS.
const LARGE_ANSWER: usize = 1000;

/// glibc keeps freed memory in per-thread arenas; after a 10,000-node answer that is hundreds
/// of megabytes the daemon would otherwise hold on to.
fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Send a streamed answer's messages as they come (a batch per flush) until the stream ends,
/// the client goes away (end of input; other input while streaming is ignored) or the daemon
/// stops. Dropping the stream cancels whatever produced it.
async fn forward_stream<R, W>(
    reader: &mut R,
    writer: &mut W,
    mut stream: super::MessageStream,
    shutdown: CancellationToken,
) -> Result<(), FrameError>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    use futures_util::StreamExt as _;
    let mut scratch = [0u8; 512];
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            read = reader.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(message) = message else {
            write_json(writer, &json!({"_requestdone": 1})).await?;
            writer.flush().await?;
            return Ok(());
        };
        write_json(writer, &message).await?;
        // Whatever else is ready goes out in the same flush.
        while let Some(Some(message)) = stream.next().now_or_never() {
            write_json(writer, &message).await?;
        }
        writer.flush().await?;
    }
}

/// Parse a request frame `{operation, path, parameters}`.
pub fn parse_request(message: &Value) -> Result<Request, String> {
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
