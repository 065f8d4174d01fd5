//! Delivery workers: one per sink, each with its own retry state, so a dead webhook never holds up
//! another sink.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::SinkError;
use crate::backoff::{RetryDecision, RetryPolicy};
use crate::http_cdr_sink::HttpCdrSink;
use crate::jsonl::JsonlSink;
use crate::outbox::{Outbox, OutboxError, Outcome, Pending};
use crate::redis_list::RedisListSink;
use crate::webhook::WebhookSink;

/// A sink that calls are delivered to through the outbox.
#[derive(Clone)]
pub enum RemoteSink {
    /// HTTP POST of each call.
    Webhook(Box<WebhookSink>),
    /// One JSON line per call to a writer.
    Jsonl(Arc<Mutex<JsonlSink<Box<dyn Write + Send>>>>),
    /// Each call pushed onto a Redis list; a round's due calls go as one batch (see
    /// [`RemoteSink::is_batched`]).
    Redis(Arc<RedisListSink>),
    /// Calls POSTed as CMS CDR records to one to four receivers; batched (see
    /// [`crate::http_cdr_sink`]).
    HttpCdr(Arc<HttpCdrSink>),
}

impl std::fmt::Debug for RemoteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook(w) => w.as_ref().fmt(f),
            Self::Jsonl(_) => f.write_str("Jsonl"),
            Self::Redis(r) => r.as_ref().fmt(f),
            Self::HttpCdr(h) => h.as_ref().fmt(f),
        }
    }
}

impl RemoteSink {
    /// Delivers one call's JSON. The HTTP-CDR sink numbers its records from the delivery's
    /// outbox position, which this does not have: it takes [`RemoteSink::send_batch`] only
    /// (and fails here with [`SinkError::Config`]).
    pub async fn send(&self, id: &str, body: &[u8], now_unix: i64) -> Result<(), SinkError> {
        match self {
            Self::Webhook(w) => w.send(id, body, now_unix).await,
            Self::Jsonl(j) => j
                .lock()
                .map_err(|_| SinkError::Io(std::io::Error::other("jsonl sink poisoned")))?
                .send_json(body),
            Self::Redis(r) => r.send(body).await,
            Self::HttpCdr(_) => Err(SinkError::Config(
                "the HTTP CDR sink sends batches only".into(),
            )),
        }
    }

    /// Whether the sink takes a round's deliveries as one batch ([`RemoteSink::send_batch`],
    /// one outcome for all) instead of one call at a time: true for Redis and HTTP CDR.
    pub fn is_batched(&self) -> bool {
        matches!(self, Self::Redis(_) | Self::HttpCdr(_))
    }

    /// Delivers the JSON of several calls, in order, as one batch: for Redis, one round trip that
    /// succeeds or fails as a whole; for HTTP CDR, the calls' records posted to every receiver.
    /// Sinks without batches send one call after another and return the first failure (the
    /// calls before it were delivered).
    pub async fn send_batch(&self, batch: &[Pending], now_unix: i64) -> Result<(), SinkError> {
        match self {
            Self::Redis(r) => {
                let bodies: Vec<&[u8]> = batch.iter().map(|p| p.body.as_slice()).collect();
                r.push_batch(&bodies).await
            }
            Self::HttpCdr(h) => h.send_batch(batch).await,
            _ => {
                for p in batch {
                    self.send(&p.call_id, &p.body, now_unix).await?;
                }
                Ok(())
            }
        }
    }
}

/// Counters of one sink's worker, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Deliveries that succeeded.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed: AtomicU64,
    /// Deliveries given up on.
    pub dead: AtomicU64,
    /// Whether the sink is paused (401/403/410) or unreachable right now.
    pub blocked: AtomicBool,
}

/// One sink's worker settings.
#[derive(Debug, Clone)]
pub struct SinkWorker {
    /// The sink's name in the outbox (`webhook`, `jsonl:out.jsonl`, ...).
    pub name: String,
    /// The sink.
    pub sink: RemoteSink,
    /// When to retry and when to give up.
    pub policy: RetryPolicy,
    /// Deliveries in flight at once (a batched sink sends one batch at a time and ignores it).
    pub concurrency: usize,
    /// Shared counters.
    pub stats: Arc<SinkStats>,
}

/// Deliveries fetched from the outbox per round (their outcomes are committed together).
const BATCH: usize = 256;

/// Deliveries per round for a sink that takes a whole round in one request (Redis list): one
/// round trip and one outcome commit for this many calls.
const BATCHED: usize = 2048;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    f: impl FnOnce(&mut Outbox) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = outbox.lock().map_err(|_| {
            OutboxError::Sqlite(rusqlite::Error::InvalidParameterName(
                "outbox lock poisoned".into(),
            ))
        })?;
        f(&mut guard)
    })
    .await
    .unwrap_or_else(|e| {
        Err(OutboxError::Sqlite(rusqlite::Error::InvalidParameterName(
            format!("outbox task failed: {e}"),
        )))
    })
}

/// Runs one sink's worker until `shutdown` turns true: takes due deliveries from the outbox at
/// `db`, sends them (at most `concurrency` at once; a batched sink such as Redis takes all of a
/// round's deliveries, up to 256, in one batch, in order), and records each outcome. `wake` is
/// notified by the source after each commit so new calls go out at once. On shutdown, requests
/// in flight are finished (the caller bounds how long it waits for this future).
pub async fn run_worker(
    db: PathBuf,
    worker: SinkWorker,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), OutboxError> {
    let name = worker.name.clone();
    let outbox = {
        let sinks: Vec<String> = Vec::new();
        let db = db.clone();
        tokio::task::spawn_blocking(move || Outbox::open(&db, &sinks))
            .await
            .map_err(|e| {
                OutboxError::Sqlite(rusqlite::Error::InvalidParameterName(e.to_string()))
            })??
    };
    let outbox = Arc::new(Mutex::new(outbox));
    // Sink-level backoff while the receiver is unreachable or refuses us.
    let mut blocked_rounds = 0u32;
    let mut blocked_until: Option<i64> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let now = now_ms();
        if let Some(until) = blocked_until {
            if until > now {
                let wait = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        // While blocked, probe with a single delivery.
        let limit = if blocked_until.is_some() {
            1
        } else if worker.sink.is_batched() {
            BATCHED
        } else {
            BATCH.max(worker.concurrency)
        };
        let sink_name = name.clone();
        let due = blocking(&outbox, move |o| o.due(&sink_name, now, limit)).await?;
        if due.is_empty() {
            let sink_name = name.clone();
            let next = blocking(&outbox, move |o| o.next_due(&sink_name)).await?;
            let wait = next.map_or(Duration::from_secs(5), |n| {
                Duration::from_millis(u64::try_from(n.saturating_sub(now)).unwrap_or(0))
            });
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait.min(Duration::from_secs(5))) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let (outcomes, blocked) = if worker.sink.is_batched() {
            send_as_batch(&worker, due, now, blocked_rounds).await
        } else {
            send_each(&worker, due, now, blocked_rounds).await
        };
        match blocked {
            Some(until) => {
                blocked_rounds = blocked_rounds.saturating_add(1);
                blocked_until = Some(until);
                worker.stats.blocked.store(true, Ordering::Relaxed);
            }
            None => {
                if blocked_rounds > 0 {
                    tracing::info!(sink = %name, "sink reachable again");
                }
                blocked_rounds = 0;
                blocked_until = None;
                worker.stats.blocked.store(false, Ordering::Relaxed);
            }
        }
        let sink_name = name.clone();
        blocking(&outbox, move |o| o.record(&sink_name, &outcomes, now_ms())).await?;
    }
}

/// Sends each delivery on its own, with at most `concurrency` in flight (with 1, in order);
/// returns the outcomes and, if the sink turned out unreachable or paused, until when to block it.
async fn send_each(
    worker: &SinkWorker,
    due: Vec<Pending>,
    now: i64,
    blocked_rounds: u32,
) -> (Vec<(String, Outcome)>, Option<i64>) {
    let mut set = JoinSet::new();
    let mut outcomes = Vec::new();
    let mut blocked = None;
    let mut queue = due.into_iter();
    loop {
        while set.len() < worker.concurrency.max(1) && blocked.is_none() {
            let Some(p) = queue.next() else { break };
            let sink = worker.sink.clone();
            set.spawn(async move {
                let r = sink.send(&p.call_id, &p.body, now / 1000).await;
                (p, r)
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let Ok((p, result)) = joined else { continue };
        let outcome = decide(worker, &p, result, now_ms(), blocked_rounds, &mut blocked);
        outcomes.push((p.call_id, outcome));
    }
    (outcomes, blocked)
}

/// Sends a round's deliveries as one batch (a sink whose batch succeeds or fails as a whole, so
/// one outcome applies to every delivery in it), and keeps their order:
///
/// * success: every delivery is delivered;
/// * any failure blocks the whole sink (the backoff of the unreachable path: the sink's
///   `Retry-After` or the policy's ceiling for the number of blocked rounds, at least 200 ms;
///   then a probe with one delivery), and each delivery stays due at the time it was due
///   ([`Pending::next_ms`]), so the next batch starts again at the oldest call, in order;
/// * [`SinkError::Unreachable`] and [`SinkError::Paused`] (Redis down, loading, read-only,
///   refusing our password, the key not a list, ...) do not use up the calls' attempts; only the
///   maximum age can dead-letter them;
/// * [`SinkError::Retryable`] and [`SinkError::Io`] count an attempt for every delivery in the
///   batch; the policy's attempt and age limits dead-letter them;
/// * [`SinkError::Rejected`], [`SinkError::Encode`] and [`SinkError::Config`] dead-letter the
///   batch.
async fn send_as_batch(
    worker: &SinkWorker,
    due: Vec<Pending>,
    now: i64,
    blocked_rounds: u32,
) -> (Vec<(String, Outcome)>, Option<i64>) {
    let result = worker.sink.send_batch(&due, now / 1000).await;
    let now = now_ms();
    let stats = &worker.stats;
    let name = &worker.name;
    let n = u64::try_from(due.len()).unwrap_or(u64::MAX);
    let err = match result {
        Ok(()) => {
            stats.delivered.fetch_add(n, Ordering::Relaxed);
            let outcomes = due
                .into_iter()
                .map(|p| (p.call_id, Outcome::Delivered))
                .collect();
            return (outcomes, None);
        }
        Err(e) => e,
    };
    stats.failed.fetch_add(n, Ordering::Relaxed);
    let error = err.to_string();
    let (counted, retry_after) = match &err {
        SinkError::Unreachable(_) => (false, None),
        SinkError::Paused { retry_after, .. } => (false, *retry_after),
        SinkError::Retryable { retry_after, .. } => (true, *retry_after),
        SinkError::Io(_) => (true, None),
        SinkError::Rejected(_) | SinkError::Encode(_) | SinkError::Config(_) => {
            stats.dead.fetch_add(n, Ordering::Relaxed);
            tracing::error!(sink = %name, calls = n, %error, "batch dead-lettered");
            let outcomes = due
                .into_iter()
                .map(|p| {
                    let error = error.clone();
                    (p.call_id, Outcome::Dead { error })
                })
                .collect();
            return (outcomes, None);
        }
    };
    match &err {
        SinkError::Paused { .. } => {
            tracing::error!(sink = %name, %error, "sink paused: the receiver refuses our requests");
        }
        SinkError::Unreachable(_) => tracing::warn!(sink = %name, %error, "sink unreachable"),
        _ => tracing::warn!(sink = %name, calls = n, %error, "batch failed; will retry"),
    }
    let ceiling = worker.policy.ceiling(blocked_rounds.saturating_add(1));
    let delay = retry_after
        .unwrap_or(ceiling)
        .max(Duration::from_millis(200));
    let until = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let outcomes = due
        .into_iter()
        .map(|p| {
            let give_up = if counted {
                worker.policy.after_failure(
                    p.attempts.saturating_add(1),
                    p.created_ms,
                    now,
                    None,
                    0,
                ) == RetryDecision::DeadLetter
            } else {
                worker.policy.is_too_old(p.created_ms, now)
            };
            let outcome = if give_up {
                stats.dead.fetch_add(1, Ordering::Relaxed);
                tracing::error!(sink = %name, call = %p.call_id, %error, "delivery dead-lettered");
                Outcome::Dead {
                    error: error.clone(),
                }
            } else {
                Outcome::Retry {
                    at_ms: p.next_ms,
                    error: error.clone(),
                    counted,
                }
            };
            (p.call_id, outcome)
        })
        .collect();
    (outcomes, Some(until))
}

/// Maps one attempt's result to what the outbox should record.
fn decide(
    worker: &SinkWorker,
    p: &Pending,
    result: Result<(), SinkError>,
    now: i64,
    blocked_rounds: u32,
    blocked: &mut Option<i64>,
) -> Outcome {
    let stats = &worker.stats;
    let name = &worker.name;
    let err = match result {
        Ok(()) => {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
            return Outcome::Delivered;
        }
        Err(e) => e,
    };
    stats.failed.fetch_add(1, Ordering::Relaxed);
    let error = err.to_string();
    let dead = |error: String| {
        stats.dead.fetch_add(1, Ordering::Relaxed);
        tracing::error!(sink = %name, call = %p.call_id, %error, "delivery dead-lettered");
        Outcome::Dead { error }
    };
    match err {
        SinkError::Unreachable(_) | SinkError::Paused { .. } => {
            let retry_after = match &err {
                SinkError::Paused { retry_after, .. } => *retry_after,
                _ => None,
            };
            let ceiling = worker.policy.ceiling(blocked_rounds.saturating_add(1));
            let delay = retry_after
                .unwrap_or(ceiling)
                .max(Duration::from_millis(200));
            let until = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            if matches!(err, SinkError::Paused { .. }) {
                tracing::error!(sink = %name, %error, "sink paused: the receiver refuses our requests");
            } else {
                tracing::warn!(sink = %name, %error, "sink unreachable");
            }
            *blocked = Some(blocked.map_or(until, |b: i64| b.max(until)));
            if worker.policy.is_too_old(p.created_ms, now) {
                return dead(error);
            }
            Outcome::Retry {
                at_ms: until,
                error,
                counted: false,
            }
        }
        SinkError::Retryable { retry_after, .. } => {
            retry(worker, p, now, retry_after, error, &dead)
        }
        SinkError::Io(_) => retry(worker, p, now, None, error, &dead),
        SinkError::Rejected(_) | SinkError::Encode(_) | SinkError::Config(_) => dead(error),
    }
}

fn retry(
    worker: &SinkWorker,
    p: &Pending,
    now: i64,
    retry_after: Option<Duration>,
    error: String,
    dead: &dyn Fn(String) -> Outcome,
) -> Outcome {
    let attempts = p.attempts.saturating_add(1);
    match worker
        .policy
        .after_failure(attempts, p.created_ms, now, retry_after, rand::random())
    {
        RetryDecision::RetryAt(at_ms) => {
            tracing::warn!(sink = %worker.name, call = %p.call_id, attempts, %error, "delivery failed; will retry");
            Outcome::Retry {
                at_ms,
                error,
                counted: true,
            }
        }
        RetryDecision::DeadLetter => dead(error),
    }
}
