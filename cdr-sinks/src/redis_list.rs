//! The Redis list sink: each call's JSON pushed, as-is, onto one list.
//!
//! By default the call goes to the head of the list (`LPUSH`), so a consumer that takes from the
//! tail (`BRPOP`, the dialler-style CDR list) reads the calls in the order they were committed;
//! [`PushSide::Right`] (`RPUSH`) suits a consumer that takes from the head (`BLPOP`).
//!
//! Delivery goes through the outbox like every remote sink: a Redis outage delays calls, it
//! never drops one. Each body is the call's JSON, which carries the call's stable `"id"` (and, for
//! a progress record, `"update": {"sequence": n, ..}`), so a consumer can drop the duplicate that
//! a retry after a lost reply may push.
//!
//! **One round trip, all or nothing.** A batch of calls is pushed with a single variadic
//! `LPUSH key body1 body2 ..` (or `RPUSH`): one command is executed atomically by Redis, so either
//! the whole batch is in the list or none of it, like a `MULTI`/`EXEC` transaction but without its
//! two extra commands. The items land as if pushed one by one in batch order. When the reply is
//! lost (the connection drops or times out after the command was sent), the batch may or may not
//! be in the list; it is sent again, so the consumer may see it twice, under the same ids.
//!
//! **Connections.** One connection, opened on first use and after any error (the next push
//! reconnects; there is no retry loop inside the sink: the engine's backoff decides when).
//! `rediss://` is TLS through rustls with the `ring` provider (the same stack as the webhook: the
//! Mozilla roots plus an optional CA file); the TLS stream is handed to the `redis` crate, whose own
//! TLS features are not used. The URL carries the ACL user and password and the database:
//! `redis://user:password@host:6379/2` (user and password percent-encoded). Redis Cluster and
//! Sentinel are not supported.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio_rustls::TlsConnector;

use crate::SinkError;
use crate::sink::{BATCHED, BatchResult, Drive, Outgoing, Sink};

/// Which end of the list calls are pushed to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PushSide {
    /// `LPUSH`: to the head; a consumer taking from the tail (`BRPOP`) reads oldest first.
    #[default]
    Left,
    /// `RPUSH`: to the tail; a consumer taking from the head (`BLPOP`) reads oldest first.
    Right,
}

impl PushSide {
    /// The Redis command: `LPUSH` or `RPUSH`.
    pub fn command(self) -> &'static str {
        match self {
            Self::Left => "LPUSH",
            Self::Right => "RPUSH",
        }
    }
}

impl std::fmt::Display for PushSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Left => "lpush",
            Self::Right => "rpush",
        })
    }
}

/// A push side that is none of `lpush`, `left`, `rpush`, `right`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("push side {0:?} is not one of lpush, left, rpush, right")]
pub struct ParsePushSideError(String);

impl FromStr for PushSide {
    type Err = ParsePushSideError;

    /// `lpush` or `left`, `rpush` or `right`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lpush" | "left" => Ok(Self::Left),
            "rpush" | "right" => Ok(Self::Right),
            _ => Err(ParsePushSideError(s.to_owned())),
        }
    }
}

/// Settings of a [`RedisListSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisListConfig {
    /// `redis://[user][:password@]host[:port][/db]` or `rediss://..` for TLS.
    pub url: String,
    /// The list's key.
    pub key: String,
    /// Which end of the list to push to.
    pub side: PushSide,
    /// Extra trusted root certificates (PEM) for `rediss://`, for a server with a private CA
    /// (the Mozilla roots are trusted too). Not read for `redis://`.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to connect (TCP, TLS, `AUTH`, `SELECT`), and then for each push's reply.
    pub timeout: Duration,
}

impl RedisListConfig {
    /// Settings for pushing to `key` at `url` with `LPUSH`, no extra CA, a 10 s timeout.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: key.into(),
            side: PushSide::Left,
            ca_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where a Redis server is and how to reach it (TCP or TLS, user, password, database), parsed
/// from a `redis://` or `rediss://` URL. Shared by the list sink and by the relays that read a
/// list (`list-relay`), so both speak TLS the same way.
pub struct RedisEndpoint {
    host: String,
    port: u16,
    /// The connector and the name the certificate must match, for `rediss://`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Database, user, password (for `AUTH` and `SELECT` after connecting).
    info: RedisConnectionInfo,
}

/// A live connection and the task that drives it (stopped when this is dropped).
pub struct RedisConnection {
    con: MultiplexedConnection,
    driver: AbortHandle,
}

impl RedisConnection {
    /// The connection, for commands.
    pub fn con(&mut self) -> &mut MultiplexedConnection {
        &mut self.con
    }
}

impl std::fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password here.
        f.debug_struct("RedisEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("db", &self.info.db)
            .field("user", &self.info.username)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl RedisEndpoint {
    /// Parses a `redis://` or `rediss://` URL (user, password and database included) and, for
    /// `rediss://`, sets up TLS with the Mozilla roots plus `ca_file`. Does not connect.
    pub fn parse(url_text: &str, ca_file: Option<&Path>) -> Result<Self, SinkError> {
        let bad = |why: &str| SinkError::Config(format!("Redis URL {}: {why}", redact(url_text)));
        let mut url = redis::parse_redis_url(url_text)
            .ok_or_else(|| bad("not a URL starting with redis:// or rediss://"))?;
        let tls = match url.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("must start with redis:// or rediss://")),
        };
        if url.fragment().is_some() {
            return Err(bad(
                "a #fragment is not supported (for a private CA, configure its certificate file)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        // The redis crate parses user, password (percent-decoded), port and database; TLS is ours.
        url.set_scheme("redis")
            .map_err(|()| bad("cannot be read as a redis:// URL"))?;
        let info = url
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?;
        let redis::ConnectionAddr::Tcp(host, port) = info.addr else {
            return Err(bad("must name a TCP host"));
        };
        let tls = if tls {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| bad(&format!("host {host:?} is not a TLS server name: {e}")))?;
            let roots = crate::webhook::root_store(ca_file)?;
            let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| SinkError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Some((TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            tls,
            info: info.redis,
        })
    }

    /// Opens a connection: TCP, TLS if configured, then `AUTH` and `SELECT`, within `timeout`.
    /// Errors are classified as for [`RedisListSink::push_batch`] (`key` names the list in
    /// them).
    pub async fn connect(
        &self,
        timeout: Duration,
        key: &str,
    ) -> Result<RedisConnection, SinkError> {
        let ep = self;
        let where_ = format!("Redis {}:{}", ep.host, ep.port);
        let open = async {
            let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| SinkError::Unreachable(format!("{where_}: connect: {e}")))?;
            // Batches are written whole; do not let Nagle hold back their tails.
            let _ = tcp.set_nodelay(true);
            let config = AsyncConnectionConfig::new();
            let (con, driver) = match &ep.tls {
                None => {
                    let (con, driver) =
                        MultiplexedConnection::new_with_config(&ep.info, tcp, config)
                            .await
                            .map_err(|e| with_context(&where_, classify(&e, key)))?;
                    (con, tokio::spawn(driver).abort_handle())
                }
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| SinkError::Unreachable(format!("{where_}: TLS: {e}")))?;
                    let (con, driver) =
                        MultiplexedConnection::new_with_config(&ep.info, tls, config)
                            .await
                            .map_err(|e| with_context(&where_, classify(&e, key)))?;
                    (con, tokio::spawn(driver).abort_handle())
                }
            };
            Ok(RedisConnection { con, driver })
        };
        match tokio::time::timeout(timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Unreachable(format!(
                "{where_}: not connected within {:?}",
                timeout
            ))),
        }
    }
}

/// Pushes calls to one Redis list. Share it behind an `Arc`: pushes through one sink are sent one
/// batch at a time over its single connection.
pub struct RedisListSink {
    endpoint: RedisEndpoint,
    key: String,
    side: PushSide,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<RedisConnection>>,
}

impl std::fmt::Debug for RedisListSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password here.
        f.debug_struct("RedisListSink")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .field("tls", &self.endpoint.tls.is_some())
            .field("db", &self.endpoint.info.db)
            .field("user", &self.endpoint.info.username)
            .field("key", &self.key)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl RedisListSink {
    /// A sink for `config`: checks the URL, the key and (for `rediss://`) the CA file now;
    /// connects on the first push.
    pub fn new(config: &RedisListConfig) -> Result<Self, SinkError> {
        let endpoint = RedisEndpoint::parse(&config.url, config.ca_file.as_deref())?;
        if config.key.is_empty() {
            return Err(SinkError::Config("the Redis list key is empty".into()));
        }
        Ok(Self {
            endpoint,
            key: config.key.clone(),
            side: config.side,
            timeout: config.timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The list's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Which end of the list calls are pushed to.
    pub fn side(&self) -> PushSide {
        self.side
    }

    /// Pushes one call's JSON.
    pub async fn send(&self, body: &[u8]) -> Result<(), SinkError> {
        self.push_batch(&[body]).await
    }

    /// Pushes a batch of calls' JSON bodies, in order, in one round trip: one `LPUSH` (or
    /// `RPUSH`) with every body, which Redis applies atomically (all or nothing). An empty batch
    /// does nothing.
    ///
    /// Connects first if there is no connection; after any error the connection is dropped, so
    /// the next call reconnects. Errors: [`SinkError::Unreachable`] when Redis could not be
    /// reached or is temporarily unable to write (connection refused or lost, timeout, TLS,
    /// `LOADING`, `READONLY`, `MASTERDOWN`, `BUSY`, `TRYAGAIN`, `OOM`, `MISCONF`, too many
    /// clients); [`SinkError::Paused`] when Redis refuses us until someone fixes something
    /// (`NOAUTH`, `WRONGPASS`, `NOPERM`, `WRONGTYPE`: the key holds something other than a list,
    /// and any other error reply); [`SinkError::Retryable`] for a reply this client could not
    /// read. A batch that failed with `Unreachable` or `Retryable` may have been applied.
    pub async fn push_batch<B: AsRef<[u8]>>(&self, bodies: &[B]) -> Result<(), SinkError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd(self.side.command());
        cmd.arg(&self.key);
        for b in bodies {
            cmd.arg(b.as_ref());
        }
        let mut guard = self.conn.lock().await;
        let live = match guard.as_mut() {
            Some(live) => live,
            None => guard.insert(self.connect().await?),
        };
        let result =
            tokio::time::timeout(self.timeout, cmd.query_async::<i64>(&mut live.con)).await;
        let err = match result {
            Ok(Ok(_len)) => return Ok(()),
            Ok(Err(e)) => classify(&e, &self.key),
            Err(_) => SinkError::Unreachable(format!(
                "Redis {}:{}: no reply within {:?}",
                self.endpoint.host, self.endpoint.port, self.timeout
            )),
        };
        // Whatever went wrong, start afresh next time (a READONLY server may be a demoted
        // master that DNS no longer points at; a timed-out connection is out of step).
        *guard = None;
        Err(err)
    }

    async fn connect(&self) -> Result<RedisConnection, SinkError> {
        self.endpoint.connect(self.timeout, &self.key).await
    }
}

/// Pushes a batch of up to 2048 items' stored JSON in one round trip ([`RedisListSink::push_batch`]):
/// the batch is delivered or fails as a whole.
impl Sink for RedisListSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Batch { max: BATCHED }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        let bodies: Vec<&[u8]> = batch.iter().map(Outgoing::body).collect();
        self.push_batch(&bodies).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

/// Error reply codes that mean "not now": the server is loading, a replica, without its master,
/// running a long script, out of memory or unable to persist.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
    "MISCONF",
    "NOREPLICAS",
];

/// Maps a Redis error to what the engine should do with the batch.
fn classify(e: &RedisError, key: &str) -> SinkError {
    let msg = e.to_string();
    if e.is_io_error() {
        return SinkError::Unreachable(msg);
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed => {
            return SinkError::Paused {
                reason: format!("authentication failed (check the user and password): {msg}"),
                retry_after: None,
            };
        }
        ErrorKind::ParseError | ErrorKind::TypeError | ErrorKind::ClientError => {
            return SinkError::Retryable {
                reason: msg,
                retry_after: None,
            };
        }
        _ => {}
    }
    let code = e.code().unwrap_or_default();
    if TRANSIENT_CODES.contains(&code)
        || e.detail()
            .is_some_and(|d| d.contains("max number of clients"))
    {
        return SinkError::Unreachable(msg);
    }
    let reason = match code {
        "WRONGTYPE" => format!("the key {key:?} holds a value that is not a list: {msg}"),
        "NOAUTH" | "WRONGPASS" => {
            format!("authentication failed (check the user and password): {msg}")
        }
        "NOPERM" => format!("the user may not push to {key:?}: {msg}"),
        _ => msg,
    };
    SinkError::Paused {
        reason,
        retry_after: None,
    }
}

fn with_context(where_: &str, e: SinkError) -> SinkError {
    match e {
        SinkError::Unreachable(m) => SinkError::Unreachable(format!("{where_}: {m}")),
        SinkError::Paused {
            reason,
            retry_after,
        } => SinkError::Paused {
            reason: format!("{where_}: {reason}"),
            retry_after,
        },
        SinkError::Retryable {
            reason,
            retry_after,
        } => SinkError::Retryable {
            reason: format!("{where_}: {reason}"),
            retry_after,
        },
        other => other,
    }
}

/// The URL with its password (and token-like query values) replaced by `***`, for messages
/// ([`crate::redact::redact_url`]).
fn redact(url: &str) -> String {
    crate::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        RedisListSink::new(&RedisListConfig::new(url, "k"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn push_side_parses_names_and_defaults_to_left() {
        assert_eq!(PushSide::default(), PushSide::Left);
        for (s, side) in [
            ("lpush", PushSide::Left),
            ("LEFT", PushSide::Left),
            (" rpush ", PushSide::Right),
            ("Right", PushSide::Right),
        ] {
            assert_eq!(s.parse::<PushSide>(), Ok(side), "{s}");
        }
        assert!("up".parse::<PushSide>().is_err());
        assert_eq!(PushSide::Right.to_string(), "rpush");
        assert_eq!(PushSide::Left.command(), "LPUSH");
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let ok = RedisListSink::new(&RedisListConfig::new(
            "redis://alice:s%40cret@127.0.0.1:6380/3",
            "cdr",
        ))
        .unwrap();
        assert_eq!(ok.endpoint.host, "127.0.0.1");
        assert_eq!(ok.endpoint.port, 6380);
        assert_eq!(ok.endpoint.info.db, 3);
        assert_eq!(ok.endpoint.info.username.as_deref(), Some("alice"));
        assert_eq!(ok.endpoint.info.password.as_deref(), Some("s@cret"));
        assert!(ok.endpoint.tls.is_none());
        assert!(!format!("{ok:?}").contains("cret"), "{ok:?}");

        let tls = RedisListSink::new(&RedisListConfig::new("rediss://localhost", "cdr")).unwrap();
        assert_eq!(tls.endpoint.port, 6379);
        assert!(tls.endpoint.tls.is_some());

        assert!(err("http://localhost").contains("redis://"), "scheme");
        assert!(err("localhost:6379").contains("redis://"), "no scheme");
        assert!(err("redis://localhost/x").contains("database"), "db");
        assert!(err("rediss://localhost/#insecure").contains("fragment"));
        let e = err("redis://u:hunter2@localhost/x");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            RedisListSink::new(&RedisListConfig::new("redis://localhost", ""))
                .unwrap_err()
                .to_string()
                .contains("key")
        );
        let mut missing_ca = RedisListConfig::new("rediss://localhost", "k");
        missing_ca.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            RedisListSink::new(&missing_ca),
            Err(SinkError::Config(_))
        ));
    }

    #[test]
    fn error_replies_map_to_unreachable_or_paused() {
        let reply = |code: &str, detail: &str| {
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        };
        let known = |kind: ErrorKind, detail: &str| {
            RedisError::from((
                kind,
                "An error was signalled by the server",
                detail.to_owned(),
            ))
        };
        for e in [
            known(
                ErrorKind::BusyLoadingError,
                "Redis is loading the dataset in memory",
            ),
            known(
                ErrorKind::ReadOnly,
                "You can't write against a read only replica.",
            ),
            known(ErrorKind::MasterDown, "Link with MASTER is down"),
            known(ErrorKind::ResponseError, "max number of clients reached"),
            reply("BUSY", "Redis is busy running a script."),
            reply("OOM", "command not allowed when used memory > 'maxmemory'."),
            reply(
                "MISCONF",
                "Redis is configured to save RDB snapshots, but ...",
            ),
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(
                matches!(classify(&e, "k"), SinkError::Unreachable(_)),
                "{e:?}"
            );
        }
        for e in [
            reply(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            reply("NOAUTH", "Authentication required."),
            reply("WRONGPASS", "invalid username-password pair"),
            reply("NOPERM", "this user has no permissions"),
            known(ErrorKind::ResponseError, "unknown command 'LPUSH'"),
            RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            )),
        ] {
            assert!(
                matches!(classify(&e, "k"), SinkError::Paused { .. }),
                "{e:?}"
            );
        }
        assert!(
            classify(&reply("WRONGTYPE", "x"), "cdr")
                .to_string()
                .contains("not a list")
        );
        assert!(matches!(
            classify(
                &RedisError::from((ErrorKind::TypeError, "unexpected reply")),
                "k"
            ),
            SinkError::Retryable { .. }
        ));
    }
}
