//! The driver loop: select over the source, the feed's deadline and shutdown; group what is
//! queued, commit it with the feed's journal and states, acknowledge, wake the workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdr_sinks::engine::{SinkWorker, now_ms, run_worker};
use cdr_sinks::outbox::{Batch, CommitReport, Outbox};
use tokio::sync::{Notify, mpsc, watch};

use call_assembler::feed::{Event, Feed, Reconciled, Restored, SmdrFeed};

use super::progress::{Progress, RunTally};
use crate::ops::faults::Faults;
use crate::ops::metrics::Metrics;
use crate::ops::ratelimit::LogLimiter;
use crate::settings::{Config, SourceConfig};
use crate::sources::receiver::CdrReceiver;
use crate::sources::recordings::{RecordingIndex, RecordingsConfig};
use crate::sources::tcp::SourceEvent;

use super::open::Opened;
use super::sinks::{RemoteWorker, remote_sink_names, remote_sinks};
use super::sources::ReadProgress;
use super::{SHUTDOWN_GRACE, Summary, source_name, with_outbox};

/// Source reads (up to 64 KiB each) grouped into one outbox commit at most: under a burst the
/// queue never empties, and an unbounded group would hold the whole burst in memory and make it
/// durable only at its end (see BENCHMARKS.md, "End to end").
const MAX_GROUP: usize = 16;

/// Reads grouped into one commit during a replay (`--replay`): its input is a file that stays
/// where it is, so a larger group only moves the durable point further apart, and fewer, larger
/// commits rewrite the call store's index pages less often (each commit writes every page it
/// touched; the indexes on random keys are touched all over). About 4 MB of input per commit.
const MAX_GROUP_REPLAY: usize = 64;

/// Bad input lines logged one by one: the first 20 a minute, then a count (a flood of garbage
/// must not flood the log; every one is counted in `bad_lines_total` and kept as a reject).
static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(20, Duration::from_secs(60));

/// Fired once the input it came with is committed.
type Ack = tokio::sync::oneshot::Sender<()>;

/// Runs one relay: restores the feed `build` makes from what the outbox (`opened`, already
/// checked and open) kept, starts the delivery workers and the web server, and drives the loop
/// until shutdown or the end of input.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per relay kind in run(); each argument is a different part of the relay"
)]
pub(super) async fn run_with<P: Feed + Send + 'static>(
    config: Config,
    opened: Opened,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<SourceEvent<P::Input>>,
    feed: ReadProgress,
    receiver: Option<Arc<CdrReceiver>>,
    build: impl FnOnce(&Restored, Instant) -> P,
) -> anyhow::Result<Summary> {
    let source_name = source_name(P::KIND, &config.site);
    let sink_names = remote_sink_names(&config);
    let db = config.db.clone();
    let Opened {
        outbox,
        http_cdr_session: session,
    } = opened;
    let workers = remote_sinks(&config, session)?;
    let saved = {
        let source = source_name.clone();
        with_outbox(&outbox, move |o| {
            Ok(o.restored(&source, P::state_names(&source))?)
        })
        .await?
    };
    let mut feed_state = build(&saved, Instant::now());
    if !saved.journal.is_empty() {
        tracing::info!(
            records = saved.journal.len(),
            open_calls = feed_state.open_calls(),
            "rebuilt open calls from the journal"
        );
    }
    drop(saved);
    metrics.set_open_calls(feed_state.open_calls() as u64);

    // Delivery workers stop on their own signal, after the source has committed its last batch.
    let (workers_stop_tx, workers_stop) = watch::channel(false);
    let mut worker_tasks = tokio::task::JoinSet::new();
    let mut wakes: Vec<Arc<Notify>> = workers.iter().map(|w| w.wake.clone()).collect();
    // Retention: a pass now, then after commits (woken with the workers) and on its own timers.
    let retention = super::retention::spawn(
        db.clone(),
        config.retention,
        sink_names.clone(),
        metrics.clone(),
        workers_stop.clone(),
    );
    wakes.push(retention.wake.clone());
    for w in workers {
        metrics.register_sink(&w.worker.name, w.worker.stats.clone());
        worker_tasks.spawn(supervise(
            db.clone(),
            w,
            workers_stop.clone(),
            metrics.faults().clone(),
        ));
    }

    super::web::start_web(&config, &db, &metrics, P::KIND, receiver, &workers_stop).await?;

    let replaying = matches!(config.source, SourceConfig::Replay(_));
    // A receiver has no connection of its own to lose: it is up while it serves.
    let connected = Arc::new(AtomicBool::new(
        replaying || matches!(config.source, SourceConfig::Posts(_)),
    ));
    if let Some(url) = config.sentry_cron_url.clone() {
        let connected = connected.clone();
        let outbox = outbox.clone();
        let stop = workers_stop.clone();
        tokio::spawn(crate::ops::sentry::cron_loop(
            url,
            config.sentry_cron_interval,
            connected,
            metrics.faults().clone(),
            outbox,
            stop,
        ));
    }
    let ReadProgress {
        progress,
        total_bytes,
    } = feed;

    let recordings = match (&config.recordings, &config.recordings_table) {
        (None, None) => None,
        (dirs, _) => Some(Arc::new(Mutex::new(RecordingIndex::new(
            dirs.clone().unwrap_or(RecordingsConfig {
                dirs: Vec::new(),
                max_age: Duration::ZERO,
            }),
        )))),
    };
    if let (Some(table), Some(index)) = (config.recordings_table.clone(), &recordings) {
        // The first read of the table is over before any input is taken, so that the calls of
        // a replay (or read right at the start) find its rows; bounded, never fatal.
        tracing::info!(table = %table.table, db = %table.db.describe(), "reading recordings from a table");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(crate::sources::recordings_db::follow(
            table,
            index.clone(),
            ready_tx,
            workers_stop.clone(),
        ));
        if tokio::time::timeout(crate::sources::recordings_db::FIRST_READ_WAIT, ready_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                "the recordings table was not read within {} s: going on; calls committed before it is get no recordings from it",
                crate::sources::recordings_db::FIRST_READ_WAIT.as_secs()
            );
        }
    }
    let reporter = replaying.then(|| Progress::start(progress.clone(), total_bytes));
    let mut shutdown = shutdown;
    let mut ended = false;
    let mut tally = RunTally::new(&sink_names);
    let mut acks: Vec<Ack> = Vec::new();
    loop {
        if replaying {
            // A backfill waits while the database is over its size limit with calls to deliver.
            retention.room(&mut shutdown).await;
            if *shutdown.borrow() {
                break;
            }
        }
        let deadline = feed_state.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            ev = rx.recv() => Some(ev),
            () = sleep => None,
            _ = shutdown.changed() => break,
        };
        match first {
            None => feed_state.handle_timeout(Instant::now()),
            Some(None) => {
                // The source is gone (replay failed, or shutdown in the source).
                if replaying {
                    anyhow::bail!("the replay stopped before the end of its input");
                }
                break;
            }
            Some(Some(ev)) => {
                ended |= handle(&mut feed_state, &metrics, &connected, &mut acks, ev);
                // Group what is already queued into the same commit, up to MAX_GROUP reads.
                let mut grouped = 1;
                let max_group = if replaying {
                    MAX_GROUP_REPLAY
                } else {
                    MAX_GROUP
                };
                while !ended && grouped < max_group {
                    match rx.try_recv() {
                        Ok(ev) => {
                            grouped += 1;
                            ended |= handle(&mut feed_state, &metrics, &connected, &mut acks, ev);
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        commit(
            &outbox,
            &mut feed_state,
            &metrics,
            &wakes,
            &mut tally,
            recordings.as_ref(),
            &shutdown,
        )
        .await?;
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let Some(r) = &reporter {
            r.update(feed_state.counts());
        }
        if ended {
            break;
        }
    }
    // On shutdown, what the source already read is still processed and committed.
    while let Ok(ev) = rx.try_recv() {
        ended |= handle(&mut feed_state, &metrics, &connected, &mut acks, ev);
    }
    // Whatever was read is committed; for a replay, wait until every call has gone out.
    commit(
        &outbox,
        &mut feed_state,
        &metrics,
        &wakes,
        &mut tally,
        recordings.as_ref(),
        &shutdown,
    )
    .await?;
    for ack in acks.drain(..) {
        let _ = ack.send(());
    }
    if let Some(summary) = BAD_INPUT_LOG.take(Instant::now()) {
        summary.log("bad inputs");
    }
    if ended && !sink_names.is_empty() {
        while !*shutdown.borrow() {
            let names = sink_names.clone();
            if !with_outbox(&outbox, move |o| Ok(o.any_pending(&names)?)).await? {
                break;
            }
            if let Some(r) = &reporter {
                r.update(feed_state.counts());
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    if let Some(r) = reporter {
        r.finish(feed_state.counts(), &tally);
    }
    let _ = workers_stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while worker_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("deliveries still in flight after the grace period; they stay queued");
        worker_tasks.abort_all();
    }
    let sinks = with_outbox(&outbox, |o| Ok(o.counts()?)).await?;
    Ok(Summary {
        counts: feed_state.counts(),
        sinks,
        tally,
    })
}

/// Hands one source event to the feed; true when the input ended.
fn handle<P: Feed>(
    feed: &mut P,
    metrics: &Metrics,
    connected: &AtomicBool,
    acks: &mut Vec<Ack>,
    ev: SourceEvent<P::Input>,
) -> bool {
    let now = Instant::now();
    match ev {
        SourceEvent::Data(d) => feed.handle_input(now, d),
        SourceEvent::Acked(d, ack) => {
            feed.handle_input(now, d);
            acks.push(ack);
        }
        SourceEvent::Connected(_) => {
            connected.store(true, Ordering::Relaxed);
            metrics.set_source_connected(true);
        }
        SourceEvent::Disconnected(_) => {
            feed.handle_disconnect();
            connected.store(false, Ordering::Relaxed);
            metrics.set_source_connected(false);
        }
        SourceEvent::End => {
            feed.handle_end(now);
            return true;
        }
    }
    false
}

fn log_reconciled(r: &Reconciled) {
    match r {
        Reconciled::Matched { linkedid } => {
            tracing::debug!(%linkedid, "AMI call confirmed by the CDR");
        }
        Reconciled::Disagreement {
            linkedid,
            field,
            ami,
            cdr,
        } => tracing::warn!(%linkedid, field, ami, cdr, "AMI and the CDR disagree"),
        Reconciled::Rebuilt { linkedid } => tracing::info!(
            %linkedid,
            "call missed by AMI rebuilt from the CDR and delivered (reconciled)"
        ),
        Reconciled::Unusable { linkedid } => tracing::warn!(
            %linkedid,
            "call missed by AMI whose CDR rows make no call: kept as rejects"
        ),
        Reconciled::MissingFromCdr { linkedid } => {
            tracing::warn!(%linkedid, "call assembled from AMI has no row in the CDR");
        }
    }
}

/// The metrics label of an anomaly.
fn anomaly_kind(a: &call_assembler::Anomaly) -> &'static str {
    use call_assembler::Anomaly;
    match a {
        Anomaly::PbxRestart { .. } => "pbx_restart",
        Anomaly::UnconfirmedRestart { .. } => "unconfirmed_restart",
        Anomaly::CallSplit { .. } => "call_split",
        Anomaly::LateRecord { .. } => "late_record",
        Anomaly::DuplicateRecord { .. } => "duplicate_record",
        Anomaly::AmiLateEvent { .. } => "ami_late_event",
        Anomaly::AmiUnknownChannel { .. } => "ami_unknown_channel",
        Anomaly::Cms { .. } => "cms",
        _ => "other",
    }
}

/// Commits what the feed has for the outbox. A failed commit is never fatal: the batch is kept
/// and retried ([`store`]) and, meanwhile, nothing more is taken from the source.
async fn commit<P: Feed>(
    outbox: &Arc<Mutex<Outbox>>,
    feed: &mut P,
    metrics: &Metrics,
    wakes: &[Arc<Notify>],
    tally: &mut RunTally,
    recordings: Option<&Arc<Mutex<RecordingIndex>>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while let Some(ev) = feed.poll_event() {
        match ev {
            Event::BadInput { number, error } => {
                metrics.bad_line();
                let log = BAD_INPUT_LOG.check(Instant::now());
                if let Some(summary) = log.summary {
                    summary.log("bad inputs");
                }
                if !log.log {
                    // Counted, and summed up in one line when the interval is over.
                } else if P::KIND == SmdrFeed::KIND {
                    tracing::warn!(line = number, %error, "bad SMDR line kept in the reject table");
                } else {
                    tracing::warn!(
                        source = P::KIND,
                        frame = number,
                        %error,
                        "bad input kept in the reject table"
                    );
                }
            }
            Event::Anomaly(call_assembler::Anomaly::Cms { anomaly }) => {
                metrics.anomaly("cms");
                tracing::debug!(anomaly = ?anomaly, "CMS anomaly");
            }
            Event::Anomaly(a) => {
                metrics.anomaly(anomaly_kind(&a));
                tracing::warn!(source = P::KIND, anomaly = ?a, "anomaly");
            }
            Event::Reconciled(r) => {
                metrics.reconciled(r.label());
                log_reconciled(&r);
            }
            Event::UnclaimedCdr { linkedid, rows } => {
                tracing::warn!(%linkedid, rows, "CDR rows that no call claimed are dropped");
            }
            _ => {}
        }
    }
    if let Some(summary) = BAD_INPUT_LOG.flush(Instant::now()) {
        summary.log("bad inputs");
    }
    let mut batch: Batch = feed.take_commit();
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(index) = recordings.filter(|_| !batch.calls.is_empty()) {
        let index = index.clone();
        batch = tokio::task::spawn_blocking(move || {
            if let Ok(mut index) = index.lock() {
                index.attach(&mut batch.calls);
            }
            batch
        })
        .await?;
    }
    let calls: Vec<bool> = batch.calls.iter().map(|c| c.complete).collect();
    let report = store(outbox, Arc::new(batch), metrics.faults(), shutdown).await?;
    tally.add(&report);
    for complete in calls {
        metrics.call_out(complete);
    }
    let counts = feed.counts();
    metrics.record_in(counts.records.saturating_sub(tally.records_reported));
    tally.records_reported = counts.records;
    metrics.set_open_calls(feed.open_calls() as u64);
    for w in wakes {
        w.notify_one();
    }
    Ok(())
}

/// The first wait after a failed commit; it doubles up to [`COMMIT_RETRY_MAX`].
const COMMIT_RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two attempts at a failed commit (so the relay resumes within it
/// once space returns).
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);
/// At most one log line per this interval while commits keep failing.
const STALL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Commits `batch`, retrying with backoff until it succeeds: the source stays unread meanwhile
/// (the run loop is here, not at its channel), so TCP sources stop reading and the PBX holds its
/// records, the Redis list keeps its items and the CMS receiver answers `503`. Gives up only
/// after a shutdown plus [`SHUTDOWN_GRACE`].
async fn store(
    outbox: &Arc<Mutex<Outbox>>,
    batch: Arc<Batch>,
    faults: &Faults,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<CommitReport> {
    let mut shutdown = shutdown.clone();
    let mut delay = COMMIT_RETRY_FIRST;
    let mut failures = 0u64;
    let mut last_log: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    loop {
        let b = batch.clone();
        let e = match with_outbox(outbox, move |o| Ok(o.commit(&b, now_ms())?)).await {
            Ok(report) => {
                if failures > 0 {
                    tracing::warn!(
                        failures,
                        "commits to the database work again: reading the source again"
                    );
                }
                faults.commit_ok();
                return Ok(report);
            }
            Err(e) => e,
        };
        failures += 1;
        faults.commit_failed();
        if last_log.is_none_or(|t| t.elapsed() >= STALL_LOG_EVERY) {
            last_log = Some(Instant::now());
            tracing::error!(
                error = %format!("{e:#}"),
                failures,
                calls = batch.calls.len(),
                "committing to the database failed (disk full?): the batch is kept, the source is \
                 not read until a commit works again; retrying"
            );
        }
        if *shutdown.borrow() {
            let at = *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
            if Instant::now() >= at {
                return Err(e.context(format!(
                    "committing to the outbox at shutdown ({} calls not saved)",
                    batch.calls.len()
                )));
            }
            tokio::time::sleep(delay).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        delay = (delay * 2).min(COMMIT_RETRY_MAX);
    }
}

/// The first wait before a failed delivery worker is started again; it doubles up to
/// [`WORKER_RESTART_MAX`], and starts over once a worker ran for [`WORKER_HEALTHY_AFTER`].
const WORKER_RESTART_FIRST: Duration = Duration::from_millis(500);
/// The longest wait before a failed delivery worker is started again.
const WORKER_RESTART_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before failing starts over from the first wait.
const WORKER_HEALTHY_AFTER: Duration = Duration::from_secs(120);

/// Runs one sink's delivery worker until `stop`, starting it again with backoff whenever it fails
/// (an outcome it could not record on a full disk, a database error): counted and shown in
/// `/readyz` while it is down.
async fn supervise(
    db: std::path::PathBuf,
    w: RemoteWorker,
    mut stop: watch::Receiver<bool>,
    faults: Arc<Faults>,
) {
    let RemoteWorker { worker, wake } = w;
    let worker = SinkWorker {
        name: worker.name,
        sink: Arc::new(worker.sink),
        policy: worker.policy,
        stats: worker.stats,
    };
    let mut delay = WORKER_RESTART_FIRST;
    loop {
        let started = Instant::now();
        let result = run_worker(db.clone(), worker.clone(), wake.clone(), stop.clone()).await;
        let e = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if *stop.borrow() {
            tracing::warn!(sink = %worker.name, error = %e, "delivery worker failed while stopping");
            return;
        }
        if started.elapsed() >= WORKER_HEALTHY_AFTER {
            delay = WORKER_RESTART_FIRST;
        }
        faults.worker_down();
        tracing::error!(
            sink = %worker.name,
            error = %e,
            "delivery worker failed; restarting it in {} ms",
            delay.as_millis()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        faults.worker_restarted();
        delay = (delay * 2).min(WORKER_RESTART_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdr_sinks::BoxSink;
    use cdr_sinks::backoff::RetryPolicy;
    use cdr_sinks::engine::SinkStats;
    use cdr_sinks::jsonl::JsonlSink;

    async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_worker_is_counted_down_and_restarted() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-supervise-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The worker cannot open its database (no such folder yet): it fails at once.
        let db = dir.join("missing").join("relay.db");
        let worker = RemoteWorker {
            worker: SinkWorker {
                name: "jsonl".into(),
                sink: BoxSink::new(JsonlSink::new(std::io::sink())),
                policy: RetryPolicy::default(),
                stats: Arc::new(SinkStats::default()),
            },
            wake: Arc::new(Notify::new()),
        };
        let faults = Arc::new(Faults::default());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(supervise(db.clone(), worker, stop, faults.clone()));
        wait_for("the worker to be down", || faults.workers_down() == 1).await;
        // Restarted with backoff, and down again as long as the cause stays.
        wait_for("a restart", || faults.worker_restarts() >= 1).await;
        wait_for("the worker to be down again", || faults.workers_down() == 1).await;
        // The cause goes away: the next restart stays up.
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let restarts = faults.worker_restarts();
        wait_for("the restart that works", || {
            faults.worker_restarts() > restarts
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(faults.workers_down(), 0);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the supervisor stops")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
