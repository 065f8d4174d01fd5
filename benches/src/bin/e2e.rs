//! End-to-end throughput of `smdr-relay`: SMDR over one TCP connection, into the SQLite call
//! store, and on to a local webhook receiver, measured against a plain socket that only counts
//! bytes.
//!
//! The stream is every real capture in `fixtures/smdr/ccbc` (4,336 records, 4,104 calls
//! per copy), repeated `--copies` times (`cdr_benches::corpus`). Each copy `k` adds `(k + 1) * 10_000_000` to the Call ID
//! (field 10) of every line and changes nothing else, so every copy is a set of new calls (the
//! relay's identity is site, Call ID, Call Start) and multi-record calls stay grouped. Call IDs
//! are then all above the PBX-restart window (1,000,000 + 10,000), so no copy trips restart
//! detection and every copy yields the same calls. The expected number of calls is computed in
//! process by the same parser and assembler the relay uses (calls that never get their final
//! record stay open in the relay, so they are not expected in the store).
//!
//! Each run starts a fresh `smdr-relay` (release build, `--smdr-listen 127.0.0.1:0 --http off`,
//! a new database), connects once, writes the whole stream as fast as the socket takes it, and
//! polls the store through a read-only connection until every call is committed. The clock
//! starts just before the first byte is written. Then the relay's peak RSS (`VmHWM`) and CPU time
//! are read from `/proc`, and it is stopped with SIGTERM.
//!
//! ```sh
//! export CARGO_TARGET_DIR=target-e2e
//! cargo build --release -p cdr-relay -p cdr-benches --bin smdr-relay --bin e2e
//! target-e2e/release/e2e          # --copies 25 --runs raw,store,webhook --timeout 60
//! ```
//!
//! The relay is looked for beside this binary, so build both into the same target dir.
//!
//! Figures and their analysis are in BENCHMARKS.md ("End to end").

#![allow(
    clippy::print_stdout,
    reason = "a benchmark binary: the report goes to standard output"
)]

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use cdr_benches::corpus::{SmdrCorpus as Corpus, group, machine, proc_cpu};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rusqlite::{Connection, OpenFlags};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "End-to-end throughput of smdr-relay: TCP -> SQLite store -> webhook")]
struct Args {
    /// Copies of the fixture set to send (4,336 records, 4,104 calls, 702 KB each).
    #[arg(long, default_value_t = 25)]
    copies: usize,
    /// The `smdr-relay` binary [default: `smdr-relay` beside this binary, else
    /// `$CARGO_TARGET_DIR/release/smdr-relay`, else `target/release/smdr-relay`].
    #[arg(long)]
    relay: Option<PathBuf>,
    /// Folder of `*.txt` SMDR captures [default: the repository's `fixtures/smdr/ccbc`].
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Runs to make, in order.
    #[arg(long, value_delimiter = ',', default_value = "raw,store,webhook")]
    runs: Vec<RunKind>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// How often to poll the store, in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Where the relay's databases go [default: a new folder in the temp dir, removed at the
    /// end].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the databases.
    #[arg(long)]
    keep: bool,
    /// `RUST_LOG` for the relay.
    #[arg(long, default_value = "warn")]
    relay_log: String,
    /// Extra argument for the relay (repeatable).
    #[arg(long = "relay-arg", allow_hyphen_values = true)]
    relay_args: Vec<String>,
    /// A shell command run beside each relay run, `{pid}` replaced by the relay's pid, and
    /// stopped with SIGINT once the run is measured (for example
    /// `perf record -g -o /tmp/relay.perf -p {pid}` or `strace -c -f -o /tmp/st.txt -p {pid}`).
    #[arg(long)]
    attach: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunKind {
    /// A plain TCP receiver that reads and counts bytes.
    Raw,
    /// The relay with its default sinks (the store only).
    Store,
    /// The relay with the store and the webhook sink, posting to a receiver in this process.
    Webhook,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr/ccbc"));
    let corpus = Corpus::build(&fixtures, args.copies)?;
    let relay = relay_path(args.relay.as_deref())?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("cdr-e2e-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    println!("{}", machine());
    println!(
        "corpus: {} files x {} copies = {} bytes, {} records, {} calls expected in the store \
         ({} left open at the end, {} bad lines)",
        corpus.files,
        args.copies,
        corpus.bytes.len(),
        corpus.records,
        corpus.calls,
        corpus.open,
        corpus.bad_lines
    );
    println!("relay: {}", relay.display());
    println!("load before: {}", loadavg());

    let mut results = Vec::new();
    for kind in &args.runs {
        let r = match kind {
            RunKind::Raw => run_raw(&corpus)?,
            RunKind::Store | RunKind::Webhook => {
                run_relay(&args, &relay, &dir, &corpus, *kind == RunKind::Webhook)?
            }
        };
        println!("{}", r.detail());
        results.push(r);
    }
    println!("load after: {}", loadavg());
    println!();
    println!("{}", table(&corpus, &results));
    if !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.complete())
        .map(|r| r.label)
        .collect();
    if !failed.is_empty() {
        bail!("incomplete runs: {}", failed.join(", "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Runs

/// What one run measured. Times are from just before the first byte was written.
struct RunResult {
    label: &'static str,
    bytes: u64,
    /// `write_all` returned: the kernel took the last byte.
    sent: Duration,
    /// When the measurement stopped (everything arrived, or the timeout).
    elapsed: Duration,
    /// Relay: the first call visible in the store (how long the first commit waited).
    first: Option<Duration>,
    /// Raw: every byte read. Relay: every call committed to the store.
    done: Option<Duration>,
    /// Every call received by the webhook receiver (distinct ids).
    webhook: Option<Duration>,
    /// Every delivery recorded in the outbox (none pending).
    recorded: Option<Duration>,
    /// Calls in the store at the end (`COUNT(*)`).
    stored: u64,
    /// Webhook requests received, distinct ids among them, and connections accepted (with
    /// keep-alive, as many as the sink's concurrency).
    requests: u64,
    ids: u64,
    connections: u64,
    /// Deliveries by state at the end: pending, delivered, dead.
    deliveries: Option<(u64, u64, u64)>,
    /// The relay's peak RSS (kB) and CPU time (user, system).
    hwm_kb: Option<u64>,
    cpu: Option<(Duration, Duration)>,
    /// CPU time of this process during the run (sender, store poller, webhook receiver).
    own_cpu: Option<Duration>,
    db_bytes: u64,
    exit: Option<String>,
    expect_webhook: bool,
}

impl RunResult {
    fn complete(&self) -> bool {
        self.done.is_some() && (!self.expect_webhook || self.webhook.is_some())
    }

    fn detail(&self) -> String {
        let mut s = format!("[{}] sent in {}", self.label, secs(Some(self.sent)));
        if self.first.is_some() {
            let _ = write!(s, ", first call stored at {}", secs(self.first));
        }
        let _ = write!(s, ", done in {}", secs(self.done));
        if self.expect_webhook {
            let _ = write!(
                s,
                ", webhook in {} ({} requests, {} ids, {} connections), recorded in {}",
                secs(self.webhook),
                self.requests,
                self.ids,
                self.connections,
                secs(self.recorded)
            );
        }
        if self.label != "raw" {
            let _ = write!(s, ", {} calls stored", self.stored);
        }
        if let Some((p, d, x)) = self.deliveries {
            let _ = write!(s, ", deliveries pending/delivered/dead {p}/{d}/{x}");
        }
        if let Some(kb) = self.hwm_kb {
            let _ = write!(s, ", VmHWM {kb} kB");
        }
        if let Some((u, sy)) = self.cpu {
            let _ = write!(
                s,
                ", CPU user {:.2} s + sys {:.2} s",
                u.as_secs_f64(),
                sy.as_secs_f64()
            );
        }
        if let Some(c) = self.own_cpu {
            let _ = write!(s, ", bench process CPU {:.2} s", c.as_secs_f64());
        }
        if self.db_bytes > 0 {
            let _ = write!(s, ", db {:.1} MB", self.db_bytes as f64 / 1e6);
        }
        if let Some(e) = &self.exit {
            let _ = write!(s, ", exit: {e}");
        }
        s
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "timeout".to_owned(),
        |d| format!("{:.3} s", d.as_secs_f64()),
    )
}

/// Writes the whole stream to `addr` on one connection; returns the connection (kept open, as
/// a PBX keeps it) and how long the writes took from `t0`.
fn send(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<(TcpStream, Instant, Duration)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let t0 = Instant::now();
    s.write_all(bytes).context("sending the stream")?;
    Ok((s, t0, t0.elapsed()))
}

fn run_raw(corpus: &Corpus) -> anyhow::Result<RunResult> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let len = corpus.bytes.len();
    let reader = std::thread::spawn(move || -> std::io::Result<(usize, Instant)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < len {
            match s.read(&mut buf)? {
                0 => break,
                n => total += n,
            }
        }
        Ok((total, Instant::now()))
    });
    let (stream, t0, sent) = send(addr, &corpus.bytes)?;
    let (total, end) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the raw reader panicked"))??;
    drop(stream);
    Ok(RunResult {
        label: "raw",
        bytes: total as u64,
        sent,
        elapsed: end.duration_since(t0),
        first: None,
        done: (total == len).then(|| end.duration_since(t0)),
        webhook: None,
        recorded: None,
        stored: 0,
        requests: 0,
        ids: 0,
        connections: 0,
        deliveries: None,
        hwm_kb: None,
        cpu: None,
        own_cpu: None,
        db_bytes: 0,
        exit: None,
        expect_webhook: false,
    })
}

fn run_relay(
    args: &Args,
    relay: &Path,
    dir: &Path,
    corpus: &Corpus,
    webhook: bool,
) -> anyhow::Result<RunResult> {
    let label = if webhook { "webhook" } else { "store" };
    let db = dir.join(format!("{label}.db"));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let expected = corpus.calls;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let receiver = if webhook {
        Some(rt.block_on(Receiver::start(expected))?)
    } else {
        None
    };
    let url = receiver.as_ref().map(|r| format!("http://{}/hook", r.addr));
    let proc = RelayProcess::start(args, relay, &db, url.as_deref())?;
    let attached = match &args.attach {
        Some(cmd) => {
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "exec {}",
                    cmd.replace("{pid}", &proc.pid().to_string())
                ))
                .stdin(Stdio::null())
                .spawn()
                .context("starting --attach")?;
            std::thread::sleep(Duration::from_millis(500));
            Some(child)
        }
        None => None,
    };

    let smdr = proc.smdr;
    let bytes = corpus.bytes.clone();
    let own_before = proc_cpu(std::process::id());
    let sender = std::thread::spawn(move || send(smdr, &bytes));
    // The database exists once the relay listens; the clock starts in the sender.
    let conn = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", db.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // `seq` is the calls' AUTOINCREMENT key: MAX is one index lookup, where COUNT(*) scans the
    // table and would take CPU from the relay. Checked against COUNT(*) at the end.
    let stored_now = |c: &Connection| -> rusqlite::Result<u64> {
        c.query_row("SELECT IFNULL(MAX(seq), 0) FROM calls", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or_default())
    };
    let mut first_at: Option<Instant> = None;
    let mut stored_at: Option<Instant> = None;
    let mut recorded_at: Option<Instant> = None;
    let mut send_result = None;
    let mut sender = Some(sender);
    let ended_at = loop {
        if sender
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            if let Some(h) = sender.take() {
                send_result = Some(
                    h.join()
                        .map_err(|_| anyhow::anyhow!("the sender panicked"))??,
                );
            }
        }
        let now = Instant::now();
        if stored_at.is_none() {
            let n = stored_now(&conn)?;
            if n > 0 && first_at.is_none() {
                first_at = Some(now);
            }
            if n >= expected {
                stored_at = Some(now);
            }
        }
        let received = receiver.as_ref().is_none_or(|r| r.done().is_some());
        if webhook && received && stored_at.is_some() && recorded_at.is_none() {
            // After the store is complete every delivery row exists: none pending = all
            // recorded.
            let pending: i64 = conn.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE sink = 'webhook' AND state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            if pending == 0 {
                recorded_at = Some(now);
            }
        }
        let finished = stored_at.is_some() && (!webhook || recorded_at.is_some());
        if (finished && sender.is_none()) || now > deadline {
            break now;
        }
        std::thread::sleep(poll);
    };
    let (requests, ids, connections, webhook_at) = match &receiver {
        Some(r) => (
            r.requests.load(Ordering::Relaxed),
            r.ids.lock().map_or(0, |s| s.len() as u64),
            r.connections.load(Ordering::Relaxed),
            r.done(),
        ),
        None => (0, 0, 0, None),
    };
    let hwm_kb = proc_status_kb(proc.pid(), "VmHWM");
    let cpu = proc_cpu(proc.pid());
    let own_cpu = match (own_before, proc_cpu(std::process::id())) {
        (Some((u0, s0)), Some((u1, s1))) => Some(u1.saturating_sub(u0) + s1.saturating_sub(s0)),
        _ => None,
    };
    if let Some(mut a) = attached {
        signal(a.id(), "INT");
        let _ = a.wait();
    }
    let Some((stream, t0, sent)) = send_result else {
        bail!("[{label}] the sender did not finish in {} s", args.timeout);
    };
    let stored: i64 = conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
    let deliveries = if webhook {
        let count = |state: &str| -> rusqlite::Result<u64> {
            conn.query_row(
                "SELECT COUNT(*) FROM deliveries WHERE state = ?1",
                [state],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or_default())
        };
        Some((count("pending")?, count("delivered")?, count("dead")?))
    } else {
        None
    };
    drop(conn);
    drop(stream);
    if stored_at.is_none() {
        eprintln!("[{label}] relay log tail:\n{}", proc.log_tail());
    }
    let exit = proc.terminate();
    let db_bytes = ["", "-wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", db.display())).ok())
        .map(|m| m.len())
        .sum();
    let since = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0));
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(RunResult {
        label,
        bytes: corpus.bytes.len() as u64,
        sent,
        elapsed: ended_at.saturating_duration_since(t0),
        first: since(first_at),
        done: since(stored_at),
        webhook: since(webhook_at),
        recorded: since(recorded_at),
        stored: u64::try_from(stored).unwrap_or_default(),
        requests,
        ids,
        connections,
        deliveries,
        hwm_kb,
        cpu,
        own_cpu,
        db_bytes,
        exit: Some(exit),
        expect_webhook: webhook,
    })
}

// ---------------------------------------------------------------------------------------------
// The relay process

fn relay_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
    {
        candidates.push(dir.join("smdr-relay"));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/smdr-relay"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/smdr-relay"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no smdr-relay binary at {candidates:?}: run `cargo build --release -p cdr-relay` \
                 (same CARGO_TARGET_DIR) or pass --relay"
            )
        })
}

struct RelayProcess {
    child: Child,
    smdr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl RelayProcess {
    fn start(args: &Args, relay: &Path, db: &Path, webhook: Option<&str>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(relay);
        cmd.arg("--smdr-listen")
            .arg("127.0.0.1:0")
            .arg("--http")
            .arg("off")
            .arg("--db")
            .arg(db)
            .args(&args.relay_args)
            // Nothing from the caller's environment (SMDR_*, CDR_RELAY_*) may change the setup.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", &args.relay_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = webhook {
            cmd.env("SMDR_WEBHOOK_URL", url);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", relay.display()))?;
        let stderr = child.stderr.take().context("relay stderr")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line
                        .strip_prefix("cdr-relay: smdr listening on ")
                        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut l) = log.lock() {
                        if l.len() >= 40 {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
            });
        }
        let mut p = Self {
            child,
            smdr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => p.smdr = addr,
            Err(_) => bail!("the relay did not start listening:\n{}", p.log_tail()),
        }
        Ok(p)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// SIGTERM, then up to 20 s for a clean exit, then SIGKILL.
    fn terminate(mut self) -> String {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return "killed after 20 s".into();
                }
            }
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver

struct Receiver {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    ids: Arc<Mutex<HashSet<String>>>,
    done: Arc<Mutex<Option<Instant>>>,
}

impl Receiver {
    /// A minimal HTTP/1.1 and HTTP/2 server on loopback: answers 200 to everything, counts the
    /// requests and their distinct `webhook-id`s, and notes when `expected` ids have arrived.
    async fn start(expected: u64) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let done = Arc::new(Mutex::new(None));
        let connections = Arc::new(AtomicU64::new(0));
        let (rq, is, dn, cn) = (
            requests.clone(),
            ids.clone(),
            done.clone(),
            connections.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                cn.fetch_add(1, Ordering::Relaxed);
                let (rq, is, dn) = (rq.clone(), is.clone(), dn.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (rq, is, dn) = (rq.clone(), is.clone(), dn.clone());
                        async move {
                            rq.fetch_add(1, Ordering::Relaxed);
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            // Read the body, as a real receiver would.
                            let _body = req.into_body().collect().await?.to_bytes();
                            if let (Some(id), Ok(mut set)) = (id, is.lock()) {
                                if set.insert(id) && set.len() as u64 == expected {
                                    if let Ok(mut d) = dn.lock() {
                                        *d = Some(Instant::now());
                                    }
                                }
                            }
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            requests,
            connections,
            ids,
            done,
        })
    }

    fn done(&self) -> Option<Instant> {
        self.done.lock().ok().and_then(|d| *d)
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn table(corpus: &Corpus, results: &[RunResult]) -> String {
    let mb = corpus.bytes.len() as f64 / 1e6;
    let raw = results
        .iter()
        .find(|r| r.label == "raw")
        .and_then(|r| r.done);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| run | until | time | calls/s | records/s | MB/s | × raw socket time | relay peak RSS | relay CPU (user + sys) |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let all = corpus.calls;
        let delivered = r.deliveries.map_or(0, |d| d.1);
        let mut rows: Vec<(&str, Option<Duration>, u64)> = Vec::new();
        match r.label {
            "raw" => rows.push(("all bytes read", r.done, all)),
            "store" => rows.push(("all calls in the store", r.done, r.stored)),
            _ => {
                rows.push(("all calls in the store", r.done, r.stored));
                rows.push(("all calls at the receiver", r.webhook, r.ids));
                rows.push(("all deliveries recorded", r.recorded, delivered));
            }
        }
        for (i, (until, t, reached)) in rows.into_iter().enumerate() {
            let per_s = |n: f64, t: Duration| group(n / t.as_secs_f64().max(1e-9));
            let paren = |v: String| {
                if r.label == "raw" {
                    format!("({v})")
                } else {
                    v
                }
            };
            let (time, calls, records, mbs) = match t {
                Some(t) => (
                    secs(Some(t)),
                    paren(per_s(all as f64, t)),
                    paren(per_s(corpus.records as f64, t)),
                    format!("{:.1}", r.bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9)),
                ),
                // Timed out: how far it got, and the average rate until then.
                None => (
                    format!(
                        "timeout: {} of {} in {:.1} s",
                        group(reached as f64),
                        group(all as f64),
                        r.elapsed.as_secs_f64()
                    ),
                    format!("{} (average)", per_s(reached as f64, r.elapsed)),
                    "–".into(),
                    "–".into(),
                ),
            };
            let ratio = match (t, raw) {
                (Some(t), Some(raw)) => format!("{:.0}", t.as_secs_f64() / raw.as_secs_f64()),
                _ => "–".into(),
            };
            let (rss, cpu) = if i == 0 {
                (
                    r.hwm_kb
                        .map_or_else(|| "–".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0)),
                    r.cpu.map_or_else(
                        || "–".into(),
                        |(u, sy)| format!("{:.2} + {:.2} s", u.as_secs_f64(), sy.as_secs_f64()),
                    ),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                s,
                "| {} | {until} | {time} | {calls} | {records} | {mbs} | {ratio} | {rss} | {cpu} |",
                if i == 0 { r.label } else { "" },
            );
        }
    }
    let _ = write!(
        s,
        "\n{} calls, {} records, {mb:.1} MB per run",
        group(corpus.calls as f64),
        group(corpus.records as f64)
    );
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}
