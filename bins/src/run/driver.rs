//! The driver loop: select over the source, the feed's deadline and shutdown; group what is
//! queued, commit it with the feed's journal and states, acknowledge, wake the workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cdr_sinks::engine::{now_ms, run_worker};
use cdr_sinks::outbox::{Batch, Outbox};
use tokio::sync::{Notify, mpsc, watch};

use call_assembler::feed::{Event, Feed, Reconciled, Restored, SmdrFeed};

use super::progress::Progress;
use crate::ops::metrics::Metrics;
use crate::ops::ratelimit::LogLimiter;
use crate::settings::{Config, SourceConfig};
use crate::sources::receiver::CdrReceiver;
use crate::sources::recordings::{RecordingIndex, RecordingsConfig};
use crate::sources::tcp::SourceEvent;

use super::sinks::{http_cdr_session, remote_sink_names, remote_sinks};
use super::sources::ReadProgress;
use super::{SHUTDOWN_GRACE, Summary, eprintln_ready, source_name, with_outbox};

/// Source reads (up to 64 KiB each) grouped into one outbox commit at most: under a burst the
/// queue never empties, and an unbounded group would hold the whole burst in memory and make it
/// durable only at its end (see BENCHMARKS.md, "End to end").
const MAX_GROUP: usize = 16;

/// Bad input lines logged one by one: the first 20 a minute, then a count (a flood of garbage
/// must not flood the log; every one is counted in `bad_lines_total` and kept as a reject).
static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(20, Duration::from_secs(60));

/// Fired once the input it came with is committed.
type Ack = tokio::sync::oneshot::Sender<()>;

/// Runs one relay: restores the feed `build` makes from what the outbox kept, starts the
/// delivery workers and the web server, and drives the loop until shutdown or the end of input.
pub(super) async fn run_with<P: Feed + Send + 'static>(
    config: Config,
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
    let outbox = {
        let db = db.clone();
        let names = sink_names.clone();
        tokio::task::spawn_blocking(move || Outbox::open(&db, &names))
            .await?
            .with_context(|| format!("opening the database {}", config.db.display()))?
    };
    let outbox = Arc::new(Mutex::new(outbox));
    let session = if config.http_cdr.is_some() {
        Some(with_outbox(&outbox, http_cdr_session).await?)
    } else {
        None
    };
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
        let db = db.clone();
        let stop = workers_stop.clone();
        worker_tasks.spawn(async move {
            let name = w.worker.name.clone();
            if let Err(e) = run_worker(db, w.worker, w.wake, stop).await {
                tracing::error!(sink = %name, error = %e, "delivery worker failed");
            }
        });
    }

    if let Some(addr) = &config.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the web server to {addr}"))?;
        let local = listener.local_addr()?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("web page and API on {scheme}://{local}/");
        eprintln_ready("http", local);
        let state = crate::web::WebState {
            db: db.clone(),
            metrics: metrics.clone(),
            title: format!("{}-relay", P::KIND),
            receiver,
            tls: match &config.tls {
                Some((cert, key)) => Some(crate::web::WebTls::from_files(cert, key)?),
                None => None,
            },
        };
        let stop = workers_stop.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::web::serve(listener, state, stop).await {
                tracing::error!(error = %e, "web server failed");
            }
        });
    }

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
    let mut reported = 0u64;
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
                while !ended && grouped < MAX_GROUP {
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
            &mut reported,
            recordings.as_ref(),
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
        &mut reported,
        recordings.as_ref(),
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
            let counts = with_outbox(&outbox, |o| Ok(o.counts()?)).await?;
            if counts.iter().all(|c| c.pending == 0) {
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
        r.finish(feed_state.counts());
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

async fn commit<P: Feed>(
    outbox: &Arc<Mutex<Outbox>>,
    feed: &mut P,
    metrics: &Metrics,
    wakes: &[Arc<Notify>],
    reported: &mut u64,
    recordings: Option<&Arc<Mutex<RecordingIndex>>>,
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
                tracing::debug!(anomaly = ?anomaly, "CMS anomaly");
            }
            Event::Anomaly(a) => tracing::warn!(source = P::KIND, anomaly = ?a, "anomaly"),
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
    with_outbox(outbox, move |o| Ok(o.commit(&batch, now_ms())?))
        .await
        .context("committing to the outbox")?;
    for complete in calls {
        metrics.call_out(complete);
    }
    let counts = feed.counts();
    metrics.record_in(counts.records.saturating_sub(*reported));
    *reported = counts.records;
    metrics.set_open_calls(feed.open_calls() as u64);
    for w in wakes {
        w.notify_one();
    }
    Ok(())
}
