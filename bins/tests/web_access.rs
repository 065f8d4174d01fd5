//! The web server left running on a real network (issue 13, items 1, 7 and the web half of 8),
//! against real relay processes on loopback: access control and the refusal to serve calls
//! openly on a public address; idle connections that must not starve `/healthz`, and a header
//! deadline counted from the accept; a call of 130,000 records served a page at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use call_assembler::{Call, Output, SmdrAssembler, SmdrAssemblerConfig};
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Batch, Outbox};
use common::*;

/// One HTTP/1.1 exchange (`Connection: close`): status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_request(addr, method, path, headers, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 4 + size..];
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `smdr-relay --hash-password` with `password` on its standard input.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains(password));
    phc
}

/// Runs a relay binary that must refuse to start: its exit status and what it printed.
fn refused(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .env_remove("CDR_RELAY_HTTP")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(!status.success(), "it started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} started serving instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address a relay printed for `what` (`receiver`, `http`, ...), waited for.
fn printed(relay: &Relay, what: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("cdr-relay: {what} listening on ");
    loop {
        if let Some(addr) = relay
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        {
            let addr: SocketAddr = addr.parse().unwrap();
            return SocketAddr::from(([127, 0, 0, 1], addr.port()));
        }
        assert!(
            Instant::now() < deadline,
            "no {what} listener: {}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Item 1: no login anywhere, and nothing warned. Now: bound to a public address with no
/// access configured, every relay refuses to start and names the settings; with access
/// configured, pages, API, dead letters and metrics need read, admin paths and methods need
/// admin, health stays open; a public read-only page serves reads only; `cdr-receiver` can
/// take `POST /cdr` on its own public listener while the page stays on loopback.
#[test]
fn access_is_required_and_a_public_bind_without_it_is_refused() {
    let dir = tempdir("web-access");
    let db = dir.join("relay.db");
    let db_s = db.to_str().unwrap();

    // A public bind with no access configured: refused, with what to set.
    for bin in [
        env!("CARGO_BIN_EXE_smdr-relay"),
        env!("CARGO_BIN_EXE_cdr-receiver"),
    ] {
        let err = refused(
            bin,
            &[],
            &[
                ("CDR_RELAY_HTTP", "0.0.0.0:0"),
                ("SMDR_LISTEN", "127.0.0.1:0"),
                ("CDR_RELAY_DB", db_s),
            ],
        );
        for setting in [
            "CDR_RELAY_READ_TOKENS",
            "CDR_RELAY_USERS",
            "--hash-password",
            "CDR_RELAY_PUBLIC_READ",
        ] {
            assert!(err.contains(setting), "{bin}: {err}");
        }
    }

    // Access configured: tokens and users (the hashes from --hash-password).
    let users = format!(
        "ann:admin:{} bob:read:{}",
        hash("ann's password"),
        hash("bob's password")
    );
    let read_token = "read-token-0123456789abcdef";
    let admin_token = "admin-token-0123456789abcdef";
    let relay = Relay::start(
        &[
            "--smdr-listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--db",
            db_s,
        ],
        &[
            ("CDR_RELAY_READ_TOKENS", read_token),
            ("CDR_RELAY_ADMIN_TOKENS", admin_token),
            ("CDR_RELAY_USERS", &users),
        ],
        true,
        true,
    );
    let web = SocketAddr::from(([127, 0, 0, 1], relay.http.unwrap().port()));
    {
        let mut pbx = TcpStream::connect(relay.smdr.unwrap()).unwrap();
        pbx.write_all(&std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap())
            .unwrap();
    }
    let bob = basic("bob", "bob's password");
    let ann = basic("ann", "ann's password");
    let bearer_read = format!("Bearer {read_token}");
    let bearer_admin = format!("Bearer {admin_token}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let some_id = loop {
        let r = request(web, "GET", "/api/v1/calls", &[("Authorization", &bob)]);
        assert_eq!(r.status, 200, "{}", r.text());
        if let Some(id) = r.json()["calls"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no call stored");
        std::thread::sleep(Duration::from_millis(100));
    };
    let call_path = format!("/calls/{some_id}");
    let api_call_path = format!("/api/v1/calls/{some_id}");
    let read_paths = [
        "/",
        call_path.as_str(),
        "/api/v1/calls",
        api_call_path.as_str(),
        "/api/v1/dead-letters",
        "/api/v1/records/1",
        "/api/v1/schema",
        "/metrics",
    ];
    for path in read_paths {
        let r = request(web, "GET", path, &[]);
        assert_eq!(r.status, 401, "{path} without credentials: {}", r.text());
        let challenges = r.header("www-authenticate");
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic realm=")),
            "{path}: {challenges:?}"
        );
        assert!(!r.text().contains(&some_id), "{path} leaked a call");
        for auth in [&bob, &ann, &bearer_read, &bearer_admin] {
            let r = request(web, "GET", path, &[("Authorization", auth)]);
            assert_eq!(r.status, 200, "{path} with {auth}: {}", r.text());
        }
        for wrong in [
            basic("bob", "ann's password"),
            basic("eve", "bob's password"),
            "Bearer read-token-0123456789abcdeX".to_owned(),
            "Bearer short".to_owned(),
            "Basic !!!".to_owned(),
        ] {
            let r = request(web, "GET", path, &[("Authorization", &wrong)]);
            assert_eq!(r.status, 401, "{path} with {wrong}");
        }
    }
    let r = request(web, "GET", &call_path, &[("Authorization", &bob)]);
    assert!(r.text().contains(&some_id));
    // The published call schema, as committed, to readers.
    let r = request(web, "GET", "/api/v1/schema", &[("Authorization", &bob)]);
    assert_eq!(r.header("content-type"), ["application/schema+json"]);
    let committed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/cdr-relay.call.v1.json"),
    )
    .unwrap();
    assert_eq!(r.body, committed);
    assert_eq!(r.json()["title"], "cdr-relay.call.v1");
    // Health stays open.
    assert_eq!(request(web, "GET", "/healthz", &[]).status, 200);
    assert_ne!(request(web, "GET", "/readyz", &[]).status, 401);
    // Admin: under /api/v1/admin/ or any method but GET.
    for (method, path) in [
        ("POST", "/api/v1/admin/anything"),
        ("DELETE", "/api/v1/calls"),
    ] {
        assert_eq!(
            request(web, method, path, &[]).status,
            401,
            "{method} {path}"
        );
        for reader in [&bob, &bearer_read] {
            let r = request(web, method, path, &[("Authorization", reader)]);
            assert_eq!(r.status, 403, "{method} {path} as a reader");
        }
        for admin in [&ann, &bearer_admin] {
            let r = request(web, method, path, &[("Authorization", admin)]);
            assert!(
                ![401, 403].contains(&r.status),
                "{method} {path} as admin: {}",
                r.status
            );
        }
    }
    drop(relay);

    // A public read-only page, by explicit choice: reads open, administration disabled.
    let relay = Relay::start(
        &[
            "--smdr-listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--db",
            db_s,
        ],
        &[("CDR_RELAY_PUBLIC_READ", "true")],
        true,
        true,
    );
    let web = SocketAddr::from(([127, 0, 0, 1], relay.http.unwrap().port()));
    assert_eq!(request(web, "GET", "/api/v1/calls", &[]).status, 200);
    assert_eq!(request(web, "GET", &call_path, &[]).status, 200);
    let r = request(web, "POST", "/api/v1/admin/anything", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("CDR_RELAY_ADMIN_TOKENS"), "{}", r.text());
    drop(relay);

    // cdr-receiver: CMS posts on a public listener of their own, the page on loopback, open.
    let rdb = dir.join("receiver.db");
    let relay = Relay::start_bin(
        env!("CARGO_BIN_EXE_cdr-receiver"),
        &["--http", "127.0.0.1:0", "--db", rdb.to_str().unwrap()],
        &[("CDR_RECEIVER_LISTEN", "0.0.0.0:0")],
        false,
        true,
    );
    let receiver = printed(&relay, "receiver");
    let page = relay.http.unwrap();
    assert_ne!(receiver.port(), page.port());
    assert_eq!(request(page, "GET", "/api/v1/calls", &[]).status, 200);
    for path in ["/", "/api/v1/calls", "/metrics", "/api/v1/dead-letters"] {
        let r = request(receiver, "GET", path, &[]);
        assert_eq!(r.status, 404, "{path} on the receiver's listener");
    }
    assert_eq!(request(receiver, "GET", "/healthz", &[]).status, 200);
    let post = request(receiver, "POST", "/cdr", &[("Content-Type", "text/xml")]);
    assert!(
        ![404, 401, 403, 405].contains(&post.status),
        "POST /cdr on the receiver's listener: {} {}",
        post.status,
        post.text()
    );
    assert_eq!(request(page, "POST", "/cdr", &[]).status, 405);
}

/// Item 7: 256 sockets that send nothing took every slot for two minutes (the header timeout
/// started at the first byte). Now 300 of them leave `/healthz` and `POST /cdr` answering within
/// a second, and
/// a socket that sends nothing is closed at the header deadline counted from its accept.
#[test]
fn idle_connections_never_keep_health_out() {
    let dir = tempdir("web-idle");
    // cdr-receiver: CMS posts and the page on one web server.
    let relay = Relay::start_bin(
        env!("CARGO_BIN_EXE_cdr-receiver"),
        &[
            "--http",
            "127.0.0.1:0",
            "--db",
            dir.join("relay.db").to_str().unwrap(),
        ],
        &[],
        false,
        true,
    );
    let web = relay.http.unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(web).unwrap());
    }
    // Let the server accept them all.
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..5 {
        let started = Instant::now();
        let r = try_request(web, "GET", "/healthz", &[], Duration::from_secs(1));
        let took = started.elapsed();
        let r = r.unwrap_or_else(|e| panic!("round {round}: /healthz failed after {took:?}: {e}"));
        assert_eq!(r.status, 200);
        assert!(took < Duration::from_secs(1), "round {round}: {took:?}");
        // CMS still gets an answer (an empty body is not a batch: 400, kept as a reject).
        let started = Instant::now();
        let r = try_request(web, "POST", "/cdr", &[], Duration::from_secs(1));
        let took = started.elapsed();
        let r = r.unwrap_or_else(|e| panic!("round {round}: POST /cdr failed after {took:?}: {e}"));
        assert!(r.status < 500, "round {round}: POST /cdr {}", r.status);
        assert!(took < Duration::from_secs(1), "round {round}: {took:?}");
        // More idle sockets keep coming.
        for _ in 0..20 {
            idle.push(TcpStream::connect(web).unwrap());
        }
    }
    drop(idle);
    drop(relay);

    // The header deadline counts from the accept: a socket that sends nothing is closed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = cdr_relay::web::WebState {
            db: dir.join("none.db"),
            metrics: cdr_relay::ops::metrics::Metrics::new("smdr"),
            title: "t".into(),
            receiver: None,
            tls: None,
            access: Default::default(),
            receiver_only: false,
        };
        let options = cdr_relay::web::WebOptions {
            header_read_timeout: Duration::from_millis(400),
            ..Default::default()
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(cdr_relay::web::serve_with(
            listener, state, options, stop_rx,
        ));
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent socket stayed open for {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = stop.send(true);
        let _ = server.await;
    });
}

/// The calls of the SMDR fixture, as the relay assembles them.
fn fixture_calls() -> Vec<Call> {
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let mut asm = SmdrAssembler::new(SmdrAssemblerConfig::default());
    let now = Instant::now();
    let mut calls = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| l.len() > 2) {
        if let Ok(r) = smdr_parse::SmdrRecord::parse(line) {
            asm.handle_record(now, &r);
        }
    }
    asm.flush(now);
    while let Some(o) = asm.poll_output() {
        if let Output::Call(c) = o {
            calls.push(c);
        }
    }
    calls
}

/// Stores one call of `n` records (record `i` rings `i` seconds) beside a few ordinary ones.
fn store_long_call(db: &Path, n: u32) -> String {
    let mut calls = fixture_calls();
    calls.truncate(5);
    let mut long = calls[0].clone();
    let record = long.records[0].clone();
    long.records = (0..n)
        .map(|i| {
            let mut r = record.clone();
            r.ring_time = i;
            r
        })
        .collect();
    long.id = format!("{}-long", long.id);
    let id = long.id.clone();
    calls.push(long);
    let mut outbox = Outbox::open(db, &[]).unwrap();
    outbox
        .commit(
            &Batch {
                calls,
                ..Batch::default()
            },
            now_ms(),
        )
        .unwrap();
    id
}

/// The web half of item 8: a call of 130,000 records gave a 281 MB page and 1.3 GB of RSS. Now
/// its page, its API and the list each answer in a few MB, a page of records at a time, and
/// the pages reach the last record.
#[test]
fn a_call_of_130000_records_is_served_a_page_at_a_time() {
    const N: u32 = 130_000;
    const BOUND: usize = 4 << 20;
    let dir = tempdir("web-long-call");
    let db = dir.join("relay.db");
    let id = store_long_call(&db, N);
    let relay = Relay::listening(&db, &[], true);
    let web = relay.http.unwrap();
    let enc =
        percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC).to_string();

    // The page: one page of records with links, the last page reached by them.
    let r = request(web, "GET", &format!("/calls/{enc}"), &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() < BOUND,
        "the call page is {} bytes",
        r.body.len()
    );
    let html = r.text();
    assert!(html.contains("items 1–200 of 130000"), "no pager");
    let last = html
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("page=650"))
        .expect("a link to the last page")
        .replace("&amp;", "&");
    let r = request(web, "GET", &last, &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.len() < BOUND);
    assert!(r.text().contains("items 129801–130000 of 130000"));
    assert!(r.text().contains("129999"), "the last record's ring time");

    // The API: a page of records, the totals, the last page.
    let r = request(web, "GET", &format!("/api/v1/calls/{enc}"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.len() < BOUND, "{} bytes", r.body.len());
    let call = r.json();
    assert_eq!(call["records"].as_array().unwrap().len(), 200);
    assert_eq!(call["paged"]["totals"]["records"], N);
    assert_eq!(call["paged"]["pages"], 650);
    let r = request(
        web,
        "GET",
        &format!("/api/v1/calls/{enc}?page=650&per_page=5000"),
        &[],
    );
    let call = r.json();
    let records = call["records"].as_array().unwrap();
    assert_eq!(records.len(), 200, "per_page is capped at 200");
    assert_eq!(records[199]["ring"], N - 1);
    assert_eq!(records[0]["ring"], N - 200);

    // The list: per_page capped, the long call cut, the response bounded.
    let r = request(web, "GET", "/api/v1/calls?per_page=500", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.len() < BOUND, "the list is {} bytes", r.body.len());
    let list = r.json();
    assert_eq!(list["per_page"], 200);
    let listed = list["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("the long call is listed");
    assert_eq!(listed["paged"]["totals"]["records"], N);
    assert!(listed["records"].as_array().unwrap().len() <= 200);
    // The relay's peak memory: the stored body is read once a request, never a page of it whole.
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.child.id()));
    if let Some(kb) = status.ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    }) {
        eprintln!("relay peak RSS {} MB", kb / 1024);
        assert!(kb < 700 * 1024, "peak RSS {} MB", kb / 1024);
    }
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
