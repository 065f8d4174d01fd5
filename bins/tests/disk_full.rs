//! A full disk under a running `smdr-relay`: its database on a small tmpfs this test mounts
//! (as root; skipped with a message where mounting is not permitted), a test PBX streaming a
//! capture over loopback, the disk filled (a filler file) before the start and again in the
//! middle of the stream, then freed. Every call the PBX sent is delivered exactly once and the
//! process never exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A tmpfs mounted for the test; unmounted when dropped, also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Self(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` (a new file there) until it has no room left.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

async fn http_get(url: &str) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of a metric line starting with `name` in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The calls the JSONL sink wrote, by id, with how many times each.
fn delivered(out: &Path) -> BTreeMap<String, (usize, serde_json::Value)> {
    let mut by_id: BTreeMap<String, (usize, serde_json::Value)> = BTreeMap::new();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        by_id.entry(id).or_insert((0, v)).0 += 1;
    }
    by_id
}

async fn send_paced(stream: &mut TcpStream, lines: &[Vec<u8>]) {
    for line in lines {
        stream.write_all(line).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stream.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_the_source_and_loses_nothing() {
    let dir = tempdir("disk-full");
    let mnt = dir.join("mnt");
    // Only root may mount; elsewhere the test says why it did nothing.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!(
            "SKIPPED a_full_disk_holds_the_source_and_loses_nothing: needs root to mount a tmpfs"
        );
        return;
    }
    let tmpfs = match Tmpfs::mount(&mnt, "16m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "SKIPPED a_full_disk_holds_the_source_and_loses_nothing: cannot mount a tmpfs: {e}"
            );
            return;
        }
    };
    let db = mnt.join("relay.db");
    let filler = mnt.join("filler");
    let out = dir.join("calls.jsonl");

    // 1. The disk is full before the start: no database can be created, so the relay does not
    //    listen for the PBX (nothing is read that could not be kept) and does not exit; it
    //    starts once space returns.
    fill(&filler);
    let freed_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let freer = {
        let (filler, freed_at) = (filler.clone(), freed_at.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            std::fs::remove_file(&filler).unwrap();
            *freed_at.lock().unwrap() = Some(Instant::now());
        })
    };
    let relay = {
        let (db, out) = (db.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            Relay::start(
                &[
                    "--smdr-listen",
                    "127.0.0.1:0",
                    "--http",
                    "127.0.0.1:0",
                    "--db",
                    db.to_str().unwrap(),
                    "--sink",
                    &format!("jsonl:{}", out.display()),
                ],
                &[("RUST_LOG", "info")],
                true,
                true,
            )
        })
        .await
        .unwrap()
    };
    let listening_at = Instant::now();
    freer.join().unwrap();
    let freed = freed_at.lock().unwrap().unwrap();
    assert!(
        listening_at >= freed,
        "the SMDR listener started before the database could be opened: {}",
        relay.log()
    );
    assert!(
        relay.log().contains("cannot open the database"),
        "{}",
        relay.log()
    );
    let base = format!("http://{}", relay.http.unwrap());

    // 2. Calls flow; then the disk fills in the middle of the stream, and the PBX keeps
    //    sending.
    let bytes = std::fs::read(fixture("ccbc/ccbc_2019-10-31_to_11-01_sip-trunk.txt")).unwrap();
    let expected = expected_calls(&bytes);
    assert!(expected.len() > 300, "{}", expected.len());
    let lines = fixture_lines(&bytes);
    let (first, rest) = lines.split_at(lines.len() / 3);
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    send_paced(&mut pbx, first).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&out).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered: {}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fill(&filler);
    let sender = {
        let rest = rest.to_vec();
        tokio::spawn(async move {
            send_paced(&mut pbx, &rest).await;
            pbx
        })
    };
    // Commits fail: the relay holds its source, says so, and is not ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = http_get(&format!("{base}/metrics")).await.map(|r| r.1);
        let failures = metrics
            .as_deref()
            .and_then(|m| metric(m, "cdr_relay_commit_failures_total"));
        if failures.is_some_and(|n| n > 0.0) {
            let m = metrics.unwrap_or_default();
            assert_eq!(metric(&m, "cdr_relay_intake_stalled"), Some(1.0), "{m}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no commit failed on the full disk: {}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, why) = http_get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("intake stalled"), "{why}");
    // Keep it full a while longer, with the PBX still sending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut relay = relay;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay exited on a full disk: {}",
        relay.log()
    );

    // 3. Space returns: everything is committed and delivered, once.
    std::fs::remove_file(&filler).unwrap();
    let pbx = sender.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = delivered(&out);
        if expected
            .iter()
            .all(|c| got.contains_key(c["id"].as_str().unwrap()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} calls delivered: {}",
            got.len(),
            expected.len(),
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = delivered(&out);
    let want: BTreeMap<&str, &serde_json::Value> = expected
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    for (id, (n, body)) in &got {
        let Some(w) = want.get(id.as_str()) else {
            panic!("unexpected call {id}: {body}");
        };
        assert_eq!(*n, 1, "call {id} delivered {n} times");
        assert_eq!(body, *w, "body of {id}");
    }
    assert_eq!(got.len(), want.len());
    let metrics = http_get(&format!("{base}/metrics")).await.unwrap().1;
    assert_eq!(
        metric(&metrics, "cdr_relay_intake_stalled"),
        Some(0.0),
        "{metrics}"
    );
    let (status, why) = http_get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(status, 200, "{why}");
    eprintln!(
        "commit failures: {:?}, worker restarts: {:?}",
        metric(&metrics, "cdr_relay_commit_failures_total"),
        metric(&metrics, "cdr_relay_worker_restarts_total")
    );
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay exited: {}",
        relay.log()
    );
    drop(pbx);
    assert!(relay.terminate().success());
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request on a fresh connection: the whole answer, head and body.
fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn cms_posts_get_503_with_retry_after_while_the_disk_is_full() {
    let dir = tempdir("disk-full-cms");
    let mnt = dir.join("mnt");
    let tmpfs = match Tmpfs::mount(&mnt, "16m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "SKIPPED cms_posts_get_503_with_retry_after_while_the_disk_is_full: cannot mount a tmpfs (needs root): {e}"
            );
            return;
        }
    };
    let db = mnt.join("relay.db");
    let filler = mnt.join("filler");
    let relay = Relay::start_bin(
        env!("CARGO_BIN_EXE_cdr-receiver"),
        &["--http", "127.0.0.1:0", "--db", db.to_str().unwrap()],
        &[("CDR_RECEIVER_BODY_TIMEOUT", "2")],
        false,
        true,
    );
    let addr = relay.http.unwrap();
    let posts: Vec<Vec<u8>> = (1..=10)
        .map(|i| {
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("../fixtures/cms/meeting_3legs/posts/{i:02}.xml")),
            )
            .unwrap()
        })
        .collect();
    for body in &posts[..5] {
        assert_eq!(status_of(&raw_request(addr, "POST", "/cdr", body)), 200);
    }
    fill(&filler);
    // Not committed within its wait: CMS is told to come back, not told it was kept.
    for _ in 0..2 {
        let answer = raw_request(addr, "POST", "/cdr", &posts[5]);
        assert_eq!(status_of(&answer), 503, "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 10"),
            "{answer}"
        );
    }
    let mut relay = relay;
    assert!(relay.child.try_wait().unwrap().is_none(), "{}", relay.log());
    std::fs::remove_file(&filler).unwrap();
    // CMS resends; then the rest of the meeting.
    for body in &posts[5..] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = raw_request(addr, "POST", "/cdr", body);
            if status_of(&answer) == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}\n{}", relay.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let answer = raw_request(addr, "GET", "/api/v1/calls", b"");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let calls: serde_json::Value = serde_json::from_str(body).unwrap();
    let calls = calls["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "one meeting, stored once: {calls:?}");
    assert_eq!(calls[0]["complete"], true, "{calls:?}");
    assert!(relay.terminate().success());
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&dir);
}
