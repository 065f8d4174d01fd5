//! Throughput of the NATS JetStream path, each leg beside a bare `async-nats` client doing the
//! same work in the same run:
//!
//! * **relay -> JetStream**: calls committed to an outbox and delivered by the relay's delivery
//!   worker with the JetStream sink (batches of 2048 in flight, each call acknowledged by the
//!   stream), against a bare client publishing the same bodies with the same ids and headers and
//!   awaiting the acks 2048 at a time; on a single server (one replica) and on a three-node
//!   cluster started here (three replicas).
//! * **JetStream -> nats-relay -> store**: a `nats-relay` process consuming the stream with a
//!   durable pull consumer into its SQLite store (a commit per batch, acks after it), against a
//!   bare client pulling and acking the same messages with no commit.
//!
//! ```sh
//! export CARGO_TARGET_DIR=target-e2e
//! cargo build --release -p cdr-relay -p cdr-benches --bin nats-relay --bin nats_e2e
//! target-e2e/release/nats_e2e          # --calls 100000
//! ```
//!
//! Servers are `nats-server` processes on free loopback ports with stores in a temporary
//! directory, killed at the end. Figures in BENCHMARKS.md.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, message::PublishMessage};
use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::nats::{NatsConfig, NatsSink};
use cdr_sinks::outbox::{Batch, Outbox};
use clap::Parser;
use futures_util::StreamExt as _;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Throughput of relay -> JetStream and JetStream -> nats-relay -> store")]
struct Args {
    /// Calls per run.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// The `nats-relay` binary [default: beside this binary].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// A `nats-server` process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_server(dir: &Path, port: u16, extra: &str) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir.join("store"))?;
    std::fs::write(
        dir.join("nats.conf"),
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
            dir.join("store").display()
        ),
    )?;
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nats-server")?;
    Ok(Server { child, port })
}

/// One server, or three clustered; returns them and their URLs.
async fn servers(dir: &Path, n: usize) -> anyhow::Result<(Vec<Server>, String)> {
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\""))
        .collect();
    let mut out = Vec::new();
    for (i, (port, route)) in ports.iter().enumerate() {
        let extra = if n == 1 {
            String::new()
        } else {
            format!(
                "server_name: n{i}\ncluster {{ name: bench, listen: \"127.0.0.1:{route}\", routes: [{}] }}",
                routes.join(", ")
            )
        };
        out.push(start_server(&dir.join(format!("n{i}")), *port, &extra)?);
    }
    let urls: Vec<String> = out
        .iter()
        .map(|s| format!("nats://127.0.0.1:{}", s.port))
        .collect();
    Ok((out, urls.join(",")))
}

/// Creates `name` (subjects `<name>.*.*`), retrying while the cluster elects its leader.
async fn make_stream(url: &str, name: &str, replicas: usize) -> anyhow::Result<jetstream::Context> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = async_nats::connect(url).await {
            let js = jetstream::new(c);
            let cfg = jetstream::stream::Config {
                name: name.into(),
                subjects: vec![format!("{name}.*.*")],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            if js.get_or_create_stream(cfg).await.is_ok() {
                return Ok(js);
            }
        }
        if Instant::now() > deadline {
            bail!("no stream {name} on {url}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` distinct calls: a real SMDR call under ids `bench-<i>`.
fn calls(n: usize) -> anyhow::Result<Vec<Call>> {
    let line = b"2018/01/04 23:43:36,00:34:11,10,6047535970,I,206,6040116587,,0,1017747,0,E241,Volunteer8,T9005,Line 5.0,0,0,,,,,,,,,,,,,,192.168.1.21,2,192.168.1.21,294282";
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig {
        site: "bench".into(),
        ..SmdrAssemblerConfig::default()
    });
    #[allow(
        clippy::disallowed_methods,
        reason = "a benchmark: any instant will do"
    )]
    let now = Instant::now();
    asm.handle_record(now, &smdr_parse::SmdrRecord::parse(line)?);
    let Some(Output::Call(template)) = asm.poll_output() else {
        bail!("a call with one record is complete at once");
    };
    Ok((0..n)
        .map(|i| {
            let mut c = template.clone();
            c.id = format!("bench-{i:08}");
            c
        })
        .collect())
}

/// The relay's delivery path: commit, then a worker with the JetStream sink until all are
/// delivered. Seconds from the worker's start.
async fn relay_publish(
    dir: &Path,
    urls: &str,
    stream: &str,
    calls: &[Call],
    timeout: Duration,
) -> anyhow::Result<f64> {
    let db = dir.join(format!("{stream}.db"));
    let mut outbox = Outbox::open(&db, &["nats".to_owned()])?;
    for chunk in calls.chunks(10_000) {
        outbox.commit(
            &Batch {
                calls: chunk.to_vec(),
                ..Batch::default()
            },
            now_ms(),
        )?;
    }
    let pending: u64 = outbox.counts()?.iter().map(|c| c.pending).sum();
    if pending != calls.len() as u64 {
        bail!(
            "{pending} calls due in {}, not {}",
            db.display(),
            calls.len()
        );
    }
    drop(outbox);
    let mut cfg = NatsConfig::new(urls.split(',').map(str::to_owned).collect());
    cfg.stream = stream.into();
    cfg.subject =
        cdr_sinks::nats::SubjectTemplate::parse(&format!("{stream}.{{source}}.{{site}}"))?;
    let worker = SinkWorker {
        name: "nats".to_owned(),
        sink: NatsSink::new(&cfg)?,
        // A new stream's leader may not be elected yet: retry in tenths of a second, not the
        // default half minute, so a first refused batch does not dominate the timing.
        policy: RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        stats: Arc::new(SinkStats::default()),
    };
    let stats = worker.stats.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    let task = tokio::spawn(run_worker(db.clone(), worker, wake, stopped));
    let n = calls.len() as u64;
    while stats.delivered.load(std::sync::atomic::Ordering::Relaxed) < n {
        if start.elapsed() > timeout {
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            bail!(
                "relay publish: timed out: {} of {n} delivered, {} failed attempts, {} dead",
                load(&stats.delivered),
                load(&stats.failed),
                load(&stats.dead)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.send(true)?;
    task.await??;
    Ok(secs)
}

/// The bare client: the same bodies, ids and headers, 2048 acks in flight at a time.
async fn bare_publish(
    js: &jetstream::Context,
    stream: &str,
    calls: &[Call],
) -> anyhow::Result<f64> {
    let bodies: Vec<(String, Vec<u8>)> = calls
        .iter()
        .map(|c| Ok((c.id.clone(), serde_json::to_vec(c)?)))
        .collect::<anyhow::Result<_>>()?;
    let subject = format!("{stream}.smdr.bench");
    let start = Instant::now();
    for chunk in bodies.chunks(2048) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (id, body) in chunk {
            let m = PublishMessage::build()
                .payload(body.clone().into())
                .message_id(id)
                .header("Content-Type", "application/json")
                .header("Cdr-Schema", cdr_sinks::nats::SCHEMA);
            acks.push(js.send_publish(subject.clone(), m).await?);
        }
        for r in futures_util::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await
        {
            r?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The bare client: a durable pull consumer, every message acked, no commit.
async fn bare_consume(js: &jetstream::Context, stream: &str, n: usize) -> anyhow::Result<f64> {
    let s = js.get_stream(stream).await?;
    let consumer: jetstream::consumer::PullConsumer = s
        .get_or_create_consumer(
            "bare",
            jetstream::consumer::pull::Config {
                durable_name: Some("bare".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 4096,
                ..Default::default()
            },
        )
        .await?;
    let start = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1024)
        .messages()
        .await?;
    let mut got = 0;
    while got < n {
        let Some(m) = messages.next().await else {
            bail!("the pull ended at {got}");
        };
        m.map_err(|e| anyhow::anyhow!("{e}"))?
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        got += 1;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `nats-relay` consuming the stream into a fresh store: seconds from its start until it holds
/// `n` calls, and from its first stored call to the last (the process start, opening the store
/// and connecting left out).
fn hub_consume(
    relay: &Path,
    dir: &Path,
    urls: &str,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<(f64, f64)> {
    let db = dir.join(format!("hub-{stream}.db"));
    let start = Instant::now();
    let mut child = Command::new(relay)
        .args(["--http", "off", "--db", db.to_str().context("db path")?])
        .env("NATS_URL", urls)
        .env("NATS_STREAM", stream)
        .env("NATS_CONSUMER", "hub")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let mut first: Option<Instant> = None;
    let result = loop {
        std::thread::sleep(Duration::from_millis(10));
        let count: usize =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("SELECT count(*) FROM calls", [], |r| r.get(0)))
                .unwrap_or(0);
        if count > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if count >= n {
            let steady = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            break Ok((start.elapsed().as_secs_f64(), steady));
        }
        if start.elapsed() > timeout {
            break Err(anyhow::anyhow!("hub: {count} of {n} calls in {timeout:?}"));
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

fn rate(n: usize, secs: f64) -> String {
    format!("{:>9.0} calls/s ({secs:.2} s)", n as f64 / secs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = match &args.relay {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("nats-relay"),
    };
    if !relay.exists() {
        bail!(
            "{} not found: build it with --bin nats-relay",
            relay.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("cdr-relay-nats-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let n = args.calls;
    let timeout = Duration::from_secs(args.timeout);
    let calls = calls(n)?;
    println!(
        "{n} calls, {} bytes each",
        serde_json::to_vec(&calls[0])?.len()
    );
    for replicas in [1, 3] {
        // Each run's own servers, outbox and hub store: with one shared outbox the second run's
        // calls were ids the outbox already had (delivered in the first run), so nothing was
        // due and the three-replica publish leg waited for ever; a shared hub store held every
        // call from the start.
        let run = dir.join(format!("r{replicas}"));
        let (servers, urls) = servers(&run, replicas).await?;
        let first = urls.split(',').next().unwrap_or_default().to_owned();
        let js = make_stream(&first, "BARE", replicas).await?;
        make_stream(&first, "RELAY", replicas).await?;
        let bare = bare_publish(&js, "BARE", &calls).await?;
        let ours = relay_publish(&run, &urls, "RELAY", &calls, timeout).await?;
        println!("R{replicas} publish  bare client   {}", rate(n, bare));
        println!(
            "R{replicas} publish  relay sink    {}  ({:.2} of bare)",
            rate(n, ours),
            bare / ours
        );
        let bare_c = bare_consume(&js, "BARE", n).await?;
        let (hub, steady) = hub_consume(&relay, &run, &urls, "RELAY", n, timeout)?;
        println!("R{replicas} consume  bare client   {}", rate(n, bare_c));
        println!(
            "R{replicas} consume  nats-relay    {}  ({:.2} of bare; from its start)",
            rate(n, hub),
            bare_c / hub
        );
        println!(
            "R{replicas} consume  nats-relay    {}  ({:.2} of bare; first call stored to last)",
            rate(n, steady),
            bare_c / steady
        );
        drop(servers);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
