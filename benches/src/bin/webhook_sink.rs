//! Throughput of the webhook sink alone, into a local hyper receiver, beside a bare hyper client
//! posting the same bodies with the same concurrency and keep-alive; and of the same sink driven
//! by a delivery worker over an outbox, so the sink's cost and the outbox's can be told apart.
//!
//! The bodies are the SMDR day fixture's calls (`fixtures/smdr/ccbc_rw180105_day_34fields.txt`),
//! assembled and copied under new ids up to `--calls`, encoded as the outbox stores them. For each
//! concurrency in `--concurrency`, three legs, each against a fresh receiver:
//!
//! * `bare`: a hyper-util client (the sink's connector settings: HTTP/1.1, keep-alive, a pool of
//!   as many idle connections per host as requests in flight), `concurrency` tasks each posting
//!   the next body with a `webhook-id` header and reading the whole answer;
//! * `sink`: [`cdr_sinks::webhook::WebhookSink`] driven by [`cdr_sinks::engine::deliver_each`],
//!   the delivery worker's own loop, in rounds of `--round` calls as a worker takes them from the
//!   outbox, with no outbox;
//! * `engine`: the calls committed to a fresh outbox first (not timed), then one delivery worker
//!   ([`cdr_sinks::engine::run_worker`]) sending them all: the sink plus finding due deliveries
//!   and recording their outcomes.
//!
//! The receiver is a hyper HTTP/1.1 server on its own single-threaded runtime in this process:
//! it reads each body, answers `204`, and counts requests, distinct `webhook-id`s and connections
//! accepted (keep-alive at work means connections = concurrency, not one per request). The sender
//! runs on a two-thread runtime, as the relays do on this machine.
//!
//! ```sh
//! cargo run --release -p cdr-benches --bin webhook_sink   # --calls 100000 --concurrency 1,8,32
//! ```

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use call_assembler::Call;
use cdr_benches::corpus::{day_calls, machine, proc_cpu};
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, deliver_each, run_worker};
use cdr_sinks::outbox::{Batch, Outbox, Pending};
use cdr_sinks::webhook::{WebhookConfig, WebhookSink};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The webhook sink into a local receiver, against a bare hyper client")]
struct Args {
    /// Calls posted per leg.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Requests in flight at once (one set of legs per value).
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    concurrency: Vec<usize>,
    /// Calls per round of the `sink` leg (a worker takes at most 256, or its concurrency, from
    /// the outbox at once).
    #[arg(long, default_value_t = 256)]
    round: usize,
    /// Legs to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "bare,sink,engine")]
    legs: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let calls = day_calls(args.calls)?;
    let bodies: Vec<(String, Bytes)> = calls
        .iter()
        .map(|c| Ok((c.id.clone(), Bytes::from(serde_json::to_vec(c)?))))
        .collect::<anyhow::Result<_>>()?;
    let mean = bodies.iter().map(|(_, b)| b.len()).sum::<usize>() / bodies.len().max(1);
    println!(
        "{}, load {}",
        machine(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{} calls from fixtures/smdr/ccbc_rw180105_day_34fields.txt, {mean} bytes of JSON each on average",
        bodies.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "| concurrency | leg | time | calls/s | × bare | connections | requests | CPU (user + sys, whole process) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for &c in &args.concurrency {
        let c = c.max(1);
        let mut bare_time = None;
        for leg in &args.legs {
            let receiver = Receiver::start()?;
            let url = format!("http://{}/hook", receiver.addr);
            let cpu0 = proc_cpu(std::process::id());
            let t = match leg.as_str() {
                "bare" => rt.block_on(bare(&url, c, &bodies))?,
                "sink" => rt.block_on(sink(&url, c, args.round.max(1), &bodies))?,
                "engine" => rt.block_on(engine(&url, c, &calls))?,
                other => bail!("unknown leg {other:?} (bare, sink, engine)"),
            };
            let cpu = proc_cpu(std::process::id())
                .zip(cpu0)
                .map(|((u1, s1), (u0, s0))| ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64()));
            let (requests, ids, conns) = receiver.counts();
            if ids != bodies.len() as u64 {
                bail!(
                    "[{leg}, {c}] the receiver has {ids} of {} ids",
                    bodies.len()
                );
            }
            if leg == "bare" {
                bare_time = Some(t);
            }
            let ratio = bare_time.map_or_else(
                || "–".to_owned(),
                |b| format!("{:.2}", t.as_secs_f64() / b.as_secs_f64()),
            );
            println!(
                "| {c} | {leg} | {:.3} s | {:.0} | {ratio} | {conns} | {requests} | {} |",
                t.as_secs_f64(),
                bodies.len() as f64 / t.as_secs_f64(),
                cpu.map_or_else(|| "–".to_owned(), |(u, s)| format!("{u:.2} + {s:.2} s")),
            );
            receiver.stop();
        }
    }
    Ok(())
}

/// A bare hyper client: `concurrency` tasks, each posting the next body and reading the answer.
async fn bare(
    url: &str,
    concurrency: usize,
    bodies: &[(String, Bytes)],
) -> anyhow::Result<Duration> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(concurrency)
        .build(http);
    let uri: hyper::Uri = url.parse()?;
    let bodies: Arc<Vec<(String, Bytes)>> = Arc::new(bodies.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, uri, bodies, next) =
            (client.clone(), uri.clone(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, body)) = bodies.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let req = Request::post(uri.clone())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .header("webhook-id", id.as_str())
                    .body(Full::new(body.clone()))?;
                let resp = client.request(req).await?;
                anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
                resp.into_body().collect().await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(t.elapsed())
}

fn pending(id: &str, body: &[u8], seq: usize) -> Pending {
    Pending {
        call_id: id.to_owned(),
        attempts: 0,
        created_ms: 0,
        next_ms: 0,
        body: body.to_vec(),
        seq: i64::try_from(seq).unwrap_or(i64::MAX),
    }
}

fn webhook(url: &str, concurrency: usize) -> anyhow::Result<WebhookSink> {
    WebhookSink::new(&WebhookConfig {
        url: url.to_owned(),
        concurrency,
        ..WebhookConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The sink driven as a worker drives it, round by round, with no outbox.
async fn sink(
    url: &str,
    concurrency: usize,
    round: usize,
    bodies: &[(String, Bytes)],
) -> anyhow::Result<Duration> {
    let sink = Arc::new(webhook(url, concurrency)?);
    // The worker's rounds: at most `round` (or the concurrency) taken at once.
    let round = round.max(concurrency);
    let rounds: Vec<Vec<Pending>> = bodies
        .chunks(round)
        .enumerate()
        .map(|(r, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, (id, b))| pending(id, b, r * round + i))
                .collect()
        })
        .collect();
    let t = Instant::now();
    let mut failed = 0usize;
    for due in rounds {
        deliver_each(&sink, concurrency, due, |_, r| {
            failed += usize::from(r.is_err());
            true
        })
        .await;
    }
    let t = t.elapsed();
    anyhow::ensure!(failed == 0, "{failed} deliveries failed");
    Ok(t)
}

/// The calls committed to a fresh outbox (not timed), then one worker delivering them all.
async fn engine(url: &str, concurrency: usize, calls: &[Call]) -> anyhow::Result<Duration> {
    let dir = std::env::temp_dir().join(format!("cdr-webhook-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("outbox.db");
    let sinks = vec!["webhook".to_owned()];
    {
        let mut outbox = Outbox::open(&db, &sinks)?;
        for chunk in calls.chunks(1000) {
            let batch = Batch {
                calls: chunk.to_vec(),
                ..Batch::default()
            };
            outbox.commit(&batch, cdr_sinks::engine::now_ms())?;
        }
    }
    let stats = Arc::new(SinkStats::default());
    let worker = SinkWorker {
        name: "webhook".to_owned(),
        sink: webhook(url, concurrency)?,
        policy: RetryPolicy::default(),
        stats: stats.clone(),
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let task = tokio::spawn(run_worker(db.clone(), worker, wake, stop));
    let n = calls.len() as u64;
    let deadline = t + Duration::from_secs(600);
    while stats.delivered.load(Ordering::Relaxed) < n {
        if task.is_finished() || Instant::now() > deadline {
            bail!(
                "the worker stopped at {} of {n}",
                stats.delivered.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Delivered counts go up as outcomes are decided; the round's outcomes are recorded next.
    let t = t.elapsed();
    let _ = stop_tx.send(true);
    task.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(t)
}

/// A hyper HTTP/1.1 server on its own thread and runtime: reads each body, answers 204, counts.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    ids: Arc<Mutex<HashSet<String>>>,
    connections: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let (rq, is, cn) = (requests.clone(), ids.clone(), connections.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = &mut stopped => return,
                    };
                    let Ok((stream, _)) = accepted else { return };
                    let _ = stream.set_nodelay(true);
                    cn.fetch_add(1, Ordering::Relaxed);
                    let (rq, is) = (rq.clone(), is.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (rq, is) = (rq.clone(), is.clone());
                            async move {
                                rq.fetch_add(1, Ordering::Relaxed);
                                let id = req
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let _body = req.into_body().collect().await?.to_bytes();
                                if let (Some(id), Ok(mut set)) = (id, is.lock()) {
                                    set.insert(id);
                                }
                                let mut resp = Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = StatusCode::NO_CONTENT;
                                Ok::<_, hyper::Error>(resp)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Ok(Self {
            addr,
            requests,
            ids,
            connections,
            stop,
            thread,
        })
    }

    /// Requests, distinct ids, connections accepted.
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.ids.lock().map_or(0, |s| s.len() as u64),
            self.connections.load(Ordering::Relaxed),
        )
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
