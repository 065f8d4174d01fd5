//! A JetStream stream as a source (`nats-relay`, the hub): a durable pull consumer, each
//! message acknowledged only after the run loop committed its call to the outbox.
//!
//! The consumer is created durable if it is missing (explicit acks, optional filter
//! subjects). Messages are pulled continuously; whatever has arrived (up to a batch) goes to the
//! run loop in one [`SourceEvent::Acked`]; their acks are sent once the commit that holds them
//! is done. A crash between the commit and the acks, or an ack lost, brings the messages back
//! after the consumer's ack wait: the outbox ignores a call id it already has, so a redelivery
//! (or a second relay's copy past the stream's duplicate window) is stored once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use cdr_sinks::nats::NatsServer;
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
}

impl NatsSource {
    /// The durable consumer's settings.
    pub fn consumer_config(&self) -> pull::Config {
        let mut c = pull::Config {
            durable_name: Some(self.consumer.clone()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: i64::try_from(self.batch.saturating_mul(4)).unwrap_or(i64::MAX),
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
pub async fn nats(
    cfg: NatsSource,
    tx: mpsc::Sender<SourceEvent<RelayedInput>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reconnect = Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
    while !*shutdown.borrow() {
        match consume(&cfg, &tx, &mut shutdown, &mut reconnect).await {
            Stop::Done => return,
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

async fn consume(
    cfg: &NatsSource,
    tx: &mpsc::Sender<SourceEvent<RelayedInput>>,
    shutdown: &mut watch::Receiver<bool>,
    reconnect: &mut Reconnect,
) -> Stop {
    let setup = async {
        let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        let client = cfg
            .server
            .connect()
            .await
            .map_err(|e| failed("connecting", &e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.server.timeout)
            .build(client);
        let stream = js
            .get_stream(&cfg.stream)
            .await
            .map_err(|e| failed(&format!("stream {}", cfg.stream), &e))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(&cfg.consumer, cfg.consumer_config())
            .await
            .map_err(|e| failed(&format!("consumer {}", cfg.consumer), &e))?;
        consumer
            .stream()
            .max_messages_per_batch(cfg.batch.max(1))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| failed("pulling", &e))
    };
    let mut messages = tokio::select! {
        m = setup => match m {
            Ok(m) => m.ready_chunks(cfg.batch.max(1)),
            Err(why) => return Stop::Failed(why),
        },
        _ = shutdown.changed() => return Stop::Done,
    };
    tracing::info!(stream = %cfg.stream, consumer = %cfg.consumer, servers = %cfg.server.shown_urls(), "consuming from JetStream");
    reconnect.succeeded();
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
    // The previous batch, handed over and waiting for its commit before its acks go out.
    let mut inflight: Option<(oneshot::Receiver<()>, Vec<jetstream::Message>)> = None;
    loop {
        let chunk = tokio::select! {
            c = messages.next() => c,
            _ = shutdown.changed() => {
                // The run loop commits what it was handed before it stops: ack that.
                return settle(inflight.take()).await.unwrap_or(Stop::Done);
            }
        };
        let Some(chunk) = chunk else {
            return Stop::Failed("the pull subscription ended".into());
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
        {
            return Stop::Done;
        }
        // One batch committing while the next is pulled.
        if let Some(stop) = settle(inflight.replace((committed, got))).await {
            return stop;
        }
    }
}

/// Waits for a batch's commit, then acknowledges its messages. `None` when all went well (or
/// there was nothing to settle).
async fn settle(batch: Option<(oneshot::Receiver<()>, Vec<jetstream::Message>)>) -> Option<Stop> {
    let (committed, messages) = batch?;
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
