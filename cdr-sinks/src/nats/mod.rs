//! The NATS JetStream sink: each call (or progress record) published as one message, on a
//! subject per source and site, and delivered once the stream has acknowledged it.
//!
//! * **Subject**: from a template ([`SubjectTemplate`], default `cdr.{source}.{site}`).
//! * **Stable id**: `Nats-Msg-Id` is the item's [`Outgoing::id`] (a call's id; a progress
//!   record's id, `#`, its sequence), so the stream drops a second copy published within its
//!   duplicate window: a retry after a lost acknowledgement, or the same call from a redundant
//!   relay on the same source.
//! * **Headers**: `Content-Type: application/json`, `Cdr-Schema: cdr-relay.call.v1`,
//!   `Cdr-Schema-Version: 1` and `Cdr-Relay-Version`. The body is the call's JSON as the outbox
//!   stored it, the same body every other sink sends.
//! * **Acknowledged**: an item is reported delivered only when its publish acknowledgement
//!   (`PubAck`, duplicate or not) came back from the stream; a batch's messages are all sent
//!   first, then their acknowledgements awaited together, so a batch of 2048 calls costs about
//!   one round trip, not 2048.
//! * **Faults**: no connection, a timed-out acknowledgement, or no stream for the subject ("no
//!   responders") are [`SinkError::Unreachable`]: the engine blocks the sink and tries again,
//!   nothing is dropped; refused credentials pause it ([`SinkError::Paused`]); a message the
//!   stream refuses (too large, stream full) is [`SinkError::Retryable`].
//! * **The stream**: [`NatsConfig::create_stream`] makes the sink create it (name, subjects from
//!   the template with `*` for each placeholder, replicas, duplicate window, file storage) when
//!   it connects, and again when a publish finds no stream; otherwise it must exist. A stream
//!   the server refuses to create as configured (its subjects overlap another stream's, more
//!   replicas than a server that is not clustered can hold: [`is_refused_as_configured`])
//!   pauses the sink with the server's reason ([`SinkError::Paused`]): nothing is lost, the
//!   engine logs it as an error and tries again after its backoff, in case the stream is fixed
//!   on the server.
//!
//! The connection ([`NatsServer`]: URLs, token, user and password, NKey, `.creds` file, TLS by
//! rustls on ring with the Mozilla roots plus an optional CA file) is opened on the first
//! delivery; the client then reconnects and fails over between the cluster's servers by
//! itself.

mod connect;
mod refused;
mod subject;

use std::borrow::Cow;
use std::time::Duration;

use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

pub use connect::{NatsAuth, NatsServer, redact_nats_url};
pub use refused::is_refused_as_configured;
pub use subject::{DEFAULT_SUBJECT, SubjectTemplate};

use crate::SinkError;
use crate::sink::{BATCHED, BatchResult, Drive, Outgoing, Sink};

/// The schema name of the call bodies, in the `Cdr-Schema` header.
pub const SCHEMA: &str = "cdr-relay.call.v1";
/// The schema's version, in the `Cdr-Schema-Version` header.
pub const SCHEMA_VERSION: &str = "1";
/// Header with the schema name.
pub const SCHEMA_HEADER: &str = "Cdr-Schema";
/// Header with the schema version.
pub const SCHEMA_VERSION_HEADER: &str = "Cdr-Schema-Version";
/// Header with the version of the relay that published the message.
pub const RELAY_VERSION_HEADER: &str = "Cdr-Relay-Version";
/// The stream's duplicate window when the sink creates it and none is configured.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The stream's name when none is configured.
pub const DEFAULT_STREAM: &str = "CDR";

/// Settings of a [`NatsSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The servers and how to connect.
    pub server: NatsServer,
    /// The subject template.
    pub subject: SubjectTemplate,
    /// The stream's name (for creating it).
    pub stream: String,
    /// Create the stream if it does not exist.
    pub create_stream: bool,
    /// Replicas of a stream the sink creates (1 to 5).
    pub replicas: usize,
    /// Duplicate window of a stream the sink creates.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    /// Publishing to `urls` on the default subject; the stream `CDR` is expected to exist.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            server: NatsServer::new(urls),
            subject: SubjectTemplate::parse(DEFAULT_SUBJECT)
                .unwrap_or_else(|_| unreachable!("the default subject is valid")),
            stream: DEFAULT_STREAM.into(),
            create_stream: false,
            replicas: 1,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }

    /// The stream's settings as the sink creates it.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.stream.clone(),
            subjects: vec![self.subject.wildcard()],
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            storage: StorageType::File,
            ..StreamConfig::default()
        }
    }

    /// Checks the settings (URLs, files, stream name, replicas) without connecting.
    pub fn check(&self) -> Result<(), SinkError> {
        self.server.check()?;
        if self.stream.is_empty()
            || self
                .stream
                .contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(SinkError::Config(format!(
                "NATS stream name {:?}: must be non-empty, without . * > or spaces",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(SinkError::Config(format!(
                "NATS stream replicas {}: must be 1 to 5",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// The live connection and whether the stream is known to exist.
struct Live {
    js: Context,
    stream_ready: bool,
}

/// Publishes calls to a JetStream stream. Batches go out one at a time ([`Drive::Batch`]); the
/// messages of a batch are in flight together.
pub struct NatsSink {
    config: NatsConfig,
    live: tokio::sync::Mutex<Option<Live>>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("urls", &self.config.server.shown_urls())
            .field("auth", &self.config.server.auth)
            .field("subject", &self.config.subject.as_str())
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

/// The fields of a call's JSON the subject needs.
#[derive(serde::Deserialize)]
struct SubjectFields<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default, borrow)]
    site: Cow<'a, str>,
}

impl NatsSink {
    /// A sink for `config` (checked now); connects on the first delivery.
    pub fn new(config: &NatsConfig) -> Result<Self, SinkError> {
        config.check()?;
        Ok(Self {
            config: config.clone(),
            live: tokio::sync::Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The subject for one item.
    fn subject(&self, item: &Outgoing) -> Result<String, SinkError> {
        if !self.config.subject.needs_call() {
            return Ok(self.config.subject.render("", ""));
        }
        let f: SubjectFields<'_> = serde_json::from_slice(item.body())
            .map_err(|e| SinkError::Rejected(format!("not a call's JSON: {e}")))?;
        Ok(self.config.subject.render(&f.source, &f.site))
    }

    async fn connect(&self) -> Result<Live, SinkError> {
        let client = self.config.server.connect().await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.config.server.timeout)
            .max_ack_inflight(BATCHED * 2)
            .backpressure_on_inflight(true)
            .build(client);
        Ok(Live {
            js,
            stream_ready: false,
        })
    }

    /// Creates the stream when asked to and not yet done on this connection.
    async fn ensure_stream(&self, live: &mut Live) -> Result<(), SinkError> {
        if !self.config.create_stream || live.stream_ready {
            return Ok(());
        }
        live.js
            .get_or_create_stream(self.config.stream_config())
            .await
            .map_err(|e| self.stream_error(&e))?;
        live.stream_ready = true;
        Ok(())
    }

    /// What a failure to create the stream means: a configuration the server refuses pauses
    /// the sink (no retry soon fixes it), anything else is a server not reachable or not ready.
    fn stream_error(&self, e: &jetstream::context::CreateStreamError) -> SinkError {
        use jetstream::context::CreateStreamErrorKind;
        let c = &self.config;
        match e.kind() {
            CreateStreamErrorKind::JetStream(js) if is_refused_as_configured(&js) => {
                SinkError::Paused {
                    reason: format!(
                        "NATS: the server refuses to create stream {} (subjects {}, {} \
                         replicas) as configured: {js}; check NATS_STREAM, NATS_SUBJECT and \
                         NATS_REPLICAS against the streams on the server, or create the stream \
                         there and unset NATS_CREATE_STREAM",
                        c.stream,
                        c.subject.wildcard(),
                        c.replicas
                    ),
                    retry_after: None,
                }
            }
            _ => SinkError::Unreachable(format!("NATS: creating stream {}: {e}", c.stream)),
        }
    }

    /// Publishes a batch and waits for every acknowledgement (at most the timeout, counted
    /// once for the whole batch).
    async fn publish(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        let mut guard = self.live.lock().await;
        let live = match guard.as_mut() {
            Some(live) => live,
            None => guard.insert(self.connect().await?),
        };
        self.ensure_stream(live).await?;
        let version = env!("CARGO_PKG_VERSION");
        let mut results: Vec<Option<Result<(), SinkError>>> = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter().enumerate() {
            let subject = match self.subject(item) {
                Ok(s) => s,
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            };
            let message = PublishMessage::build()
                .payload(Bytes::copy_from_slice(item.body()))
                .message_id(item.id())
                .header("Content-Type", "application/json")
                .header(SCHEMA_HEADER, SCHEMA)
                .header(SCHEMA_VERSION_HEADER, SCHEMA_VERSION)
                .header(RELAY_VERSION_HEADER, version);
            match live.js.send_publish(subject, message).await {
                Ok(ack) => {
                    results.push(None);
                    acks.push((i, ack));
                }
                Err(e) => {
                    // The client's queue is gone or full: nothing more goes out now.
                    return Err(SinkError::Unreachable(format!("NATS: publish: {e}")));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.server.timeout;
        let waits = acks.into_iter().map(|(i, ack)| async move {
            let r = tokio::time::timeout_at(deadline, ack.into_future()).await;
            (i, r)
        });
        let mut stream_missing = false;
        let mut unreachable = 0usize;
        for (i, r) in futures_util::future::join_all(waits).await {
            let outcome = match r {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => Err(match e.kind() {
                    PublishErrorKind::StreamNotFound => {
                        stream_missing = true;
                        SinkError::Unreachable(format!(
                            "NATS: no stream holds the subject (no responders): {e}"
                        ))
                    }
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                        SinkError::Unreachable(format!("NATS: no acknowledgement: {e}"))
                    }
                    _ => SinkError::Retryable {
                        reason: format!("NATS: the stream refused the message: {e}"),
                        retry_after: None,
                    },
                }),
                Err(_) => Err(SinkError::Unreachable(format!(
                    "NATS: no acknowledgement within {:?}",
                    self.config.server.timeout
                ))),
            };
            if matches!(outcome, Err(SinkError::Unreachable(_))) {
                unreachable += 1;
            }
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(outcome);
            }
        }
        if stream_missing {
            live.stream_ready = false;
        }
        let results: Vec<Result<(), SinkError>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SinkError::Unreachable("NATS: no answer".into()))))
            .collect();
        if unreachable == results.len() && !results.is_empty() {
            // Nothing got through: one error for the batch keeps the outbox's order.
            let first = results.into_iter().find_map(Result::err);
            return Err(first.unwrap_or_else(|| SinkError::Unreachable("NATS".into())));
        }
        Ok(results)
    }
}

/// Publishes a batch of up to 2048 items with all their publishes in flight at once, and
/// reports each item delivered when the stream acknowledged it.
impl Sink for NatsSink {
    type Error = SinkError;

    fn drive(&self) -> Drive {
        Drive::Batch { max: BATCHED }
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<SinkError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.publish(batch).await
    }
}
