//! Calls per second through the outbox and the delivery worker into a Redis list.
//!
//! ```text
//! cargo run --release -p cdr-sinks --example redis_push_bench -- [CALLS] [REDIS_URL]
//! ```
//!
//! Defaults: 50,000 calls, `redis://127.0.0.1:6379`. The calls are copies of a real SMDR call from
//! the repository's fixtures (about 1.2 kB of JSON each) under distinct ids, pushed with `LPUSH` to the
//! key `cdr-relay-bench:<pid>`, which is deleted at the end. The outbox is a SQLite file in the
//! temporary directory (WAL, `synchronous=FULL`), as in production.
//!
//! Two measurements:
//! 1. **backlog**: all calls committed first (in commits of 500), then one worker drains them: the
//!    rate of outbox read + push + outcome commit, 256 calls per round trip;
//! 2. **live**: a source commits calls in groups of 50 while the worker delivers: the rate from the
//!    first commit until the last call is recorded as delivered.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::outbox::{Batch, Outbox};
use cdr_sinks::redis_list::{RedisListConfig, RedisListSink};
use tokio::sync::{Notify, watch};

fn calls(prefix: &str, n: usize) -> Vec<Call> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt"),
    )
    .expect("the repository's fixtures");
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let mut template = None;
    for line in bytes.split(|b| *b == b'\n').filter(|l| l.len() > 2) {
        asm.handle_record(
            Instant::now(),
            &smdr_parse::SmdrRecord::parse(line).unwrap(),
        );
        if let Some(Output::Call(c)) = asm.poll_output() {
            template = Some(c);
            break;
        }
    }
    let template = template.unwrap();
    (0..n)
        .map(|i| {
            let mut c = template.clone();
            c.id = format!("{prefix}-{i:06}");
            c
        })
        .collect()
}

fn commit(outbox: &mut Outbox, calls: &[Call]) {
    outbox
        .commit(
            &Batch {
                calls: calls.to_vec(),
                ..Batch::default()
            },
            now_ms(),
        )
        .unwrap();
}

struct Run {
    stats: Arc<SinkStats>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_worker(db: &Path, url: &str, key: &str) -> Run {
    let sink = RedisListSink::new(&RedisListConfig::new(url, key)).unwrap();
    let stats = Arc::new(SinkStats::default());
    let wake = Arc::new(Notify::new());
    let (stop, stop_rx) = watch::channel(false);
    let worker = SinkWorker {
        name: "redis".into(),
        sink,
        policy: RetryPolicy::default(),
        stats: stats.clone(),
    };
    let task = tokio::spawn({
        let (db, wake) = (db.to_path_buf(), wake.clone());
        async move { run_worker(db, worker, wake, stop_rx).await.unwrap() }
    });
    Run {
        stats,
        wake,
        stop,
        task,
    }
}

impl Run {
    /// Waits until `n` calls are delivered, then stops the worker (which records the last
    /// round's outcomes before it returns).
    async fn finish(self, n: u64) {
        while self.stats.delivered.load(Ordering::Relaxed) < n {
            assert_eq!(
                self.stats.failed.load(Ordering::Relaxed),
                0,
                "a push failed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn fresh_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redis-push-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("outbox.db")
}

async fn check_and_clear(url: &str, key: &str, n: usize) {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: usize = redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(len, n, "every call is in the list once");
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(50_000, |a| a.parse().expect("CALLS"));
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let key = format!("cdr-relay-bench:{}", std::process::id());
    let sample = calls("x", 1);
    let body = serde_json::to_vec(&sample[0]).unwrap().len();
    println!("redis_push_bench: {n} calls of {body} bytes of JSON, LPUSH to {url} key {key}");

    // 1. Backlog.
    let db = fresh_db("backlog");
    let all = calls("backlog", n);
    let mut outbox = Outbox::open(&db, &["redis".to_owned()]).unwrap();
    let t = Instant::now();
    for chunk in all.chunks(500) {
        commit(&mut outbox, chunk);
    }
    let commit_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let run = start_worker(&db, &url, &key);
    run.finish(n as u64).await;
    let secs = t.elapsed().as_secs_f64();
    let c = outbox.counts().unwrap();
    assert_eq!((c[0].delivered, c[0].pending), (n as u64, 0));
    check_and_clear(&url, &key, n).await;
    println!(
        "backlog: committed in {commit_secs:.2} s ({:.0} calls/s); delivered in {secs:.2} s: {:.0} calls/s",
        n as f64 / commit_secs,
        n as f64 / secs
    );
    drop(outbox);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());

    // 2. Live: commits and deliveries at the same time.
    let db = fresh_db("live");
    let all = calls("live", n);
    let mut outbox = Outbox::open(&db, &["redis".to_owned()]).unwrap();
    let run = start_worker(&db, &url, &key);
    let wake = run.wake.clone();
    let t = Instant::now();
    let source = tokio::task::spawn_blocking(move || {
        for chunk in all.chunks(50) {
            commit(&mut outbox, chunk);
            wake.notify_one();
        }
        outbox
    });
    let outbox = source.await.unwrap();
    let committed_secs = t.elapsed().as_secs_f64();
    run.finish(n as u64).await;
    let secs = t.elapsed().as_secs_f64();
    let c = outbox.counts().unwrap();
    assert_eq!((c[0].delivered, c[0].pending), (n as u64, 0));
    check_and_clear(&url, &key, n).await;
    println!(
        "live: last commit after {committed_secs:.2} s, last delivery after {secs:.2} s: {:.0} calls/s end to end",
        n as f64 / secs
    );
    drop(outbox);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}
