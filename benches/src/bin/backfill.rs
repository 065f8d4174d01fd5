//! Backfill throughput of `smdr-relay --replay`: a generated SMDR corpus at several sizes, into
//! the call store alone and into the store plus a JSONL sink, beside the time `cat FILE >
//! /dev/null` takes on the same file in the same run.
//!
//! The corpus is every real capture in `fixtures/smdr/ccbc` (4,336 records, 4,104 calls, 702 KB
//! per copy), repeated until the size is reached; each copy adds `(k + 1) * 10_000_000` to the
//! Call ID of its lines, so every copy is a set of new calls (see `e2e`). The number of calls
//! the relay must store is computed in process by the relay's own parser and assembler.
//!
//! Each run starts a fresh `smdr-relay` (release build) with a new database, no retention and
//! no size limit, `--replay FILE`, and waits for it to exit (a replay exits once every call is
//! delivered to every sink). It then checks the store holds every call once and the JSONL file
//! one line per call, and reports records/s, calls/s, the relay's CPU time, and the bytes of
//! database per call (the SQLite file and its WAL, after the relay closed it).
//!
//! ```sh
//! cargo build --release -p cdr-relay -p cdr-benches --bin smdr-relay --bin backfill
//! target/release/backfill            # --sizes 20,100 --runs store,jsonl
//! ```
//!
//! The relay is looked for beside this binary. Figures are in BENCHMARKS.md ("Backfill").

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cdr_benches::corpus::{SmdrCorpus, group, machine, proc_cpu};
use clap::{Parser, ValueEnum};
use rusqlite::{Connection, OpenFlags};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Backfill throughput of smdr-relay --replay: store alone and store + JSONL")]
struct Args {
    /// Corpus sizes in MB (each rounded up to whole copies of the fixtures).
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    sizes: Vec<u64>,
    /// Runs to make for each size, in order.
    #[arg(long, value_delimiter = ',', default_value = "store,jsonl")]
    runs: Vec<RunKind>,
    /// The `smdr-relay` binary [default: beside this binary, else `target/release/smdr-relay`].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Folder of `*.txt` SMDR captures [default: the repository's `fixtures/smdr/ccbc`].
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Where corpora and databases go [default: a new folder in the temp dir, removed at the
    /// end].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunKind {
    /// `--sink store`: the call store alone.
    Store,
    /// `--sink store --sink jsonl:FILE`: the store and a JSONL file.
    Jsonl,
}

impl RunKind {
    fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Jsonl => "store + jsonl",
        }
    }
}

struct RunResult {
    size_mb: u64,
    kind: RunKind,
    corpus_bytes: u64,
    records: u64,
    calls: u64,
    cat: Duration,
    wall: Duration,
    cpu: Duration,
    db_bytes: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = relay_path(args.relay.as_deref())?;
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(|| cdr_benches::fixture_dir("SMDR_FIXTURES", "smdr/ccbc"));
    let (dir, _cleanup) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let d = std::env::temp_dir().join(format!("cdr-backfill-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            (d.clone(), Some(RemoveOnDrop(d)))
        }
    };
    println!("{}", machine());
    println!("relay: {}", relay.display());
    let mut results = Vec::new();
    for &size in &args.sizes {
        let corpus = SmdrCorpus::build_to_size(&fixtures, size * 1_000_000)?;
        let file = dir.join(format!("corpus-{size}mb.txt"));
        std::fs::write(&file, &corpus.bytes)?;
        let cat = time_cat(&file)?;
        println!(
            "corpus {size} MB: {} bytes, {} copies, {} records, {} calls ({} left open), cat {:.3} s",
            corpus.bytes.len(),
            corpus.copies,
            corpus.records,
            corpus.calls,
            corpus.open,
            cat.as_secs_f64()
        );
        for &kind in &args.runs {
            let r = run(&args, &relay, &dir, &file, &corpus, size, kind, cat)?;
            println!(
                "  {:<14} {:>8.2} s  {:>9} records/s  {:>9} calls/s  cpu {:>6.2} s  {:>6} B/call",
                kind.name(),
                r.wall.as_secs_f64(),
                group(r.records as f64 / r.wall.as_secs_f64()),
                group(r.calls as f64 / r.wall.as_secs_f64()),
                r.cpu.as_secs_f64(),
                r.db_bytes / r.calls.max(1)
            );
            results.push(r);
        }
        std::fs::remove_file(&file).ok();
    }
    println!("\n{}", table(&results));
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "one run's whole description")]
fn run(
    args: &Args,
    relay: &Path,
    dir: &Path,
    file: &Path,
    corpus: &SmdrCorpus,
    size_mb: u64,
    kind: RunKind,
    cat: Duration,
) -> anyhow::Result<RunResult> {
    let db = dir.join(format!("{size_mb}mb-{kind:?}.db"));
    let jsonl = dir.join(format!("{size_mb}mb-{kind:?}.jsonl"));
    for p in [&db, &jsonl] {
        std::fs::remove_file(p).ok();
    }
    let mut cmd = Command::new(relay);
    cmd.arg("--replay")
        .arg(file)
        .arg("--db")
        .arg(&db)
        .args(["--http", "off", "--sink", "store"])
        .env("PBX_TZ", "UTC")
        .env("CDR_RELAY_RETENTION_DAYS", "0")
        .env("CDR_RELAY_MAX_DB_MB", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if kind == RunKind::Jsonl {
        cmd.arg("--sink").arg(format!("jsonl:{}", jsonl.display()));
    }
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting smdr-relay")?;
    let pid = child.id();
    let deadline = start + Duration::from_secs(args.timeout);
    let mut cpu = Duration::ZERO;
    let status = loop {
        if let Some((user, system)) = proc_cpu(pid) {
            cpu = user + system;
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            bail!(
                "{size_mb} MB {}: no exit within {} s",
                kind.name(),
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let stderr = child
        .stderr
        .take()
        .map(|s| {
            std::io::BufReader::new(s)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !status.success() {
        bail!(
            "{size_mb} MB {}: smdr-relay exited with {status}:\n{}",
            kind.name(),
            stderr.join("\n")
        );
    }
    let db_bytes = file_len(&db) + file_len(&db.with_extension("db-wal"));
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let stored: u64 = conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
    let distinct: u64 = conn.query_row("SELECT COUNT(DISTINCT id) FROM calls", [], |r| r.get(0))?;
    // At the end of a replay the calls still open are delivered incomplete.
    let expected = corpus.calls + corpus.open as u64;
    if stored != expected || distinct != stored {
        bail!(
            "{size_mb} MB {}: {stored} calls stored ({distinct} distinct), expected {expected}",
            kind.name(),
        );
    }
    if kind == RunKind::Jsonl {
        let lines = std::io::BufReader::new(std::fs::File::open(&jsonl)?)
            .lines()
            .count() as u64;
        if lines != expected {
            bail!("{size_mb} MB jsonl: {lines} lines, expected {expected}");
        }
        std::fs::remove_file(&jsonl).ok();
    }
    drop(conn);
    for p in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ] {
        std::fs::remove_file(p).ok();
    }
    Ok(RunResult {
        size_mb,
        kind,
        corpus_bytes: corpus.bytes.len() as u64,
        records: corpus.records,
        calls: expected,
        cat,
        wall,
        cpu,
        db_bytes,
    })
}

fn table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| corpus | run | records/s | calls/s | MB/s | wall s | relay CPU s | DB bytes/call | `cat` s | relay / `cat` |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let secs = r.wall.as_secs_f64();
        let _ = writeln!(
            out,
            "| {} MB | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {:.3} | {:.0}x |",
            r.size_mb,
            r.kind.name(),
            group(r.records as f64 / secs),
            group(r.calls as f64 / secs),
            r.corpus_bytes as f64 / 1e6 / secs,
            secs,
            r.cpu.as_secs_f64(),
            r.db_bytes / r.calls.max(1),
            r.cat.as_secs_f64(),
            secs / r.cat.as_secs_f64().max(1e-9)
        );
    }
    // The goal of issue 16: the 100 MB rate at least 0.8x the 20 MB rate, per run kind.
    for kind in [RunKind::Store, RunKind::Jsonl] {
        let rate = |mb: u64| {
            results
                .iter()
                .find(|r| r.kind == kind && r.size_mb == mb)
                .map(|r| r.records as f64 / r.wall.as_secs_f64())
        };
        let sizes: Vec<u64> = results
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.size_mb)
            .collect();
        if let (Some(&small), Some(&large)) = (sizes.iter().min(), sizes.iter().max())
            && small != large
            && let (Some(a), Some(b)) = (rate(small), rate(large))
        {
            let _ = writeln!(
                out,
                "\n{}: {large} MB rate / {small} MB rate = {:.2}",
                kind.name(),
                b / a
            );
        }
    }
    out
}

fn time_cat(file: &Path) -> anyhow::Result<Duration> {
    // Once to warm the page cache as the relay will find it (the file was just written), then
    // timed.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let status = Command::new("cat")
            .arg(file)
            .stdout(Stdio::null())
            .status()
            .context("running cat")?;
        if !status.success() {
            bail!("cat {} failed", file.display());
        }
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn relay_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let beside = std::env::current_exe()?.with_file_name("smdr-relay");
    if beside.exists() {
        return Ok(beside);
    }
    let fallback = PathBuf::from("target/release/smdr-relay");
    if fallback.exists() {
        return Ok(fallback);
    }
    bail!("no smdr-relay beside this binary: build it with --release, or pass --relay")
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
