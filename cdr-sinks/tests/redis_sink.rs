//! The Redis list sink against real Redis: the machine's server at 127.0.0.1:6379 (keys under
//! `cdr-relay-test:<test>:<pid>`, removed afterwards) and `redis-server` processes started by the
//! tests themselves (ACL user, append-only file, SIGKILL and restart, TLS with a private CA).
//!
//! Every wait polls with a deadline; no fixed sleep is an assertion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_sinks::SinkError;
use cdr_sinks::backoff::RetryPolicy;
use cdr_sinks::engine::{SinkStats, SinkWorker, now_ms, run_worker};
use cdr_sinks::outbox::{Batch, Outbox, SinkCounts};
use cdr_sinks::redis_list::{PushSide, RedisListConfig, RedisListSink};
use redis::AsyncCommands as _;
use tokio::sync::{Notify, watch};

const LOCAL: &str = "redis://127.0.0.1:6379";
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-redis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn test_key(test: &str) -> String {
    format!("cdr-relay-test:{test}:{}", std::process::id())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct calls: a real SMDR call from the fixtures under ids `<prefix>-00000`, ...
fn calls(prefix: &str, n: usize) -> Vec<Call> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/smdr/ccbc_rw180105_day_34fields.txt"),
    )
    .unwrap();
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
    let template = template.expect("a call in the fixture");
    (0..n)
        .map(|i| {
            let mut c = template.clone();
            c.id = format!("{prefix}-{i:05}");
            c
        })
        .collect()
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e}"))
}

/// The ids of the list's items, in push order (oldest push first) for `side`.
async fn ids_in_push_order(url: &str, key: &str, side: PushSide) -> Vec<String> {
    let mut con = connect(url).await;
    let items: Vec<Vec<u8>> = con.lrange(key, 0, -1).await.unwrap();
    let mut ids: Vec<String> = items
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_slice(b).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    if side == PushSide::Left {
        ids.reverse();
    }
    ids
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(db: &Path, sink: &str) -> SinkCounts {
    let o = Outbox::open_read_only(db, &[sink.to_owned()]).unwrap();
    o.counts()
        .unwrap()
        .into_iter()
        .find(|c| c.sink == sink)
        .unwrap()
}

/// Fast backoff so outages in the tests cost milliseconds, not minutes.
fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(400),
        ..RetryPolicy::default()
    }
}

struct Worker {
    db: PathBuf,
    name: String,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    stats: Arc<SinkStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn start(db: &Path, name: &str, sink: RedisListSink) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(SinkStats::default());
        let worker = SinkWorker {
            name: name.to_owned(),
            sink,
            policy: quick_policy(),
            stats: stats.clone(),
        };
        let task = tokio::spawn({
            let (db, wake) = (db.to_path_buf(), wake.clone());
            async move { run_worker(db, worker, wake, stop_rx).await.unwrap() }
        });
        Self {
            db: db.to_path_buf(),
            name: name.to_owned(),
            wake,
            stop,
            stats,
            task,
        }
    }

    async fn wait_delivered(&self, n: u64) {
        let (db, name) = (self.db.clone(), self.name.clone());
        wait_for(&format!("{n} deliveries"), || {
            let c = counts(&db, &name);
            async move {
                assert_eq!(c.dead, 0, "nothing is dead-lettered");
                c.delivered == n && c.pending == 0
            }
        })
        .await;
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
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

/// A `redis-server` of our own, on 127.0.0.1; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
    starts: u32,
}

impl Server {
    /// Starts `redis-server` with `args` in `dir` and waits until it accepts connections.
    fn start(dir: &Path, args: &[String]) -> Self {
        Self::try_start(dir, args).unwrap_or_else(|output| panic!("{output}"))
    }

    /// Like [`Server::start`]; if the server exits instead, its output.
    fn try_start(dir: &Path, args: &[String]) -> Result<Self, String> {
        let mut s = Self {
            child: spawn_server(dir, args, 0),
            dir: dir.to_path_buf(),
            args: args.to_vec(),
            starts: 0,
        };
        s.wait_ready()?;
        Ok(s)
    }

    /// What the current process wrote to its log file and to stdout/stderr.
    fn output(&self) -> String {
        let read = |ext| {
            std::fs::read_to_string(self.dir.join(format!("redis-{}.{ext}", self.starts)))
                .unwrap_or_default()
        };
        format!("{}{}", read("out"), read("log"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let output = self.output();
            if output.contains("Ready to accept connections") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("redis-server exited with {status}:\n{output}"));
            }
            assert!(
                start.elapsed() < DEADLINE,
                "redis-server not ready:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no shutdown, no final save.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts it again with the same arguments, port and directory.
    fn restart(&mut self) {
        self.starts += 1;
        self.child = spawn_server(&self.dir, &self.args, self.starts);
        self.wait_ready()
            .unwrap_or_else(|output| panic!("{output}"));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(dir: &Path, args: &[String], n: u32) -> Child {
    let out = std::fs::File::create(dir.join(format!("redis-{n}.out"))).unwrap();
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("redis-{n}.log")))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("redis-server is installed (the machine's Debian package)")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|&a| a.to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Against the machine's Redis

/// Both push sides through outbox and worker: a consumer popping from the other end reads the
/// calls in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lpush_and_rpush_keep_commit_order_for_the_opposite_end() {
    for side in [PushSide::Left, PushSide::Right] {
        let key = test_key(&format!("order-{side}"));
        let mut admin = connect(LOCAL).await;
        let () = admin.del(&key).await.unwrap();
        let dir = scratch(&format!("order-{side}"));
        let db = dir.join("outbox.db");
        let name = format!("redis:{side}");
        let mut outbox = Outbox::open(&db, std::slice::from_ref(&name)).unwrap();
        let calls = calls(&format!("order-{side}"), 300);
        let mut config = RedisListConfig::new(LOCAL, &key);
        config.side = side;
        let worker = Worker::start(&db, &name, RedisListSink::new(&config).unwrap());
        for chunk in calls.chunks(30) {
            commit(&mut outbox, chunk);
            worker.wake.notify_one();
        }
        worker.wait_delivered(300).await;
        worker.stop().await;

        let committed: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids_in_push_order(LOCAL, &key, side).await, committed);
        // The consumer's view: BRPOP after LPUSH, BLPOP after RPUSH.
        let first: Vec<u8> = match side {
            PushSide::Left => admin.rpop(&key, None).await.unwrap(),
            PushSide::Right => admin.lpop(&key, None).await.unwrap(),
        };
        let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(first["id"], committed[0].as_str());
        // The body is the call's JSON as stored in the outbox (compressed there), unchanged.
        let stored = Outbox::open_read_only(&db, &[])
            .unwrap()
            .connection()
            .query_row(
                "SELECT body FROM calls WHERE id = ?1",
                [&committed[0]],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&cdr_sinks::body::decode(&stored).unwrap())
                .unwrap(),
            first
        );
        let () = admin.del(&key).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A key holding a string: every push gets WRONGTYPE. The sink pauses (blocked, backing off)
/// without using up the calls' attempts or dead-lettering any; once the key is fixed, every call
/// goes out, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_pauses_the_sink_and_loses_nothing() {
    let key = test_key("wrongtype");
    let mut admin = connect(LOCAL).await;
    let () = admin.set(&key, "not a list").await.unwrap();
    let sink = RedisListSink::new(&RedisListConfig::new(LOCAL, &key)).unwrap();
    let err = sink.send(b"{\"id\":\"x\"}").await.unwrap_err();
    assert!(matches!(err, SinkError::Paused { .. }), "{err:?}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");

    let dir = scratch("wrongtype");
    let db = dir.join("outbox.db");
    let mut outbox = Outbox::open(&db, &["redis".to_owned()]).unwrap();
    let calls = calls("wrongtype", 40);
    commit(&mut outbox, &calls);
    let worker = Worker::start(&db, "redis", sink);
    let stats = worker.stats.clone();
    // Several failed rounds (the whole batch, then single-call probes), each recorded before
    // the next starts: blocked, nothing delivered, nothing dead, no attempt counted.
    wait_for("three failed rounds", || {
        let failed = stats.failed.load(Ordering::Relaxed);
        async move { failed >= 42 }
    })
    .await;
    assert!(stats.blocked.load(Ordering::Relaxed));
    let c = counts(&db, "redis");
    assert_eq!((c.pending, c.delivered, c.dead), (40, 0, 0));
    let (attempts, with_error, error): (i64, i64, String) = Outbox::open_read_only(&db, &[])
        .unwrap()
        .connection()
        .query_row(
            "SELECT MAX(attempts), COUNT(last_error), MAX(last_error) FROM deliveries
             WHERE sink = 'redis'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(attempts, 0, "a paused sink does not use up attempts");
    assert_eq!(with_error, 40, "every call of the failed batch says why");
    assert!(error.contains("not a list"), "{error}");
    let str_value: String = admin.get(&key).await.unwrap();
    assert_eq!(str_value, "not a list", "the key was not touched");

    // Someone removes the string: the calls go out, in commit order.
    let () = admin.del(&key).await.unwrap();
    worker.wait_delivered(40).await;
    assert!(!stats.blocked.load(Ordering::Relaxed));
    worker.stop().await;
    let committed: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        ids_in_push_order(LOCAL, &key, PushSide::Left).await,
        committed
    );
    let () = admin.del(&key).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = free_port();
    let sink = RedisListSink::new(&RedisListConfig::new(
        format!("redis://127.0.0.1:{port}"),
        "k",
    ))
    .unwrap();
    let err = sink.send(b"{}").await.unwrap_err();
    assert!(matches!(err, SinkError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Against redis-server processes of our own

/// A server whose default user is off, with an ACL user `cdr`.
fn acl_args(port: u16) -> Vec<String> {
    s(&[
        "--port",
        &port.to_string(),
        "--user",
        "default",
        "off",
        "--user",
        "cdr",
        "on",
        ">s3cret",
        "~cdr-relay-test:*",
        "+@all",
    ])
}

/// The server drops our connection: at most the next push fails (as unreachable), and the one
/// after it reconnects.
#[tokio::test]
async fn a_dropped_connection_is_reopened_by_the_next_push() {
    let dir = scratch("reconnect");
    let port = free_port();
    let _server = Server::start(&dir, &s(&["--port", &port.to_string()]));
    let url = format!("redis://127.0.0.1:{port}");
    let key = test_key("reconnect");
    let sink = RedisListSink::new(&RedisListConfig::new(&url, &key)).unwrap();
    sink.push_batch(&[b"{\"id\":\"a\"}", b"{\"id\":\"b\"}"])
        .await
        .unwrap();
    let mut admin = connect(&url).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the sink's connection");
    if let Err(e) = sink.send(b"{\"id\":\"c\"}").await {
        assert!(matches!(e, SinkError::Unreachable(_)), "{e:?}");
    }
    sink.send(b"{\"id\":\"d\"}").await.unwrap();
    let ids = ids_in_push_order(&url, &key, PushSide::Left).await;
    assert_eq!(&ids[..2], ["a", "b"]);
    assert_eq!(ids.last().unwrap(), "d");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A round's due calls go in one command: 600 queued calls (under the 2,048 a batched sink
/// takes a round) take one `LPUSH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_is_one_push_command() {
    let dir = scratch("batching");
    let port = free_port();
    let _server = Server::start(&dir, &s(&["--port", &port.to_string()]));
    let url = format!("redis://127.0.0.1:{port}");
    let key = test_key("batching");
    let db = dir.join("outbox.db");
    let mut outbox = Outbox::open(&db, &["redis".to_owned()]).unwrap();
    let calls = calls("batching", 600);
    commit(&mut outbox, &calls);
    let worker = Worker::start(
        &db,
        "redis",
        RedisListSink::new(&RedisListConfig::new(&url, &key)).unwrap(),
    );
    worker.wait_delivered(600).await;
    worker.stop().await;
    let mut admin = connect(&url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let lpush = info
        .lines()
        .find(|l| l.starts_with("cmdstat_lpush:"))
        .unwrap_or_else(|| panic!("no LPUSH in {info}"));
    assert!(lpush.starts_with("cmdstat_lpush:calls=1,"), "{lpush}");
    let committed: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        ids_in_push_order(&url, &key, PushSide::Left).await,
        committed
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a password the server answers NOAUTH, with a wrong one WRONGPASS: both pause the sink.
/// The right ACL user and a database number in the URL work.
#[tokio::test]
async fn acl_user_password_and_database_from_the_url() {
    let dir = scratch("acl");
    let port = free_port();
    let _server = Server::start(&dir, &acl_args(port));
    let key = test_key("acl");
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://cdr:wrong@127.0.0.1:{port}"),
    ] {
        let sink = RedisListSink::new(&RedisListConfig::new(&url, &key)).unwrap();
        let err = sink.send(b"{}").await.unwrap_err();
        assert!(matches!(err, SinkError::Paused { .. }), "{url}: {err:?}");
        assert!(err.to_string().contains("authentication"), "{err}");
    }
    let url = format!("redis://cdr:s3cret@127.0.0.1:{port}/5");
    let sink = RedisListSink::new(&RedisListConfig::new(&url, &key)).unwrap();
    sink.send(b"{\"id\":\"in-db-5\"}").await.unwrap();
    let mut con = connect(&url).await;
    assert_eq!(con.llen::<_, i64>(&key).await.unwrap(), 1);
    let mut db0 = connect(&format!("redis://cdr:s3cret@127.0.0.1:{port}/0")).await;
    assert_eq!(db0.llen::<_, i64>(&key).await.unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stream of calls through outbox and worker into a server that is SIGKILLed mid-stream and
/// restarted (same port, same append-only file) while calls keep coming: every committed call
/// is in the list, in commit order; a batch whose reply was lost in the kill may appear twice,
/// only ever under the same ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_arrives_once_per_id_across_a_sigkill_of_redis() {
    const N: usize = 600;
    let dir = scratch("sigkill");
    let port = free_port();
    let mut args = acl_args(port);
    // `always`: a push Redis acknowledged is on disk before the reply, so SIGKILL cannot take
    // it back (with `everysec` a write can, rarely, be acknowledged before it reaches the file).
    args.extend(s(&["--appendonly", "yes", "--appendfsync", "always"]));
    let mut server = Server::start(&dir, &args);
    let url = format!("redis://cdr:s3cret@127.0.0.1:{port}/2");
    let key = test_key("sigkill");
    let db = dir.join("outbox.db");
    let calls = calls("sigkill", N);
    let committed: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();

    // The source's outbox first, as in the relay (two connections creating the same new
    // database at once can meet SQLITE_BUSY).
    let mut outbox = Outbox::open(&db, &["redis".to_owned()]).unwrap();
    let worker = Worker::start(
        &db,
        "redis",
        RedisListSink::new(&RedisListConfig::new(&url, &key)).unwrap(),
    );
    // The source: commits of 1 to 7 calls, a few milliseconds apart, waking the worker. After
    // the first half it waits for the kill (whenever that comes), so the second half is
    // committed while Redis is down, whatever the machine's load.
    let (progress_tx, progress) = watch::channel(0usize);
    let (killed_tx, killed_rx) = std::sync::mpsc::channel::<()>();
    let source = tokio::task::spawn_blocking({
        let wake = worker.wake.clone();
        move || {
            let mut done = 0;
            let mut size = 1;
            let mut gate = Some(killed_rx);
            while done < N {
                if done >= N / 2 {
                    if let Some(killed) = gate.take() {
                        killed.recv().unwrap();
                    }
                }
                let end = (done + size).min(N);
                commit(&mut outbox, &calls[done..end]);
                wake.notify_one();
                done = end;
                progress_tx.send(done).unwrap();
                size = size % 7 + 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    });

    // Kill once calls are flowing into the list.
    let admin = connect(&url).await;
    wait_for("the first deliveries", || {
        let mut admin = admin.clone();
        let key = key.clone();
        async move { admin.llen::<_, i64>(&key).await.unwrap() >= 100 }
    })
    .await;
    server.kill();
    let killed_at = *progress.borrow();
    killed_tx.send(()).unwrap();
    // Calls keep being committed while Redis is down.
    let mut committed_so_far = progress.clone();
    tokio::time::timeout(DEADLINE, committed_so_far.wait_for(|&d| d >= N / 2 + 100))
        .await
        .unwrap()
        .unwrap();
    let stats = worker.stats.clone();
    wait_for("the sink to notice", || {
        let blocked = stats.blocked.load(Ordering::Relaxed);
        async move { blocked }
    })
    .await;
    let during = counts(&db, "redis");
    assert!(during.pending >= 100, "{during:?}");
    server.restart();
    tokio::time::timeout(DEADLINE, source)
        .await
        .unwrap()
        .unwrap();
    worker.wait_delivered(N as u64).await;
    worker.stop().await;

    let pushed = ids_in_push_order(&url, &key, PushSide::Left).await;
    let mut seen = std::collections::HashSet::new();
    let first_seen: Vec<String> = pushed
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    assert_eq!(first_seen, committed, "every call, in commit order");
    let duplicates = pushed.len() - first_seen.len();
    if duplicates == 0 {
        assert_eq!(pushed, committed);
    }
    println!(
        "killed after {killed_at} of {N} calls committed; {duplicates} duplicate items (same ids)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate for `localhost` signed by a fresh CA: (CA PEM, certificate PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// `rediss://` to a TLS-only server with a private CA: trusted through `ca_file`, refused
/// (unreachable, certificate error) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let dir = scratch("tls");
    let (ca, cert, key_pem) = private_ca();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key_pem).unwrap();
    let (tls_port, plain_port) = (free_port(), free_port());
    let mut args = s(&["--port", &plain_port.to_string()]);
    args.extend(s(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-auth-clients",
        "no",
    ]));
    for (flag, path) in [
        ("--tls-cert-file", &cert_path),
        ("--tls-key-file", &key_path),
        ("--tls-ca-cert-file", &ca_path),
    ] {
        args.push(flag.to_owned());
        args.push(path.display().to_string());
    }
    // The plain port is only for this test to read the list back; the sink uses the TLS port.
    let _server = match Server::try_start(&dir, &args) {
        Ok(server) => server,
        Err(output) if output.to_lowercase().contains("tls") => {
            eprintln!(
                "SKIPPED rediss_with_a_private_ca: this redis-server does not take the TLS \
                 options (built without TLS?):\n{output}"
            );
            return;
        }
        Err(output) => panic!("{output}"),
    };
    let key = test_key("tls");
    for host in ["localhost", "127.0.0.1"] {
        let mut config = RedisListConfig::new(format!("rediss://{host}:{tls_port}/1"), &key);
        config.ca_file = Some(ca_path.clone());
        config.side = PushSide::Right;
        let sink = RedisListSink::new(&config).unwrap();
        sink.push_batch(&[
            format!("{{\"id\":\"{host}-1\"}}"),
            format!("{{\"id\":\"{host}-2\"}}"),
        ])
        .await
        .unwrap();
    }
    let plain = format!("redis://127.0.0.1:{plain_port}/1");
    assert_eq!(
        ids_in_push_order(&plain, &key, PushSide::Right).await,
        ["localhost-1", "localhost-2", "127.0.0.1-1", "127.0.0.1-2"]
    );

    // Without the CA: the certificate is not trusted.
    let sink = RedisListSink::new(&RedisListConfig::new(
        format!("rediss://localhost:{tls_port}"),
        &key,
    ))
    .unwrap();
    let err = sink.send(b"{}").await.unwrap_err();
    assert!(matches!(err, SinkError::Unreachable(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // Plain text to the TLS port does not get through either.
    let sink = RedisListSink::new(&RedisListConfig {
        timeout: Duration::from_secs(2),
        ..RedisListConfig::new(format!("redis://127.0.0.1:{tls_port}"), &key)
    })
    .unwrap();
    assert!(sink.send(b"{}").await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
