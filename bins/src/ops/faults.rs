//! Faults of the disk, the database and the delivery workers, as the run loop sees them: shared
//! with `/readyz` and exported as metrics.
//!
//! | family | type | |
//! |---|---|---|
//! | `commit_failures_total` | counter | commits to the outbox that failed (each retry counts) |
//! | `intake_stalled` | gauge (0 or 1) | the source is not read because commits fail |
//! | `worker_restarts_total` | counter | delivery workers restarted after a failure |
//! | `workers_down` | gauge | delivery workers failed and waiting for their restart |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The fault state of one relay. Cheap to update from any thread (atomics only).
#[derive(Debug, Default)]
pub struct Faults {
    commit_failures: AtomicU64,
    stalled: AtomicBool,
    worker_restarts: AtomicU64,
    workers_down: AtomicU64,
}

impl Faults {
    /// Counts one failed commit and marks the intake stalled.
    pub fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// A commit went through: the intake is no longer stalled.
    pub fn commit_ok(&self) {
        self.stalled.store(false, Ordering::Relaxed);
    }

    /// Whether the source is held because commits fail.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Commits that failed so far.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// A delivery worker failed; it stays down until [`Faults::worker_restarted`].
    pub fn worker_down(&self) {
        self.workers_down.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed delivery worker was started again.
    pub fn worker_restarted(&self) {
        self.worker_restarts.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .workers_down
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Delivery workers failed and not yet restarted.
    pub fn workers_down(&self) -> u64 {
        self.workers_down.load(Ordering::Relaxed)
    }

    /// Delivery workers restarted so far.
    pub fn worker_restarts(&self) -> u64 {
        self.worker_restarts.load(Ordering::Relaxed)
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Faults {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        ConstCounter::new(self.commit_failures()).encode(encoder.encode_descriptor(
            "commit_failures",
            "Commits to the outbox that failed (disk full, I/O error); each retry counts.",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(i64::from(self.is_stalled())).encode(encoder.encode_descriptor(
            "intake_stalled",
            "Whether the source is held (not read) because commits to the outbox fail (1) or not (0).",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(self.worker_restarts()).encode(encoder.encode_descriptor(
            "worker_restarts",
            "Delivery workers restarted after a failure.",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(count(self.workers_down())).encode(encoder.encode_descriptor(
            "workers_down",
            "Delivery workers that failed and wait for their restart.",
            None,
            MetricType::Gauge,
        )?)
    }
}
