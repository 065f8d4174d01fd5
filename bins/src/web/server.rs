//! The HTTP server: the accept loop, TLS, connection limits and timeouts, graceful shutdown,
//! access control, and the methods the server takes before a request is routed.
//!
//! Every connection must complete a request's headers within
//! [`WebOptions::header_read_timeout`] of being accepted (or of its previous response being
//! sent): a socket that sends nothing is closed then. The slots ([`WebOptions::max_connections`],
//! [`WebOptions::max_connections_per_ip`]) are kept by `limits`: when they are full, idle
//! connections are shed first.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::auth::need;
use super::limits::{Admit, ConnState, Limits, Slot, Tracked};
use super::respond::text;
use super::routes::route;
use super::{Resp, Shared, WebState};

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
    /// How long a client may take, from the connection's accept (or its previous response),
    /// to send a request's complete headers before the connection is closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long one request may take to answer before it gets a 503. Default 30 s.
    pub request_timeout: Duration,
    /// How long one connection may stay open; then it is closed gracefully (keep-alive clients
    /// reconnect). Default 120 s.
    pub connection_max_age: Duration,
    /// Connections served at once. When they are all open, a new one takes the place of the
    /// connection idle longest; when none is idle, it waits in the listen backlog. Default 256.
    pub max_connections: usize,
    /// Connections one client address may have open; past it, a new one takes the place of
    /// that address's connection idle longest, or is closed when none is idle. Default 64.
    pub max_connections_per_ip: usize,
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
            max_connections_per_ip: 64,
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
    let limits = Limits::new(
        shared.options.max_connections,
        shared.options.max_connections_per_ip,
    );
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
    'accept: loop {
        while connections.try_join_next().is_some() {}
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
        let slot = loop {
            match limits.admit(peer.ip()) {
                Admit::Yes(slot) => break slot,
                Admit::Refused => {
                    tracing::debug!(%peer, "web server: too many busy connections from this address");
                    continue 'accept;
                }
                Admit::Full => tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break 'accept,
                    () = limits.freed() => {}
                },
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            shared.clone(),
            builder.clone(),
            shutdown.clone(),
            slot,
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
    slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    match shared.state.tls.clone() {
        None => serve_stream(stream, peer, shared, builder, shutdown, slot).await,
        Some(WebTls(acceptor)) => {
            let state = slot.state().clone();
            let handshake =
                tokio::time::timeout(shared.options.header_read_timeout, acceptor.accept(stream));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => serve_stream(tls, peer, shared, builder, shutdown, slot).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                () = state.shed() => {}
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
    slot: Slot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state: Arc<ConnState> = slot.state().clone();
    let for_service = shared.clone();
    let for_busy = state.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = for_service.clone();
        let busy = for_busy.start();
        async move {
            let resp = respond(&shared, req).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, busy)))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let max_age = tokio::time::sleep(shared.options.connection_max_age);
    tokio::pin!(max_age);
    let limit = shared.options.header_read_timeout;
    let mut check = tokio::time::Instant::now();
    loop {
        let next_check = tokio::time::sleep_until(check);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "web connection: {e}");
                }
                return;
            }
            () = stopped(&mut shutdown) => break,
            () = &mut max_age => break,
            () = state.shed() => {
                // Idle (that is why it was chosen): close at once, the slot is already free.
                return;
            }
            () = next_check => {
                let now = Instant::now();
                match state.idle_deadline(limit) {
                    Some(deadline) if deadline <= now => {
                        tracing::debug!(%peer, "web connection: no request within {limit:?}, closing");
                        return;
                    }
                    Some(deadline) => check = deadline.into(),
                    None => check = (now + limit).into(),
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(shared.options.shutdown_grace, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, "web connection: {e}"),
        Err(_) => tracing::debug!(%peer, "web connection: closed after the grace period"),
    }
    drop(slot);
}

/// Answers one request: the CMS receiver's `POST` (its own token), else the listener's scope,
/// access control, then the routes.
async fn respond(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    if let Some(receiver) = &shared.state.receiver {
        if req.method() == Method::POST && req.uri().path() == receiver.path() {
            return receiver.handle(req).await;
        }
    }
    let path = req.uri().path();
    if shared.state.receiver_only && path != "/healthz" && path != "/readyz" {
        let is_receiver = shared
            .state
            .receiver
            .as_ref()
            .is_some_and(|r| r.path() == path);
        if !is_receiver {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
    }
    if let Err(denied) = shared
        .state
        .access
        .check(req.headers(), need(req.method(), path))
        .await
    {
        return denied;
    }
    handle(shared, &req).await
}

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
    if req.method() == Method::POST && req.uri().path().starts_with(super::admin::PREFIX) {
        let admin = super::admin::post(shared, req);
        return match tokio::time::timeout(shared.options.request_timeout, admin).await {
            Ok(resp) => resp,
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n"),
        };
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
