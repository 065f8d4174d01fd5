//! The relay's built-in HTTP server: the call list and call pages (plain server-rendered HTML,
//! no JavaScript), the JSON API, `/metrics`, `/healthz` and `/readyz`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the latest calls, newest first, 50 a page (`?page=N`), with filters |
//! | `GET /calls/<id>` | one call: summary, parties, every record field, deliveries, raw JSON |
//! | `GET /api/v1/calls` | `{"calls":[..],"page":N,"per_page":M,"total":T}` (`per_page` up to 500) |
//! | `GET /api/v1/calls/<id>` | the call's JSON plus `"deliveries"`; 404 when unknown |
//! | `GET /api/v1/records/<page>` | CMS records as the sample receiver's API shows them: 20 a page, newest first, `{"records":0}` past the end |
//! | `POST /cdr` | `cdr-receiver` only: a CMS CDR batch (see [`crate::receiver`]) |
//! | `GET /api/v1/dead-letters` | the latest dead letters (`?limit=`, up to 1000) |
//! | `GET /metrics` | [`Metrics::render`] with the outbox counts, OpenMetrics text |
//! | `GET /healthz` | 200 `ok` while the process runs |
//! | `GET /readyz` | 200 when the source is connected and no sink's oldest pending delivery is older than [`WebOptions::ready_max_pending_age`]; 503 with the reason otherwise |
//!
//! The call list and `/api/v1/calls` take the same filters: `from` and `to` (compared with the
//! call's start, PBX local time, as a prefix of `YYYY-MM-DDTHH:MM:SS`, so `to=2018-01-05`
//! includes that whole day), `number` (part of the caller or the called number), `direction`
//! (`inbound`, `outbound` or `internal`) and `complete` (`true` or `false`). Empty values are
//! ignored, so a submitted filter form with blank fields works.
//!
//! The server only reads the database: each request opens its own read-only connection (the
//! file is in WAL mode, so reading never blocks the relay's writer). A database that does not
//! exist yet reads as one with no calls.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cdr_sinks::outbox::{Outbox, SinkCounts};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::metrics::{self, Metrics};

/// Calls per page of the HTML list, and the default `per_page` of the API.
pub const PAGE_SIZE: u64 = 50;

/// The largest `per_page` the API accepts (larger values are lowered to it).
pub const MAX_PER_PAGE: u64 = 500;

/// The largest `limit` of `/api/v1/dead-letters`.
pub const MAX_DEAD_LETTERS: u64 = 1000;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct WebState {
    /// The outbox database (the call store); it may not exist yet.
    pub db: PathBuf,
    /// The process's metrics (also the source's connected flag `/readyz` reads).
    pub metrics: Arc<Metrics>,
    /// The title of the HTML pages (for example the site's name).
    pub title: String,
    /// The CMS CDR receiver (`cdr-receiver`): `POST` to its path goes there.
    pub receiver: Option<Arc<crate::receiver::CdrReceiver>>,
    /// Serve HTTPS with this (certificate files given); plain HTTP when `None`.
    pub tls: Option<WebTls>,
}

/// The TLS side of the server: an acceptor made from certificate and key files.
#[derive(Clone)]
pub struct WebTls(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for WebTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebTls")
    }
}

impl WebTls {
    /// Loads a PEM certificate chain and its PEM private key (rustls, ring provider; HTTP/2
    /// and HTTP/1.1 offered by ALPN).
    pub fn from_files(cert: &Path, key: &Path) -> io::Result<Self> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &Path, e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {e}", what.display()),
            )
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| bad(cert, &e))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Limits and timeouts of the server; [`serve`] uses the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOptions {
    /// How long a client may take to send a request's headers (HTTP/1) before the connection
    /// is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long one request may take to answer before it gets a 503. Default 30 s.
    pub request_timeout: Duration,
    /// How long one connection may stay open; then it is closed gracefully (keep-alive clients
    /// reconnect). Default 120 s.
    pub connection_max_age: Duration,
    /// Connections served at once; more wait in the listen backlog. Default 256.
    pub max_connections: usize,
    /// How long connections may take to finish their requests at shutdown. Default 5 s.
    pub shutdown_grace: Duration,
    /// `/readyz` fails while a sink's oldest pending delivery is older than this. Default 15 min.
    pub ready_max_pending_age: Duration,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connection_max_age: Duration::from_secs(120),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(5),
            ready_max_pending_age: Duration::from_secs(15 * 60),
        }
    }
}

/// Serves HTTP on `listener` with the default [`WebOptions`] until `shutdown` turns true (or its
/// sender is dropped); see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    state: WebState,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    serve_with(listener, state, WebOptions::default(), shutdown).await
}

/// Serves HTTP/1.1 and HTTP/2 (cleartext) on `listener` until `shutdown` turns true or its
/// sender is dropped. Then it stops accepting, lets requests in flight finish for at most
/// [`WebOptions::shutdown_grace`], closes what is left and returns.
///
/// Accept errors (for example too many open files) are logged and retried; the function only
/// returns at shutdown.
pub async fn serve_with(
    listener: TcpListener,
    state: WebState,
    options: WebOptions,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let shared = Arc::new(Shared { state, options });
    let permits = Arc::new(Semaphore::new(shared.options.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("web server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            peer,
            shared.clone(),
            builder.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    let grace = shared.options.shutdown_grace + Duration::from_millis(500);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            "web server: closing {} connections still open",
            connections.len()
        );
        connections.shutdown().await;
    }
    Ok(())
}

#[derive(Debug)]
struct Shared {
    state: WebState,
    options: WebOptions,
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    match shared.state.tls.clone() {
        None => serve_stream(stream, peer, shared, builder, shutdown, permit).await,
        Some(WebTls(acceptor)) => {
            let handshake =
                tokio::time::timeout(shared.options.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => serve_stream(tls, peer, shared, builder, shutdown, permit).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let for_service = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = for_service.clone();
        async move {
            if let Some(receiver) = &shared.state.receiver {
                if req.method() == Method::POST && req.uri().path() == receiver.path() {
                    return Ok::<_, Infallible>(receiver.handle(req).await);
                }
            }
            Ok::<_, Infallible>(handle(&shared, &req).await)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let max_age = tokio::time::sleep(shared.options.connection_max_age);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "web connection: {e}");
            }
            return;
        }
        () = stopped(&mut shutdown) => {}
        () = max_age => {}
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(shared.options.shutdown_grace, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, "web connection: {e}"),
        Err(_) => tracing::debug!(%peer, "web connection: closed after the grace period"),
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(shared: &Arc<Shared>, req: &Request<Incoming>) -> Resp {
    if let Some(r) = &shared.state.receiver {
        // The receiver's path takes POST only (handled before this).
        if req.uri().path() == r.path() {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    match tokio::time::timeout(shared.options.request_timeout, route(shared, path, query)).await {
        Ok(resp) => resp,
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n"),
    }
}

async fn route(shared: &Arc<Shared>, path: &str, query: &str) -> Resp {
    match path {
        "/" => index_page(shared, query).await,
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readyz(shared).await,
        "/metrics" => metrics_page(shared).await,
        "/api/v1/calls" => api_calls(shared, query).await,
        "/api/v1/dead-letters" => api_dead_letters(shared, query).await,
        _ => {
            if let Some(id) = path.strip_prefix("/calls/") {
                call_page(shared, decode(id)).await
            } else if let Some(id) = path.strip_prefix("/api/v1/calls/") {
                api_call(shared, decode(id)).await
            } else if let Some(page) = path.strip_prefix("/api/v1/records/") {
                api_records(shared, page).await
            } else if path.starts_with("/api/") {
                json_error(StatusCode::NOT_FOUND, "not found")
            } else {
                html(
                    StatusCode::NOT_FOUND,
                    page(
                        &shared.state.title,
                        "Not found",
                        "<p>There is nothing here. <a href=\"/\">Back to the calls</a></p>",
                    ),
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

/// The CMS sample receiver's API: 20 records a page, newest first, `{"records":0}` past the
/// end (see `cdr_sinks::http_cdr::api_page`).
async fn api_records(shared: &Arc<Shared>, page: &str) -> Resp {
    let Ok(page) = page.trim_end_matches('/').parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    let db = shared.state.db.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
        if !db.exists() {
            return Ok(Vec::new());
        }
        let o = Outbox::open_read_only(&db, &[]).map_err(|e| e.to_string())?;
        match o.source_records(page.max(1), 20) {
            Ok(rows) => Ok(rows),
            // A database written before records were kept has no such table.
            Err(e) if e.to_string().contains("no such table") => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    match rows {
        Ok(Ok(rows)) => {
            let list: Vec<Value> = rows
                .iter()
                .filter_map(|r| serde_json::from_slice(r).ok())
                .collect();
            let value = if list.is_empty() || page == 0 {
                json!({ "records": 0 })
            } else {
                json!({ "records": list })
            };
            json_response(StatusCode::OK, &value)
        }
        Ok(Err(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn index_page(shared: &Arc<Shared>, query: &str) -> Resp {
    let title = &shared.state.title;
    let q = match CallQuery::parse(query, false) {
        Ok(q) => q,
        Err(e) => {
            let body = format!(
                "<p class=\"error\">{}</p><p><a href=\"/\">Back to the calls</a></p>",
                esc(&e)
            );
            return html(StatusCode::BAD_REQUEST, page(title, "Bad request", &body));
        }
    };
    let q2 = q.clone();
    match with_store(shared, move |s| s.list(&q2, false)).await {
        Ok((total, rows)) => {
            let mut sinks: BTreeSet<String> =
                shared.state.metrics.sink_names().into_iter().collect();
            sinks.extend(
                rows.iter()
                    .flat_map(|r| r.deliveries.iter().map(|d| d.sink.clone())),
            );
            html(
                StatusCode::OK,
                render_index(title, &q, total, &rows, &sinks),
            )
        }
        Err(e) => db_error_html(title, &e),
    }
}

async fn call_page(shared: &Arc<Shared>, id: String) -> Resp {
    let title = &shared.state.title;
    match with_store(shared, move |s| s.call(&id)).await {
        Ok(Some((body, deliveries))) => {
            html(StatusCode::OK, render_call(title, &body, &deliveries))
        }
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            page(
                title,
                "Call not found",
                "<p>No call has this id. <a href=\"/\">Back to the calls</a></p>",
            ),
        ),
        Err(e) => db_error_html(title, &e),
    }
}

async fn api_calls(shared: &Arc<Shared>, query: &str) -> Resp {
    let q = match CallQuery::parse(query, true) {
        Ok(q) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let (page, per_page) = (q.page, q.per_page);
    match with_store(shared, move |s| s.list(&q, true)).await {
        Ok((total, rows)) => {
            let calls: Vec<Value> = rows
                .iter()
                .filter_map(|r| {
                    let body = r.body.as_deref()?;
                    serde_json::from_slice(body)
                        .map_err(|e| tracing::warn!(id = %r.id, "stored call is not JSON: {e}"))
                        .ok()
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"calls": calls, "page": page, "per_page": per_page, "total": total}),
            )
        }
        Err(e) => db_error_json(&e),
    }
}

async fn api_call(shared: &Arc<Shared>, id: String) -> Resp {
    match with_store(shared, move |s| s.call(&id)).await {
        Ok(Some((body, deliveries))) => {
            let mut call: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("stored call is not JSON: {e}"),
                    );
                }
            };
            if let Some(obj) = call.as_object_mut() {
                let list: Vec<Value> = deliveries
                    .iter()
                    .map(|d| {
                        json!({
                            "sink": d.sink,
                            "state": d.state,
                            "attempts": d.attempts,
                            "last_error": d.last_error,
                        })
                    })
                    .collect();
                obj.insert("deliveries".to_owned(), Value::Array(list));
            }
            json_response(StatusCode::OK, &call)
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, "call not found"),
        Err(e) => db_error_json(&e),
    }
}

async fn api_dead_letters(shared: &Arc<Shared>, query: &str) -> Resp {
    let mut limit = 100;
    for (k, v) in query_pairs(query) {
        if k == "limit" && !v.is_empty() {
            match v.parse::<u64>() {
                Ok(n) => limit = n.clamp(1, MAX_DEAD_LETTERS),
                Err(_) => return json_error(StatusCode::BAD_REQUEST, "limit must be a number"),
            }
        }
    }
    match with_store(shared, move |s| s.dead_letters(limit)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .map(|d| {
                    json!({
                        "call_id": d.call_id,
                        "sink": d.sink,
                        "attempts": d.attempts,
                        "last_error": d.last_error,
                        "done_ms": d.done_ms,
                        "start_time": d.start_time,
                        "caller": d.caller,
                        "called": d.called,
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({ "dead_letters": list }))
        }
        Err(e) => db_error_json(&e),
    }
}

async fn metrics_page(shared: &Arc<Shared>) -> Resp {
    let counts = match sink_counts(shared).await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!("metrics: outbox unreadable, outbox families left out: {e}");
            Vec::new()
        }
    };
    let body = shared
        .state
        .metrics
        .render(&counts, cdr_sinks::engine::now_ms());
    response(StatusCode::OK, metrics::CONTENT_TYPE, body)
}

async fn readyz(shared: &Arc<Shared>) -> Resp {
    if !shared.state.metrics.is_source_connected() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: source not connected\n",
        );
    }
    let counts = match sink_counts(shared).await {
        Ok(counts) => counts,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: outbox unreadable: {e}\n"),
            );
        }
    };
    let now = cdr_sinks::engine::now_ms();
    let max = shared.options.ready_max_pending_age;
    let max_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX);
    for c in &counts {
        if let Some(oldest) = c.oldest_pending_ms {
            let age = now.saturating_sub(oldest);
            if age > max_ms {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "not ready: sink {}: oldest pending delivery is {} s old (limit {} s)\n",
                        c.sink,
                        age / 1000,
                        max.as_secs()
                    ),
                );
            }
        }
    }
    text(StatusCode::OK, "ready\n")
}

/// The outbox counts of every sink with rows, plus the registered sinks without any.
async fn sink_counts(shared: &Arc<Shared>) -> Result<Vec<SinkCounts>, String> {
    let path = shared.state.db.clone();
    let sinks = shared.state.metrics.sink_names();
    tokio::task::spawn_blocking(move || {
        if !path.exists() {
            // No database yet: every registered sink, with nothing in it.
            let mut counts: Vec<SinkCounts> = sinks
                .into_iter()
                .map(|sink| SinkCounts {
                    sink,
                    ..SinkCounts::default()
                })
                .collect();
            counts.sort_by(|a, b| a.sink.cmp(&b.sink));
            return Ok(counts);
        }
        Outbox::open_read_only(&path, &sinks)
            .and_then(|o| o.counts())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("database task failed: {e}"))?
}

// ---------------------------------------------------------------------------------------------
// The store, read-only

/// A read-only connection to the outbox, or nothing when it has no call store yet.
struct Store {
    conn: Option<Connection>,
}

#[derive(Debug, Clone)]
struct CallRow {
    id: String,
    start_time: String,
    direction: String,
    caller: String,
    called: String,
    duration: i64,
    answered: bool,
    complete: bool,
    body: Option<Vec<u8>>,
    deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone)]
struct Delivery {
    sink: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    next_ms: i64,
    created_ms: i64,
    done_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct DeadRow {
    call_id: String,
    sink: String,
    attempts: i64,
    last_error: Option<String>,
    done_ms: Option<i64>,
    start_time: Option<String>,
    caller: Option<String>,
    called: Option<String>,
}

impl Store {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        if !path.exists() {
            return Ok(Self { conn: None });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master
             WHERE type = 'table' AND name IN ('calls', 'deliveries')",
            [],
            |r| r.get(0),
        )?;
        Ok(Self {
            conn: (tables == 2).then_some(conn),
        })
    }

    /// One page of calls, newest first, and how many match in all. With `bodies`, each row
    /// carries its JSON; without, its deliveries.
    fn list(&self, q: &CallQuery, bodies: bool) -> rusqlite::Result<(u64, Vec<CallRow>)> {
        let Some(conn) = &self.conn else {
            return Ok((0, Vec::new()));
        };
        // One read transaction: the total and the page come from the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let (clause, mut params) = q.filter.sql();
        let total: i64 = tx.query_row(
            &format!("SELECT COUNT(*) FROM calls{clause}"),
            params_from_iter(params.iter()),
            |r| r.get(0),
        )?;
        let offset = q.page.saturating_sub(1).saturating_mul(q.per_page);
        params.push(SqlValue::Integer(to_i64(q.per_page)));
        params.push(SqlValue::Integer(to_i64(offset)));
        let body = if bodies { "body" } else { "NULL" };
        let mut stmt = tx.prepare(&format!(
            "SELECT id, start_time, direction, caller, called, duration, answered, complete, {body}
             FROM calls{clause} ORDER BY seq DESC LIMIT ? OFFSET ?"
        ))?;
        let mut rows = stmt
            .query_map(params_from_iter(params.iter()), |r| {
                Ok(CallRow {
                    id: r.get(0)?,
                    start_time: r.get(1)?,
                    direction: r.get(2)?,
                    caller: r.get(3)?,
                    called: r.get(4)?,
                    duration: r.get(5)?,
                    answered: r.get(6)?,
                    complete: r.get(7)?,
                    body: r.get(8)?,
                    deliveries: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !bodies {
            for row in &mut rows {
                row.deliveries = deliveries(&tx, &row.id)?;
            }
        }
        Ok((u64::try_from(total).unwrap_or_default(), rows))
    }

    /// A call's JSON and its deliveries.
    fn call(&self, id: &str) -> rusqlite::Result<Option<(Vec<u8>, Vec<Delivery>)>> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        let tx = conn.unchecked_transaction()?;
        let body: Option<Vec<u8>> = tx
            .query_row("SELECT body FROM calls WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match body {
            Some(body) => Ok(Some((body, deliveries(&tx, id)?))),
            None => Ok(None),
        }
    }

    /// The latest dead letters, newest first (as `Outbox::dead_letters`, plus a few of the
    /// call's fields).
    fn dead_letters(&self, limit: u64) -> rusqlite::Result<Vec<DeadRow>> {
        let Some(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(
            "SELECT d.call_id, d.sink, d.attempts, d.last_error, d.done_ms,
                    c.start_time, c.caller, c.called
             FROM deliveries d LEFT JOIN calls c ON c.id = d.call_id
             WHERE d.state = 'dead' ORDER BY d.done_ms DESC, c.seq DESC LIMIT ?1",
        )?;
        stmt.query_map([to_i64(limit)], |r| {
            Ok(DeadRow {
                call_id: r.get(0)?,
                sink: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                done_ms: r.get(4)?,
                start_time: r.get(5)?,
                caller: r.get(6)?,
                called: r.get(7)?,
            })
        })?
        .collect()
    }
}

fn deliveries(conn: &Connection, call_id: &str) -> rusqlite::Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sink, state, attempts, last_error, next_ms, created_ms, done_ms
         FROM deliveries WHERE call_id = ?1 ORDER BY sink",
    )?;
    stmt.query_map([call_id], |r| {
        Ok(Delivery {
            sink: r.get(0)?,
            state: r.get(1)?,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
            next_ms: r.get(4)?,
            created_ms: r.get(5)?,
            done_ms: r.get(6)?,
        })
    })?
    .collect()
}

/// Runs `f` on a fresh read-only [`Store`] on the blocking pool.
async fn with_store<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Store) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    let path = shared.state.db.clone();
    tokio::task::spawn_blocking(move || Store::open(&path).and_then(|store| f(&store)))
        .await
        .map_err(|e| format!("database task failed: {e}"))?
        .map_err(|e| e.to_string())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Query strings

/// The filters of the call list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CallFilter {
    from: Option<String>,
    to: Option<String>,
    number: Option<String>,
    direction: Option<&'static str>,
    complete: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CallQuery {
    filter: CallFilter,
    page: u64,
    per_page: u64,
}

impl CallQuery {
    /// Parses the list's query string; `per_page` is read only when `api` is set.
    fn parse(query: &str, api: bool) -> Result<Self, String> {
        let mut q = Self {
            filter: CallFilter::default(),
            page: 1,
            per_page: PAGE_SIZE,
        };
        for (key, value) in query_pairs(query) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "page" => {
                    q.page = value
                        .parse::<u64>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or("page must be a whole number from 1")?;
                }
                "per_page" if api => {
                    q.per_page = value
                        .parse::<u64>()
                        .map_err(|_| "per_page must be a whole number")?
                        .clamp(1, MAX_PER_PAGE);
                }
                "from" => q.filter.from = Some(time_prefix("from", value)?),
                "to" => q.filter.to = Some(time_prefix("to", value)?),
                "number" => {
                    if value.chars().count() > 64 {
                        return Err("number is too long".to_owned());
                    }
                    q.filter.number = Some(value.to_owned());
                }
                "direction" => {
                    q.filter.direction = Some(match value {
                        "inbound" => "inbound",
                        "outbound" => "outbound",
                        "internal" => "internal",
                        _ => return Err("direction must be inbound, outbound or internal".into()),
                    });
                }
                "complete" => {
                    q.filter.complete = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err("complete must be true or false".into()),
                    });
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Checks a `from`/`to` value: a prefix of `YYYY-MM-DDTHH:MM:SS` (a space may stand for `T`).
fn time_prefix(name: &str, value: &str) -> Result<String, String> {
    const PATTERN: &[u8] = b"0000-00-00T00:00:00";
    let value = value.replace(' ', "T");
    let ok = value.len() <= PATTERN.len()
        && value.bytes().zip(PATTERN).all(|(b, p)| match p {
            b'0' => b.is_ascii_digit(),
            p => b == *p,
        });
    if ok {
        Ok(value)
    } else {
        Err(format!(
            "{name} must be a start time prefix like 2018-01-05 or 2018-01-05T10:30:00"
        ))
    }
}

impl CallFilter {
    /// The `WHERE` clause (empty when nothing is filtered) and its parameters.
    fn sql(&self) -> (String, Vec<SqlValue>) {
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        if let Some(from) = &self.from {
            clauses.push("start_time >= ?");
            params.push(SqlValue::Text(from.clone()));
        }
        if let Some(to) = &self.to {
            // Every stored start with this prefix sorts below `to` followed by DEL (0x7f), since
            // start times are printable ASCII: an inclusive prefix compare that uses the index.
            clauses.push("start_time <= ?");
            params.push(SqlValue::Text(format!("{to}\u{7f}")));
        }
        if let Some(number) = &self.number {
            clauses.push("(instr(caller, ?) > 0 OR instr(called, ?) > 0)");
            params.push(SqlValue::Text(number.clone()));
            params.push(SqlValue::Text(number.clone()));
        }
        if let Some(direction) = self.direction {
            clauses.push("direction = ?");
            params.push(SqlValue::Text(direction.to_owned()));
        }
        if let Some(complete) = self.complete {
            clauses.push("complete = ?");
            params.push(SqlValue::Integer(i64::from(complete)));
        }
        if clauses.is_empty() {
            (String::new(), params)
        } else {
            (format!(" WHERE {}", clauses.join(" AND ")), params)
        }
    }

    /// The filter as a query string (`&`-joined, without a leading `?`).
    fn to_query(&self) -> String {
        let mut parts = Vec::new();
        let complete = self.complete.map(|c| if c { "true" } else { "false" });
        for (key, value) in [
            ("from", self.from.as_deref()),
            ("to", self.to.as_deref()),
            ("number", self.number.as_deref()),
            ("direction", self.direction),
            ("complete", complete),
        ] {
            if let Some(v) = value {
                parts.push(format!("{key}={}", encode(v)));
            }
        }
        parts.join("&")
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Percent-decodes a path segment; invalid UTF-8 is replaced.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

// ---------------------------------------------------------------------------------------------
// Responses

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn text(status: StatusCode, body: &str) -> Resp {
    response(status, "text/plain; charset=utf-8", body.to_owned())
}

fn html(status: StatusCode, body: String) -> Resp {
    let mut resp = response(status, "text/html; charset=utf-8", body);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    response(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn json_error(status: StatusCode, message: &str) -> Resp {
    json_response(status, &json!({ "error": message }))
}

fn db_error_json(e: &str) -> Resp {
    tracing::warn!("web: database error: {e}");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("database error: {e}"),
    )
}

fn db_error_html(title: &str, e: &str) -> Resp {
    tracing::warn!("web: database error: {e}");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            title,
            "Database error",
            &format!("<p class=\"error\">{}</p>", esc(e)),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.2rem 1.5rem;color:#222}\
header{display:flex;align-items:baseline;gap:1.5rem;border-bottom:2px solid #333;margin-bottom:1rem}\
h1{font-size:1.25rem;margin:0 0 .4rem}h1 a{color:inherit;text-decoration:none}\
h2{font-size:1.15rem;margin:.2rem 0 .6rem}h3{font-size:1rem;margin:1.4rem 0 .3rem}\
nav a{margin-right:.9rem}a{color:#0550ae}\
table{border-collapse:collapse;margin:.3rem 0 1rem}\
th,td{border-bottom:1px solid #e2e2e2;padding:.22rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3;font-weight:600;white-space:nowrap}\
tbody tr:hover{background:#f8fafc}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.pending{color:#9a5b00}.delivered{color:#1a7f37}.dead{color:#c00;font-weight:600}\
.muted{color:#777}.error{color:#c00}\
form{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:end;margin:0 0 1rem}\
form label{display:flex;flex-direction:column;font-size:.85rem;color:#555}\
input,select{font:inherit;padding:.15rem .3rem}\
.pager{display:flex;gap:1rem;align-items:baseline}\
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem}";

/// A whole page: the header with `title`, then `heading` and `body` (already HTML).
fn page(title: &str, heading: &str, body: &str) -> String {
    let title = esc(title);
    let heading = esc(heading);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{heading} · {title}</title><style>{CSS}</style></head>\n<body>\
         <header><h1><a href=\"/\">{title}</a></h1><nav><a href=\"/\">Calls</a>\
         <a href=\"/api/v1/calls\">JSON</a><a href=\"/api/v1/dead-letters\">Dead letters</a>\
         <a href=\"/metrics\">Metrics</a></nav></header>\n<main>\n{body}\n</main></body></html>\n"
    )
}

fn render_index(
    title: &str,
    q: &CallQuery,
    total: u64,
    rows: &[CallRow],
    sinks: &BTreeSet<String>,
) -> String {
    let f = &q.filter;
    let mut b = String::with_capacity(16 * 1024);
    let value = |v: Option<&str>| esc(v.unwrap_or_default());
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/\">\
         <label>From<input name=\"from\" value=\"{}\" placeholder=\"YYYY-MM-DDTHH:MM:SS\"></label>\
         <label>To<input name=\"to\" value=\"{}\" placeholder=\"YYYY-MM-DD\"></label>\
         <label>Number<input name=\"number\" value=\"{}\" placeholder=\"caller or called\"></label>",
        value(f.from.as_deref()),
        value(f.to.as_deref()),
        value(f.number.as_deref()),
    );
    b.push_str("<label>Direction<select name=\"direction\">");
    for (v, label) in [
        ("", "any"),
        ("inbound", "inbound"),
        ("outbound", "outbound"),
        ("internal", "internal"),
    ] {
        let selected = if f.direction.unwrap_or_default() == v {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option value=\"{v}\"{selected}>{label}</option>");
    }
    b.push_str("</select></label><label>Complete<select name=\"complete\">");
    for (v, label, c) in [
        ("", "any", None),
        ("true", "complete", Some(true)),
        ("false", "incomplete", Some(false)),
    ] {
        let selected = if f.complete == c { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{v}\"{selected}>{label}</option>");
    }
    b.push_str(
        "</select></label><button type=\"submit\">Filter</button><a href=\"/\">Clear</a></form>\n",
    );

    let pages = total.div_ceil(q.per_page).max(1);
    let filter = f.to_query();
    let link = |page: u64| {
        if filter.is_empty() {
            format!("/?page={page}")
        } else {
            format!("/?{filter}&page={page}")
        }
    };
    let mut pager = String::from("<div class=\"pager\">");
    if q.page > 1 {
        let _ = write!(
            pager,
            "<a href=\"{}\">‹ Newer</a>",
            esc(&link(q.page.saturating_sub(1).min(pages)))
        );
    }
    let calls = if total == 1 { "call" } else { "calls" };
    let _ = write!(
        pager,
        "<span class=\"muted\">{total} {calls} · page {} of {pages}</span>",
        q.page
    );
    if q.page < pages {
        let _ = write!(
            pager,
            "<a href=\"{}\">Older ›</a>",
            esc(&link(q.page.saturating_add(1)))
        );
    }
    pager.push_str("</div>\n");
    b.push_str(&pager);

    if rows.is_empty() {
        b.push_str(if total == 0 {
            "<p class=\"muted\">No calls yet.</p>\n"
        } else {
            "<p class=\"muted\">No calls on this page.</p>\n"
        });
        return page(title, "Calls", &b);
    }
    b.push_str(
        "<table><thead><tr><th>Start</th><th>Direction</th><th>Caller</th><th>Called</th>\
         <th>Duration</th><th>Answered</th><th>Complete</th>",
    );
    for sink in sinks {
        let _ = write!(b, "<th>{}</th>", esc(sink));
    }
    b.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        let _ = write!(
            b,
            "<tr><td><a href=\"/calls/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td>",
            esc(&encode(&r.id)),
            esc(&r.start_time.replacen('T', " ", 1)),
            esc(&r.direction),
            esc(&r.caller),
            esc(&r.called),
            hms(r.duration),
            yes_no(r.answered),
            yes_no(r.complete),
        );
        for sink in sinks {
            match r.deliveries.iter().find(|d| &d.sink == sink) {
                Some(d) => {
                    let _ = write!(b, "<td class=\"{0}\">{0}</td>", esc(&d.state));
                }
                None => b.push_str("<td class=\"muted\">–</td>"),
            }
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</tbody></table>\n");
    b.push_str(&pager);
    page(title, "Calls", &b)
}

fn render_call(title: &str, body: &[u8], deliveries: &[Delivery]) -> String {
    let mut b = String::with_capacity(32 * 1024);
    let call = serde_json::from_slice::<Json>(body);
    let call_id = call
        .as_ref()
        .ok()
        .and_then(|c| c.get("call_id"))
        .map(Json::display)
        .unwrap_or_default();
    match &call {
        Ok(Json::Object(fields)) => {
            b.push_str("<h3>Summary</h3>\n<table><tbody>\n");
            let mut lists = Vec::new();
            for (key, value) in fields {
                match value {
                    Json::Array(items) if items.iter().all(Json::is_object) => {
                        if !items.is_empty() {
                            lists.push((key, items));
                        }
                    }
                    _ => {
                        let _ = writeln!(
                            b,
                            "<tr><th>{}</th><td>{}</td></tr>",
                            esc(key),
                            esc(&value.display())
                        );
                    }
                }
            }
            b.push_str("</tbody></table>\n");
            for (key, items) in lists {
                let _ = writeln!(b, "<h3>{} ({})</h3>", esc(&heading(key)), items.len());
                object_table(&mut b, items);
            }
        }
        Ok(_) => b.push_str("<p class=\"error\">The stored call is not a JSON object.</p>\n"),
        Err(e) => {
            let _ = writeln!(
                b,
                "<p class=\"error\">The stored call could not be read: {}</p>",
                esc(&e.to_string())
            );
        }
    }

    b.push_str("<h3>Deliveries</h3>\n");
    if deliveries.is_empty() {
        b.push_str("<p class=\"muted\">No delivery to any sink (stored only).</p>\n");
    } else {
        b.push_str(
            "<table><thead><tr><th>Sink</th><th>State</th><th>Attempts</th><th>Last error</th>\
             <th>Queued</th><th>Next try</th><th>Done</th></tr></thead><tbody>\n",
        );
        for d in deliveries {
            let next = if d.state == "pending" {
                utc(Some(d.next_ms))
            } else {
                String::new()
            };
            let _ = writeln!(
                b,
                "<tr><td>{sink}</td><td class=\"{state}\">{state}</td><td class=\"n\">{attempts}</td>\
                 <td>{error}</td><td>{queued}</td><td>{next}</td><td>{done}</td></tr>",
                sink = esc(&d.sink),
                state = esc(&d.state),
                attempts = d.attempts,
                error = esc(d.last_error.as_deref().unwrap_or_default()),
                queued = utc(Some(d.created_ms)),
                done = utc(d.done_ms),
            );
        }
        b.push_str("</tbody></table>\n");
    }

    b.push_str("<h3>JSON</h3>\n<pre>");
    b.push_str(&esc(&pretty_json(&String::from_utf8_lossy(body))));
    b.push_str("</pre>\n");
    let heading = if call_id.is_empty() {
        "Call".to_owned()
    } else {
        format!("Call {call_id}")
    };
    page(title, &heading, &format!("<h2>{}</h2>\n{b}", esc(&heading)))
}

/// A table of JSON objects: one row per object when they have a few fields, else one column
/// per object (SMDR records have over thirty fields). Columns keep their first-seen order.
fn object_table(b: &mut String, objects: &[Json]) {
    let mut keys: Vec<&str> = Vec::new();
    for o in objects {
        if let Json::Object(fields) = o {
            for (k, _) in fields {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
    }
    let cell = |o: &Json, k: &str| esc(&o.get(k).map(Json::display).unwrap_or_default());
    b.push_str("<table>");
    if keys.len() <= 6 {
        b.push_str("<thead><tr><th>#</th>");
        for k in &keys {
            let _ = write!(b, "<th>{}</th>", esc(k));
        }
        b.push_str("</tr></thead><tbody>\n");
        for (i, o) in objects.iter().enumerate() {
            let _ = write!(b, "<tr><td class=\"n\">{}</td>", i + 1);
            for k in &keys {
                let _ = write!(b, "<td>{}</td>", cell(o, k));
            }
            b.push_str("</tr>\n");
        }
    } else {
        b.push_str("<thead><tr><th>Field</th>");
        for i in 1..=objects.len() {
            let _ = write!(b, "<th>{i}</th>");
        }
        b.push_str("</tr></thead><tbody>\n");
        for k in &keys {
            let _ = write!(b, "<tr><th>{}</th>", esc(k));
            for o in objects {
                let _ = write!(b, "<td>{}</td>", cell(o, k));
            }
            b.push_str("</tr>\n");
        }
    }
    b.push_str("</tbody></table>\n");
}

fn heading(key: &str) -> String {
    let mut chars = key.replace('_', " ").chars().collect::<Vec<_>>();
    if let Some(c) = chars.first_mut() {
        *c = c.to_ascii_uppercase();
    }
    chars.into_iter().collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Seconds as `H:MM:SS`.
fn hms(secs: i64) -> String {
    let s = secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Milliseconds since the epoch as a UTC time, or nothing.
fn utc(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Re-indents compact JSON text (as serde_json writes it) by two spaces a level, keeping the
/// order of the fields as stored.
fn pretty_json(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', depth * 2));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// A JSON value whose objects keep their fields in document order (serde_json's map sorts
/// them), so records show their fields in the order the call model writes them.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Scalar(Value),
    Array(Vec<Self>),
    Object(Vec<(String, Self)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// As a table cell: strings as they are, `null` as nothing, a party as `device (name)`,
    /// anything else as compact JSON.
    fn display(&self) -> String {
        match self {
            Self::Scalar(Value::Null) => String::new(),
            Self::Scalar(Value::String(s)) => s.clone(),
            Self::Object(fields)
                if !fields.is_empty()
                    && fields.iter().all(|(k, _)| k == "device" || k == "name") =>
            {
                let device = self.get("device").map(Self::display).unwrap_or_default();
                let name = self.get("name").map(Self::display).unwrap_or_default();
                if name.is_empty() {
                    device
                } else {
                    format!("{device} ({name})")
                }
            }
            other => other.to_json(),
        }
    }

    /// Compact JSON text.
    fn to_json(&self) -> String {
        match self {
            Self::Scalar(v) => v.to_string(),
            Self::Array(items) => {
                let items: Vec<String> = items.iter().map(Self::to_json).collect();
                format!("[{}]", items.join(","))
            }
            Self::Object(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v.to_json()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Scalar(Value::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Scalar(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Scalar(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element::<Json>()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Json::Object(fields))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn decodes_and_encodes_query_values() {
        assert_eq!(decode("a+b%20c%2Bd"), "a+b c+d", "a path keeps its +");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(decode(&encode("x y+z%")), "x y+z%");
        assert_eq!(
            query_pairs("a=1&&b&c=x%3Dy"),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), String::new()),
                ("c".to_owned(), "x=y".to_owned())
            ]
        );
    }

    #[test]
    fn parses_call_queries() {
        let q = CallQuery::parse(
            "page=3&per_page=900&from=2018-01-05+10:00&to=2018-01-05&number=604&direction=inbound&complete=false&x=1",
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.page, 3);
        assert_eq!(q.per_page, MAX_PER_PAGE);
        assert_eq!(q.filter.from.as_deref(), Some("2018-01-05T10:00"));
        assert_eq!(q.filter.to.as_deref(), Some("2018-01-05"));
        assert_eq!(q.filter.number.as_deref(), Some("604"));
        assert_eq!(q.filter.direction, Some("inbound"));
        assert_eq!(q.filter.complete, Some(false));
        // The HTML list ignores per_page; blank values are no filter.
        let q = CallQuery::parse("per_page=5&from=&direction=", false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.per_page, PAGE_SIZE);
        assert_eq!(q.filter, CallFilter::default());
        for bad in [
            "page=0",
            "page=x",
            "direction=up",
            "complete=yes",
            "from=2018/01/05",
            "to=2018-01-05T10:00:00Z",
            "per_page=-1",
        ] {
            assert!(CallQuery::parse(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_round_trips_through_its_query_string() {
        let q = CallQuery::parse("from=2018-01-05&number=a+%26b&complete=true", false)
            .unwrap_or_else(|e| panic!("{e}"));
        let again = CallQuery::parse(&q.filter.to_query(), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.filter, q.filter);
    }

    #[test]
    fn pretty_prints_json_in_stored_order() {
        let s = pretty_json(r#"{"z":1,"a":[],"s":"x,{\"y\":[1]}","o":{"k":[1,2]}}"#);
        assert_eq!(
            s,
            "{\n  \"z\": 1,\n  \"a\": [],\n  \"s\": \"x,{\\\"y\\\":[1]}\",\n  \"o\": {\n    \"k\": [\n      1,\n      2\n    ]\n  }\n}"
        );
        let back: Value = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back["s"], "x,{\"y\":[1]}");
    }

    #[test]
    fn json_keeps_document_order_at_every_level() {
        let text = r#"{"z":1,"a":[{"y":true,"b":null}],"m":{"q":"x","c":-1.5}}"#;
        let j: Json = serde_json::from_str(text).unwrap_or(Json::Scalar(Value::Null));
        let Json::Object(fields) = &j else {
            panic!("{j:?}")
        };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(j.to_json(), text);
        assert_eq!(
            j.get("a").map(Json::display).as_deref(),
            Some(r#"[{"y":true,"b":null}]"#)
        );
    }

    #[test]
    fn formats_durations_and_cells() {
        assert_eq!(hms(0), "0:00:00");
        assert_eq!(hms(3725), "1:02:05");
        let cell = |text: &str| {
            serde_json::from_str::<Json>(text)
                .map(|j| j.display())
                .unwrap_or_default()
        };
        assert_eq!(
            cell(r#"{"device":"E232","name":"Agent8"}"#),
            "E232 (Agent8)"
        );
        assert_eq!(cell(r#"{"device":"E232","name":""}"#), "E232");
        assert_eq!(cell("null"), "");
        assert_eq!(cell("true"), "true");
        assert_eq!(cell(r#""a<b""#), "a<b");
        assert_eq!(heading("records"), "Records");
    }
}
