//! Delivery workers: one per sink, each with its own retry state, so a dead webhook never holds up
//! another sink.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::SinkError;
use crate::backoff::{RetryDecision, RetryPolicy};
use crate::outbox::{Outbox, OutboxError, Outcome, Pending};
use crate::sink::{BatchResult, Drive, Outgoing, Sink};

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
    /// Whether an operator paused the sink ([`Outbox::pause_sink`]): its worker sends nothing.
    pub paused: AtomicBool,
}

/// One sink's worker settings.
#[derive(Debug, Clone)]
pub struct SinkWorker<S> {
    /// The sink's name in the outbox (`webhook`, `jsonl:out.jsonl`, ...).
    pub name: String,
    /// The sink; it says how it wants its deliveries ([`Sink::drive`]).
    pub sink: S,
    /// When to retry and when to give up.
    pub policy: RetryPolicy,
    /// Shared counters.
    pub stats: Arc<SinkStats>,
}

/// Deliveries fetched from the outbox per round for a sink driven one delivery at a time
/// ([`Drive::Each`]; more if its concurrency is higher); their outcomes are committed together.
const BATCH: usize = 256;

/// How often the worker of a paused sink looks whether it was resumed.
const PAUSE_POLL: Duration = Duration::from_secs(1);

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
/// `db`, hands them to the sink as it asks ([`Sink::drive`]: one at a time with at most
/// `concurrency` in flight, or up to `max` in one batch, in order), and records each outcome:
/// delivered, retried (the policy's backoff, the receiver's `Retry-After`, the sink blocked while
/// it is unreachable or refuses us), or dead-lettered. `wake` is notified by the source after each
/// commit so new calls go out at once. While an operator has paused the sink
/// ([`Outbox::pause_sink`]) it sends nothing and looks again every second; a receiver's
/// `Retry-After` is capped at the policy's maximum delay. On shutdown, requests in flight are
/// finished (the caller bounds how long it waits for this future).
pub async fn run_worker<S: Sink + 'static>(
    db: PathBuf,
    worker: SinkWorker<S>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), OutboxError> {
    // Shared with the tasks of concurrent deliveries.
    let worker = SinkWorker {
        name: worker.name,
        sink: Arc::new(worker.sink),
        policy: worker.policy,
        stats: worker.stats,
    };
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
    // Next tries set further away than the policy allows (by an uncapped `Retry-After` of an
    // earlier version) come back within it.
    let latest =
        now_ms().saturating_add(i64::try_from(worker.policy.cap.as_millis()).unwrap_or(i64::MAX));
    let sink_name = name.clone();
    let moved = blocking(&outbox, move |o| o.bring_retries_within(&sink_name, latest)).await?;
    if moved > 0 {
        tracing::warn!(sink = %name, deliveries = moved, "next tries brought within the maximum retry delay");
    }
    // Sink-level backoff while the receiver is unreachable or refuses us.
    let mut blocked_rounds = 0u32;
    let mut blocked_until: Option<i64> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let sink_name = name.clone();
        let paused = blocking(&outbox, move |o| o.is_sink_paused(&sink_name)).await?;
        if paused != worker.stats.paused.swap(paused, Ordering::Relaxed) {
            if paused {
                tracing::warn!(sink = %name, "sink paused by an operator: nothing is sent until it is resumed");
            } else {
                tracing::info!(sink = %name, "sink resumed");
                blocked_until = None;
            }
        }
        if paused {
            tokio::select! {
                () = tokio::time::sleep(PAUSE_POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let now = now_ms();
        if let Some(until) = blocked_until {
            if until > now {
                // In steps of at most 5 s, so that a pause is seen while blocked.
                let wait = Duration::from_millis(u64::try_from(until - now).unwrap_or(0))
                    .min(Duration::from_secs(5));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        }
        let drive = worker.sink.drive();
        // While blocked, probe with a single delivery.
        let limit = if blocked_until.is_some() {
            1
        } else {
            match drive {
                Drive::Batch { max } => max.max(1),
                Drive::Each { concurrency } => BATCH.max(concurrency),
            }
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
        let (outcomes, blocked) = match drive {
            Drive::Batch { .. } => send_as_batch(&worker, due, blocked_rounds).await,
            Drive::Each { concurrency } => {
                send_each(&worker, concurrency, due, blocked_rounds).await
            }
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
        record(&outbox, &name, Arc::new(outcomes), &shutdown).await?;
    }
}

/// Records a round's `outcomes`. While the disk is full or failing the write is retried (0.2 s
/// doubling to 5 s) rather than given up: the deliveries were made, and failing here would send
/// them again. Any other error, or a shutdown while it lasts, is returned.
async fn record(
    outbox: &Arc<Mutex<Outbox>>,
    sink: &str,
    outcomes: Arc<Vec<(String, Outcome)>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), OutboxError> {
    let mut delay = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        let (name, o) = (sink.to_owned(), outcomes.clone());
        let Err(e) = blocking(outbox, move |ob| ob.record(&name, &o, now_ms())).await else {
            return Ok(());
        };
        let transient = matches!(
            &e,
            OutboxError::Sqlite(s) if matches!(
                s.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                )
            )
        );
        if !transient || *shutdown.borrow() {
            return Err(e);
        }
        if failures == 0 {
            tracing::warn!(%sink, error = %e, "recording delivery outcomes failed; retrying");
        }
        failures = failures.saturating_add(1);
        let mut stop = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Sends each delivery on its own, with at most `concurrency` in flight (with 1, in order);
/// returns the outcomes and, if the sink turned out unreachable or paused, until when to block it.
async fn send_each<S: Sink + 'static>(
    worker: &SinkWorker<Arc<S>>,
    concurrency: usize,
    due: Vec<Pending>,
    blocked_rounds: u32,
) -> (Vec<(String, Outcome)>, Option<i64>) {
    let mut outcomes = Vec::with_capacity(due.len());
    let mut blocked = None;
    deliver_each(&worker.sink, concurrency, due, |p, result| {
        let outcome = decide(worker, &p, result, now_ms(), blocked_rounds, &mut blocked);
        outcomes.push((p.call_id, outcome));
        blocked.is_none()
    })
    .await;
    (outcomes, blocked)
}

/// Hands each of `due` to `sink` on its own ([`Drive::Each`]), with at most `concurrency`
/// deliveries in flight (0 counts as 1; with 1, one after another in `due`'s order), and calls
/// `done` with each delivery and its result as it finishes, in the order they finish. Once `done`
/// returns false (the sink turned out unreachable or paused), no further delivery is started; the
/// ones in flight are still finished and handed to `done`, and those never started are dropped
/// (they stay due in the outbox).
///
/// This is how a worker drives such a sink; it is public so that a bench or a test can drive a
/// sink exactly so without an outbox. Each delivery runs as a task of its own (one that panics is
/// dropped like one never started): measured with the `webhook_sink` bench, this keeps the HTTP
/// client's connections at `concurrency`, where polling them all from one task let finished
/// connections reach the pool late and new ones were opened (about 10 times as many connections,
/// 20-40 % fewer calls per second).
pub async fn deliver_each<S: Sink + 'static>(
    sink: &Arc<S>,
    concurrency: usize,
    due: Vec<Pending>,
    mut done: impl FnMut(Pending, Result<(), SinkError>) -> bool,
) {
    let mut set = JoinSet::new();
    let mut go_on = true;
    let mut queue = due.into_iter();
    loop {
        while set.len() < concurrency.max(1) && go_on {
            let Some(p) = queue.next() else { break };
            let sink = Arc::clone(sink);
            set.spawn(async move {
                let item = [Outgoing::new(p)];
                let result = sink.deliver(&item).await;
                let [item] = item;
                (item.into_pending(), first_result(result))
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let Ok((p, result)) = joined else { continue };
        go_on &= done(p, result);
    }
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
///
/// A sink that answers item by item instead gets each item's result handled as
/// [`send_each`] does (see [`per_item`]).
async fn send_as_batch<S: Sink + 'static>(
    worker: &SinkWorker<Arc<S>>,
    due: Vec<Pending>,
    blocked_rounds: u32,
) -> (Vec<(String, Outcome)>, Option<i64>) {
    let items: Vec<Outgoing> = due.into_iter().map(Outgoing::new).collect();
    let result = worker.sink.deliver(&items).await;
    let now = now_ms();
    let due: Vec<Pending> = items.into_iter().map(Outgoing::into_pending).collect();
    let stats = &worker.stats;
    let name = &worker.name;
    let n = u64::try_from(due.len()).unwrap_or(u64::MAX);
    let err: SinkError = match result {
        Ok(results) => return per_item(worker, due, results, now, blocked_rounds),
        Err(e) => e.into(),
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
    let until = blocked_until(&worker.policy, now, retry_after, blocked_rounds);
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

/// The outcomes of a batch the sink answered item by item: each item's result as if it had been
/// sent alone ([`decide`]); an item the sink gave no result for is a counted retry.
fn per_item<S, E: Into<SinkError>>(
    worker: &SinkWorker<S>,
    due: Vec<Pending>,
    results: Vec<Result<(), E>>,
    now: i64,
    blocked_rounds: u32,
) -> (Vec<(String, Outcome)>, Option<i64>) {
    let mut blocked = None;
    let mut results = results.into_iter();
    let outcomes = due
        .into_iter()
        .map(|p| {
            let result = results
                .next()
                .map_or_else(|| Err(no_outcome()), |r| r.map_err(Into::into));
            let outcome = decide(worker, &p, result, now, blocked_rounds, &mut blocked);
            (p.call_id, outcome)
        })
        .collect();
    (outcomes, blocked)
}

/// The result of a one-item batch.
fn first_result<E: Into<SinkError>>(result: BatchResult<E>) -> Result<(), SinkError> {
    match result {
        Ok(results) => results
            .into_iter()
            .next()
            .map_or_else(|| Err(no_outcome()), |r| r.map_err(Into::into)),
        Err(e) => Err(e.into()),
    }
}

/// The error recorded for an item a sink returned no result for.
fn no_outcome() -> SinkError {
    SinkError::Retryable {
        reason: "the sink reported no outcome for this delivery".into(),
        retry_after: None,
    }
}

/// Maps one attempt's result to what the outbox should record.
fn decide<S>(
    worker: &SinkWorker<S>,
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
            let until = blocked_until(&worker.policy, now, retry_after, blocked_rounds);
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

/// Until when a sink that was unreachable or refused us stays blocked: the receiver's
/// `Retry-After` (capped at the policy's maximum delay) or the policy's ceiling for the number of
/// blocked rounds, at least 200 ms.
fn blocked_until(
    policy: &RetryPolicy,
    now: i64,
    retry_after: Option<Duration>,
    blocked_rounds: u32,
) -> i64 {
    let ceiling = policy.ceiling(blocked_rounds.saturating_add(1));
    let delay = policy
        .capped_retry_after(retry_after)
        .unwrap_or(ceiling)
        .max(Duration::from_millis(200));
    now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

fn retry<S>(
    worker: &SinkWorker<S>,
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
