//! Load on `cdr-receiver`: many concurrent CMS-like posters on loopback for a bounded time,
//! each its own session posting meetings (callStart, two callLegStart, two callLegEnd,
//! callEnd: one record per batch, as CMS posts) with contiguous record indexes, every batch
//! answered only after its commit (SQLite, `synchronous=FULL`). Reports batches/s and the
//! latency percentiles, then checks the store: every acknowledged record kept once, none
//! doubled, every finished meeting a complete call.
//!
//! ```sh
//! export CARGO_TARGET_DIR=target-e2e
//! cargo build --release -p cdr-relay -p cdr-benches --bin cdr-receiver --bin cms_load
//! target-e2e/release/cms_load          # --posters 64 --seconds 10
//! ```

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Concurrent CMS posters against cdr-receiver: batches/s, latency, no loss")]
struct Args {
    /// Concurrent posters (each a CMS session with its own keep-alive connection).
    #[arg(long, default_value_t = 64)]
    posters: usize,
    /// How long to post.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The `cdr-receiver` binary [default: beside this binary].
    #[arg(long)]
    relay: Option<PathBuf>,
}

fn record(kind: &str, index: u64, inner: &str) -> String {
    format!(
        r#"<record type="{kind}" time="2026-11-24T10:00:00Z" recordIndex="{index}" correlatorIndex="{index}">{inner}</record>"#
    )
}

/// The six records of meeting `m` of `session`, starting at record index `first`.
fn meeting(session: usize, m: u64, first: u64) -> Vec<String> {
    let call = format!("00000000-0000-4000-8000-{session:06}{m:06}");
    let leg = |n: u32| format!("10000000-0000-4000-8000-{session:06}{m:04}{n:02}");
    vec![
        record(
            "callStart",
            first,
            &format!(r#"<call id="{call}"><name>load</name><callType>coSpace</callType></call>"#),
        ),
        record(
            "callLegStart",
            first + 1,
            &format!(
                r#"<callLeg id="{}"><remoteAddress>a{m}@example.org</remoteAddress><direction>incoming</direction><call>{call}</call></callLeg>"#,
                leg(1)
            ),
        ),
        record(
            "callLegStart",
            first + 2,
            &format!(
                r#"<callLeg id="{}"><remoteAddress>b{m}@example.org</remoteAddress><direction>incoming</direction><call>{call}</call></callLeg>"#,
                leg(2)
            ),
        ),
        record(
            "callLegEnd",
            first + 3,
            &format!(
                r#"<callLeg id="{}"><reason>remoteTeardown</reason><durationSeconds>30</durationSeconds></callLeg>"#,
                leg(1)
            ),
        ),
        record(
            "callLegEnd",
            first + 4,
            &format!(
                r#"<callLeg id="{}"><reason>remoteTeardown</reason><durationSeconds>31</durationSeconds></callLeg>"#,
                leg(2)
            ),
        ),
        record(
            "callEnd",
            first + 5,
            &format!(
                r#"<call id="{call}"><callLegsCompleted>2</callLegsCompleted><durationSeconds>32</durationSeconds></call>"#
            ),
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = match &args.relay {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("cdr-receiver"),
    };
    if !relay.exists() {
        bail!(
            "{} not found: build it with --bin cdr-receiver",
            relay.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("cdr-relay-cms-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("relay.db");
    let mut child = Command::new(&relay)
        .args(["--http", "127.0.0.1:0", "--db", db.to_str().context("db")?])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some(a) = line.strip_prefix("cdr-relay: http listening on ") {
            addr = Some(a.to_owned());
            break;
        }
    }
    let addr = addr.context("the receiver did not start")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for p in 0..args.posters {
            let stop = stop.clone();
            let url: hyper::Uri = format!("http://{addr}/cdr").parse()?;
            tasks.push(tokio::spawn(async move {
                let client: Client<_, Full<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                let session = format!("5e55{p:04}-0000-4000-8000-000000000000");
                let mut latencies = Vec::new();
                let (mut acked, mut meetings, mut index) = (0u64, 0u64, 1u64);
                'outer: while !stop.load(Ordering::Relaxed) {
                    for rec in meeting(p, meetings, index) {
                        let body = format!(
                            r#"<?xml version="1.0"?><records session="{session}">{rec}</records>"#
                        );
                        let req = hyper::Request::post(url.clone())
                            .header("content-type", "text/xml")
                            .body(Full::new(Bytes::from(body)))?;
                        let t = Instant::now();
                        let resp = client.request(req).await?;
                        latencies.push(t.elapsed());
                        if resp.status() != 200 {
                            anyhow::bail!("status {}", resp.status());
                        }
                        acked += 1;
                        index += 1;
                        if stop.load(Ordering::Relaxed) {
                            break 'outer;
                        }
                    }
                    meetings += 1;
                }
                Ok::<_, anyhow::Error>((acked, meetings, latencies))
            }));
        }
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let acked: u64 = results.iter().map(|r| r.0).sum();
    let meetings: u64 = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.2).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let conn = rusqlite::Connection::open(&db)?;
    let kept: u64 = conn.query_row("SELECT COUNT(*) FROM source_records", [], |r| r.get(0))?;
    let complete: u64 =
        conn.query_row("SELECT COUNT(*) FROM calls WHERE complete = 1", [], |r| {
            r.get(0)
        })?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} posters, {:.1} s: {acked} batches acknowledged, {:.0} batches/s",
        args.posters,
        elapsed,
        acked as f64 / elapsed
    );
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "store: {kept} records kept (acknowledged {acked}), {complete} complete calls of {meetings} finished meetings"
    );
    if kept != acked {
        bail!("{kept} records kept but {acked} acknowledged");
    }
    if complete < meetings {
        bail!("{complete} complete calls for {meetings} finished meetings");
    }
    Ok(())
}
