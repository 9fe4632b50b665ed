//! The API over HTTP and HTTPS (reference sections 1.1 and 1.6): the same resource tree as the
//! unix socket, JSON in and out, HTTP/1.1 keep-alive (and h2 over TLS), gzip when asked, and a
//! WebSocket at `/sessions/current/async` for change notifications.
//!
//! Verbs map to operations (GET retrieve, POST create, PUT update, DELETE delete); parameters
//! are the query string merged with a JSON or form body. The messages of a request are merged
//! into one JSON document: `databynode` becomes a list, child links gather under `_links.item`,
//! repeated keys become lists. The tree is served at `/` and under `/confluent-api/`.
//!
//! Authentication (reference 6): a session (cookie `confluentsessionid` or header
//! `ConfluentSession`), HTTP Basic (which opens a session), the administrator bearer token, or a
//! node's `CONFLUENT_NODENAME` + `CONFLUENT_APIKEY`. `/sessions/current/info` and
//! `/sessions/current/logout` describe and end the session.
//!
//! Plain HTTP (no TLS) serves only the public boot paths (`/boot/`, `/confluent-public/`) unless
//! the daemon runs with `--http-allow-api` (a trusted network, or a TLS-terminating proxy).

pub mod boot;
pub mod files;
pub mod sendfile;
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

use crate::api::{self, ApiError, Caller, ErrorCode, Operation, Request};
use crate::auth::LoginError;
use crate::eventlog::domain::{DomainEvent, TlsIncompatible};
use crate::service::Service;
use crate::service::serve_connections;

/// What the HTTP(S) listeners share: the API's context, the boot files and identities the
/// unauthenticated boot routes serve, and the small-file cache of those routes.
#[derive(Clone)]
pub struct Context {
    pub api: api::Context,
    pub boot: Arc<crate::boot::Boot>,
    /// Small boot files recently served.
    pub file_cache: Arc<files::SmallFileCache>,
    /// Serve `/metrics` without authentication, also on plain HTTP (`--metrics-public`).
    pub metrics_public: bool,
}

impl Context {
    pub fn new(api: api::Context, boot: Arc<crate::boot::Boot>) -> Context {
        Context {
            api,
            boot,
            file_cache: Arc::default(),
            metrics_public: false,
        }
    }

    /// Serve `/metrics` to anyone (a scrape target on a trusted network).
    pub fn with_public_metrics(mut self, public: bool) -> Context {
        self.metrics_public = public;
        self
    }
}

/// The address of the client of a request, for the boot phase metrics (set by the connection
/// loop on every request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The metrics route.
pub const METRICS_PATH: &str = "/metrics";

/// Most connections served at once per listener.
const MAX_CONNECTIONS: usize = 8192;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle keep-alive connections are closed after this long.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

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
    allow_plain_api: bool,
}

/// What a listener is, for the plain-HTTP guard and the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub tls: bool,
    /// Serve the API without TLS (`--http-allow-api`).
    pub allow_plain_api: bool,
}

impl Transport {
    fn name(self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// Path prefixes plain HTTP always serves: what booting nodes fetch before they have any
/// credential or trust (served by the boot modules, never by the API tree).
pub const PUBLIC_PREFIXES: [&str; 2] = ["/boot/", "/confluent-public/"];

/// Session cookie name (reference 6).
pub const SESSION_COOKIE: &str = "confluentsessionid";
/// Header carrying a session id instead of the cookie.
pub const SESSION_HEADER: &str = "confluentsession";

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
            allow_plain_api: false,
        })
    }

    /// Serve the API over this listener even without TLS (`--http-allow-api`).
    pub fn allow_plain_api(mut self, allow: bool) -> HttpService {
        self.allow_plain_api = allow;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The axum router: the boot routes (public, uncompressed) and the tree behind the plain-HTTP
/// guard.
pub fn router(context: Context, transport: Transport) -> Router {
    let api = Router::new()
        .route(
            "/sessions/current/async",
            axum::routing::get(websocket::upgrade),
        )
        .fallback(tree)
        .layer(axum::middleware::from_fn_with_state(
            transport,
            plain_http_guard,
        ))
        .layer(axum::Extension(transport))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                // Streamed answers go out as they come; a compressor would hold them back.
                .compress_when(tower_http::compression::Predicate::and(
                    tower_http::compression::predicate::DefaultPredicate::new(),
                    tower_http::compression::predicate::NotForContentType::new(
                        "application/x-ndjson",
                    ),
                )),
        );
    let mut public = boot::routes(transport.tls);
    if context.metrics_public {
        // Outside the plain-HTTP guard and authentication: a scrape target on a trusted
        // network.
        public = public.route(METRICS_PATH, axum::routing::get(metrics_response));
    }
    public.merge(api).with_state(context)
}

/// `/metrics`: the OpenMetrics text of every metric.
async fn metrics_response(State(context): State<Context>) -> Response {
    let text = context.api.metrics.encode();
    with_headers(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
    )
}

/// Without TLS, only the public boot paths pass (unless `--http-allow-api`): credentials and
/// configuration must not cross an untrusted network in clear.
async fn plain_http_guard(
    State(transport): State<Transport>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if transport.tls
        || transport.allow_plain_api
        || PUBLIC_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
    {
        return next.run(request).await;
    }
    error_response(&ApiError::new(
        ErrorCode::TlsRequired,
        "the API is served over HTTPS only (start confluentd with --http-allow-api to allow plain HTTP)",
    ))
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
            let transport = Transport {
                tls: self.tls.is_some(),
                allow_plain_api: self.allow_plain_api,
            };
            let app = router(self.context.clone(), transport);
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
                    let boot = self.context.boot.clone();
                    let cache = self.context.file_cache.clone();
                    let events = self.context.api.events.clone();
                    let metrics = self.context.api.metrics.clone();
                    async move {
                        let _ = stream.set_nodelay(true);
                        let peer_info = Peer {
                            address: peer,
                            events,
                            metrics,
                        };
                        if let Err(error) =
                            serve_connection(stream, peer_info, tls, app, boot, cache, token).await
                        {
                            tracing::debug!(%peer, error = %crate::error::Chain(&*error), "http connection ended with an error");
                        }
                    }
                },
            )
            .await
        })
    }
}

/// Who is at the other end of a connection, and where to report what went wrong with it.
struct Peer {
    address: std::net::SocketAddr,
    events: Arc<crate::eventlog::EventLogs>,
    /// Where the connection's `sendfile` transfers are counted.
    metrics: Arc<crate::metrics::Metrics>,
}

/// One HTTP(S) connection: TLS handshake when configured, then HTTP/1.1 or h2 with upgrades.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: Peer,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    boot: Arc<crate::boot::Boot>,
    cache: Arc<files::SmallFileCache>,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = ClientAddress(peer.address.ip());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        let app = app.clone();
        request.extensions_mut().insert(client);
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
            let stream = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                Err(_) => return Err("TLS handshake timed out".into()),
                Ok(Err(error)) => {
                    report_incompatible_client(&error, &peer, &boot);
                    return Err(error.into());
                }
                Ok(Ok(stream)) => stream,
            };
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            serve_until(connection, shutdown).await
        }
        None => {
            // Large public files first, with sendfile; hyper takes whatever comes next.
            let mut stream = stream;
            let next = tokio::select! {
                next = sendfile::serve_leading_files(&mut stream, &boot, &cache, &peer.metrics) => next?,
                () = shutdown.cancelled() => return Ok(()),
            };
            if let sendfile::Next::Close = next {
                return Ok(());
            }
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
            serve_until(connection, shutdown).await
        }
    }
}

/// A client that offers no cipher suite or key exchange group in common is most often UEFI firmware too old for HTTPS
/// boot: EDK2 before 2023 (Debian 12's OVMF included) offers only RSA and DHE key exchange,
/// which rustls does not implement. Say so in the log and as a `boot.tls` event (of the node
/// whose reserved address the client has, if any), so that "why didn't node X boot?" has an
/// answer.
fn report_incompatible_client(error: &std::io::Error, peer: &Peer, boot: &crate::boot::Boot) {
    let incompatible = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|error| {
            matches!(
                error,
                rustls::Error::PeerIncompatible(
                    rustls::PeerIncompatible::NoCipherSuitesInCommon
                        | rustls::PeerIncompatible::NoKxGroupsInCommon
                )
            )
        });
    if !incompatible {
        return;
    }
    let node = match peer.address.ip() {
        std::net::IpAddr::V4(address) => boot
            .directory
            .read()
            .reserved_for(address)
            .map(|node| node.name.to_string()),
        std::net::IpAddr::V6(_) => None,
    };
    let hint = "the client offers no ECDHE key exchange (UEFI firmware based on EDK2 before 2023 \
                does this): HTTPS boot needs newer firmware, or deployment.useinsecureprotocols \
                firmware for plain HTTP and TFTP during the firmware phase";
    tracing::warn!(peer = %peer.address, node = node.as_deref().unwrap_or("-"), "TLS handshake failed: no key exchange in common; {hint}");
    let mut event = crate::eventlog::Event::from(DomainEvent::BootTls(TlsIncompatible {
        peer: peer.address,
        outcome: "no TLS key exchange in common".to_string(),
        hint: hint.to_string(),
    }));
    if let Some(node) = node {
        event = event.node(node);
    }
    // Never blocks; a full queue is counted by the log itself.
    let _ = peer.events.events.append(event);
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

/// An authenticated HTTP caller.
pub struct Authenticated {
    pub caller: Caller,
    /// The session the request used or opened.
    pub session: Option<String>,
    /// True when this request opened the session (HTTP Basic): the cookie is set.
    pub opened: bool,
}

/// Why a request was not authenticated: the answer, and for the audit the user it claimed to
/// be and the reason.
pub struct Refusal {
    pub error: ApiError,
    pub claimed: String,
    pub reason: String,
}

fn refusal(claimed: &str, reason: impl Into<String>, message: &str) -> Refusal {
    Refusal {
        error: ApiError::new(ErrorCode::Unauthenticated, message),
        claimed: claimed.chars().take(130).collect(),
        reason: reason.into(),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The session id a request carries (header first, then cookie).
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    if let Some(id) = header_text(headers, SESSION_HEADER) {
        return Some(id.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            let (name, value) = cookie.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value)
        })
}

/// Who is calling over HTTP(S): a node's API key, the administrator token, a session, or HTTP
/// Basic credentials (local user, then PAM), which open a session.
pub async fn authenticate(
    context: &Context,
    headers: &HeaderMap,
) -> Result<Authenticated, Refusal> {
    let plain = |caller| Authenticated {
        caller,
        session: None,
        opened: false,
    };
    if let Some(node) = header_text(headers, "confluent_nodename") {
        let key = header_text(headers, "confluent_apikey").unwrap_or_default();
        let name = context.api.config.read(|store| store.canonical_node(node));
        return match name {
            Some(name)
                if context
                    .api
                    .auth
                    .check_node_key(&context.api.config, &name, key)
                    .await =>
            {
                Ok(plain(Caller::Node { name }))
            }
            _ => Err(refusal(
                &format!("node:{node}"),
                "wrong node API key",
                "node authentication failed",
            )),
        };
    }
    let authorization = header_text(headers, header::AUTHORIZATION.as_str());
    if let Some(token) = authorization.and_then(|value| value.strip_prefix("Bearer ")) {
        return if context.api.admin_token.verify(token.trim()) {
            Ok(plain(Caller::AdminToken))
        } else {
            Err(refusal(
                "admin-token",
                "wrong administrator token",
                "authentication failed",
            ))
        };
    }
    let basic = authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .map(str::trim);
    if let Some(id) = session_id(headers) {
        if let Some(identity) = context.api.auth.sessions.lookup(id) {
            return Ok(Authenticated {
                caller: Caller::User(identity),
                session: Some(id.to_string()),
                opened: false,
            });
        }
        if basic.is_none() {
            return Err(refusal(
                "anonymous",
                "unknown or expired session",
                "the session has expired; log in again",
            ));
        }
    }
    let Some(encoded) = basic else {
        return Err(refusal(
            "anonymous",
            "no credentials",
            "authentication required (HTTP Basic, a session, or the administrator token)",
        ));
    };
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(zeroize::Zeroizing::new);
    let Some((user, password)) = decoded.as_ref().and_then(|text| text.split_once(':')) else {
        return Err(refusal(
            "anonymous",
            "malformed Basic credentials",
            "authentication failed",
        ));
    };
    match context
        .api
        .auth
        .login(&context.api.config, user, password)
        .await
    {
        Ok(identity) => {
            let session = context
                .api
                .auth
                .sessions
                .create(identity.clone())
                .map_err(|_| {
                    refusal(
                        user,
                        LoginError::TooManySessions.to_string(),
                        "too many sessions",
                    )
                })?;
            Ok(Authenticated {
                caller: Caller::User(identity),
                session: Some(session),
                opened: true,
            })
        }
        Err(error) => Err(refusal(user, error.to_string(), "authentication failed")),
    }
}

/// A 401 answer: `WWW-Authenticate: Basic realm="confluent"` unless the client asked not to be
/// prompted (reference 6).
pub fn unauthorized(error: &ApiError, request_headers: &HeaderMap) -> Response {
    let mut response = error_response(error);
    if request_headers.get("suppressauthheader").is_none()
        && request_headers.get("confluentauthtoken").is_none()
    {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"confluent\""),
        );
    }
    response
}

fn session_cookie(id: &str, max_age: Option<u64>) -> Option<HeaderValue> {
    let expiry = match max_age {
        Some(seconds) => format!("; Max-Age={seconds}"),
        None => String::new(),
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Secure; HttpOnly; Path=/; SameSite=Strict{expiry}"
    ))
    .ok()
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
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
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
    axum::Extension(transport): axum::Extension<Transport>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authenticated = match authenticate(&context, &headers).await {
        Ok(authenticated) => authenticated,
        Err(refusal) => {
            api::audit::unauthenticated(
                &context.api,
                &refusal.claimed,
                method.as_str(),
                uri.path(),
                transport.name(),
                &refusal.reason,
            );
            return unauthorized(&refusal.error, &headers);
        }
    };
    let mut response = tree_authenticated(
        &context,
        &authenticated,
        transport,
        method,
        &uri,
        &headers,
        &body,
    )
    .await;
    if authenticated.opened
        && let Some(id) = &authenticated.session
        && let Some(cookie) = session_cookie(id, None)
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn tree_authenticated(
    context: &Context,
    authenticated: &Authenticated,
    transport: Transport,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let caller = &authenticated.caller;
    let Some(operation) = operation_for(&method) else {
        return error_response(&ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!("method {method} is not supported"),
        ));
    };
    let raw_path = uri.path();
    let path = raw_path.strip_prefix("/confluent-api").unwrap_or(raw_path);
    let path = path.strip_suffix(".json").unwrap_or(path);
    let path = percent_decode(path.as_bytes());
    let parameters = match parameters(uri, headers, body) {
        Ok(parameters) => parameters,
        Err(error) => return error_response(&error),
    };
    let request = Request {
        operation,
        path: if path.is_empty() { "/".into() } else { path },
        parameters,
    };
    let logout = request.path.trim_end_matches('/') == "/sessions/current/logout";
    let origin = api::Origin {
        transport: transport.name(),
        session: authenticated.session.as_deref(),
    };
    let answer = api::handle(&context.api, caller, origin, request).await;
    let messages = match answer {
        Err(error) => return error_response(&error),
        Ok(api::Answer::Document(document)) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                document,
            )
                .into_response();
            if method == Method::HEAD {
                *response.body_mut() = Body::empty();
            }
            return with_headers(response);
        }
        Ok(api::Answer::Text { content_type, body }) => {
            return with_headers(
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
            );
        }
        Ok(api::Answer::Stream(stream)) => return stream_response(stream),
        Ok(answer) => answer.into_values(),
    };
    if logout {
        let mut response =
            with_headers((StatusCode::OK, axum::Json(merge(messages))).into_response());
        if let Some(cookie) = session_cookie("", Some(0)) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        return response;
    }
    let document = merge(messages);
    let mut response = (StatusCode::OK, axum::Json(document)).into_response();
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    with_headers(response)
}

/// A streamed answer over HTTP: one JSON message per line (`application/x-ndjson`), sent as
/// each arrives; the client closing the connection drops the stream.
fn stream_response(stream: api::MessageStream) -> Response {
    use futures_util::StreamExt as _;
    let lines = stream
        .map(|message| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{message}\n"))));
    with_headers(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(lines),
        )
            .into_response(),
    )
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
