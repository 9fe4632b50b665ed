//! The API over HTTP and HTTPS (reference sections 1.1 and 1.6): the same resource tree as the
//! unix socket, JSON in and out, HTTP/1.1 keep-alive (and h2 over TLS), gzip when asked, and a
//! WebSocket at `/sessions/current/async` for change notifications.
//!
//! Verbs map to operations (GET retrieve, POST create, PUT update, DELETE delete); parameters
//! are the query string merged with a JSON or form body. The messages of a request are merged
//! into one JSON document: `databynode` becomes a list, child links gather under `_links.item`,
//! repeated keys become lists. The tree is served at `/` and under `/confluent-api/`.

pub mod boot;
pub mod files;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiError, Caller, Operation, Request};
use crate::daemon::connections::serve_connections;
use crate::daemon::{Context, Service};

/// Most connections served at once per listener.
const MAX_CONNECTIONS: usize = 8192;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle keep-alive connections are closed after this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpBindError {
    #[error("failed to listen on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct HttpService {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    context: Context,
}

impl HttpService {
    /// Bind `address`; with `tls`, every connection is TLS.
    pub async fn bind(
        address: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        context: Context,
    ) -> Result<HttpService, HttpBindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| HttpBindError::Listen { address, source })?;
        Ok(HttpService {
            listener,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            context,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The axum router: the boot routes (unauthenticated, uncompressed) and the tree. `secure`
/// says whether the listener is HTTPS.
pub fn router(context: Context, secure: bool) -> Router {
    let api = Router::new()
        .route(
            "/sessions/current/async",
            axum::routing::get(websocket::upgrade),
        )
        .fallback(tree)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true));
    boot::routes(secure).merge(api).with_state(context)
}

impl Service for HttpService {
    fn name(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        Box::pin(async move {
            let app = router(self.context.clone(), self.tls.is_some());
            let listener = &self.listener;
            let tls = &self.tls;
            let name = if tls.is_some() { "https" } else { "http" };
            serve_connections(
                name,
                MAX_CONNECTIONS,
                &shutdown,
                || async move { listener.accept().await },
                |(stream, peer), token| {
                    let app = app.clone();
                    let tls = tls.clone();
                    async move {
                        let _ = stream.set_nodelay(true);
                        if let Err(error) = serve_connection(stream, tls, app, token).await {
                            tracing::debug!(%peer, error = %error, "http connection ended with an error");
                        }
                    }
                },
            )
            .await
        })
    }
}

/// One HTTP(S) connection: TLS handshake when configured, then HTTP/1.1 or h2 with upgrades.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let service = hyper::service::service_fn(move |request| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            app.oneshot(request).await
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    match tls {
        Some(acceptor) => {
            let stream = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| "TLS handshake timed out")??;
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            serve_until(connection, shutdown).await
        }
        None => {
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            serve_until(connection, shutdown).await
        }
    }
}

/// Serve a connection, shutting it down gracefully when the daemon stops.
async fn serve_until<C>(connection: C, shutdown: CancellationToken) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Who is calling over HTTP: holders of the administrator token are trusted; everyone else is
/// refused until the authentication issue adds users and sessions.
pub fn http_caller(context: &Context, headers: &HeaderMap) -> Option<Caller> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    context
        .admin_token
        .verify(token)
        .then_some(Caller::AdminToken)
}

fn operation_for(method: &Method) -> Option<Operation> {
    Some(match *method {
        Method::GET | Method::HEAD => Operation::Retrieve,
        Method::POST => Operation::Create,
        Method::PUT | Method::PATCH => Operation::Update,
        Method::DELETE => Operation::Delete,
        _ => return None,
    })
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    with_headers((status, axum::Json(error.to_json())).into_response())
}

/// Security headers on every response (reference 1.6).
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'"),
    );
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=86400"),
    );
    response
}

/// Merge the messages of one request into one document (reference 1.6).
pub fn merge(messages: Vec<Value>) -> Value {
    let mut document = Map::new();
    let mut items = Vec::new();
    let mut by_node = Vec::new();
    for message in messages {
        let Value::Object(map) = message else {
            continue;
        };
        for (key, value) in map {
            match key.as_str() {
                "item" => items.push(value),
                "databynode" => by_node.push(value),
                _ => match document.get_mut(&key) {
                    None => {
                        document.insert(key, value);
                    }
                    Some(Value::Array(list)) if key != "_links" => list.push(value),
                    Some(existing) => {
                        let previous = existing.take();
                        *existing = Value::Array(vec![previous, value]);
                    }
                },
            }
        }
    }
    if !items.is_empty() {
        document.insert("_links".into(), json!({"item": items}));
    }
    if !by_node.is_empty() {
        document.insert("databynode".into(), Value::Array(by_node));
    }
    Value::Object(document)
}

/// Parameters: the query string merged with the body (JSON object or form).
fn parameters(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let mut map = Map::new();
    if let Some(query) = uri.query() {
        for (key, value) in form_pairs(query.as_bytes()) {
            map.insert(key, Value::String(value));
        }
    }
    if !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/json");
        // curl -d sends JSON labelled as a form; accept it as JSON, as a user would expect.
        let looks_like_json = body.first() == Some(&b'{');
        if content_type.starts_with("application/x-www-form-urlencoded") && !looks_like_json {
            for (key, value) in form_pairs(body) {
                map.insert(key, Value::String(value));
            }
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(object)) => map.extend(object),
                Ok(_) => {
                    return Err(ApiError::bad_request(
                        "the request body must be a JSON object",
                    ));
                }
                Err(error) => {
                    return Err(ApiError::bad_request(format!(
                        "the request body is not valid JSON: {error}"
                    )));
                }
            }
        }
    }
    Ok(Value::Object(map))
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|byte| *byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |byte| *byte == b'=');
            let key = percent_decode(parts.next().unwrap_or_default());
            let value = percent_decode(parts.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

/// Decode `%XX` escapes and `+` (form encoding); invalid escapes are kept as they are.
pub fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|text| u8::from_str_radix(text, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resource tree handler.
async fn tree(
    State(context): State<Context>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(caller) = http_caller(&context, &headers) else {
        api::audit::unauthenticated(&context, "anonymous", method.as_str(), uri.path(), "http");
        return error_response(&ApiError::new(
            401,
            "unauthenticated",
            "authentication required (send the administrator token as 'Authorization: Bearer <token>')",
        ));
    };
    let Some(operation) = operation_for(&method) else {
        return error_response(&ApiError::new(
            405,
            "unsupported_operation",
            format!("method {method} is not supported"),
        ));
    };
    let raw_path = uri.path();
    let path = raw_path.strip_prefix("/confluent-api").unwrap_or(raw_path);
    let path = path.strip_suffix(".json").unwrap_or(path);
    let path = percent_decode(path.as_bytes());
    let parameters = match parameters(&uri, &headers, &body) {
        Ok(parameters) => parameters,
        Err(error) => return error_response(&error),
    };
    let request = Request {
        operation,
        path: if path.is_empty() { "/".into() } else { path },
        parameters,
    };
    let messages = api::handle(&context, &caller, request).await.into_values();
    // A whole-request error is the only message: answer with its status.
    if let [message] = messages.as_slice()
        && let Some(code) = message.get("errorcode").and_then(Value::as_u64)
    {
        let status = u16::try_from(code)
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return with_headers((status, axum::Json(message.clone())).into_response());
    }
    let document = merge(messages);
    let mut response = (StatusCode::OK, axum::Json(document)).into_response();
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    with_headers(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_confluent() {
        let merged = merge(vec![
            json!({"item": {"href": "n1/"}}),
            json!({"item": {"href": "n2/"}}),
        ]);
        assert_eq!(
            merged,
            json!({"_links": {"item": [{"href": "n1/"}, {"href": "n2/"}]}})
        );
        let merged = merge(vec![
            json!({"databynode": {"n1": {"a": 1}}}),
            json!({"databynode": {"n2": {"a": 2}}}),
            json!({"warning": "x"}),
            json!({"warning": "y"}),
        ]);
        assert_eq!(
            merged,
            json!({"databynode": [{"n1": {"a": 1}}, {"n2": {"a": 2}}], "warning": ["x", "y"]})
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"n%5B1-4%5D"), "n[1-4]");
        assert_eq!(percent_decode(b"a+b%zz"), "a b%zz");
    }
}
