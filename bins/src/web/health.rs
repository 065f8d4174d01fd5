//! Readiness, computed once: [`readiness`] is what `/readyz` answers and what the Sentry cron
//! check-ins report ([`crate::ops::sentry::health`]); each says it in its own words.

use std::sync::Arc;
use std::time::Duration;

use cdr_sinks::outbox::SinkCounts;
use hyper::StatusCode;

use super::respond::text;
use super::{Resp, Shared};

/// Why the relay is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The source (the PBX, the CDR feed) is not connected.
    SourceNotConnected,
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

/// Whether the relay is ready: its source is `connected`, and no sink's oldest pending
/// delivery (in `counts`) is older than `max_pending_age` at `now_ms`. The first reason
/// found when not (the source first, then the sinks in the order given).
pub fn readiness(
    connected: bool,
    counts: &[SinkCounts],
    now_ms: i64,
    max_pending_age: Duration,
) -> Result<(), NotReady> {
    if !connected {
        return Err(NotReady::SourceNotConnected);
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
    // The connection first: a relay without its source is not ready whatever the outbox says.
    if !shared.state.metrics.is_source_connected() {
        return not_ready(&NotReady::SourceNotConnected);
    }
    let counts = match sink_counts(shared).await {
        Ok(counts) => counts,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: outbox unreadable: {e}\n"),
            );
        }
    };
    match readiness(
        true,
        &counts,
        cdr_sinks::engine::now_ms(),
        shared.options.ready_max_pending_age,
    ) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => not_ready(&why),
    }
}

fn not_ready(why: &NotReady) -> Resp {
    let reason = match why {
        NotReady::SourceNotConnected => "source not connected".to_owned(),
        NotReady::Stuck {
            sink,
            age_ms,
            limit,
        } => format!(
            "sink {sink}: oldest pending delivery is {} s old (limit {} s)",
            age_ms / 1000,
            limit.as_secs()
        ),
    };
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("not ready: {reason}\n"),
    )
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
    fn ready_when_connected_and_nothing_is_stuck() {
        let now = 10_000_000;
        let limit = Duration::from_secs(15 * 60);
        assert_eq!(
            readiness(false, &[], now, limit),
            Err(NotReady::SourceNotConnected)
        );
        assert_eq!(readiness(true, &[], now, limit), Ok(()));
        let at = |sink: &str, age_ms: i64| SinkCounts {
            sink: sink.into(),
            pending: 1,
            oldest_pending_ms: Some(now - age_ms),
            ..SinkCounts::default()
        };
        let exactly = i64::try_from(limit.as_millis()).unwrap_or_default();
        assert_eq!(readiness(true, &[at("a", exactly)], now, limit), Ok(()));
        assert_eq!(
            readiness(true, &[at("a", 1), at("b", exactly + 1)], now, limit),
            Err(NotReady::Stuck {
                sink: "b".into(),
                age_ms: exactly + 1,
                limit
            })
        );
        assert_eq!(
            readiness(false, &[at("b", exactly + 1)], now, limit),
            Err(NotReady::SourceNotConnected),
            "the source is checked first"
        );
    }
}
