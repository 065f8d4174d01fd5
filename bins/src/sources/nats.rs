//! A JetStream stream as a source (`nats-relay`, the hub): a durable pull consumer, each
//! message acknowledged only after the run loop committed its call to the outbox.
//!
//! The consumer is created durable if it is missing (explicit acks, optional filter
//! subjects). Messages are pulled continuously; whatever has arrived (up to a batch) goes to the
//! run loop in one [`SourceEvent::Acked`]; their acks are sent once the commit that holds them
//! is done. A crash between the commit and the acks, or an ack lost, brings the messages back
//! after the consumer's ack wait: the outbox ignores a call id it already has, so a redelivery
//! (or a second relay's copy past the stream's duplicate window) is stored once.
//!
//! A server that cannot be reached, or a stream that does not exist yet (relays create it with
//! `NATS_CREATE_STREAM`), is tried again with capped backoff for as long as the relay runs. A
//! consumer the server refuses to create as configured (a filter subject outside the stream,
//! JetStream not enabled: [`cdr_sinks::nats::is_refused_as_configured`]) is a configuration
//! error: before the first successful start the source reports it on its `fatal` channel and
//! stops (the relay shuts down and exits with it); later it is logged as an error and tried
//! again.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use cdr_sinks::nats::{NatsServer, is_refused_as_configured};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use call_assembler::feed::RelayedInput;

use super::reconnect::Reconnect;
use super::tcp::SourceEvent;

/// Where `nats-relay` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSource {
    /// The servers and how to connect.
    pub server: NatsServer,
    /// The stream.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Subjects the consumer takes (all of the stream's when empty).
    pub filter_subjects: Vec<String>,
    /// Messages committed at once, at most.
    pub batch: usize,
    /// How long a message handed over may go unacknowledged before the server sends it again.
    pub ack_wait: Duration,
}

/// The first pause before connecting again; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// The longest pause between attempts to reach NATS.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

enum Stop {
    /// Shutdown, or the run loop is gone.
    Done,
    /// The connection, the stream or the consumer failed.
    Failed(String),
    /// The server refuses the consumer as configured.
    Refused(String),
}

impl NatsSource {
    /// The durable consumer's settings: explicit acks, at most [`PENDING_BATCHES`] batches
    /// delivered and not yet acknowledged (the pipeline's depth: pulled, committing, acking).
    pub fn consumer_config(&self) -> pull::Config {
        let mut c = pull::Config {
            durable_name: Some(self.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: i64::try_from(self.batch.saturating_mul(PENDING_BATCHES))
                .unwrap_or(i64::MAX),
            ..pull::Config::default()
        };
        match self.filter_subjects.as_slice() {
            [] => {}
            [one] => c.filter_subject.clone_from(one),
            many => c.filter_subjects = many.to_vec(),
        }
        c
    }
}

/// Consumes `cfg.stream` into the run loop until `shutdown`, reconnecting with capped backoff.
/// A consumer the server refuses as configured before the first successful start is sent on
/// `fatal` and ends the source.
pub async fn nats(
    cfg: NatsSource,
    tx: mpsc::Sender<SourceEvent<RelayedInput>>,
    mut shutdown: watch::Receiver<bool>,
    fatal: oneshot::Sender<String>,
) {
    let mut reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut fatal = Some(fatal);
    while !*shutdown.borrow() {
        match consume(&cfg, &tx, &mut shutdown, &mut reconnect, &mut fatal).await {
            Stop::Done => return,
            Stop::Refused(why) => match fatal.take() {
                Some(f) => {
                    let _ = f.send(why);
                    return;
                }
                None => tracing::error!(error = %why, "NATS consumer refused; trying again"),
            },
            Stop::Failed(why) => {
                tracing::warn!(error = %why, "NATS consumer");
                if tx.send(SourceEvent::Disconnected(why)).await.is_err() {
                    return;
                }
            }
        }
        if !reconnect.wait(&mut shutdown).await {
            return;
        }
    }
}

/// Connects, finds the stream and gets or creates the durable consumer; its pull stream.
async fn open(cfg: &NatsSource) -> Result<pull::Stream, Stop> {
    let failed = |what: &str, e: &dyn std::fmt::Display| Stop::Failed(format!("{what}: {e}"));
    let client = cfg
        .server
        .connect()
        .await
        .map_err(|e| failed("connecting", &e))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.server.timeout)
        .build(client);
    let stream = js.get_stream(&cfg.stream).await.map_err(|e| {
        use jetstream::context::GetStreamErrorKind;
        match e.kind() {
            GetStreamErrorKind::JetStream(js) if is_refused_as_configured(&js) => {
                Stop::Refused(format!("stream {}: {js}", cfg.stream))
            }
            GetStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Stop::Failed(format!(
                    "stream {} does not exist (yet): waiting for it (relays create it with \
                     NATS_CREATE_STREAM=true)",
                    cfg.stream
                ))
            }
            _ => failed(&format!("stream {}", cfg.stream), &e),
        }
    })?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&cfg.consumer, cfg.consumer_config())
        .await
        .map_err(|e| match e.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(js)
                if is_refused_as_configured(&js) =>
            {
                Stop::Refused(format!(
                    "the server refuses to create consumer {} on stream {} (filter subjects \
                     {:?}) as configured: {js}; check NATS_CONSUMER and NATS_FILTER_SUBJECTS \
                     against the stream's subjects",
                    cfg.consumer, cfg.stream, cfg.filter_subjects
                ))
            }
            _ => failed(&format!("consumer {}", cfg.consumer), &e),
        })?;
    consumer
        .stream()
        .max_messages_per_batch(cfg.batch.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| failed("pulling", &e))
}

async fn consume(
    cfg: &NatsSource,
    tx: &mpsc::Sender<SourceEvent<RelayedInput>>,
    shutdown: &mut watch::Receiver<bool>,
    reconnect: &mut Reconnect,
    fatal: &mut Option<oneshot::Sender<String>>,
) -> Stop {
    let mut messages = tokio::select! {
        m = open(cfg) => match m {
            Ok(m) => m.ready_chunks(cfg.batch.max(1)),
            Err(stop) => return stop,
        },
        _ = shutdown.changed() => return Stop::Done,
    };
    tracing::info!(stream = %cfg.stream, consumer = %cfg.consumer, servers = %cfg.server.shown_urls(), "consuming from JetStream");
    reconnect.succeeded();
    // Started once: from now on a refusal is logged and tried again.
    *fatal = None;
    if tx
        .send(SourceEvent::Connected(format!(
            "{}/{}",
            cfg.stream, cfg.consumer
        )))
        .await
        .is_err()
    {
        return Stop::Done;
    }
    // Batches handed over and waiting for their commits, in order; their acks go out from
    // their own task, so pulling goes on while the run loop commits (which groups what is
    // queued into one commit). The server's `max_ack_pending` bounds what is in flight.
    let (settle_tx, settle_rx) = mpsc::channel(SETTLING);
    let mut acker = tokio::spawn(settle_all(settle_rx));
    let stop = loop {
        let chunk = tokio::select! {
            c = messages.next() => c,
            _ = shutdown.changed() => break Stop::Done,
            // The acker stopped: an ack failed, or the run loop is gone.
            r = &mut acker => return r.unwrap_or(Stop::Done),
        };
        let Some(chunk) = chunk else {
            break Stop::Failed("the pull subscription ended".into());
        };
        let mut got = Vec::with_capacity(chunk.len());
        let mut error = None;
        for m in chunk {
            match m {
                Ok(m) => got.push(m),
                // Heartbeats missed, the consumer deleted, a server going away: the client
                // reports these and goes on (or the next pull fails for good).
                Err(e) => error = Some(e.to_string()),
            }
        }
        if let Some(e) = &error {
            tracing::debug!(error = %e, "NATS pull");
        }
        if got.is_empty() {
            continue;
        }
        let bodies: Vec<Vec<u8>> = got.iter().map(|m| m.payload.to_vec()).collect();
        let (ack, committed) = oneshot::channel();
        if tx
            .send(SourceEvent::Acked(RelayedInput::Messages(bodies), ack))
            .await
            .is_err()
            || settle_tx.send((committed, got)).await.is_err()
        {
            break Stop::Done;
        }
    };
    // The run loop commits what it was handed before it stops: the acker acks that, then ends.
    drop(settle_tx);
    match acker.await {
        Ok(Stop::Failed(why)) => Stop::Failed(why),
        _ => stop,
    }
}

/// Batches handed over and not yet acknowledged, at most (each up to `batch` messages).
const SETTLING: usize = 16;

/// The consumer's `max_ack_pending`, in batches: what the server delivers ahead of the acks.
pub const PENDING_BATCHES: usize = 8;

/// Acknowledges each batch once its commit is done, in order, until the channel closes (then
/// [`Stop::Done`]), a batch is never committed (the run loop failed: [`Stop::Done`], the
/// server sends those messages again), or an ack cannot be sent ([`Stop::Failed`]).
async fn settle_all(
    mut batches: mpsc::Receiver<(oneshot::Receiver<()>, Vec<jetstream::Message>)>,
) -> Stop {
    while let Some(batch) = batches.recv().await {
        if let Some(stop) = settle(batch).await {
            return stop;
        }
    }
    Stop::Done
}

/// Waits for a batch's commit, then acknowledges its messages. `None` when all went well.
async fn settle(
    (committed, messages): (oneshot::Receiver<()>, Vec<jetstream::Message>),
) -> Option<Stop> {
    // No commit means the run loop failed: no ack, the server sends them again.
    if committed.await.is_err() {
        return Some(Stop::Done);
    }
    for m in &messages {
        if let Err(e) = m.ack().await {
            // Not acknowledged: redelivered after the ack wait, and dropped by the outbox then.
            return Some(Stop::Failed(format!("ack: {e}")));
        }
    }
    None
}
