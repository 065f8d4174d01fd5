//! End-to-end throughput of `list-relay`: dialler CDRs pushed into a Redis list, drained by the
//! relay (move to the processing list, commit to SQLite, remove), and pushed by its Redis list
//! sink to another list; measured against a baseline that moves the same items between the same
//! lists from this process with nothing in between (no parse, no commit).
//!
//! ```sh
//! export CARGO_TARGET_DIR=target-e2e
//! cargo build --release -p cdr-relay -p cdr-benches --bin list-relay --bin list_e2e
//! target-e2e/release/list_e2e          # --cdrs 200000 --redis redis://127.0.0.1:6379
//! ```
//!
//! Keys are `cdr-relay-bench:<pid>:*`, deleted before and after. Figures in BENCHMARKS.md.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use redis::Commands as _;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "End-to-end throughput of list-relay: Redis list -> SQLite -> Redis list")]
struct Args {
    /// CDRs to push and drain.
    #[arg(long, default_value_t = 200_000)]
    cdrs: usize,
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The `list-relay` binary [default: beside this binary].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Items the relay moves and commits at once (`DIALLER_BATCH`).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Deliver to the Redis list sink (else only commit to the store).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sink: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn cdr(i: usize) -> String {
    format!(
        r#"{{"ext":"{}","internal_call_ref":"bench-{i}","custom_call_ref":"crm-{i}","disposition":"ANSWERED","SIP_termination_code":200,"campaign_ref":"bench","client_number":"06{i:08}","dial_number":"+316{i:08}"}}"#,
        2000 + i % 50
    )
}

fn clear(r: &mut redis::Connection, prefix: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = r.keys(format!("{prefix}:*"))?;
    for k in keys {
        let _: () = r.del(k)?;
    }
    Ok(())
}

/// Pushes every CDR with pipelined LPUSHes of 1,000; returns the seconds it took.
fn push(r: &mut redis::Connection, key: &str, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let items: Vec<String> = (i..(i + 1000).min(n)).map(cdr).collect();
        i += items.len();
        let _: () = r.lpush(key, items)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Redis's own CPU seconds so far (user + system, `INFO cpu`).
fn redis_cpu(r: &mut redis::Connection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(r)?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_user" | "used_cpu_sys")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum())
}

/// A process's CPU seconds so far (user, system), from `/proc`.
fn proc_cpu(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| -> Option<f64> { Some(fields.get(i)?.parse::<f64>().ok()? / 100.0) };
    Some((t(11)?, t(12)?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = match &args.relay {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("list-relay"),
    };
    if !relay.exists() {
        bail!(
            "{} not found: build it with --bin list-relay",
            relay.display()
        );
    }
    let mut r = redis::Client::open(args.redis.as_str())?.get_connection()?;
    let prefix = format!("cdr-relay-bench:{}", std::process::id());
    clear(&mut r, &prefix)?;
    let n = args.cdrs;
    let bytes: usize = (0..n).map(|i| cdr(i).len()).sum();

    // Baseline: the same moves from this process, nothing in between.
    let (bin, bout, bproc) = (
        format!("{prefix}:base-in"),
        format!("{prefix}:base-out"),
        format!("{prefix}:base-processing"),
    );
    push(&mut r, &bin, n)?;
    let base_redis_cpu = redis_cpu(&mut r)?;
    let start = Instant::now();
    loop {
        let mut pipe = redis::pipe();
        for _ in 0..args.batch {
            pipe.cmd("LMOVE")
                .arg(&bin)
                .arg(&bproc)
                .arg("RIGHT")
                .arg("LEFT");
        }
        let items: Vec<Option<Vec<u8>>> = pipe.query(&mut r)?;
        let items: Vec<Vec<u8>> = items.into_iter().flatten().collect();
        if items.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for it in &items {
            pipe.cmd("LREM").arg(&bproc).arg(-1).arg(it).ignore();
            pipe.cmd("LPUSH").arg(&bout).arg(it).ignore();
        }
        let () = pipe.query(&mut r)?;
    }
    let base = start.elapsed().as_secs_f64();
    let base_redis_cpu = redis_cpu(&mut r)? - base_redis_cpu;
    let moved: usize = r.llen(&bout)?;
    if moved != n {
        bail!("baseline moved {moved} of {n}");
    }

    // The relay.
    let (key, out) = (format!("{prefix}:in"), format!("{prefix}:out"));
    let push_secs = push(&mut r, &key, n)?;
    let relay_redis_cpu = redis_cpu(&mut r)?;
    let dir = std::env::temp_dir().join(format!("cdr-relay-list-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("relay.db");
    let start = Instant::now();
    let mut child = Command::new(&relay)
        .args([
            "--dialler-redis-url",
            &args.redis,
            "--dialler-list-key",
            &key,
        ])
        .args(["--dialler-batch", &args.batch.to_string()])
        .args(["--http", "off", "--db", db.to_str().context("db path")?])
        .args(["--sink", if args.sink { "redis" } else { "store" }])
        .env("REDIS_URL", &args.redis)
        .env("REDIS_LIST_KEY", &out)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = start + Duration::from_secs(args.timeout);
    let mut committed_at = None;
    loop {
        let done: usize = r.llen(&out)?;
        if committed_at.is_none() {
            let left: usize = r.llen(&key)?;
            let processing: usize = r.llen(format!("{key}:processing"))?;
            if left == 0 && processing == 0 {
                committed_at = Some(start.elapsed().as_secs_f64());
            }
        }
        if done >= n || (!args.sink && committed_at.is_some()) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("timed out: {done} of {n} delivered");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let total = start.elapsed().as_secs_f64();
    let relay_redis_cpu = redis_cpu(&mut r)? - relay_redis_cpu;
    let relay_cpu = proc_cpu(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    clear(&mut r, &prefix)?;
    let _ = std::fs::remove_dir_all(&dir);

    let rate = |secs: f64| n as f64 / secs;
    println!(
        "{n} CDRs, {:.1} MB ({} bytes each on average), batch {}",
        bytes as f64 / 1e6,
        bytes / n.max(1),
        args.batch
    );
    println!(
        "push into the dialler list (pipelined LPUSH x1000): {:.3} s, {:.0} pushes/s",
        push_secs,
        rate(push_secs)
    );
    println!(
        "baseline (LMOVE + LREM + LPUSH from one process): {:.3} s, {:.0} items/s",
        base,
        rate(base)
    );
    if let Some(c) = committed_at {
        println!(
            "list-relay drained and committed: {:.3} s, {:.0} CDRs/s",
            c,
            rate(c)
        );
    }
    println!(
        "list-relay end to end (in the sink list): {:.3} s, {:.0} CDRs/s, {:.2}x the baseline's time",
        total,
        rate(total),
        total / base
    );
    if let Some((u, s)) = relay_cpu {
        println!(
            "list-relay CPU: {u:.2} s user + {s:.2} s system, {:.1} µs per CDR",
            (u + s) * 1e6 / n as f64
        );
    }
    println!(
        "Redis CPU: baseline {base_redis_cpu:.2} s, during the relay run {relay_redis_cpu:.2} s ({:.1} µs per CDR)",
        relay_redis_cpu * 1e6 / n as f64
    );
    Ok(())
}
