//! Every relay's run loop: source -> feed ([`call_assembler::feed`]) -> outbox commit ->
//! delivery workers, plus the web server, cron check-ins, progress and graceful shutdown.

pub mod admin;
mod driver;
mod open;
pub mod progress;
mod retention;
mod sinks;
mod sources;
mod web;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use call_assembler::SmdrAssemblerConfig;
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Outbox, SinkCounts};
use tokio::sync::{mpsc, watch};

use call_assembler::feed::{
    AmiFeed, CelFeed, CmsFeed, CsvFile, DiallerFeed, Feed, FeedCounts, ReconcileFeed, RelayedFeed,
    SmdrFeed,
};

use crate::ops::metrics::Metrics;
use crate::settings::{Config, ReconcileCdr, RelayKind, SourceConfig};
use crate::sources::receiver::CdrReceiver;
use driver::run_with;
use sources::{ReadProgress, merge_cdr, start_ami_source, start_byte_source};

/// How long in-flight deliveries may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The feed's counters.
    pub counts: FeedCounts,
    /// Delivery counts per sink at the end.
    pub sinks: Vec<SinkCounts>,
    /// What this run stored and queued for each sink.
    pub tally: progress::RunTally,
}

async fn with_outbox<T: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    f: impl FnOnce(&mut Outbox) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || {
        let mut o = outbox
            .lock()
            .map_err(|_| anyhow::anyhow!("outbox lock poisoned"))?;
        f(&mut o)
    })
    .await?
}

/// The name of a relay's source in the outbox: its kind, then `/site` when a site is set.
pub fn source_name(kind: &str, site: &str) -> String {
    if site.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}/{site}")
    }
}

/// Runs the relay `config` describes (`smdr-relay` or `ami-relay`) until `shutdown` turns
/// true or, for a replay, until every call has been delivered to every sink or dead-lettered.
///
/// The database is checked and opened first; the source starts only once it is open (a full
/// disk is waited for, a damaged file refused), so nothing is read that cannot be kept.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    let Some(opened) = open::open_outbox(&config, &shutdown).await? else {
        tracing::info!("stopped before the database could be opened");
        return Ok(Summary::default());
    };
    match config.kind {
        RelayKind::Smdr => {
            let source = source_name(SmdrFeed::KIND, &config.site);
            let metrics = Metrics::new(SmdrFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let feed = start_byte_source(&config, &metrics, tx, &shutdown).await?;
            tracing::info!(zone = %config.smdr.zone, "SMDR times are read in the PBX's time zone");
            let asm_config = SmdrAssemblerConfig {
                site: config.site.clone(),
                idle_timeout: config.idle_timeout,
                max_records_per_call: config.smdr.max_records_per_call,
                zone: config.smdr.zone,
                // A replayed capture has no connection events: as before, one restart-like
                // line there is a restart. Live, a restart needs a reconnect before it or a run
                // of such records (SmdrAssemblerConfig::restart_confirm_records).
                ..if matches!(config.source, SourceConfig::Replay(_)) {
                    SmdrAssemblerConfig::for_replay()
                } else {
                    SmdrAssemblerConfig::default()
                }
            };
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |saved, now| SmdrFeed::restore(&source, asm_config, now, saved),
            )
            .await
        }
        RelayKind::Receiver => {
            let source = source_name(CmsFeed::KIND, &config.site);
            let metrics = Metrics::new(CmsFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let (feed, receiver) = match &config.source {
                SourceConfig::Posts(r) => {
                    metrics.set_source_connected(true);
                    let receiver = Arc::new(CdrReceiver::new(r.clone(), tx));
                    (ReadProgress::live(), Some(receiver))
                }
                _ => (
                    start_byte_source(&config, &metrics, tx, &shutdown).await?,
                    None,
                ),
            };
            let asm_config = call_assembler::CmsAssemblerConfig {
                site: config.site.clone(),
                idle_timeout: config.idle_timeout,
                ..call_assembler::CmsAssemblerConfig::default()
            };
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                receiver,
                |saved, now| CmsFeed::restore(&source, asm_config, now, saved),
            )
            .await
        }
        RelayKind::List => {
            let source = source_name(DiallerFeed::KIND, &config.site);
            let metrics = Metrics::new(DiallerFeed::KIND);
            let (tx, rx) = mpsc::channel(8);
            let feed = match &config.source {
                SourceConfig::RedisList(list) => {
                    tracing::info!(list = %list.key, processing = %list.processing, "draining the dialler's CDR list");
                    tokio::spawn(crate::sources::redis_list::redis_list(
                        list.clone(),
                        tx,
                        shutdown.clone(),
                    ));
                    ReadProgress::live()
                }
                _ => start_byte_source(&config, &metrics, tx, &shutdown).await?,
            };
            let (site, max_item) = (config.site.clone(), config.dialler_max_item);
            // Nothing to restore: no dialler call is ever open.
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |_, now| DiallerFeed::new(&source, &site, max_item, (now, now_ms())),
            )
            .await
        }
        RelayKind::Nats => {
            let source = source_name(RelayedFeed::KIND, &config.site);
            let metrics = Metrics::new(RelayedFeed::KIND);
            let (tx, rx) = mpsc::channel(8);
            // A consumer the server refuses as configured stops the relay: the run loop is
            // shut down as on a signal (what it holds is committed), then the relay exits
            // with the server's reason.
            let (stop_tx, stop_rx) = watch::channel(*shutdown.borrow());
            let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
            let feed = match &config.source {
                SourceConfig::Nats(nats) => {
                    tokio::spawn(crate::sources::nats::nats(
                        (**nats).clone(),
                        tx,
                        stop_rx.clone(),
                        fatal_tx,
                    ));
                    ReadProgress::live()
                }
                _ => start_byte_source(&config, &metrics, tx, &shutdown).await?,
            };
            let fatal = tokio::spawn(async move {
                let mut shutdown = shutdown;
                let why = tokio::select! {
                    Ok(why) = fatal_rx => Some(why),
                    Ok(()) = async { shutdown.wait_for(|s| *s).await.map(drop) } => None,
                    // Neither can fire any more: keep `stop_tx` (its drop would read as a stop).
                    else => std::future::pending().await,
                };
                let _ = stop_tx.send(true);
                why
            });
            let max_item = config.dialler_max_item;
            // Nothing to restore: every message is a whole call.
            let summary = run_with(config, opened, stop_rx, metrics, rx, feed, None, |_, _| {
                RelayedFeed::new(&source, max_item)
            })
            .await;
            if fatal.is_finished() {
                if let Ok(Some(why)) = fatal.await {
                    anyhow::bail!("NATS: {why}");
                }
            } else {
                fatal.abort();
            }
            summary
        }
        RelayKind::Ami if matches!(config.source, SourceConfig::CelCsv(_)) => {
            let SourceConfig::CelCsv(files) = config.source.clone() else {
                anyhow::bail!("not a CSV source");
            };
            let columns = files.columns.clone();
            if files.once && !files.cel.exists() {
                anyhow::bail!("--once: no CEL file at {}", files.cel.display());
            }
            let source = source_name(CelFeed::KIND, &config.site);
            let metrics = Metrics::new(CelFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            // The follower waits for the positions saved in the outbox, which the run loop
            // reads before it builds the feed: the build closure hands them over.
            let (start_tx, start_rx) = tokio::sync::oneshot::channel();
            tracing::info!(cel = %files.cel.display(), cdr = %files.cdr.display(), once = files.once, "reading Asterisk's CEL and CDR CSV files");
            tokio::spawn(crate::sources::cel_csv::follow(
                files,
                start_rx,
                tx,
                shutdown.clone(),
            ));
            let feed = ReadProgress::live();
            let asm_config = config.ami.clone();
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |saved, now| {
                    let mut positions = crate::sources::cel_csv::StartPositions::new();
                    for file in [CsvFile::Cel, CsvFile::Cdr] {
                        if let Some(pos) = CelFeed::saved_pos(&source, file, saved) {
                            positions.insert(file, pos);
                        }
                    }
                    let _ = start_tx.send(positions);
                    CelFeed::restore(&source, asm_config, columns, now, now_ms(), saved)
                },
            )
            .await
        }
        RelayKind::Ami if config.reconcile.is_some() => {
            let Some(rec) = config.reconcile.clone() else {
                anyhow::bail!("no CDR source to reconcile with");
            };
            let source = source_name(ReconcileFeed::KIND, &config.site);
            let metrics = Metrics::new(ReconcileFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let (ami_tx, ami_rx) = mpsc::channel(64);
            let feed = start_ami_source(&config, &metrics, ami_tx, &shutdown).await?;
            let (cdr_tx, cdr_rx) = mpsc::channel(64);
            let (start_tx, start_rx) = tokio::sync::oneshot::channel();
            let (csv_start, db_start) = match &rec.cdr {
                ReconcileCdr::Csv(path) => {
                    tracing::info!(cdr = %path.display(), "reconciling AMI with the CDR file");
                    tokio::spawn(crate::sources::cel_csv::follow_files(
                        vec![(CsvFile::Cdr, path.clone())],
                        rec.once,
                        start_rx,
                        cdr_tx,
                        shutdown.clone(),
                    ));
                    (Some(start_tx), None)
                }
                ReconcileCdr::Db(db) => {
                    tracing::info!(db = %db.describe(), cdr = db.cdr_table.as_deref().unwrap_or_default(), "reconciling AMI with the CDR table");
                    let (db_tx, db_rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(crate::sources::cel_db::follow(
                        (**db).clone(),
                        source.clone(),
                        db_rx,
                        cdr_tx,
                        shutdown.clone(),
                    ));
                    (None, Some(db_tx))
                }
            };
            tokio::spawn(merge_cdr(ami_rx, cdr_rx, tx));
            let asm_config = config.ami.clone();
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |saved, now| {
                    if let Some(start_tx) = csv_start {
                        let mut positions = crate::sources::cel_csv::StartPositions::new();
                        if let Some(pos) = CelFeed::saved_pos(&source, CsvFile::Cdr, saved) {
                            positions.insert(CsvFile::Cdr, pos);
                        }
                        let _ = start_tx.send(positions);
                    }
                    if let Some(start_tx) = db_start {
                        let cdr = saved
                            .state(&CelFeed::db_state_name(&source, CsvFile::Cdr))
                            .map(<[u8]>::to_vec);
                        let _ =
                            start_tx.send(crate::sources::cel_db::SavedMarks { cel: None, cdr });
                    }
                    ReconcileFeed::restore(&source, asm_config, rec.config, now, now_ms(), saved)
                },
            )
            .await
        }
        RelayKind::Ami if matches!(config.source, SourceConfig::CelDb(_)) => {
            let SourceConfig::CelDb(db) = config.source.clone() else {
                anyhow::bail!("not a database source");
            };
            let source = source_name(CelFeed::KIND, &config.site);
            let metrics = Metrics::new(CelFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            // As for the CSV files: the source waits for the watermarks saved in the outbox,
            // which the build closure hands over.
            let (start_tx, start_rx) = tokio::sync::oneshot::channel();
            tracing::info!(
                db = %db.describe(),
                cel = %db.cel_table,
                cdr = db.cdr_table.as_deref().unwrap_or("(none)"),
                once = db.once,
                "reading Asterisk's CEL and CDR tables"
            );
            tokio::spawn(crate::sources::cel_db::follow(
                db,
                source.clone(),
                start_rx,
                tx,
                shutdown.clone(),
            ));
            let feed = ReadProgress::live();
            let asm_config = config.ami.clone();
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |saved, now| {
                    let mark = |file| {
                        saved
                            .state(&CelFeed::db_state_name(&source, file))
                            .map(<[u8]>::to_vec)
                    };
                    let _ = start_tx.send(crate::sources::cel_db::SavedMarks {
                        cel: mark(CsvFile::Cel),
                        cdr: mark(CsvFile::Cdr),
                    });
                    CelFeed::restore(
                        &source,
                        asm_config,
                        call_assembler::CelColumns::sample(),
                        now,
                        now_ms(),
                        saved,
                    )
                },
            )
            .await
        }
        RelayKind::Ami => {
            let source = source_name(AmiFeed::KIND, &config.site);
            let metrics = Metrics::new(AmiFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let feed = start_ami_source(&config, &metrics, tx, &shutdown).await?;
            let asm_config = config.ami.clone();
            run_with(
                config,
                opened,
                shutdown,
                metrics,
                rx,
                feed,
                None,
                |saved, now| AmiFeed::restore(&source, asm_config, now, now_ms(), saved),
            )
            .await
        }
    }
}

/// Tells a parent process (tests, supervisors) where a listener ended up, in one stable line.
pub(super) fn eprintln_ready(what: &str, addr: std::net::SocketAddr) {
    eprintln!("cdr-relay: {what} listening on {addr}");
}
