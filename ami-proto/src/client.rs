//! The async AMI client (`tokio` feature): TCP or TLS, login, keepalive, reconnect, resync.
//!
//! [`Client::spawn`] starts one task that owns the connection. It connects (TCP, or TLS with
//! rustls and the ring provider), reads the greeting, logs in (plain `Login`, or `Challenge`
//! then an MD5 `Login`) asking for [`ClientConfig::events`], then sends `CoreShowChannels`.
//! From then on it reads every message, sends `Ping` every [`ClientConfig::ping_interval`] and
//! treats a `Pong` missing for [`ClientConfig::ping_timeout`] as a dead connection. When the
//! connection fails it reconnects after a delay that starts at [`ClientConfig::min_backoff`],
//! doubles up to [`ClientConfig::max_backoff`], and returns to the minimum only after a
//! successful login (so a wrong password retries slowly, never in a busy loop).
//!
//! What the caller sees is a stream of [`ClientEvent`]s from [`Client::next_event`]:
//! [`ClientEvent::Connected`], then [`ClientEvent::Resync`] with the channels alive right now
//! (close the calls whose channels are not in it: they ended while the client was away), then
//! [`ClientEvent::Message`]s, and [`ClientEvent::Disconnected`] when the connection goes.
//!
//! # Reading promptly
//!
//! Asterisk drops a client whose socket it cannot write to for about 100 ms, so the task never
//! waits for the consumer before reading again. It keeps the events the consumer has not taken
//! yet in a queue of its own, bounded in bytes ([`ClientConfig::max_pending_bytes`], 64 MiB by
//! default), in front of a small bounded channel ([`ClientConfig::channel_capacity`]). We chose
//! this over one large bounded channel with `try_send`: a bounded channel drops as soon as it is
//! full whatever the size of the messages, while the byte cap absorbs a long burst (a mass
//! hangup, a slow sink restarting) and still bounds memory. When the cap is reached, further
//! messages are dropped and counted ([`Client::dropped`]); once the queue has drained to half
//! the cap the client reports [`ClientEvent::Overflow`] and resyncs (a new
//! [`ClientEvent::Resync`]), so the caller can repair what it missed. `Connected`, `Resync`,
//! `Overflow` and `Disconnected` are never dropped.
//!
//! ```no_run
//! use ami_proto::client::{Auth, Client, ClientConfig, ClientEvent};
//!
//! # async fn run() -> Result<(), ami_proto::client::ClientError> {
//! let mut config = ClientConfig::new("127.0.0.1", 5038, "relay", "secret");
//! config.auth = Auth::Md5; // the default: the secret never crosses the wire
//! let mut client = Client::spawn(config)?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         ClientEvent::Connected { version } => println!("AMI {version}"),
//!         ClientEvent::Resync { channels } => println!("{} live channels", channels.len()),
//!         ClientEvent::Message(msg) => println!("{:?}", msg.event()),
//!         ClientEvent::Overflow { dropped } => println!("{dropped} messages dropped"),
//!         ClientEvent::Disconnected { reason, retry_in } => {
//!             println!("lost: {reason}; retrying in {retry_in:?}")
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::{Action, ActionId, ActionIdGen, AmiFramer, AmiMessage, EventMask, Frame, Limits};

/// How the client logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Auth {
    /// `Login` with the secret in plain text (use TLS off the local host).
    Plain,
    /// `Challenge` with `AuthType: MD5`, then `Login` with `Key: md5(challenge + secret)`: the
    /// secret never crosses the wire. The default.
    #[default]
    Md5,
}

/// TLS settings (Asterisk's AMI over TLS listens on 5039).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// The name the server's certificate must carry (`None`: [`ClientConfig::host`]).
    pub server_name: Option<String>,
    /// PEM certificates to trust besides the Mozilla roots (a private CA or a self-signed
    /// server certificate).
    pub ca_file: Option<PathBuf>,
}

/// What the client connects to and how it keeps the connection healthy. Make one with
/// [`ClientConfig::new`] and change the fields that need changing.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Host name or address of the Asterisk server.
    pub host: String,
    /// Port (5038 for TCP, 5039 for TLS).
    pub port: u16,
    /// The manager user (`[name]` in `manager.conf`).
    pub username: String,
    /// Its secret.
    pub secret: String,
    /// MD5 challenge login (the default) or plain.
    pub auth: Auth,
    /// `Some`: connect with TLS.
    pub tls: Option<TlsOptions>,
    /// The events the session receives (`Events:` of the `Login`).
    pub events: EventMask,
    /// Time allowed to connect (TCP and TLS handshake each).
    pub connect_timeout: Duration,
    /// Time allowed from connecting to a successful login (greeting included).
    pub login_timeout: Duration,
    /// How often to send `Ping` while idle or busy.
    pub ping_interval: Duration,
    /// How long to wait for the answer to a `Ping` before calling the connection dead.
    pub ping_timeout: Duration,
    /// First reconnect delay; doubles up to `max_backoff`, back to this after a login.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// Events the channel to the consumer holds (at least 1).
    pub channel_capacity: usize,
    /// Bytes of messages queued for a slow consumer before messages are dropped.
    pub max_pending_bytes: usize,
    /// Limits on the size of one incoming message.
    pub limits: Limits,
    /// Prefix of the `ActionID`s the client makes (no line breaks).
    pub action_id_prefix: String,
}

impl ClientConfig {
    /// TCP to `host:port`, plain login, [`EventMask::CALL_TRACKING`], `Ping` every 20 s with
    /// 10 s to answer, reconnect after 0.5 s doubling up to 30 s.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        username: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            username: username.into(),
            secret: secret.into(),
            auth: Auth::Md5,
            tls: None,
            events: EventMask::CALL_TRACKING,
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            channel_capacity: 1024,
            max_pending_bytes: 64 << 20,
            limits: Limits::default(),
            action_id_prefix: "cdr-relay-".into(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("secret", &"<hidden>")
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("events", &self.events)
            .field("connect_timeout", &self.connect_timeout)
            .field("login_timeout", &self.login_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("channel_capacity", &self.channel_capacity)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .field("limits", &self.limits)
            .field("action_id_prefix", &self.action_id_prefix)
            .finish()
    }
}

/// Why a connection failed (or, from [`Client::spawn`], why the configuration is unusable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration cannot work (bad CA file, server name or `ActionID` prefix).
    #[error("configuration: {0}")]
    Config(String),
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(String),
    /// The server closed the connection.
    #[error("closed by the server")]
    Closed,
    /// A step did not finish in time (`connect`, `TLS handshake`, `login`, `write`).
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The first line was not an AMI greeting.
    #[error("not an AMI server (greeting {0:?})")]
    NotAmi(String),
    /// The server refused the login (wrong user or secret, or not allowed from this address):
    /// its `Message`. Retried with backoff, since the secret may be fixed on the server.
    #[error("login rejected: {0}")]
    LoginRejected(String),
    /// No answer to a `Ping` within [`ClientConfig::ping_timeout`].
    #[error("no answer to Ping for {0:?}")]
    PingTimeout(Duration),
}

impl ClientError {
    /// Whether the server refused the credentials.
    pub fn is_login_rejected(&self) -> bool {
        matches!(self, Self::LoginRejected(_))
    }
}

/// What the client reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Logged in; the greeting's version (`9.0.0` from `Asterisk Call Manager/9.0.0`).
    Connected {
        /// The AMI version.
        version: String,
    },
    /// A message from the server: an event, or a response to an action the client did not
    /// send itself (the client's own `Ping`, `CoreShowChannels` and login traffic is not
    /// reported).
    Message(AmiMessage<'static>),
    /// The answer to `CoreShowChannels` after each login (and after an
    /// [`ClientEvent::Overflow`]): one `CoreShowChannel` event per live channel. Calls whose
    /// channels are missing ended while the client was not listening.
    Resync {
        /// The `CoreShowChannel` events, in the server's order.
        channels: Vec<AmiMessage<'static>>,
    },
    /// The consumer fell so far behind that this many messages were dropped; a
    /// [`ClientEvent::Resync`] follows.
    Overflow {
        /// Messages dropped since the last report.
        dropped: u64,
    },
    /// The connection failed or could not be set up; the client tries again after `retry_in`.
    Disconnected {
        /// Why.
        reason: ClientError,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
}

/// A running client: the task that owns the connection and the events it reports.
///
/// Dropping it stops the task (at its next step); [`Client::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct Client {
    events: mpsc::Receiver<ClientEvent>,
    shutdown: watch::Sender<bool>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stats {
    dropped: AtomicU64,
    malformed: AtomicU64,
}

impl Client {
    /// Checks the configuration and starts the client task. Call from within a tokio runtime.
    pub fn spawn(config: ClientConfig) -> Result<Self, ClientError> {
        let ids = ActionIdGen::new(config.action_id_prefix.clone(), 1)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let tls = match &config.tls {
            Some(opts) => Some(tls_connector(&config.host, opts)?),
            None => None,
        };
        let (tx, events) = mpsc::channel(config.channel_capacity.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(config, tls, ids, tx, shutdown_rx, Arc::clone(&stats)));
        Ok(Self {
            events,
            shutdown,
            stats,
            task,
        })
    }

    /// The next event; `None` once the task has stopped. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The next event if one is already queued, without waiting; `None` when none is (or the
    /// task has stopped). Lets a consumer gather a burst into one batch.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        self.events.try_recv().ok()
    }

    /// Messages dropped because the consumer was too slow (see the module docs).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Frames that could not be parsed (skipped).
    pub fn malformed(&self) -> u64 {
        self.stats.malformed.load(Ordering::Relaxed)
    }

    /// Stops the task (closing the connection) and waits for it.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

fn tls_connector(
    host: &str,
    opts: &TlsOptions,
) -> Result<(TlsConnector, ServerName<'static>), ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &opts.ca_file {
        let bad =
            |e: &dyn fmt::Display| ClientError::Config(format!("CA file {}: {e}", path.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| bad(&e))?;
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = opts.server_name.clone().unwrap_or_else(|| host.to_owned());
    let name = ServerName::try_from(name)
        .map_err(|e| ClientError::Config(format!("TLS server name: {e}")))?;
    Ok((TlsConnector::from(Arc::new(tls)), name))
}

/// A TCP or TLS stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const CHUNK: usize = 64 * 1024;

/// Rough bookkeeping cost of one queued event besides its message bytes.
const EVENT_OVERHEAD: usize = 64;

fn keepalive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
    let _ = stream.set_nodelay(true);
}

/// One connection: the stream and the framer over what it sent.
struct Conn {
    io: Box<dyn Io>,
    framer: AmiFramer,
    buf: Vec<u8>,
    stats: Arc<Stats>,
}

impl Conn {
    /// The next complete message (or greeting) already received, owned. Frames over a limit
    /// or malformed are skipped and counted.
    fn poll_message(&mut self) -> Option<AmiMessage<'static>> {
        loop {
            let bytes = match self.framer.next_frame()? {
                Frame::Greeting { line, .. } => line,
                Frame::Message { bytes, .. } => bytes,
                Frame::Error { .. } | Frame::Truncated { .. } => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            match AmiMessage::parse(bytes) {
                Ok(msg) => return Some(msg.into_owned()),
                Err(_) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads once into the framer. Cancel-safe.
    async fn read_more(&mut self) -> Result<(), ClientError> {
        let n = self
            .io
            .read(&mut self.buf)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        if n == 0 {
            // A message cut off by the close is dropped (never reported as complete).
            return Err(ClientError::Closed);
        }
        self.framer.push(self.buf.get(..n).unwrap_or_default());
        Ok(())
    }

    async fn next_message(&mut self) -> Result<AmiMessage<'static>, ClientError> {
        loop {
            if let Some(msg) = self.poll_message() {
                return Ok(msg);
            }
            self.read_more().await?;
        }
    }

    /// The server's answer to the action `id` (messages before it are skipped: nothing else
    /// comes before a login).
    async fn response_to(&mut self, id: &ActionId) -> Result<AmiMessage<'static>, ClientError> {
        loop {
            let msg = self.next_message().await?;
            if id.matches(&msg) && msg.response().is_some() {
                return Ok(msg);
            }
        }
    }

    async fn send(&mut self, action: &Action) -> Result<(), ClientError> {
        self.io
            .write_all(&action.to_bytes())
            .await
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    async fn send_within(&mut self, action: &Action, limit: Duration) -> Result<(), ClientError> {
        tokio::time::timeout(limit, self.send(action))
            .await
            .map_err(|_| ClientError::Timeout("write"))?
    }
}

fn is_success(msg: &AmiMessage<'_>) -> bool {
    msg.response()
        .is_some_and(|r| r.eq_ignore_ascii_case("Success"))
}

fn rejected(msg: &AmiMessage<'_>) -> ClientError {
    ClientError::LoginRejected(
        msg.get_str("Message")
            .unwrap_or("no reason given")
            .to_owned(),
    )
}

/// Connects, reads the greeting and logs in. Returns the connection and the AMI version.
async fn connect(
    cfg: &ClientConfig,
    tls: Option<&(TlsConnector, ServerName<'static>)>,
    ids: &mut ActionIdGen,
    stats: &Arc<Stats>,
) -> Result<(Conn, String), ClientError> {
    let tcp = tokio::time::timeout(
        cfg.connect_timeout,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| ClientError::Timeout("connect"))?
    .map_err(|e| ClientError::Connect(e.to_string()))?;
    keepalive(&tcp);
    let io: Box<dyn Io> = match tls {
        Some((connector, name)) => Box::new(
            tokio::time::timeout(cfg.connect_timeout, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| ClientError::Timeout("TLS handshake"))?
                .map_err(|e| ClientError::Tls(e.to_string()))?,
        ),
        None => Box::new(tcp),
    };
    let mut conn = Conn {
        io,
        framer: AmiFramer::new(cfg.limits),
        buf: vec![0; CHUNK],
        stats: Arc::clone(stats),
    };
    let version = tokio::time::timeout(cfg.login_timeout, login(cfg, &mut conn, ids))
        .await
        .map_err(|_| ClientError::Timeout("login"))??;
    Ok((conn, version))
}

async fn login(
    cfg: &ClientConfig,
    conn: &mut Conn,
    ids: &mut ActionIdGen,
) -> Result<String, ClientError> {
    let greeting = conn.next_message().await?;
    let Some(version) = greeting.greeting_version().map(str::to_owned) else {
        let line = greeting.greeting_line().unwrap_or(greeting.as_bytes());
        return Err(ClientError::NotAmi(
            String::from_utf8_lossy(line).into_owned(),
        ));
    };
    let bad = |e: crate::BuildError| ClientError::Config(e.to_string());
    let action = match cfg.auth {
        Auth::Plain => Action::login(ids.next_id(), &cfg.username, &cfg.secret).map_err(bad)?,
        Auth::Md5 => {
            let challenge = Action::challenge(ids.next_id());
            conn.send(&challenge).await?;
            let answer = conn.response_to(challenge.action_id()).await?;
            let Some(text) = answer.get_str("Challenge").filter(|_| is_success(&answer)) else {
                return Err(rejected(&answer));
            };
            Action::login_md5(ids.next_id(), &cfg.username, text, &cfg.secret).map_err(bad)?
        }
    }
    .with_events(cfg.events);
    conn.send(&action).await?;
    let answer = conn.response_to(action.action_id()).await?;
    if !is_success(&answer) {
        return Err(rejected(&answer));
    }
    Ok(version)
}

/// Events for the consumer that it has not taken yet, bounded in bytes for messages.
struct Pending {
    items: VecDeque<ClientEvent>,
    bytes: usize,
    cap: usize,
    /// Messages dropped since the last [`ClientEvent::Overflow`].
    dropped: u64,
    stats: Arc<Stats>,
}

fn cost(ev: &ClientEvent) -> usize {
    match ev {
        ClientEvent::Message(m) => m.as_bytes().len().saturating_add(EVENT_OVERHEAD),
        ClientEvent::Resync { channels } => channels.iter().fold(EVENT_OVERHEAD, |n, m| {
            n.saturating_add(m.as_bytes().len())
                .saturating_add(EVENT_OVERHEAD)
        }),
        _ => EVENT_OVERHEAD,
    }
}

impl Pending {
    fn push_message(&mut self, msg: AmiMessage<'static>) {
        let ev = ClientEvent::Message(msg);
        let n = cost(&ev);
        if self.bytes.saturating_add(n) > self.cap {
            self.dropped = self.dropped.saturating_add(1);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.push_control(ev);
    }

    /// Queues an event that is never dropped.
    fn push_control(&mut self, ev: ClientEvent) {
        self.bytes = self.bytes.saturating_add(cost(&ev));
        self.items.push_back(ev);
    }

    fn pop(&mut self) -> Option<ClientEvent> {
        let ev = self.items.pop_front()?;
        self.bytes = self.bytes.saturating_sub(cost(&ev));
        Some(ev)
    }

    /// Hands over what the channel takes without waiting. `false` when the consumer is gone.
    fn flush(&mut self, tx: &mpsc::Sender<ClientEvent>) -> bool {
        while !self.items.is_empty() {
            match tx.try_reserve() {
                Ok(permit) => {
                    if let Some(ev) = self.pop() {
                        permit.send(ev);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            }
        }
        true
    }
}

/// Why a session ended.
enum End {
    /// Shutdown asked, or the consumer is gone: stop the client.
    Stop,
    /// The connection failed: reconnect.
    Failed(ClientError),
}

async fn run(
    cfg: ClientConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    mut ids: ActionIdGen,
    tx: mpsc::Sender<ClientEvent>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let mut backoff = cfg.min_backoff;
    while !*shutdown.borrow() {
        let mut pending = Pending {
            items: VecDeque::new(),
            bytes: 0,
            cap: cfg.max_pending_bytes,
            dropped: 0,
            stats: Arc::clone(&stats),
        };
        let attempt = tokio::select! {
            r = connect(&cfg, tls.as_ref(), &mut ids, &stats) => r,
            _ = shutdown.changed() => return,
            () = tx.closed() => return,
        };
        let reason = match attempt {
            Ok((conn, version)) => {
                backoff = cfg.min_backoff;
                pending.push_control(ClientEvent::Connected { version });
                match session(&cfg, conn, &mut ids, &tx, &mut shutdown, &mut pending).await {
                    End::Stop => return,
                    End::Failed(e) => e,
                }
            }
            Err(e) => e,
        };
        pending.push_control(ClientEvent::Disconnected {
            reason,
            retry_in: backoff,
        });
        // The socket is gone: nothing to read, so waiting for the consumer is fine now.
        while let Some(ev) = pending.pop() {
            tokio::select! {
                r = tx.send(ev) => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
            () = tx.closed() => return,
        }
        backoff = backoff.saturating_mul(2).min(cfg.max_backoff);
    }
}

/// A resync in progress: the `CoreShowChannels` id and the channels so far.
struct Resync {
    id: ActionId,
    channels: Vec<AmiMessage<'static>>,
}

/// The most channels one resync keeps (memory bound; more are dropped with the count kept).
const MAX_RESYNC_CHANNELS: usize = 1 << 20;

async fn start_resync(
    cfg: &ClientConfig,
    conn: &mut Conn,
    ids: &mut ActionIdGen,
) -> Result<Resync, ClientError> {
    let action = Action::core_show_channels(ids.next_id());
    conn.send_within(&action, cfg.ping_timeout).await?;
    Ok(Resync {
        id: action.action_id().clone(),
        channels: Vec::new(),
    })
}

/// Reads the logged-in connection until it fails or the client stops.
async fn session(
    cfg: &ClientConfig,
    mut conn: Conn,
    ids: &mut ActionIdGen,
    tx: &mpsc::Sender<ClientEvent>,
    shutdown: &mut watch::Receiver<bool>,
    pending: &mut Pending,
) -> End {
    let mut resync = match start_resync(cfg, &mut conn, ids).await {
        Ok(r) => Some(r),
        Err(e) => return End::Failed(e),
    };
    // The outstanding `Ping` and when it was sent.
    let mut ping: Option<(ActionId, Instant)> = None;
    let mut next_ping = Instant::now() + cfg.ping_interval;
    loop {
        while let Some(msg) = conn.poll_message() {
            if ping.as_ref().is_some_and(|(id, _)| id.matches(&msg)) {
                ping = None;
                next_ping = Instant::now() + cfg.ping_interval;
                continue;
            }
            if let Some(r) = resync.as_mut().filter(|r| r.id.matches(&msg)) {
                match msg.event() {
                    Some(e)
                        if e.eq_ignore_ascii_case("CoreShowChannel")
                            && r.channels.len() < MAX_RESYNC_CHANNELS =>
                    {
                        r.channels.push(msg);
                    }
                    Some(e) if e.eq_ignore_ascii_case("CoreShowChannelsComplete") => {
                        if let Some(r) = resync.take() {
                            pending.push_control(ClientEvent::Resync {
                                channels: r.channels,
                            });
                        }
                    }
                    // An error answer means no list will come; the caller keeps its state.
                    _ if msg.response().is_some() && !is_success(&msg) => resync = None,
                    _ => {}
                }
                continue;
            }
            pending.push_message(msg);
        }
        if !pending.flush(tx) {
            return End::Stop;
        }
        if pending.dropped > 0 && resync.is_none() && pending.bytes <= pending.cap / 2 {
            pending.push_control(ClientEvent::Overflow {
                dropped: pending.dropped,
            });
            pending.dropped = 0;
            resync = match start_resync(cfg, &mut conn, ids).await {
                Ok(r) => Some(r),
                Err(e) => return End::Failed(e),
            };
        }
        let deadline = match &ping {
            Some((_, sent)) => *sent + cfg.ping_timeout,
            None => next_ping,
        };
        tokio::select! {
            r = conn.read_more() => if let Err(e) = r { return End::Failed(e) },
            permit = tx.reserve(), if !pending.items.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(ev) = pending.pop() {
                        permit.send(ev);
                    }
                }
                Err(_) => return End::Stop,
            },
            () = tokio::time::sleep_until(deadline) => {
                if ping.is_some() {
                    return End::Failed(ClientError::PingTimeout(cfg.ping_timeout));
                }
                let action = Action::ping(ids.next_id());
                if let Err(e) = conn.send_within(&action, cfg.ping_timeout).await {
                    return End::Failed(e);
                }
                ping = Some((action.action_id().clone(), Instant::now()));
            },
            _ = shutdown.changed() => return End::Stop,
            () = tx.closed() => return End::Stop,
        }
    }
}
