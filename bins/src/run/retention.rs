//! The retention task: prunes the outbox by `CDR_RELAY_RETENTION_DAYS` and `CDR_RELAY_MAX_DB_MB`
//! ([`cdr_sinks::retention`]) on its own connection, once at start and then: the size after
//! every commit (the driver wakes it) and at least every few seconds, the age every ten minutes.
//! Each pass records what it pruned and the database's size in the metrics, which the web page
//! and the JSON status show.
//!
//! A backfill (`--replay`) reads faster than sinks deliver, and calls are pruned only once
//! delivered: it waits at [`Retention::room`] while the database is over its limit with
//! deliveries pending, so that it stays near the limit whatever the size of the backfill. A live
//! source never waits for room (the PBX would drop calls): its backlog is kept beyond the limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Outbox, OutboxError};
use cdr_sinks::retention::{DbSize, Pruned, RetentionPolicy};
use tokio::sync::{Notify, watch};

use crate::ops::metrics::Metrics;

/// Age passes at most this often.
const AGE_EVERY: Duration = Duration::from_secs(600);

/// The size is checked at least this often (and after every commit).
const SIZE_EVERY: Duration = Duration::from_secs(5);

/// While there is no room, how often the deliveries are looked at (a counter, no query): a
/// pass runs as soon as one has finished.
const WAITING_POLL: Duration = Duration::from_millis(20);

/// While nothing could be pruned and calls wait for a sink, a size pass runs anyway this often
/// (for the inputs and rejects committed since): it reads the waiting calls each time.
const BLOCKED_RETRY: Duration = Duration::from_secs(60);

/// A WAL file larger than this is checkpointed and cut back after a pass.
const WAL_LIMIT: u64 = 4 << 20;

/// The running retention task, as the driver sees it.
#[derive(Debug)]
pub(super) struct Retention {
    /// Asks for a size check (notified after each commit).
    pub(super) wake: Arc<Notify>,
    /// Whether there is a size limit.
    limited: bool,
    /// Asks for a pass: the number of asks so far.
    asks: Arc<AtomicU64>,
    /// The last ask a pass has answered, and whether there is room after it: no room while the
    /// database is over its limit with deliveries pending.
    room: watch::Receiver<(u64, bool)>,
}

impl Retention {
    /// Asks for a pass (which then sees the last commit) and waits for it, then waits while
    /// the database is over its size limit with deliveries still pending (what a backfill does
    /// before reading more), or until `shutdown` turns true. Returns at once when there is no
    /// size limit.
    pub(super) async fn room(&self, shutdown: &mut watch::Receiver<bool>) {
        if !self.limited {
            return;
        }
        let ask = self.asks.fetch_add(1, Ordering::Relaxed) + 1;
        self.wake.notify_one();
        let mut room = self.room.clone();
        tokio::select! {
            _ = room.wait_for(|(answered, room)| *answered >= ask && *room) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
}

/// Starts the retention task on `db` with `policy`, for the deliveries of `sinks`; it stops
/// when `stop` turns true.
pub(super) fn spawn(
    db: PathBuf,
    policy: RetentionPolicy,
    sinks: Vec<String>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Retention {
    metrics.set_retention_policy(policy);
    let wake = Arc::new(Notify::new());
    let (room_tx, room) = watch::channel((0, true));
    let asks = Arc::new(AtomicU64::new(0));
    let task = Task {
        db,
        policy,
        sinks,
        metrics,
        wake: wake.clone(),
        asks: asks.clone(),
        room: room_tx,
    };
    tokio::spawn(task.run(stop));
    Retention {
        wake,
        limited: policy.max_bytes.is_some(),
        asks,
        room,
    }
}

struct Task {
    db: PathBuf,
    policy: RetentionPolicy,
    sinks: Vec<String>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    asks: Arc<AtomicU64>,
    room: watch::Sender<(u64, bool)>,
}

/// What one pass saw: rows pruned, the size after, the oldest call kept, whether deliveries
/// are pending.
type Seen = (Pruned, DbSize, Option<i64>, bool);

impl Task {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let wal = {
            let mut name = self.db.clone().into_os_string();
            name.push("-wal");
            PathBuf::from(name)
        };
        let db = self.db.clone();
        let mut outbox = match tokio::task::spawn_blocking(move || Outbox::open(&db, &[])).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return tracing::error!(error = %e, "retention: cannot open the database"),
            Err(e) => return tracing::error!(error = %e, "retention: cannot open the database"),
        };
        let policy = self.policy;
        if policy.is_active() {
            tracing::info!(
                "retention: keeping {policy} (calls waiting for a sink are always kept)"
            );
        }
        let mut last_age: Option<Instant> = None;
        let mut last_pass: Option<Instant> = None;
        // When a size pass last found nothing to prune while over the limit: the deliveries
        // finished then, whether calls were waiting for a sink, and when.
        let mut blocked_at: Option<(u64, bool, Instant)> = None;
        let mut committed = false;
        let mut warned = false;
        loop {
            let now = Instant::now();
            let progress = self.metrics.deliveries_done();
            let age_due = last_age.is_none_or(|t| now.duration_since(t) >= AGE_EVERY);
            // Blocked, a size pass waits for a delivery (calls waiting: each pass reads them),
            // or for a commit (nothing waiting), or BLOCKED_RETRY.
            let size_due = blocked_at.is_none_or(|(done, pending, at)| {
                progress != done
                    || (committed && !pending)
                    || now.duration_since(at) >= BLOCKED_RETRY
            });
            committed = false;
            let measure_due = last_pass.is_none_or(|t| now.duration_since(t) >= SIZE_EVERY);
            let ask = self.asks.load(Ordering::Relaxed);
            let asked = ask > self.room.borrow().0;
            if age_due || size_due || measure_due || asked {
                let pass = RetentionPolicy {
                    max_age: policy.max_age.filter(|_| age_due),
                    max_bytes: policy.max_bytes.filter(|_| size_due),
                };
                let wal_over = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT);
                let sinks = self.sinks.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let seen = (|| -> Result<Seen, OutboxError> {
                        let pruned = outbox.prune(&pass, now_ms())?;
                        if wal_over {
                            outbox.checkpoint()?;
                        }
                        let pending = outbox.any_pending(&sinks)?;
                        Ok((pruned, outbox.db_size()?, outbox.oldest_call_ms()?, pending))
                    })();
                    (outbox, seen)
                })
                .await;
                let seen;
                (outbox, seen) = match done {
                    Ok(done) => done,
                    Err(e) => return tracing::error!(error = %e, "retention: a pass failed"),
                };
                last_pass = Some(now);
                if age_due {
                    last_age = Some(now);
                }
                match seen {
                    Ok((pruned, size, oldest, pending)) => {
                        tracing::debug!(
                            took_ms = now.elapsed().as_millis(),
                            pruned = pruned.total(),
                            used = size.used_bytes(),
                            pending,
                            size_due,
                            "retention: pass"
                        );
                        self.metrics.pruned(&pruned, size, oldest, now_ms());
                        log_pass(&pruned, size);
                        let over = policy.max_bytes.is_some_and(|max| size.used_bytes() > max);
                        self.room.send_replace((ask, !(over && pending)));
                        if size_due {
                            blocked_at =
                                (over && pruned.total() == 0).then_some((progress, pending, now));
                        }
                        if over && blocked_at.is_some() && !pending && !warned {
                            tracing::warn!(
                                db_used_bytes = size.used_bytes(),
                                "retention: the database is over CDR_RELAY_MAX_DB_MB with \
                                 nothing left to prune (dead letters are kept until \
                                 CDR_RELAY_RETENTION_DAYS)"
                            );
                        }
                        warned = over && blocked_at.is_some() && !pending;
                    }
                    Err(e) => tracing::warn!(error = %e, "retention: pruning failed; trying again"),
                }
            }
            // While a backfill waits for room, deliveries are watched closely.
            let poll = if self.room.borrow().1 {
                SIZE_EVERY
            } else {
                WAITING_POLL
            };
            tokio::select! {
                () = self.wake.notified() => committed = true,
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

fn log_pass(pruned: &Pruned, size: DbSize) {
    if pruned.total() > 0 {
        tracing::info!(
            calls = pruned.calls,
            updates = pruned.updates,
            inputs = pruned.inputs,
            source_records = pruned.source_records,
            rejects = pruned.rejects,
            db_used_bytes = size.used_bytes(),
            "retention: pruned"
        );
    }
}
