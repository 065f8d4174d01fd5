//! Every relay's run loop: source -> feed ([`call_assembler::feed`]) -> outbox commit ->
//! delivery workers, plus the web server, cron check-ins, progress and graceful shutdown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use call_assembler::SmdrAssemblerConfig;
use cdr_sinks::BoxSink;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::http_cdr_sink::HttpCdrSink;
use cdr_sinks::jsonl::JsonlSink;
use cdr_sinks::outbox::{Batch, Outbox, SinkCounts};
use cdr_sinks::redis_list::RedisListSink;
use cdr_sinks::webhook::WebhookSink;
use tokio::sync::{Notify, mpsc, watch};

// The feeds this loop drives.
use call_assembler::feed::{
    AmiFeed, AmiInput, AsteriskInput, CelFeed, CelInput, CmsFeed, CsvFile, DiallerFeed, Event,
    Feed, FeedCounts, ReconcileFeed, Reconciled, Restored, SmdrFeed,
};

use crate::config::{Config, ReconcileCdr, RelayKind, SourceConfig};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::receiver::CdrReceiver;
use crate::recordings::{RecordingIndex, RecordingsConfig};
use crate::sinks::SinkSpec;
use crate::source::{self, SourceEvent, TcpOptions};

/// How long in-flight deliveries may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Source reads (up to 64 KiB each) grouped into one outbox commit at most: under a burst the
/// queue never empties, and an unbounded group would hold the whole burst in memory and make it
/// durable only at its end (see BENCHMARKS.md, "End to end").
const MAX_GROUP: usize = 16;

/// Fired once the input it came with is committed.
type Ack = tokio::sync::oneshot::Sender<()>;

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The feed's counters.
    pub counts: FeedCounts,
    /// Delivery counts per sink at the end.
    pub sinks: Vec<SinkCounts>,
}

struct RemoteWorker {
    worker: SinkWorker<BoxSink>,
    wake: Arc<Notify>,
}

/// The names the outbox knows the configured remote sinks by.
fn remote_sink_names(config: &Config) -> Vec<String> {
    config
        .sinks
        .iter()
        .filter(|s| **s != SinkSpec::Store)
        .map(SinkSpec::to_string)
        .collect()
}

/// The HTTP-CDR session of this outbox: made once (a random GUID) and kept in it, so record
/// indexes, numbered from the outbox's rows, are never reused under the same session.
const HTTP_CDR_SESSION: &str = "http-cdr/session";

fn http_cdr_session(o: &mut Outbox) -> anyhow::Result<String> {
    if let Some(s) = o.state(HTTP_CDR_SESSION)? {
        return Ok(String::from_utf8_lossy(&s).into_owned());
    }
    let session = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    o.commit(
        &Batch {
            states: vec![(HTTP_CDR_SESSION.to_owned(), session.clone().into_bytes())],
            ..Batch::default()
        },
        now_ms(),
    )?;
    Ok(session)
}

fn remote_sinks(
    config: &Config,
    http_cdr_session: Option<String>,
) -> anyhow::Result<Vec<RemoteWorker>> {
    let mut out = Vec::new();
    for spec in &config.sinks {
        let sink = match spec {
            SinkSpec::Store => continue,
            SinkSpec::Webhook => {
                let w = config
                    .webhook
                    .as_ref()
                    .context("the webhook sink needs WEBHOOK_URL (or SMDR_WEBHOOK_URL)")?;
                BoxSink::new(WebhookSink::new(w)?)
            }
            SinkSpec::HttpCdr => {
                let mut h = config
                    .http_cdr
                    .clone()
                    .context("the http-cdr sink needs HTTP_CDR_URLS")?;
                if let Some(s) = &http_cdr_session {
                    h.session.clone_from(s);
                }
                BoxSink::new(HttpCdrSink::new(&h)?)
            }
            SinkSpec::Redis => {
                let r = config
                    .redis
                    .as_ref()
                    .context("the redis sink needs REDIS_URL")?;
                BoxSink::new(RedisListSink::new(r)?)
            }
            SinkSpec::Jsonl(path) => {
                let out: Box<dyn std::io::Write + Send> = match path {
                    None => Box::new(std::io::stdout()),
                    Some(p) => Box::new(std::io::BufWriter::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(p)
                            .with_context(|| format!("opening {}", p.display()))?,
                    )),
                };
                BoxSink::new(JsonlSink::new(out))
            }
        };
        out.push(RemoteWorker {
            worker: SinkWorker {
                name: spec.to_string(),
                sink,
                policy: config.retry,
                stats: Arc::new(SinkStats::default()),
            },
            wake: Arc::new(Notify::new()),
        });
    }
    Ok(out)
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

/// Where a source's progress is read from (for a replay's progress line).
struct ReadProgress {
    progress: Arc<AtomicU64>,
    total_bytes: Option<u64>,
}

impl ReadProgress {
    /// A source with no total to report progress against (live, or not a replayed file).
    fn live() -> Self {
        Self {
            progress: Arc::new(AtomicU64::new(0)),
            total_bytes: None,
        }
    }
}

/// Starts the AMI client (or, with `--replay`, the replayed capture) feeding `tx`.
async fn start_ami_source(
    config: &Config,
    metrics: &Metrics,
    tx: mpsc::Sender<SourceEvent<AmiInput>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<ReadProgress> {
    match &config.source {
        SourceConfig::Ami(client) => {
            tracing::info!(host = %client.host, port = client.port, "connecting to the Asterisk Manager Interface");
            tokio::spawn(source::ami((**client).clone(), tx, shutdown.clone()));
            Ok(ReadProgress::live())
        }
        _ => start_byte_source(config, metrics, tx, shutdown).await,
    }
}

/// Starts a byte source (TCP connect, listen, or a replayed file) feeding `tx`.
async fn start_byte_source<I: From<Vec<u8>> + Send + 'static>(
    config: &Config,
    metrics: &Metrics,
    tx: mpsc::Sender<SourceEvent<I>>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<ReadProgress> {
    let progress = Arc::new(AtomicU64::new(0));
    let mut total_bytes = None;
    let opts = TcpOptions {
        read_timeout: config.read_timeout,
        ..TcpOptions::default()
    };
    match &config.source {
        SourceConfig::Connect(addr) => {
            tracing::info!(%addr, "connecting to the PBX");
            tokio::spawn(source::connect(addr.clone(), opts, tx, shutdown.clone()));
        }
        SourceConfig::Listen(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for SMDR on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!("listening for SMDR on {local}");
            eprintln_ready("smdr", local);
            tokio::spawn(source::listen(listener, opts, tx, shutdown.clone()));
        }
        SourceConfig::Replay(path) => {
            if path.as_os_str() != "-" {
                let meta = std::fs::metadata(path)
                    .with_context(|| format!("cannot replay {}", path.display()))?;
                total_bytes = Some(meta.len());
            }
            metrics.set_source_connected(true);
            let path: PathBuf = path.clone();
            let progress = progress.clone();
            let (err_tx, err_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = err_tx.send(source::replay(path, tx, progress).await);
            });
            tokio::spawn(async move {
                if let Ok(Err(e)) = err_rx.await {
                    tracing::error!(error = %e, "replay failed");
                }
            });
        }
        SourceConfig::Ami(_)
        | SourceConfig::RedisList(_)
        | SourceConfig::Posts(_)
        | SourceConfig::CelCsv(_)
        | SourceConfig::CelDb(_) => {
            anyhow::bail!("this source does not read raw bytes")
        }
    }
    Ok(ReadProgress {
        progress,
        total_bytes,
    })
}

/// Runs the relay `config` describes (`smdr-relay` or `ami-relay`) until `shutdown` turns
/// true or, for a replay, until every call has been delivered to every sink or dead-lettered.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Summary> {
    match config.kind {
        RelayKind::Smdr => {
            let source = source_name(SmdrFeed::KIND, &config.site);
            let metrics = Metrics::new(SmdrFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let feed = start_byte_source(&config, &metrics, tx, &shutdown).await?;
            let asm_config = SmdrAssemblerConfig {
                site: config.site.clone(),
                idle_timeout: config.idle_timeout,
                ..SmdrAssemblerConfig::default()
            };
            run_with(config, shutdown, metrics, rx, feed, None, |saved, now| {
                SmdrFeed::restore(&source, asm_config, now, saved)
            })
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
                    tokio::spawn(crate::redis_source::redis_list(
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
            run_with(config, shutdown, metrics, rx, feed, None, |_, now| {
                DiallerFeed::new(&source, &site, max_item, (now, now_ms()))
            })
            .await
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
            tokio::spawn(crate::csv_source::follow(
                files,
                start_rx,
                tx,
                shutdown.clone(),
            ));
            let feed = ReadProgress::live();
            let asm_config = config.ami.clone();
            run_with(config, shutdown, metrics, rx, feed, None, |saved, now| {
                let mut positions = crate::csv_source::StartPositions::new();
                for file in [CsvFile::Cel, CsvFile::Cdr] {
                    if let Some(pos) = CelFeed::saved_pos(&source, file, saved) {
                        positions.insert(file, pos);
                    }
                }
                let _ = start_tx.send(positions);
                CelFeed::restore(&source, asm_config, columns, now, now_ms(), saved)
            })
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
                    tokio::spawn(crate::csv_source::follow_files(
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
                    tokio::spawn(crate::db_source::follow(
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
            run_with(config, shutdown, metrics, rx, feed, None, |saved, now| {
                if let Some(start_tx) = csv_start {
                    let mut positions = crate::csv_source::StartPositions::new();
                    if let Some(pos) = CelFeed::saved_pos(&source, CsvFile::Cdr, saved) {
                        positions.insert(CsvFile::Cdr, pos);
                    }
                    let _ = start_tx.send(positions);
                }
                if let Some(start_tx) = db_start {
                    let cdr = saved
                        .state(&CelFeed::db_state_name(&source, CsvFile::Cdr))
                        .map(<[u8]>::to_vec);
                    let _ = start_tx.send(crate::db_source::SavedMarks { cel: None, cdr });
                }
                ReconcileFeed::restore(&source, asm_config, rec.config, now, now_ms(), saved)
            })
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
            tokio::spawn(crate::db_source::follow(
                db,
                source.clone(),
                start_rx,
                tx,
                shutdown.clone(),
            ));
            let feed = ReadProgress::live();
            let asm_config = config.ami.clone();
            run_with(config, shutdown, metrics, rx, feed, None, |saved, now| {
                let mark = |file| {
                    saved
                        .state(&CelFeed::db_state_name(&source, file))
                        .map(<[u8]>::to_vec)
                };
                let _ = start_tx.send(crate::db_source::SavedMarks {
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
            })
            .await
        }
        RelayKind::Ami => {
            let source = source_name(AmiFeed::KIND, &config.site);
            let metrics = Metrics::new(AmiFeed::KIND);
            let (tx, rx) = mpsc::channel(64);
            let feed = start_ami_source(&config, &metrics, tx, &shutdown).await?;
            let asm_config = config.ami.clone();
            run_with(config, shutdown, metrics, rx, feed, None, |saved, now| {
                AmiFeed::restore(&source, asm_config, now, now_ms(), saved)
            })
            .await
        }
    }
}

/// Merges AMI's events and the CDR follower's into one stream: the connection state is AMI's
/// (the follower's is only logged), and the end comes once both sides ended (a replay beside a
/// CDR file read to its end; a side that stops without an end, at shutdown, ends nothing).
async fn merge_cdr(
    mut ami: mpsc::Receiver<SourceEvent<AmiInput>>,
    mut cdr: mpsc::Receiver<SourceEvent<CelInput>>,
    tx: mpsc::Sender<SourceEvent<AsteriskInput>>,
) {
    let (mut ami_done, mut cdr_done) = (false, false);
    while !(ami_done && cdr_done) {
        let ev = tokio::select! {
            ev = ami.recv(), if !ami_done => match ev {
                None => return,
                Some(SourceEvent::End) => {
                    ami_done = true;
                    continue;
                }
                Some(SourceEvent::Data(d)) => SourceEvent::Data(AsteriskInput::Ami(d)),
                Some(SourceEvent::Acked(d, ack)) => SourceEvent::Acked(AsteriskInput::Ami(d), ack),
                Some(SourceEvent::Connected(peer)) => SourceEvent::Connected(peer),
                Some(SourceEvent::Disconnected(why)) => SourceEvent::Disconnected(why),
            },
            ev = cdr.recv(), if !cdr_done => match ev {
                None => return,
                Some(SourceEvent::End) => {
                    cdr_done = true;
                    continue;
                }
                Some(SourceEvent::Data(d)) => SourceEvent::Data(AsteriskInput::Cdr(d)),
                Some(SourceEvent::Acked(d, ack)) => SourceEvent::Acked(AsteriskInput::Cdr(d), ack),
                Some(SourceEvent::Connected(path)) => {
                    tracing::info!(%path, "reading the CDR file");
                    continue;
                }
                Some(SourceEvent::Disconnected(why)) => {
                    tracing::warn!(%why, "CDR file");
                    continue;
                }
            },
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
    let _ = tx.send(SourceEvent::End).await;
}

async fn run_with<P: Feed + Send + 'static>(
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
    let wakes: Vec<Arc<Notify>> = workers.iter().map(|w| w.wake.clone()).collect();
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
        tokio::spawn(crate::sentry::cron_loop(
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
        tokio::spawn(crate::recordings_db::follow(
            table,
            index.clone(),
            ready_tx,
            workers_stop.clone(),
        ));
        if tokio::time::timeout(crate::recordings_db::FIRST_READ_WAIT, ready_rx)
            .await
            .is_err()
        {
            tracing::warn!(
                "the recordings table was not read within {} s: going on; calls committed before it is get no recordings from it",
                crate::recordings_db::FIRST_READ_WAIT.as_secs()
            );
        }
    }
    let reporter = replaying.then(|| Progress::start(progress.clone(), total_bytes));
    let mut shutdown = shutdown;
    let mut ended = false;
    let mut reported = 0u64;
    let mut acks: Vec<Ack> = Vec::new();
    loop {
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

/// Tells a parent process (tests, supervisors) where a listener ended up, in one stable line.
fn eprintln_ready(what: &str, addr: std::net::SocketAddr) {
    eprintln!("cdr-relay: {what} listening on {addr}");
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
                if P::KIND == SmdrFeed::KIND {
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
