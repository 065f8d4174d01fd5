//! Test helpers: a relay process, a scriptable webhook receiver, a test PBX, expected calls.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod ami;
/// Asterisk's books for a call from its CDR rows (shared with call-assembler's tests).
#[path = "../../../call-assembler/tests/common/books.rs"]
pub mod books;
pub mod db;
pub mod own_db;

/// The shared fixtures folder.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smdr")
        .join(rel)
}

/// The Asterisk capture folders that have a `cel.csv` (under `fixtures/asterisk`), in the
/// order they were recorded (by their first CEL row's time), as one Asterisk would have
/// written them: sources that follow tables by time read them in that order.
pub fn cel_captures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(ami::capture_dir(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cel.csv").exists())
        .collect();
    let first_time = |p: &PathBuf| -> f64 {
        let text = std::fs::read_to_string(p.join("cel.csv")).unwrap();
        let line = text.lines().next().unwrap_or_default();
        // `"EVENTTYPE","epoch.micro",...`
        line.split(',')
            .nth(1)
            .map(|t| t.trim_matches('"').parse().unwrap())
            .unwrap_or(0.0)
    };
    dirs.sort_by(|a, b| first_time(a).total_cmp(&first_time(b)));
    dirs
}

/// The capture folder `name` among [`cel_captures`] (the test fails when there is none).
pub fn cel_capture(name: &str) -> PathBuf {
    cel_captures()
        .into_iter()
        .find(|p| p.ends_with(name))
        .unwrap()
}

/// The values of a JSON-lines file, one a line (none when the file does not exist). A last
/// line without its newline is one the relay is still writing: left out.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A fresh temporary directory for one test.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The ids and bodies of the complete calls a fixture holds, as the assembler computes them.
pub fn expected_calls(bytes: &[u8]) -> Vec<serde_json::Value> {
    use call_assembler::{Output, SmdrAssembler, SmdrAssemblerConfig};
    let mut framer = smdr_parse::SmdrFramer::default();
    framer.push(bytes);
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let now = Instant::now();
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame() {
        if let smdr_parse::Frame::Line { line, .. } = f {
            if let Ok(r) = smdr_parse::SmdrRecord::parse(line) {
                asm.handle_record(now, &r);
            }
        }
        while let Some(o) = asm.poll_output() {
            if let Output::Call(c) = o {
                out.push(serde_json::to_value(&c).unwrap());
            }
        }
    }
    out
}

/// A running relay process; killed when dropped.
pub struct Relay {
    pub child: Child,
    pub smdr: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts `smdr-relay` with `args` and `envs` and waits until its listeners are up (those it
    /// has: the web server unless `--http off`, the SMDR listener in listen mode).
    pub fn start(args: &[&str], envs: &[(&str, &str)], wait_smdr: bool, wait_http: bool) -> Self {
        Self::start_bin(
            env!("CARGO_BIN_EXE_smdr-relay"),
            args,
            envs,
            wait_smdr,
            wait_http,
        )
    }

    /// Starts the relay binary `bin` (a path) like [`Relay::start`].
    pub fn start_bin(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        wait_smdr: bool,
        wait_http: bool,
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("SMDR_ADDR")
            .env_remove("SMDR_LISTEN")
            .env_remove("SMDR_WEBHOOK_URL")
            .env_remove("WEBHOOK_URL")
            .env_remove("AMI_HOST")
            .env_remove("AMI_PORT")
            .env_remove("AMI_USERNAME")
            .env_remove("AMI_PASSWORD")
            .env_remove("AMI_TLS")
            .env_remove("NATS_URL")
            .env("RUST_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn(cmd, wait_smdr, wait_http)
    }

    /// Starts `cmd` (a relay, with its arguments and environment as the caller set them) and
    /// waits for the listeners it is asked to (the addresses the relay prints).
    pub fn spawn(mut cmd: Command, wait_smdr: bool, wait_http: bool) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the relay");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("RELAY_LOG").is_some() {
                        eprintln!("relay: {line}");
                    }
                    if let Some(rest) = line.strip_prefix("cdr-relay: ") {
                        if let Some((what, addr)) = rest.split_once(" listening on ") {
                            let _ = tx.send((what.to_owned(), addr.parse::<SocketAddr>().unwrap()));
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut relay = Self {
            child,
            smdr: None,
            http: None,
            stderr: lines,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while (wait_smdr && relay.smdr.is_none()) || (wait_http && relay.http.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((what, addr)) if what == "smdr" => relay.smdr = Some(addr),
                Ok((what, addr)) if what == "http" => relay.http = Some(addr),
                Ok(_) => {}
                Err(_) => panic!(
                    "relay did not start: {:?}",
                    relay.stderr.lock().unwrap().join("\n")
                ),
            }
        }
        relay
    }

    /// A relay listening for the PBX on a free port, with its database at `db` and, with
    /// `web`, its web server on a free port.
    pub fn listening(db: &Path, envs: &[(&str, &str)], web: bool) -> Self {
        let db = db.to_str().unwrap();
        let http = if web { "127.0.0.1:0" } else { "off" };
        Self::start(
            &["--smdr-listen", "127.0.0.1:0", "--http", http, "--db", db],
            envs,
            true,
            web,
        )
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: hyper::Method,
    pub uri: hyper::Uri,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    pub status: u16,
}

/// What the receiver answers: a queue of (status, extra header) consumed per request, then the
/// default status.
#[derive(Debug, Default)]
pub struct Script {
    pub queue: VecDeque<(u16, Option<(&'static str, String)>)>,
    pub default: u16,
}

/// A webhook receiver on loopback that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free port (or on `addr`), answering `default` unless scripted otherwise.
    pub async fn start(addr: Option<SocketAddr>, default: u16) -> Self {
        let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script {
            queue: VecDeque::new(),
            default,
        }));
        let (r, s) = (received.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, s) = (r.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (r, s) = (r.clone(), s.clone());
                        async move {
                            let headers = req.headers().clone();
                            let (method, uri) = (req.method().clone(), req.uri().clone());
                            let body = req.into_body().collect().await?.to_bytes();
                            let (status, header) = {
                                let mut s = s.lock().unwrap();
                                let d = s.default;
                                s.queue.pop_front().unwrap_or((d, None))
                            };
                            r.lock().unwrap().push(Received {
                                method,
                                uri,
                                headers,
                                body,
                                at: Instant::now(),
                                status,
                            });
                            let mut resp =
                                Response::builder().status(StatusCode::from_u16(status).unwrap());
                            if let Some((k, v)) = header {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, hyper::Error>(resp.body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            script,
            task,
        }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Requests answered with a 2xx status.
    pub fn accepted(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    /// Waits until `n` requests were accepted (or panics after `timeout`).
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Verifies a Standard Webhooks signature independently of the relay's code.
pub fn verify_signature(secret_b64: &str, r: &Received) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret_b64).unwrap();
    let id = r.headers["webhook-id"].to_str().unwrap();
    let ts = r.headers["webhook-timestamp"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    r.headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

/// Splits `bytes` into chunks of random sizes (1..=max) from a seeded generator.
pub fn random_chunks(bytes: &[u8], seed: u64, max: usize) -> Vec<&[u8]> {
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (next() as usize % max + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// The lines of a fixture, each with its CRLF.
pub fn fixture_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A test PBX: writes `lines` to connections obtained from `connect`, in random chunk sizes.
/// Every `drop_every` lines it cuts the connection in the middle of a line, reconnects, and
/// sends that line again from its start (as IP Office does with the record it could not send).
pub async fn pbx_send<F, Fut>(lines: &[Vec<u8>], mut connect: F, seed: u64, drop_every: usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = tokio::net::TcpStream>,
{
    use tokio::io::AsyncWriteExt;
    let mut stream = connect().await;
    let mut rng = seed | 1;
    for (i, line) in lines.iter().enumerate() {
        if drop_every > 0 && i > 0 && i % drop_every == 0 && line.len() > 2 {
            // Half a line, then the connection drops.
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let cut = 1 + (rng >> 33) as usize % (line.len() - 1);
            stream.write_all(&line[..cut]).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(stream);
            stream = connect().await;
        }
        for chunk in random_chunks(line, seed.wrapping_add(i as u64), 40) {
            stream.write_all(chunk).await.unwrap();
        }
    }
    stream.flush().await.unwrap();
    // Let the relay read everything before the connection closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// `GET path` on a relay's web server at `addr`, `Connection: close`: the whole response, head
/// and body (`None` while nothing answers there).
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
