//! Retention as a user runs it, with real processes: a backfill far larger than
//! `CDR_RELAY_MAX_DB_MB` keeps the database under it (plus a stated margin) and still delivers
//! every call exactly once; huge rejects are kept truncated with their length and hash; bad
//! lines are logged rate-limited; the web page and the JSON status say what is kept.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use call_assembler::SmdrAssemblerConfig;
use call_assembler::feed::{Feed, SmdrFeed};
use common::Relay;

/// The size limit of the backfill test.
const CAP_MB: u64 = 2;

/// How far over the limit the database file may go: one commit. Calls are pruned only once
/// their sink has taken them; a backfill waits before each commit until the database is back
/// under the limit, but one commit holds up to 16 reads of 64 KiB (1 MiB of SMDR), about 15 MB
/// of stored calls with their indexes and deliveries, all of it undelivered when it lands.
const MARGIN_MB: u64 = 18;

/// Every capture of `fixtures/smdr/ccbc`, `copies` times, copy `k` with `(k + 1) * 10_000_000`
/// added to each Call ID (as the e2e bench builds its corpus): every copy is a set of new calls.
fn corpus(copies: usize) -> Vec<u8> {
    let dir = common::fixture("ccbc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let contents: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut out = Vec::new();
    for k in 0..copies {
        let offset = (k as u64 + 1) * 10_000_000;
        for c in &contents {
            for line in c.split_inclusive(|b| *b == b'\n') {
                shift_call_id(line, offset, &mut out);
            }
        }
    }
    out
}

/// `line` with `offset` added to its Call ID (field 10); other lines unchanged.
fn shift_call_id(line: &[u8], offset: u64, out: &mut Vec<u8>) {
    let commas: Vec<usize> = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b',')
        .map(|(i, _)| i)
        .take(10)
        .collect();
    if commas.len() < 10 {
        out.extend_from_slice(line);
        return;
    }
    let (a, b) = (commas[8], commas[9]);
    match std::str::from_utf8(&line[a + 1..b])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(id) => {
            out.extend_from_slice(&line[..=a]);
            out.extend_from_slice((id + offset).to_string().as_bytes());
            out.extend_from_slice(&line[b..]);
        }
        None => out.extend_from_slice(line),
    }
}

/// The ids of the calls a replay of `bytes` delivers: the relay's own feed, run to the end of
/// its input (open calls flushed there).
fn expected_ids(bytes: &[u8]) -> Vec<String> {
    let now = Instant::now();
    let mut feed = SmdrFeed::new("smdr", SmdrAssemblerConfig::default(), now);
    let mut ids = Vec::new();
    for chunk in bytes.chunks(64 * 1024) {
        feed.handle_input(now, chunk.to_vec());
        ids.extend(feed.take_commit().calls.into_iter().map(|c| c.id));
    }
    feed.handle_end(now);
    ids.extend(feed.take_commit().calls.into_iter().map(|c| c.id));
    ids
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_backfill_far_over_the_size_limit_stays_under_it_and_delivers_every_call_once() {
    let tmp = common::tempdir("retention-backfill");
    let input = tmp.join("backfill.smdr");
    let bytes = corpus(6);
    std::fs::write(&input, &bytes).unwrap();
    let want = expected_ids(&bytes);
    assert!(want.len() > 20_000, "{}", want.len());
    let db = tmp.join("relay.db");
    let wal = tmp.join("relay.db-wal");
    let out = tmp.join("calls.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args(["--http", "off", "--db"])
        .arg(&db)
        .arg("--replay")
        .arg(&input)
        .arg("--sink")
        .arg(format!("jsonl:{}", out.display()))
        .env("CDR_RELAY_MAX_DB_MB", CAP_MB.to_string())
        .env("RUST_LOG", "info")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The largest the files got while it ran.
    let (mut max_db, mut max_wal) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        max_db = max_db.max(file_len(&db));
        max_wal = max_wal.max(file_len(&wal));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the replay did not end");
        std::thread::sleep(Duration::from_millis(5));
    };
    let log = log.join().unwrap();
    assert!(status.success(), "{status}\n{log}");
    max_db = max_db.max(file_len(&db));

    // Every call delivered, once.
    let lines = std::fs::read_to_string(&out).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen
            .entry(v["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<&String> = seen.iter().filter(|(_, n)| **n > 1).map(|x| x.0).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<&String> = want.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} calls never delivered",
        missing.len()
    );
    assert_eq!(seen.len(), want.len());

    // The database stayed under the limit plus the margin, though what went through it is
    // many times the limit.
    let cap = CAP_MB << 20;
    let margin = MARGIN_MB << 20;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let kept: i64 = conn
        .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    let body_bytes: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(length(body)), 0) FROM calls",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let delivered_bytes: u64 = lines.len() as u64;
    eprintln!(
        "backfill: {} calls, {} MB of call JSON delivered; database file at most {} KB \
         (WAL {} KB), {kept} calls ({} KB of JSON) kept",
        want.len(),
        delivered_bytes >> 20,
        max_db >> 10,
        max_wal >> 10,
        body_bytes >> 10
    );
    assert!(
        delivered_bytes > 3 * (cap + margin) / 2,
        "the backfill must be far over the limit: {delivered_bytes}"
    );
    assert!(
        max_db <= cap + margin,
        "database file reached {max_db} bytes, over {CAP_MB} MB + {MARGIN_MB} MB"
    );
    assert!(
        usize::try_from(kept).unwrap() < want.len() / 4,
        "{kept} of {} calls kept",
        want.len()
    );
    assert!(log.contains("retention: pruned"), "{log}");
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[test]
fn huge_garbage_posts_are_kept_truncated_with_length_and_hash() {
    let tmp = common::tempdir("retention-rejects");
    let db = tmp.join("relay.db");
    let relay = Relay::start_bin(
        env!("CARGO_BIN_EXE_cdr-receiver"),
        &["--http", "127.0.0.1:0", "--db", db.to_str().unwrap()],
        &[],
        false,
        true,
    );
    let addr = relay.http.unwrap();
    // 8 MiB (the largest body taken) of garbage, ten times, each different.
    let mut bodies = Vec::new();
    for i in 0..10u8 {
        let mut body = vec![b'<'; 8 << 20];
        body[0] = b'a' + i;
        let (status, text) = request(addr, "POST", "/cdr", &body);
        assert_eq!(status, 400, "{text}");
        bodies.push(body);
    }
    // The web page and the JSON status say what is kept.
    let (status, page) = request(addr, "GET", "/", b"");
    assert_eq!(status, 200);
    assert!(page.contains("Keeping 30 days, 500 MB"), "{page}");
    let (status, text) = request(addr, "GET", "/api/v1/status", b"");
    assert_eq!(status, 200, "{text}");
    let status_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &status_json["retention"];
    assert_eq!(r["max_age_days"], 30, "{status_json}");
    assert_eq!(r["max_db_bytes"], 500u64 << 20, "{status_json}");
    assert!(r["db_size_bytes"].as_u64().unwrap() > 0, "{status_json}");
    let (_, metrics) = request(addr, "GET", "/metrics", b"");
    assert!(metrics.contains("cdr_relay_db_size_bytes{"), "{metrics}");
    let status = relay.terminate();
    assert!(status.success(), "{status}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(Vec<u8>, i64, String)> = conn
        .prepare("SELECT raw, raw_len, raw_sha256 FROM rejects ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 10);
    for ((raw, len, hash), body) in rows.iter().zip(&bodies) {
        assert_eq!(raw.as_slice(), &body[..cdr_sinks::rejects::REJECT_PREFIX]);
        assert_eq!(*len, 8 << 20);
        assert_eq!(*hash, cdr_sinks::rejects::sha256_hex(body));
    }
    drop(conn);
    let size = file_len(&db) + file_len(&tmp.join("relay.db-wal"));
    assert!(size < 2 << 20, "80 MiB of garbage took {size} bytes");
}

#[test]
fn a_flood_of_bad_lines_is_logged_rate_limited_and_counted() {
    let tmp = common::tempdir("retention-badlines");
    let input = tmp.join("bad.smdr");
    let mut bytes = Vec::new();
    for i in 0..500 {
        bytes.extend_from_slice(format!("garbage line {i}, not a record\r\n").as_bytes());
    }
    bytes.extend(std::fs::read(common::fixture("ccbc_tcp_split_stream_3chunks.txt")).unwrap());
    std::fs::write(&input, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args(["--http", "off", "--db"])
        .arg(tmp.join("relay.db"))
        .arg("--replay")
        .arg(&input)
        .arg("--sink")
        .arg(format!("jsonl:{}", tmp.join("calls.jsonl").display()))
        .env("RUST_LOG", "info")
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let one_by_one = log.matches("bad SMDR line kept").count();
    assert_eq!(one_by_one, 20, "{log}");
    assert!(log.contains("480 more bad inputs in the last"), "{log}");
    let conn = rusqlite::Connection::open(tmp.join("relay.db")).unwrap();
    let rejects: i64 = conn
        .query_row("SELECT COUNT(*) FROM rejects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rejects, 500, "every bad line is still kept");
}
