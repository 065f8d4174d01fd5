//! A sink written outside cdr-sinks (here, in this test crate) plugs into the delivery engine with
//! no change to cdr-sinks: it implements [`Sink`] with its own error type, and the real
//! `run_worker` drives it over a real outbox file holding real calls (SMDR fixture calls,
//! committed as a relay commits them). The engine does the retrying, the dead-lettering and the
//! bookkeeping; the sink only answers.
//!
//! Every wait polls with a deadline; no fixed sleep is an assertion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use call_assembler::Call;
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, run_worker};
use cdr_sinks::outbox::{DeadLetter, Outbox};
use cdr_sinks::{BatchResult, BoxSink, Drive, Outgoing, Sink, SinkError};
use tokio::sync::{Notify, watch};

const SINK: &str = "archive";
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The sink, as another crate would write it

/// The archive's own errors; the sink says which ones a retry may fix by converting them.
#[derive(Debug)]
enum ArchiveError {
    /// The archive timed out: try again.
    Busy(String),
    /// The archive refuses the call: no retry will help.
    Refused(String),
}

impl From<ArchiveError> for SinkError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Busy(reason) => Self::Retryable {
                reason,
                retry_after: None,
            },
            ArchiveError::Refused(reason) => Self::Rejected(reason),
        }
    }
}

/// How the archive behaves.
#[derive(Debug, Default)]
struct Plan {
    /// Call ids the archive refuses, every time.
    refuse: BTreeSet<String>,
    /// Call ids that fail (busy) on their first this-many attempts.
    flaky: BTreeMap<String, u32>,
    /// `deliver` calls (numbered from 0) that fail as a whole (busy).
    failing_batches: BTreeSet<usize>,
}

/// What the archive saw.
#[derive(Debug, Default)]
struct Seen {
    /// Each `deliver` call's items: (id, attempts before), in the order given.
    batches: Vec<Vec<(String, u32)>>,
    /// The calls it kept, in order.
    kept: Vec<Call>,
}

/// A call archive: keeps the calls it is given, reading each one's fields from the [`Call`]
/// the item hands it (no JSON parsing here).
struct Archive {
    drive: Drive,
    plan: Plan,
    seen: Arc<Mutex<Seen>>,
}

impl Sink for Archive {
    type Error = ArchiveError;

    fn drive(&self) -> Drive {
        self.drive
    }

    async fn deliver(&self, batch: &[Outgoing]) -> BatchResult<ArchiveError> {
        // An archive would talk to something here.
        tokio::task::yield_now().await;
        let mut seen = self.seen.lock().unwrap();
        let n = seen.batches.len();
        seen.batches.push(
            batch
                .iter()
                .map(|i| (i.id().to_owned(), i.attempts()))
                .collect(),
        );
        if self.plan.failing_batches.contains(&n) {
            return Err(ArchiveError::Busy(format!("batch {n} timed out")));
        }
        let results = batch
            .iter()
            .map(|item| {
                let call = item
                    .call()
                    .map_err(|e| ArchiveError::Refused(format!("not a call: {e}")))?;
                assert_eq!(call.id, item.id(), "the item's call is the stored call");
                if self.plan.refuse.contains(&call.id) {
                    return Err(ArchiveError::Refused(format!(
                        "call {} from {} is not wanted",
                        call.call_id, call.caller
                    )));
                }
                if self
                    .plan
                    .flaky
                    .get(&call.id)
                    .is_some_and(|&n| item.attempts() < n)
                {
                    return Err(ArchiveError::Busy("archive busy".into()));
                }
                seen.kept.push(call.clone());
                Ok(())
            })
            .collect();
        Ok(results)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn db(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cdr-sinks-external-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

fn dead_letters(db: &Path) -> Vec<DeadLetter> {
    Outbox::open(db, &[SINK.to_owned()])
        .unwrap()
        .dead_letters(100)
        .unwrap()
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(300),
        ..RetryPolicy::default()
    }
}

struct Worker {
    stats: Arc<SinkStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start<S: Sink + 'static>(db: &Path, sink: S, policy: RetryPolicy) -> Worker {
    let stats = Arc::new(SinkStats::default());
    let worker = SinkWorker {
        name: SINK.to_owned(),
        sink,
        policy,
        stats: stats.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn({
        let db = db.to_path_buf();
        async move {
            run_worker(db, worker, Arc::new(Notify::new()), stop_rx)
                .await
                .unwrap();
        }
    });
    Worker { stats, stop, task }
}

impl Worker {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Waits until nothing is pending and `delivered` and `dead` are as given.
async fn wait_settled(db: &Path, delivered: u64, dead: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let c = common::counts(db, SINK);
        if c.pending == 0 && c.delivered == delivered && c.dead == dead {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {delivered} delivered and {dead} dead: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| c.id.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// One batch answered item by item: most calls kept, one refused for good (a dead letter), one
/// failing once and then kept; every call the archive keeps is the committed call, kept once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_outcomes_retries_and_a_dead_letter() {
    let db = db("per-item");
    let calls = common::smdr_calls(10);
    let (refused, flaky) = (calls[3].id.clone(), calls[6].id.clone());
    common::commit(&db, SINK, &calls);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let archive = Archive {
        drive: Drive::Batch { max: 64 },
        plan: Plan {
            refuse: BTreeSet::from([refused.clone()]),
            flaky: BTreeMap::from([(flaky.clone(), 1)]),
            ..Plan::default()
        },
        seen: seen.clone(),
    };
    let worker = start(&db, archive, quick_policy());
    wait_settled(&db, 9, 1).await;
    let stats = worker.stats.clone();
    worker.stop().await;

    let seen = seen.lock().unwrap();
    // All ten in one batch, in commit order; then the flaky one again, its attempt counted.
    assert_eq!(
        seen.batches,
        vec![
            calls.iter().map(|c| (c.id.clone(), 0)).collect::<Vec<_>>(),
            vec![(flaky.clone(), 1)],
        ]
    );
    // Kept: every call but the refused one, each once, equal to what was committed.
    let mut want: Vec<Call> = calls.iter().filter(|c| c.id != refused).cloned().collect();
    let flaky_call = want.remove(want.iter().position(|c| c.id == flaky).unwrap());
    want.push(flaky_call);
    assert_eq!(seen.kept, want);

    let dead = dead_letters(&db);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].call_id, refused);
    assert_eq!(dead[0].sink, SINK);
    assert_eq!(dead[0].attempts, 1);
    let error = dead[0].last_error.as_deref().unwrap();
    assert!(
        error.starts_with("rejected: call ") && error.ends_with("is not wanted"),
        "{error}"
    );
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 9);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dead.load(Ordering::Relaxed), 1);
}

/// A batch that fails as a whole blocks the sink, then the engine probes with one delivery and
/// sends the rest, in the outbox's order, each call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_in_order_after_a_probe() {
    let db = db("batch");
    let calls = common::smdr_calls(10);
    common::commit(&db, SINK, &calls);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let archive = Archive {
        drive: Drive::Batch { max: 64 },
        plan: Plan {
            failing_batches: BTreeSet::from([0]),
            ..Plan::default()
        },
        seen: seen.clone(),
    };
    let worker = start(&db, archive, quick_policy());
    wait_settled(&db, 10, 0).await;
    let stats = worker.stats.clone();
    worker.stop().await;

    let seen = seen.lock().unwrap();
    let attempts = |from: usize, n: u32| -> Vec<(String, u32)> {
        calls[from..].iter().map(|c| (c.id.clone(), n)).collect()
    };
    let mut probe = attempts(0, 1);
    let rest = probe.split_off(1);
    assert_eq!(seen.batches, vec![attempts(0, 0), probe, rest]);
    assert_eq!(ids(&seen.kept), ids(&calls), "each call once, in order");
    assert_eq!(seen.kept, calls);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 10);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 10);
    assert_eq!(stats.dead.load(Ordering::Relaxed), 0);
    assert!(dead_letters(&db).is_empty());
}

/// Driven one call at a time, several at once, through the erased form the relays use: a call
/// that keeps failing is dead-lettered after the policy's attempts, one that fails twice goes
/// through on its third, the others on their first; none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_with_concurrency_until_the_attempts_run_out() {
    let db = db("each");
    let calls = common::smdr_calls(12);
    let (hopeless, flaky) = (calls[2].id.clone(), calls[9].id.clone());
    common::commit(&db, SINK, &calls);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let archive = Archive {
        drive: Drive::Each { concurrency: 4 },
        plan: Plan {
            flaky: BTreeMap::from([(hopeless.clone(), u32::MAX), (flaky.clone(), 2)]),
            ..Plan::default()
        },
        seen: seen.clone(),
    };
    let policy = RetryPolicy {
        max_attempts: 3,
        ..quick_policy()
    };
    let worker = start(&db, BoxSink::new(archive), policy);
    wait_settled(&db, 11, 1).await;
    let stats = worker.stats.clone();
    worker.stop().await;

    let seen = seen.lock().unwrap();
    assert!(seen.batches.iter().all(|b| b.len() == 1), "one call each");
    let mut tries: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (id, attempts) in seen.batches.iter().flatten() {
        tries.entry(id).or_default().push(*attempts);
    }
    for c in &calls {
        let want = if c.id == hopeless || c.id == flaky {
            vec![0, 1, 2]
        } else {
            vec![0]
        };
        assert_eq!(tries[c.id.as_str()], want, "attempts of {}", c.id);
    }
    let mut kept = ids(&seen.kept);
    kept.sort();
    let mut want: Vec<String> = ids(&calls)
        .into_iter()
        .filter(|id| *id != hopeless)
        .collect();
    want.sort();
    assert_eq!(kept, want, "every other call kept once");

    let dead = dead_letters(&db);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].call_id, hopeless);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("archive busy"));
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 11);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 5);
    assert_eq!(stats.dead.load(Ordering::Relaxed), 1);
}
