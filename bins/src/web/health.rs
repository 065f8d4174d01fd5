//! Readiness, computed once: [`readiness`] is what `/readyz` answers and what the Sentry cron
//! check-ins report ([`crate::ops::sentry::health`]); each says it in its own words.

use std::sync::Arc;
use std::time::Duration;

use cdr_sinks::outbox::SinkCounts;
use hyper::StatusCode;

use super::respond::text;
use super::{Resp, Shared};

/// What the run loop knows of its own faults (from [`crate::ops::faults::Faults`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Intake {
    /// Commits to the outbox fail: the source is held, nothing new is read.
    pub stalled: bool,
    /// Delivery workers that failed and wait for their restart.
    pub workers_down: u64,
}

impl Intake {
    /// The state in `faults` now.
    pub fn of(faults: &crate::ops::faults::Faults) -> Self {
        Self {
            stalled: faults.is_stalled(),
            workers_down: faults.workers_down(),
        }
    }
}

/// Why the relay is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Commits to the outbox fail (a full or failing disk): nothing new is read.
    IntakeStalled,
    /// Delivery workers failed and are not running (they are restarted with backoff).
    WorkersDown {
        /// How many.
        count: u64,
    },
    /// A sink's oldest pending delivery is older than the limit: the outbox is stuck.
    Stuck {
        /// The sink.
        sink: String,
        /// How old its oldest pending delivery is (ms).
        age_ms: i64,
        /// The limit it is over.
        limit: Duration,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IntakeStalled => {
                f.write_str("intake stalled: commits to the database fail (disk full?)")
            }
            Self::WorkersDown { count } => {
                write!(f, "{count} delivery worker(s) down, restarting")
            }
            Self::Stuck {
                sink,
                age_ms,
                limit,
            } => write!(
                f,
                "sink {sink}: oldest pending delivery is {} s old (limit {} s)",
                age_ms / 1000,
                limit.as_secs()
            ),
        }
    }
}

/// Whether the relay is able to do its job: commits work (`intake` not stalled), every delivery
/// worker runs, and no sink's oldest pending delivery (in `counts`) is older than
/// `max_pending_age` at `now_ms`. The first reason found when not. Whether the PBX is connected
/// is not part of it: a listening relay waits for its PBX and must stay reachable meanwhile (the
/// connection is a metric and a Sentry check-in).
pub fn readiness(
    intake: Intake,
    counts: &[SinkCounts],
    now_ms: i64,
    max_pending_age: Duration,
) -> Result<(), NotReady> {
    if intake.stalled {
        return Err(NotReady::IntakeStalled);
    }
    if intake.workers_down > 0 {
        return Err(NotReady::WorkersDown {
            count: intake.workers_down,
        });
    }
    let max_ms = i64::try_from(max_pending_age.as_millis()).unwrap_or(i64::MAX);
    for c in counts {
        if let Some(oldest) = c.oldest_pending_ms {
            let age = now_ms.saturating_sub(oldest);
            if age > max_ms {
                return Err(NotReady::Stuck {
                    sink: c.sink.clone(),
                    age_ms: age,
                    limit: max_pending_age,
                });
            }
        }
    }
    Ok(())
}

/// `/readyz`: 200 `ready` or 503 with the reason.
pub(super) async fn readyz(shared: &Arc<Shared>) -> Resp {
    let intake = Intake::of(shared.state.metrics.faults());
    // The run loop's own faults first: they need no database read.
    if let Err(why) = readiness(intake, &[], 0, Duration::MAX) {
        return not_ready(&why);
    }
    // A sink the operator paused keeps its calls pending on purpose: not a reason to be unready.
    let counts = match ready_counts(shared).await {
        Ok(counts) => counts,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: outbox unreadable: {e}\n"),
            );
        }
    };
    match readiness(
        intake,
        &counts,
        cdr_sinks::engine::now_ms(),
        shared.options.ready_max_pending_age,
    ) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => not_ready(&why),
    }
}

fn not_ready(why: &NotReady) -> Resp {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("not ready: {why}\n"),
    )
}

/// The outbox counts of the sinks that are not paused.
async fn ready_counts(shared: &Arc<Shared>) -> Result<Vec<SinkCounts>, String> {
    let mut counts = sink_counts(shared).await?;
    let path = shared.state.db.clone();
    let paused = tokio::task::spawn_blocking(move || cdr_sinks::admin::paused_sinks(&path))
        .await
        .map_err(|e| format!("database task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    counts.retain(|c| !paused.contains(&c.sink));
    Ok(counts)
}

/// The outbox counts of every sink with rows, plus the registered sinks without any.
pub(super) async fn sink_counts(shared: &Arc<Shared>) -> Result<Vec<SinkCounts>, String> {
    let path = shared.state.db.clone();
    let sinks = shared.state.metrics.sink_names();
    tokio::task::spawn_blocking(move || {
        cdr_sinks::store::sink_counts(&path, &sinks).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("database task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_unless_stalled_a_worker_down_or_stuck() {
        let now = 10_000_000;
        let limit = Duration::from_secs(15 * 60);
        let fine = Intake::default();
        assert_eq!(readiness(fine, &[], now, limit), Ok(()));
        let at = |sink: &str, age_ms: i64| SinkCounts {
            sink: sink.into(),
            pending: 1,
            oldest_pending_ms: Some(now - age_ms),
            ..SinkCounts::default()
        };
        let exactly = i64::try_from(limit.as_millis()).unwrap_or_default();
        assert_eq!(readiness(fine, &[at("a", exactly)], now, limit), Ok(()));
        assert_eq!(
            readiness(fine, &[at("a", 1), at("b", exactly + 1)], now, limit),
            Err(NotReady::Stuck {
                sink: "b".into(),
                age_ms: exactly + 1,
                limit
            })
        );
        let stalled = Intake {
            stalled: true,
            workers_down: 1,
        };
        assert_eq!(
            readiness(stalled, &[at("b", exactly + 1)], now, limit),
            Err(NotReady::IntakeStalled),
            "a stalled intake first"
        );
        let down = Intake {
            stalled: false,
            workers_down: 2,
        };
        assert_eq!(
            readiness(down, &[], now, limit),
            Err(NotReady::WorkersDown { count: 2 })
        );
    }
}
