//! The relay's built-in HTTP server: the call list and call pages (plain server-rendered HTML,
//! no JavaScript), the JSON API, `/metrics`, `/healthz` and `/readyz`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | a chart of calls per hour and the deliveries per sink, then the latest calls, newest first, 50 a page (`?page=N`), with filters |
//! | `GET /calls/<id>` | one call: a timeline of its legs, summary, parties, every record field, deliveries, raw JSON |
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
//! The pages draw their charts as inline SVG on the server (no JavaScript, no images to
//! fetch); each chart has a `<title>` and a `<desc>`, each bar a `<title>` (its tooltip), and
//! the numbers are printed as text too:
//!
//! - **Calls per hour** (top of `/`): stacked bars, answered below and not answered above, for
//!   the 24 hours up to and including the hour of the latest start among the calls matching
//!   the current filter (anchored on the calls, not on the clock, so a store of replayed or
//!   old calls, or a filter like `to=2018-01-05`, shows its latest day). The same numbers are
//!   in a table under "The numbers".
//! - **Deliveries per sink** (top of `/`): pending, delivered and dead counts of every sink
//!   over the whole store (not only the filtered calls), the age of the oldest pending
//!   delivery, and a stacked bar of the three.
//! - **Timeline** (`/calls/<id>`): one row per leg for calls with `legs` (Asterisk, CMS:
//!   ringing from its creation to its answer, connected from the answer to its end, open when
//!   no end was seen) with transfers as vertical lines; one row per record for SMDR calls
//!   (each segment's ring, connected and hold plus park seconds, the segments one after the
//!   other from the call's start, as the call's end time is computed); one row for the call
//!   otherwise. At most 60 rows are drawn; the tables below list every leg and record.
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
use chrono::NaiveDateTime;
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
    let listed = with_store(shared, move |s| {
        let (total, rows) = s.list(&q2, false)?;
        let hours = s.hourly(&q2.filter)?;
        let counts = s.delivery_counts()?;
        Ok((total, rows, hours, counts))
    })
    .await;
    match listed {
        Ok((total, rows, hours, mut counts)) => {
            let registered = shared.state.metrics.sink_names();
            for sink in &registered {
                if !counts.iter().any(|c| &c.sink == sink) {
                    counts.push(SinkCounts {
                        sink: sink.clone(),
                        ..SinkCounts::default()
                    });
                }
            }
            counts.sort_by(|a, b| a.sink.cmp(&b.sink));
            let mut sinks: BTreeSet<String> = registered.into_iter().collect();
            sinks.extend(
                rows.iter()
                    .flat_map(|r| r.deliveries.iter().map(|d| d.sink.clone())),
            );
            let overview = Overview { hours, counts };
            html(
                StatusCode::OK,
                render_index(title, &q, total, &rows, &sinks, &overview),
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

impl Store {
    /// Calls per hour of start time, answered and not, over the 24 hours up to (and including)
    /// the hour of the latest start among the calls matching `filter`; `None` when none match
    /// (or the latest start is not a time).
    ///
    /// Anchored on the matching calls rather than on the clock, so a store of old calls (a
    /// replayed capture) and a filtered list (`to=2018-01-05`) still show their busiest day.
    fn hourly(&self, filter: &CallFilter) -> rusqlite::Result<Option<Hours>> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        let tx = conn.unchecked_transaction()?;
        let (clause, mut params) = filter.sql();
        let latest: Option<String> = tx.query_row(
            &format!("SELECT MAX(start_time) FROM calls{clause}"),
            params_from_iter(params.iter()),
            |r| r.get(0),
        )?;
        let Some(last) = latest.as_deref().and_then(hour_of) else {
            return Ok(None);
        };
        let first = last - chrono::TimeDelta::hours(23);
        let end = last + chrono::TimeDelta::hours(1);
        params.push(SqlValue::Text(first.format(HOUR_KEY).to_string()));
        params.push(SqlValue::Text(end.format(HOUR_KEY).to_string()));
        let and = if clause.is_empty() { " WHERE" } else { " AND" };
        let mut stmt = tx.prepare(&format!(
            "SELECT substr(start_time, 1, 13), SUM(answered != 0), SUM(answered = 0)
             FROM calls{clause}{and} start_time >= ? AND start_time < ? GROUP BY 1"
        ))?;
        let mut hours = Hours {
            first,
            counts: [(0, 0); 24],
        };
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (key, answered, unanswered) = row?;
            let Some(at) = hour_of(&key) else { continue };
            let slot = usize::try_from((at - first).num_hours()).ok();
            if let Some(c) = slot.and_then(|i| hours.counts.get_mut(i)) {
                *c = (
                    u64::try_from(answered).unwrap_or_default(),
                    u64::try_from(unanswered).unwrap_or_default(),
                );
            }
        }
        Ok(Some(hours))
    }

    /// Pending, delivered and dead deliveries of every sink with rows, by sink name (the
    /// whole outbox, not only the calls of the list).
    fn delivery_counts(&self) -> rusqlite::Result<Vec<SinkCounts>> {
        let Some(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(
            "SELECT sink,
                    SUM(state = 'pending'), SUM(state = 'delivered'), SUM(state = 'dead'),
                    MIN(CASE WHEN state = 'pending' THEN created_ms END)
             FROM deliveries GROUP BY sink ORDER BY sink",
        )?;
        stmt.query_map([], |r| {
            let count = |i: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or_default())
            };
            Ok(SinkCounts {
                sink: r.get(0)?,
                pending: count(1)?,
                delivered: count(2)?,
                dead: count(3)?,
                oldest_pending_ms: r.get(4)?,
            })
        })?
        .collect()
    }
}

/// The `strftime` form of an hour as the store's start times begin (`YYYY-MM-DDTHH`).
const HOUR_KEY: &str = "%Y-%m-%dT%H";

/// The hour a store time (`YYYY-MM-DDTHH:MM:SS`, or just its first 13 characters) falls in.
fn hour_of(time: &str) -> Option<NaiveDateTime> {
    let hour = time.get(..13)?;
    NaiveDateTime::parse_from_str(&format!("{hour}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()
}

/// Calls per hour for the chart of the list page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hours {
    /// The first of the 24 hours.
    first: NaiveDateTime,
    /// Answered and not answered calls in each hour, from `first` on.
    counts: [(u64, u64); 24],
}

/// What the top of the list page shows besides the calls.
#[derive(Debug, Clone)]
struct Overview {
    hours: Option<Hours>,
    counts: Vec<SinkCounts>,
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
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem}\
.overview{display:flex;flex-wrap:wrap;gap:.5rem 2.5rem;align-items:flex-start;margin-bottom:.6rem}\
figure{margin:0 0 1rem}figcaption{font-weight:600;margin:0 0 .3rem}figcaption.muted{font-weight:400}\
svg{max-width:100%;height:auto}table.sinks svg{display:block}\
details summary{cursor:pointer;color:#555;font-size:.85rem}";

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
    overview: &Overview,
) -> String {
    let f = &q.filter;
    let mut b = String::with_capacity(32 * 1024);
    b.push_str("<section class=\"overview\" aria-label=\"Overview\">\n");
    hours_figure(&mut b, overview.hours.as_ref(), f != &CallFilter::default());
    deliveries_figure(&mut b, &overview.counts);
    b.push_str("</section>\n");
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
    let mut pager = String::from("<nav class=\"pager\" aria-label=\"Pages\">");
    if q.page > 2 {
        let _ = write!(pager, "<a href=\"{}\">« Newest</a>", esc(&link(1)));
    }
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
    if q.page.saturating_add(1) < pages {
        let _ = write!(pager, "<a href=\"{}\">Oldest »</a>", esc(&link(pages)));
    }
    pager.push_str("</nav>\n");
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
    if let Some(timeline) = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(Timeline::of)
    {
        timeline_figure(&mut b, &timeline);
    }
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

// ---------------------------------------------------------------------------------------------
// Charts: server-rendered SVG, readable without JavaScript. Every chart has a <title> and a
// <desc>, every bar a <title> (the browser's tooltip; what a screen reader announces), and the
// numbers are also printed as text (labels, tables).

/// Fill of answered calls in the hour chart.
const ANSWERED_FILL: &str = "#0969da";
/// Fill of calls not answered in the hour chart.
const UNANSWERED_FILL: &str = "#e16f24";
/// Fills of the delivery states (as the `.delivered`, `.pending` and `.dead` text colours).
const DELIVERED_FILL: &str = "#1a7f37";
const PENDING_FILL: &str = "#d4a72c";
const DEAD_FILL: &str = "#cf222e";

/// An SVG coordinate or length: one decimal at most.
fn px(x: f64) -> String {
    let s = format!("{x:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_owned(),
        None => s,
    }
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `n` (and at least 1).
fn nice_ceiling(n: u64) -> u64 {
    let mut scale = 1u64;
    loop {
        for m in [1, 2, 5] {
            let v = scale.saturating_mul(m);
            if v >= n {
                return v;
            }
        }
        if scale > u64::MAX / 10 {
            return u64::MAX;
        }
        scale *= 10;
    }
}

/// `n` and the noun, in the plural unless `n` is 1.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The chart of calls per hour (stacked: answered below, not answered above), with its numbers
/// as a table in a `<details>` below it.
fn hours_figure(b: &mut String, hours: Option<&Hours>, filtered: bool) {
    const W: f64 = 620.0;
    const H: f64 = 206.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 10.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 36.0;
    let scope = if filtered {
        "matching the filter"
    } else {
        "in the store"
    };
    b.push_str("<figure class=\"chart\" id=\"calls-per-hour\">");
    let Some(h) = hours else {
        let _ = writeln!(
            b,
            "<figcaption>Calls per hour</figcaption><p class=\"muted\">No calls {scope}.</p>\
             </figure>"
        );
        return;
    };
    let end = h.first + chrono::TimeDelta::hours(24);
    let answered: u64 = h.counts.iter().map(|c| c.0).sum();
    let unanswered: u64 = h.counts.iter().map(|c| c.1).sum();
    let _ = writeln!(
        b,
        "<figcaption>Calls per hour, {} to {} <span class=\"muted\">(the 24 hours up to the \
         latest call {scope})</span></figcaption>",
        h.first.format("%Y-%m-%d %H:00"),
        end.format("%Y-%m-%d %H:00"),
    );
    let summary = format!(
        "{} from {} to {}: {} answered, {} not answered.",
        count(answered + unanswered, "call", "calls"),
        h.first.format("%Y-%m-%d %H:00"),
        end.format("%Y-%m-%d %H:00"),
        answered,
        unanswered
    );
    let _ = writeln!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"hours\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"hours-title hours-desc\" \
         font-size=\"12\"><title id=\"hours-title\">Calls per hour, answered and not answered\
         </title><desc id=\"hours-desc\">{summary}</desc>",
        w = px(W),
        h = px(H),
        summary = esc(&summary),
    );
    // Legend.
    let _ = writeln!(
        b,
        "<g class=\"legend\"><rect x=\"{l}\" y=\"8\" width=\"11\" height=\"11\" fill=\"{ANSWERED_FILL}\"/>\
         <text x=\"{t1}\" y=\"18\">answered ({answered})</text>\
         <rect x=\"{l2}\" y=\"8\" width=\"11\" height=\"11\" fill=\"{UNANSWERED_FILL}\"/>\
         <text x=\"{t2}\" y=\"18\">not answered ({unanswered})</text></g>",
        l = px(LEFT),
        t1 = px(LEFT + 16.0),
        l2 = px(LEFT + 150.0),
        t2 = px(LEFT + 166.0),
    );
    // Y axis: 0, half and the top, with grid lines.
    let max = h.counts.iter().map(|c| c.0 + c.1).max().unwrap_or(0);
    let top = nice_ceiling(max);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: u64| TOP + plot_h - (v as f64) / (top as f64) * plot_h;
    let mut marks = vec![0, top];
    if top % 2 == 0 {
        marks.insert(1, top / 2);
    }
    b.push_str("<g class=\"axis\">");
    for v in marks {
        let _ = write!(
            b,
            "<line x1=\"{x1}\" x2=\"{x2}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{stroke}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#555\">{v}</text>",
            x1 = px(LEFT),
            x2 = px(W - RIGHT),
            y = px(y(v)),
            stroke = if v == 0 { "#888" } else { "#e5e5e5" },
            tx = px(LEFT - 6.0),
            ty = px(y(v) + 4.0),
        );
    }
    b.push_str("</g>\n");
    let slot = plot_w / 24.0;
    let bar = slot * 0.72;
    for (i, &(a, u)) in h.counts.iter().enumerate() {
        let hour = h.first + chrono::TimeDelta::hours(i64::try_from(i).unwrap_or_default());
        let next = hour + chrono::TimeDelta::hours(1);
        let x0 = LEFT + slot * i as f64;
        let bx = x0 + (slot - bar) / 2.0;
        let label = format!(
            "{}–{}: {}, {a} answered, {u} not answered",
            hour.format("%Y-%m-%d %H:00"),
            next.format("%H:00"),
            count(a + u, "call", "calls"),
        );
        let _ = write!(
            b,
            "<g class=\"hour\"><title>{}</title><rect class=\"slot\" x=\"{}\" y=\"{}\" \
             width=\"{}\" height=\"{}\" fill=\"transparent\"/>",
            esc(&label),
            px(x0),
            px(TOP),
            px(slot),
            px(plot_h),
        );
        if a > 0 {
            let _ = write!(
                b,
                "<rect class=\"answered\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{ANSWERED_FILL}\"/>",
                px(bx),
                px(y(a)),
                px(bar),
                px(y(0) - y(a)),
            );
        }
        if u > 0 {
            let _ = write!(
                b,
                "<rect class=\"unanswered\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{UNANSWERED_FILL}\"/>",
                px(bx),
                px(y(a + u)),
                px(bar),
                px(y(a) - y(a + u)),
            );
        }
        if a + u > 0 {
            let _ = write!(
                b,
                "<text class=\"total\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#444\">{}</text>",
                px(x0 + slot / 2.0),
                px(y(a + u) - 3.0),
                a + u
            );
        }
        b.push_str("</g>\n");
    }
    // X axis: every third hour, with the date under the first hour and under midnight.
    b.push_str("<g class=\"axis\">");
    for i in (0..24).step_by(3) {
        let hour = h.first + chrono::TimeDelta::hours(i);
        let x = LEFT + slot * (i as f64) + slot / 2.0;
        let _ = write!(
            b,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            px(x),
            px(H - BOTTOM + 15.0),
            hour.format("%H:00"),
        );
    }
    for i in 0..24 {
        let hour = h.first + chrono::TimeDelta::hours(i);
        if i == 0 || hour.format("%H").to_string() == "00" {
            let x = LEFT + slot * (i as f64);
            let _ = write!(
                b,
                "<text x=\"{}\" y=\"{}\" fill=\"#555\">{}</text>",
                px(x),
                px(H - BOTTOM + 30.0),
                hour.format("%Y-%m-%d"),
            );
        }
    }
    b.push_str("</g></svg>\n");
    b.push_str(
        "<details><summary>The numbers</summary><table class=\"hours\"><thead><tr>\
         <th scope=\"col\">Hour</th><th scope=\"col\">Answered</th>\
         <th scope=\"col\">Not answered</th><th scope=\"col\">Calls</th></tr></thead><tbody>\n",
    );
    for (i, &(a, u)) in h.counts.iter().enumerate() {
        let hour = h.first + chrono::TimeDelta::hours(i64::try_from(i).unwrap_or_default());
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\">{}</th><td class=\"n\">{a}</td><td class=\"n\">{u}</td>\
             <td class=\"n\">{}</td></tr>",
            hour.format("%Y-%m-%d %H:00"),
            a + u
        );
    }
    b.push_str("</tbody></table></details></figure>\n");
}

/// The delivery state of every sink: a table with a stacked bar per sink.
fn deliveries_figure(b: &mut String, counts: &[SinkCounts]) {
    const W: f64 = 180.0;
    b.push_str(
        "<figure class=\"chart\" id=\"deliveries\"><figcaption>Deliveries per sink \
         <span class=\"muted\">(every call in the store)</span></figcaption>\n",
    );
    if counts.is_empty() {
        b.push_str("<p class=\"muted\">No sinks: calls are kept in the store only.</p></figure>\n");
        return;
    }
    b.push_str(
        "<table class=\"sinks\"><thead><tr><th scope=\"col\">Sink</th>\
         <th scope=\"col\">Delivered</th><th scope=\"col\">Pending</th><th scope=\"col\">Dead</th>\
         <th scope=\"col\">Oldest pending</th><th scope=\"col\">Share</th></tr></thead><tbody>\n",
    );
    for c in counts {
        let total = c.delivered + c.pending + c.dead;
        let summary = format!(
            "{}: {} delivered, {} pending, {} dead",
            c.sink, c.delivered, c.pending, c.dead
        );
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{sink}</th><td class=\"n delivered\">{}</td>\
             <td class=\"n pending\">{}</td><td class=\"n dead\">{}</td><td>{}</td><td>\
             <svg xmlns=\"http://www.w3.org/2000/svg\" class=\"share\" width=\"{w}\" height=\"14\" \
             viewBox=\"0 0 {w} 14\" role=\"img\" aria-label=\"{summary}\"><title>{summary}</title>\
             <rect width=\"{w}\" height=\"14\" fill=\"#eee\"/>",
            c.delivered,
            c.pending,
            c.dead,
            utc(c.oldest_pending_ms),
            sink = esc(&c.sink),
            w = px(W),
            summary = esc(&summary),
        );
        let mut x = 0.0;
        for (n, state, fill) in [
            (c.delivered, "delivered", DELIVERED_FILL),
            (c.pending, "pending", PENDING_FILL),
            (c.dead, "dead", DEAD_FILL),
        ] {
            if n == 0 || total == 0 {
                continue;
            }
            let w = (n as f64) / (total as f64) * W;
            let _ = write!(
                b,
                "<rect class=\"{state}\" x=\"{}\" width=\"{}\" height=\"14\" fill=\"{fill}\">\
                 <title>{n} {state}</title></rect>",
                px(x),
                px(w.max(1.0)),
            );
            x += w;
        }
        b.push_str("</svg></td></tr>\n");
    }
    b.push_str("</tbody></table></figure>\n");
}

/// How many lanes a timeline draws at most (the tables below list every leg).
const MAX_LANES: usize = 60;

/// A call's timeline: one lane per Asterisk or CMS leg, or per SMDR record (segment).
#[derive(Debug, Clone, PartialEq)]
struct Timeline {
    /// Time 0 of the axis: the call's start (or its earliest leg's).
    origin: NaiveDateTime,
    /// Seconds from `origin` to the last time drawn (at least 1).
    span: f64,
    /// What a lane is: `leg`, `record` or `call`.
    what: &'static str,
    /// The lanes drawn, top to bottom.
    lanes: Vec<Lane>,
    /// How many lanes there were before the [`MAX_LANES`] cap.
    total: usize,
    /// Events drawn as vertical lines (Asterisk transfers).
    marks: Vec<Mark>,
    /// `" UTC"` for CMS calls, whose times are UTC; empty for PBX local time.
    zone: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
struct Lane {
    label: String,
    title: String,
    /// Seconds from the origin where the lane begins (drawn as a tick when it has no spans).
    at: f64,
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    from: f64,
    to: f64,
    kind: SpanKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpanKind {
    Ringing,
    Connected,
    Held,
    /// Went on past the last time known (no end seen).
    Open,
}

impl SpanKind {
    const ALL: [Self; 4] = [Self::Ringing, Self::Connected, Self::Held, Self::Open];

    fn name(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Connected => "connected",
            Self::Held => "on hold or parked",
            Self::Open => "no end seen",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Connected => "connected",
            Self::Held => "held",
            Self::Open => "open",
        }
    }

    fn fill(self) -> &'static str {
        match self {
            Self::Ringing => "#f2cc60",
            Self::Connected => "#2da44e",
            Self::Held => "#8c959f",
            Self::Open => "#d8f3dc",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Mark {
    at: f64,
    label: String,
    title: String,
}

/// A time of the call model (`2018-01-05T21:30:09`, fractions allowed).
fn json_time(v: &Value) -> Option<NaiveDateTime> {
    v.as_str()?.parse().ok()
}

/// Seconds from `origin` to `t`.
fn seconds(origin: NaiveDateTime, t: NaiveDateTime) -> f64 {
    (t - origin).num_milliseconds() as f64 / 1000.0
}

/// `origin` plus `secs` seconds.
fn plus(origin: NaiveDateTime, secs: f64) -> NaiveDateTime {
    origin + chrono::TimeDelta::milliseconds((secs * 1000.0).round() as i64)
}

/// A wall-clock time, with milliseconds when it has any.
fn clock(t: NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_millis() == 0 {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M:%S%.3f").to_string()
    }
}

/// A length of time: `2 s`, `2.5 s`, or `H:MM:SS` from a minute on.
fn seconds_text(secs: f64) -> String {
    if secs >= 60.0 {
        hms(secs.round() as i64)
    } else if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// A string field of a JSON object, or `""`.
fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// At most `max` characters of `s`, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

impl Timeline {
    /// The timeline of a stored call: its `legs` (Asterisk, CMS: created, answered, ended),
    /// else its SMDR `records` (each segment's ring, connected, hold and park seconds, one
    /// segment after the other from the call's start, as the call's end is computed), else the
    /// call itself. `None` when the call has no start time.
    fn of(call: &Value) -> Option<Self> {
        let start = json_time(call.get("start_time")?)?;
        let end = call.get("end_time").and_then(json_time).unwrap_or(start);
        let list = |key: &str| {
            call.get(key)
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
        };
        let mut timeline = if let Some(legs) = list("legs") {
            Self::of_legs(call, start, end, legs)
        } else if let Some(records) = list("records") {
            Self::of_records(start, end, records)
        } else {
            Self::of_call(call, start, end)
        };
        if field(call, "source") == "cms" {
            timeline.zone = " UTC";
        }
        Some(timeline)
    }

    fn of_legs(call: &Value, start: NaiveDateTime, end: NaiveDateTime, legs: &[Value]) -> Self {
        let times = |l: &Value| {
            ["start", "answer", "end"]
                .into_iter()
                .filter_map(|k| l.get(k).and_then(json_time))
                .collect::<Vec<_>>()
        };
        let origin = legs
            .iter()
            .flat_map(times)
            .chain([start])
            .min()
            .unwrap_or(start);
        let last = legs
            .iter()
            .flat_map(times)
            .chain([end])
            .max()
            .unwrap_or(end);
        let span = seconds(origin, last).max(1.0);
        let at = |l: &Value, k: &str| l.get(k).and_then(json_time);
        let lanes = legs
            .iter()
            .take(MAX_LANES)
            .map(|leg| {
                let created = at(leg, "start");
                let answered = at(leg, "answer");
                let ended = at(leg, "end");
                let s = created.map_or(0.0, |t| seconds(origin, t));
                let a = answered.map(|t| seconds(origin, t));
                let e = ended.map(|t| seconds(origin, t));
                let spans = match (a, e) {
                    (Some(a), Some(e)) => {
                        vec![(s, a, SpanKind::Ringing), (a, e, SpanKind::Connected)]
                    }
                    (Some(a), None) => vec![(s, a, SpanKind::Ringing), (a, span, SpanKind::Open)],
                    (None, Some(e)) => vec![(s, e, SpanKind::Ringing)],
                    (None, None) => vec![(s, span, SpanKind::Open)],
                };
                let channel = field(leg, "channel");
                let renamed = field(leg, "renamed_to");
                // CMS legs often repeat the address as the number: say it once.
                let who = [field(leg, "caller_num"), field(leg, "caller_name")]
                    .into_iter()
                    .filter(|s| !s.is_empty() && *s != channel)
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut title = channel.to_owned();
                if !renamed.is_empty() {
                    let _ = write!(title, " (later {renamed})");
                }
                if !who.is_empty() {
                    let _ = write!(title, ", {who}");
                }
                for (what, t) in [
                    ("created", created),
                    ("answered", answered),
                    ("ended", ended),
                ] {
                    if let Some(t) = t {
                        let _ = write!(title, "; {what} {}", clock(t));
                    }
                }
                let cause = field(leg, "hangup_cause_text");
                if !cause.is_empty() {
                    let _ = write!(title, "; hangup cause {cause}");
                }
                let dial = field(leg, "dial_status");
                if !dial.is_empty() {
                    let _ = write!(title, "; dial status {dial}");
                }
                let label = if who.is_empty() {
                    channel.to_owned()
                } else {
                    format!("{channel} ({who})")
                };
                Lane {
                    label,
                    title,
                    at: s,
                    spans: spans
                        .into_iter()
                        .filter(|(from, to, _)| to > from)
                        .map(|(from, to, kind)| Span { from, to, kind })
                        .collect(),
                }
            })
            .collect();
        let marks = call
            .get("transfers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|t| {
                        let when = t.get("time").and_then(json_time)?;
                        let kind = field(t, "kind");
                        let mut title = format!("{kind} transfer at {}", clock(when));
                        for (what, key) in [
                            ("of", "transferee"),
                            ("by", "transferer"),
                            ("to", "target"),
                            ("result", "result"),
                        ] {
                            let v = field(t, key);
                            if !v.is_empty() {
                                let _ = write!(title, ", {what} {v}");
                            }
                        }
                        Some(Mark {
                            at: seconds(origin, when),
                            label: format!("{kind} transfer"),
                            title,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            origin,
            span,
            what: "leg",
            lanes,
            total: legs.len(),
            marks,
            zone: "",
        }
    }

    fn of_records(start: NaiveDateTime, end: NaiveDateTime, records: &[Value]) -> Self {
        let secs = |r: &Value, k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
        let mut offset = 0.0;
        let mut lanes = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let ring = secs(r, "ring");
            let connected = secs(r, "duration");
            let held = secs(r, "hold_time") + secs(r, "park_time");
            let at = offset;
            offset += ring + connected + held;
            if i >= MAX_LANES {
                continue;
            }
            let party = |n: u8| {
                let device = field(r, &format!("party_{n}_device"));
                let name = field(r, &format!("party_{n}_name"));
                if name.is_empty() || name == device {
                    device.to_owned()
                } else {
                    format!("{device} {name}")
                }
            };
            let (p1, p2) = (party(1), party(2));
            let label = format!(
                "{}. {} – {}",
                i + 1,
                field(r, "party_1_device"),
                field(r, "party_2_device")
            );
            let title = format!(
                "Record {}: {p1} with {p2}, from {} to {}: ring {}, connected {}, hold {}, park {}{}",
                i + 1,
                clock(plus(start, at)),
                clock(plus(start, offset)),
                seconds_text(ring),
                seconds_text(connected),
                seconds_text(secs(r, "hold_time")),
                seconds_text(secs(r, "park_time")),
                if r.get("continued").and_then(Value::as_bool) == Some(true) {
                    "; continued in a later record"
                } else {
                    ""
                }
            );
            let mut spans = Vec::new();
            let mut from = at;
            for (len, kind) in [
                (ring, SpanKind::Ringing),
                (connected, SpanKind::Connected),
                (held, SpanKind::Held),
            ] {
                if len > 0.0 {
                    spans.push(Span {
                        from,
                        to: from + len,
                        kind,
                    });
                }
                from += len;
            }
            lanes.push(Lane {
                label,
                title,
                at,
                spans,
            });
        }
        Self {
            origin: start,
            span: offset.max(seconds(start, end)).max(1.0),
            what: "record",
            lanes,
            total: records.len(),
            marks: Vec::new(),
            zone: "",
        }
    }

    fn of_call(call: &Value, start: NaiveDateTime, end: NaiveDateTime) -> Self {
        let e = seconds(start, end).max(0.0);
        let answered = call.get("answered").and_then(Value::as_bool) == Some(true);
        let answer = call
            .get("answer_time")
            .and_then(json_time)
            .map(|t| seconds(start, t).clamp(0.0, e));
        let spans: Vec<Span> = match answer {
            Some(a) => vec![
                Span {
                    from: 0.0,
                    to: a,
                    kind: SpanKind::Ringing,
                },
                Span {
                    from: a,
                    to: e,
                    kind: SpanKind::Connected,
                },
            ],
            None => vec![Span {
                from: 0.0,
                to: e,
                kind: if answered {
                    SpanKind::Connected
                } else {
                    SpanKind::Ringing
                },
            }],
        };
        let title = format!(
            "The call, {} to {}{}",
            clock(start),
            clock(end),
            if answered {
                ", answered"
            } else {
                ", not answered"
            }
        );
        Self {
            origin: start,
            span: e.max(1.0),
            what: "call",
            lanes: vec![Lane {
                label: "call".to_owned(),
                title,
                at: 0.0,
                spans: spans.into_iter().filter(|s| s.to > s.from).collect(),
            }],
            total: 1,
            marks: Vec::new(),
            zone: "",
        }
    }
}

/// The tick step of a time axis `span` seconds long: about eight ticks or fewer.
fn tick_step(span: f64) -> i64 {
    const STEPS: [i64; 18] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    ];
    STEPS
        .into_iter()
        .find(|s| span / (*s as f64) <= 8.0)
        .unwrap_or(86400)
}

/// The timeline as an SVG figure: lanes top to bottom, time left to right, clock-time ticks.
fn timeline_figure(b: &mut String, t: &Timeline) {
    const LABEL_W: f64 = 300.0;
    const PLOT_W: f64 = 640.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 36.0;
    const ROW: f64 = 26.0;
    const BOTTOM: f64 = 34.0;
    let w = LABEL_W + PLOT_W + RIGHT;
    let h = TOP + ROW * t.lanes.len() as f64 + BOTTOM;
    let x = |s: f64| LABEL_W + s.clamp(0.0, t.span) / t.span * PLOT_W;
    let end = plus(t.origin, t.span);
    let many = |n: usize| if n == 1 { "" } else { "s" };
    let caption = format!(
        "{} {}{} from {} to {}{} ({}){}",
        t.total,
        t.what,
        many(t.total),
        clock(t.origin),
        clock(end),
        t.zone,
        seconds_text(t.span),
        if t.total > t.lanes.len() {
            format!(", the first {} drawn", t.lanes.len())
        } else {
            String::new()
        }
    );
    let _ = write!(
        b,
        "<h3>Timeline</h3>\n<figure class=\"chart\" id=\"timeline\"><figcaption class=\"muted\">\
         {caption}</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" \
         width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-labelledby=\"timeline-title timeline-desc\" font-size=\"12\">\
         <title id=\"timeline-title\">Timeline of the call: one row per {what}</title>\
         <desc id=\"timeline-desc\">{caption}. Bars: ringing, connected, on hold or parked; \
         each bar's title gives its times.</desc>\n",
        caption = esc(&caption),
        w = px(w),
        h = px(h),
        what = t.what,
    );
    // Row backgrounds.
    for i in (0..t.lanes.len()).filter(|i| i % 2 == 1) {
        let _ = write!(
            b,
            "<rect x=\"0\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f6f8fa\"/>",
            px(TOP + ROW * i as f64),
            px(w),
            px(ROW),
        );
    }
    // Time axis: ticks at round clock times.
    let step = tick_step(t.span);
    let step_ms = step * 1000;
    let origin_ms = t.origin.and_utc().timestamp_millis();
    let end_ms = origin_ms + (t.span * 1000.0).round() as i64;
    let mut tick = (origin_ms.div_euclid(step_ms) + i64::from(origin_ms % step_ms != 0)) * step_ms;
    let format = if step >= 60 { "%H:%M" } else { "%H:%M:%S" };
    b.push_str("<g class=\"axis\">");
    while tick <= end_ms {
        let at = (tick - origin_ms) as f64 / 1000.0;
        let label = chrono::DateTime::from_timestamp_millis(tick)
            .map(|d| d.naive_utc().format(format).to_string())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<line x1=\"{x}\" x2=\"{x}\" y1=\"{y1}\" y2=\"{y2}\" stroke=\"#d0d7de\"/>\
             <text x=\"{x}\" y=\"14\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            x = px(x(at)),
            y1 = px(TOP - 16.0),
            y2 = px(h - BOTTOM),
        );
        tick += step_ms;
    }
    b.push_str("</g>\n");
    for (i, lane) in t.lanes.iter().enumerate() {
        let top = TOP + ROW * i as f64;
        let _ = write!(
            b,
            "<g class=\"lane\"><title>{}</title><text x=\"{}\" y=\"{}\" text-anchor=\"end\" \
             font-size=\"11\">{}</text>",
            esc(&lane.title),
            px(LABEL_W - 8.0),
            px(top + ROW / 2.0 + 4.0),
            esc(&shorten(&lane.label, 42)),
        );
        if lane.spans.is_empty() {
            let _ = write!(
                b,
                "<rect class=\"instant\" x=\"{}\" y=\"{}\" width=\"2\" height=\"16\" fill=\"#57606a\"/>",
                px(x(lane.at)),
                px(top + 5.0),
            );
        }
        for s in &lane.spans {
            let dashed = if s.kind == SpanKind::Open {
                " stroke=\"#2da44e\" stroke-dasharray=\"4 2\""
            } else {
                ""
            };
            let _ = write!(
                b,
                "<rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"16\" fill=\"{}\"{dashed}>\
                 <title>{} {}–{} ({})</title></rect>",
                s.kind.class(),
                px(x(s.from)),
                px(top + 5.0),
                px((x(s.to) - x(s.from)).max(1.0)),
                s.kind.fill(),
                s.kind.name(),
                clock(plus(t.origin, s.from)),
                clock(plus(t.origin, s.to)),
                seconds_text(s.to - s.from),
            );
        }
        b.push_str("</g>\n");
    }
    for m in &t.marks {
        let _ = writeln!(
            b,
            "<g class=\"mark\"><title>{}</title><line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" \
             stroke=\"#8250df\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/><text x=\"{x}\" \
             y=\"{}\" text-anchor=\"middle\" fill=\"#8250df\">{}</text></g>",
            esc(&m.title),
            px(TOP - 2.0),
            px(h - BOTTOM),
            px(TOP - 6.0),
            esc(&m.label),
            x = px(x(m.at)),
        );
    }
    // Legend: the kinds drawn.
    b.push_str("<g class=\"legend\">");
    let mut lx = LABEL_W;
    for kind in SpanKind::ALL {
        if !t
            .lanes
            .iter()
            .any(|l| l.spans.iter().any(|s| s.kind == kind))
        {
            continue;
        }
        let _ = write!(
            b,
            "<rect x=\"{}\" y=\"{}\" width=\"11\" height=\"11\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            px(lx),
            px(h - 20.0),
            kind.fill(),
            px(lx + 15.0),
            px(h - 10.5),
            kind.name(),
        );
        lx += 40.0 + 7.0 * kind.name().len() as f64;
    }
    b.push_str("</g></svg></figure>\n");
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
    fn chart_helpers() {
        assert_eq!(
            [0, 1, 2, 3, 7, 10, 11, 36, 101].map(nice_ceiling),
            [1, 1, 2, 5, 10, 10, 20, 50, 200]
        );
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
        assert_eq!(
            [0.4, 8.0, 9.0, 14.0, 1446.0, 1e9].map(tick_step),
            [1, 1, 2, 2, 300, 86400]
        );
        assert_eq!([1.0, 12.25, 3.0 / 7.0].map(px), ["1", "12.2", "0.4"]);
        assert_eq!(
            [2.0, 2.54, 281.0].map(seconds_text),
            ["2 s", "2.5 s", "0:04:41"]
        );
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefg", 6), "abcde…");
        let hour = |s: &str| hour_of(s).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(
            hour("2018-01-05T21:30:09").as_deref(),
            Some("2018-01-05 21:00:00")
        );
        assert_eq!(
            hour("2018-01-05T21").as_deref(),
            Some("2018-01-05 21:00:00")
        );
        assert_eq!(hour("2018-01-05"), None);
        assert_eq!(hour("2018-01-05T2x:00:00"), None);
    }

    #[test]
    fn timeline_of_legs_marks_ringing_connected_open_and_transfers() {
        let call = json!({
            "start_time": "2026-11-22T13:54:52.5",
            "end_time": "2026-11-22T13:55:06",
            "legs": [
                {"channel": "SIP/a-1", "caller_num": "1001", "caller_name": "Alice",
                 "start": "2026-11-22T13:54:52.5", "answer": "2026-11-22T13:54:54.5",
                 "end": "2026-11-22T13:55:06", "hangup_cause_text": "Normal Clearing"},
                {"channel": "SIP/b-2", "start": "2026-11-22T13:54:53",
                 "end": "2026-11-22T13:54:58", "dial_status": "NOANSWER"},
                {"channel": "SIP/c-3", "start": "2026-11-22T13:55:00",
                 "answer": "2026-11-22T13:55:01"},
                {"channel": "SIP/d-4"}
            ],
            "transfers": [{"kind": "blind", "time": "2026-11-22T13:54:58",
                           "transferer": "1.1", "target": "2003@phones", "result": "Success"}]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.what, "leg");
        assert_eq!((t.total, t.lanes.len()), (4, 4));
        assert!((t.span - 13.5).abs() < 1e-9, "{}", t.span);
        let kinds = |i: usize| -> Vec<(f64, f64, SpanKind)> {
            t.lanes[i]
                .spans
                .iter()
                .map(|s| (s.from, s.to, s.kind))
                .collect()
        };
        assert_eq!(
            kinds(0),
            [
                (0.0, 2.0, SpanKind::Ringing),
                (2.0, 13.5, SpanKind::Connected)
            ]
        );
        assert_eq!(kinds(1), [(0.5, 5.5, SpanKind::Ringing)]);
        assert_eq!(
            kinds(2),
            [(7.5, 8.5, SpanKind::Ringing), (8.5, 13.5, SpanKind::Open)]
        );
        assert_eq!(kinds(3), [(0.0, 13.5, SpanKind::Open)]);
        assert_eq!(t.lanes[0].label, "SIP/a-1 (1001 Alice)");
        assert_eq!(
            t.lanes[0].title,
            "SIP/a-1, 1001 Alice; created 13:54:52.500; answered 13:54:54.500; ended 13:55:06; \
             hangup cause Normal Clearing"
        );
        assert!(t.lanes[1].title.ends_with("; dial status NOANSWER"));
        assert_eq!(t.marks.len(), 1);
        assert_eq!(t.marks[0].label, "blind transfer");
        assert_eq!(
            t.marks[0].title,
            "blind transfer at 13:54:58, by 1.1, to 2003@phones, result Success"
        );
        assert!((t.marks[0].at - 5.5).abs() < 1e-9);

        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert_eq!(b.matches("<g class=\"lane\">").count(), 4);
        assert!(b.contains(">blind transfer</text>"));
        assert!(
            b.contains("<title>ringing 13:54:52.500–13:54:54.500 (2 s)</title>"),
            "{b}"
        );
        assert!(
            b.contains(">13:55:00</text>"),
            "a tick on a round time: {b}"
        );
        assert!(
            b.contains(">no end seen</text>"),
            "the legend names the kinds drawn"
        );
        assert!(!b.contains(">on hold or parked</text>"));
    }

    #[test]
    fn timeline_of_smdr_records_puts_segments_one_after_the_other() {
        let call = json!({
            "start_time": "2018-01-05T21:30:09",
            "end_time": "2018-01-05T21:54:15",
            "records": [
                {"ring": 11, "duration": 281, "hold_time": 200, "park_time": 55,
                 "party_1_device": "E244", "party_1_name": "Volunteer2",
                 "party_2_device": "T9002", "party_2_name": "Line 2.0", "continued": true},
                {"ring": 0, "duration": 899, "hold_time": 0, "park_time": 0,
                 "party_1_device": "T9002", "party_1_name": "Line 2.0",
                 "party_2_device": "V8", "party_2_name": ""},
                {"ring": 0, "duration": 0, "party_1_device": "E1", "party_2_device": "E2"}
            ]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.what, "record");
        assert!((t.span - 1446.0).abs() < 1e-9);
        let spans: Vec<Vec<(f64, f64, SpanKind)>> = t
            .lanes
            .iter()
            .map(|l| l.spans.iter().map(|s| (s.from, s.to, s.kind)).collect())
            .collect();
        assert_eq!(
            spans,
            [
                vec![
                    (0.0, 11.0, SpanKind::Ringing),
                    (11.0, 292.0, SpanKind::Connected),
                    (292.0, 547.0, SpanKind::Held)
                ],
                vec![(547.0, 1446.0, SpanKind::Connected)],
                vec![]
            ]
        );
        assert_eq!(t.lanes[2].at, 1446.0);
        assert_eq!(t.lanes[0].label, "1. E244 – T9002");
        assert_eq!(
            t.lanes[0].title,
            "Record 1: E244 Volunteer2 with T9002 Line 2.0, from 21:30:09 to 21:39:16: ring 11 s, \
             connected 0:04:41, hold 0:03:20, park 55 s; continued in a later record"
        );
        assert!(
            t.lanes[1]
                .title
                .starts_with("Record 2: T9002 Line 2.0 with V8, ")
        );
        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert!(
            b.contains("<rect class=\"instant\""),
            "a record of no length: {b}"
        );
        assert!(b.contains(">21:35</text>"), "{b}");
    }

    #[test]
    fn timeline_of_a_cms_call_is_in_utc_and_names_each_address_once() {
        let call = json!({
            "source": "cms",
            "start_time": "2017-04-24T12:00:11", "end_time": "2017-04-24T13:06:05",
            "legs": [{"channel": "carol@example.org", "caller_num": "carol@example.org",
                      "caller_name": "Carol", "start": "2017-04-24T12:00:11",
                      "answer": "2017-04-24T12:00:11", "end": "2017-04-24T13:06:05"}]
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!(t.lanes[0].label, "carol@example.org (Carol)");
        let mut b = String::new();
        timeline_figure(&mut b, &t);
        assert!(
            b.contains(">1 leg from 12:00:11 to 13:06:05 UTC (1:05:54)</figcaption>"),
            "{b}"
        );
        assert!(b.contains(">12:10</text>"), "ten-minute ticks: {b}");
    }

    #[test]
    fn timeline_of_a_call_without_legs_or_records() {
        let call = json!({
            "start_time": "2024-03-01T10:00:00", "end_time": "2024-03-01T10:01:00",
            "answered": true, "answer_time": "2024-03-01T10:00:15"
        });
        let t = Timeline::of(&call).unwrap_or_else(|| panic!("a timeline"));
        assert_eq!((t.what, t.lanes.len()), ("call", 1));
        let kinds: Vec<SpanKind> = t.lanes[0].spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SpanKind::Ringing, SpanKind::Connected]);
        assert_eq!(Timeline::of(&json!({"legs": []})), None);
    }

    #[test]
    fn hour_chart_and_delivery_bars() {
        let mut hours = Hours {
            first: hour_of("2018-01-05T00").unwrap_or_default(),
            counts: [(0, 0); 24],
        };
        hours.counts[14] = (22, 3);
        hours.counts[23] = (0, 2);
        let mut b = String::new();
        hours_figure(&mut b, Some(&hours), true);
        assert_eq!(b.matches("<g class=\"hour\">").count(), 24);
        assert_eq!(b.matches("<rect class=\"answered\"").count(), 1);
        assert_eq!(b.matches("<rect class=\"unanswered\"").count(), 2);
        assert!(b.contains(
            "<title>2018-01-05 14:00–15:00: 25 calls, 22 answered, 3 not answered</title>"
        ));
        assert!(b.contains(
            "<title>2018-01-05 03:00–04:00: 0 calls, 0 answered, 0 not answered</title>"
        ));
        assert!(b.contains(">answered (22)</text>") && b.contains(">not answered (5)</text>"));
        assert!(b.contains(">50</text>"), "the axis tops at 50: {b}");
        assert!(b.contains("matching the filter"));
        let mut b = String::new();
        hours_figure(&mut b, None, false);
        assert!(b.contains("No calls in the store."));

        let counts = [SinkCounts {
            sink: "web<hook>".to_owned(),
            pending: 1,
            delivered: 3,
            dead: 0,
            oldest_pending_ms: Some(0),
        }];
        let mut b = String::new();
        deliveries_figure(&mut b, &counts);
        assert!(b.contains("<th scope=\"row\">web&lt;hook&gt;</th>"), "{b}");
        assert!(b.contains("<td>1970-01-01 00:00:00 UTC</td>"));
        assert!(
            b.contains("<rect class=\"delivered\" x=\"0\" width=\"135\""),
            "{b}"
        );
        assert!(
            b.contains("<rect class=\"pending\" x=\"135\" width=\"45\""),
            "{b}"
        );
        assert!(!b.contains("<rect class=\"dead\""));
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
