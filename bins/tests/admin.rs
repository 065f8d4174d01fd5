//! Retries an operator can rely on, with real processes on loopback: `Retry-After` capped at
//! the maximum retry delay, dead letters re-queued from the command line and the admin API (and
//! the page's buttons), a sink paused and resumed across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An HTTP request to the relay: the status, the `Location` header and the body.
async fn request(method: &str, url: &str, form: bool) -> (u16, String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if form {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn get_json(url: &str) -> serde_json::Value {
    let (status, _, body) = request("GET", url, false).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The webhook sink's entry of `/api/v1/sinks`.
async fn webhook_sink(http: std::net::SocketAddr) -> serde_json::Value {
    let v = get_json(&format!("http://{http}/api/v1/sinks")).await;
    v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == "webhook")
        .cloned()
        .unwrap_or_else(|| panic!("no webhook sink in {v}"))
}

/// The webhook sink's entry once `delivered` deliveries are recorded (the receiver answers
/// before the relay writes the outcome down), or after 10 s.
async fn settled(http: std::net::SocketAddr, delivered: u64) -> serde_json::Value {
    for _ in 0..200 {
        let sink = webhook_sink(http).await;
        if sink["delivered"].as_u64() == Some(delivered) {
            return sink;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    webhook_sink(http).await
}

/// Runs `smdr-relay` with `args` on `db` (the webhook configured) and returns (success, stdout,
/// stderr).
fn cli(db: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smdr-relay"))
        .args(["--db", db.to_str().unwrap(), "--http", "off"])
        .args(args)
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN")
        .env("WEBHOOK_URL", url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn webhook_id(r: &Received) -> String {
    r.headers["webhook-id"].to_str().unwrap().to_owned()
}

/// Every call id answered 200, with how many times.
fn delivered(rx: &Receiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rx.accepted() {
        *m.entry(webhook_id(&r)).or_default() += 1;
    }
    m
}

async fn wait_until(what: &str, within: Duration, relay: &Relay, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first `n` lines of the 34-field capture: each one a single-record call.
fn calls(n: usize) -> (Vec<Vec<u8>>, Vec<String>) {
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let lines: Vec<Vec<u8>> = fixture_lines(&bytes).into_iter().take(n).collect();
    let ids = expected_calls(&lines.concat())
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(ids.len(), n);
    (lines, ids)
}

async fn send(stream: &mut TcpStream, line: &[u8]) {
    stream.write_all(line).await.unwrap();
    stream.flush().await.unwrap();
}

/// A `503` with `Retry-After: 99999999999` (3,000 years), then `200`: the relay tries again
/// after the maximum retry delay (2 s here), not in the year 5200, and does not dead-letter it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_waits_only_the_maximum_delay() {
    let dir = tempdir("admin-retry-after");
    let rx = Receiver::start(None, 200).await;
    rx.script
        .lock()
        .unwrap()
        .queue
        .push_back((503, Some(("retry-after", "99999999999".into()))));
    let db = dir.join("relay.db");
    let relay = Relay::listening(
        &db,
        &[
            ("WEBHOOK_URL", &rx.url()),
            ("WEBHOOK_RETRY_DELAY", "1"),
            ("WEBHOOK_RETRY_MAX_DELAY", "2"),
        ],
        true,
    );
    let (lines, ids) = calls(1);
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    send(&mut pbx, &lines[0]).await;
    rx.wait_accepted(1, Duration::from_secs(20)).await;
    let seen = rx.received.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200],
        "{}",
        relay.log()
    );
    let waited = seen[1].at.duration_since(seen[0].at);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "waited {waited:?}"
    );
    assert_eq!(webhook_id(&seen[1]), ids[0]);
    let sink = settled(relay.http.unwrap(), 1).await;
    assert_eq!(
        (sink["delivered"].as_u64(), sink["dead"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(relay.terminate().success());
}

/// A `400` dead-letters a call at once. `--requeue-dead webhook` on the stopped relay's database
/// re-queues it (and an unknown sink is an error); the relay, started again, delivers it. On a
/// running relay, the admin API re-queues a sink's dead letters, or one by id, and the page's
/// button (a form) does too; each call is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_requeued_from_the_command_line_the_api_and_the_page() {
    let dir = tempdir("admin-requeue");
    let rx = Receiver::start(None, 200).await;
    let db = dir.join("relay.db");
    let env = [
        ("WEBHOOK_URL", rx.url()),
        ("WEBHOOK_RETRY_DELAY", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (lines, ids) = calls(4);
    let push = |status: u16| rx.script.lock().unwrap().queue.push_back((status, None));

    // Run 1: the first call is refused with a 400: a dead letter.
    push(400);
    let relay = Relay::listening(&db, &env, true);
    let http = relay.http.unwrap();
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    send(&mut pbx, &lines[0]).await;
    for _ in 0..200 {
        if webhook_sink(http).await["dead"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(webhook_sink(http).await["dead"], 1, "{}", relay.log());
    drop(pbx);
    assert!(relay.terminate().success());

    // The command line, on the stopped relay's database.
    let (ok, _, err) = cli(&db, &rx.url(), &["--requeue-dead", "nosuchsink"]);
    assert!(!ok);
    assert!(
        err.contains("unknown sink \"nosuchsink\"") && err.contains("webhook"),
        "{err}"
    );
    let (ok, out, err) = cli(&db, &rx.url(), &["--requeue-dead", "webhook"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1 dead letters of webhook re-queued");
    let (ok, out, _) = cli(&db, &rx.url(), &["--requeue-dead", "webhook"]);
    assert!(ok);
    assert_eq!(out.trim(), "0 dead letters of webhook re-queued");

    // Run 2 delivers it.
    let relay = Relay::listening(&db, &env, true);
    let http = relay.http.unwrap();
    wait_until(
        "the re-queued call delivered",
        Duration::from_secs(15),
        &relay,
        || delivered(&rx).contains_key(&ids[0]),
    )
    .await;

    // The second call dead-lettered, then re-queued by the admin API on the running relay.
    push(400);
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    send(&mut pbx, &lines[1]).await;
    wait_until(
        "a second dead letter",
        Duration::from_secs(15),
        &relay,
        || {
            rx.received
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.status == 400 && webhook_id(r) == ids[1])
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, body) = request(
        "GET",
        &format!("http://{http}/api/v1/admin/sinks/webhook/requeue"),
        false,
    )
    .await;
    assert_ne!(status, 200, "a GET does nothing: {body}");
    let (status, _, body) = request(
        "POST",
        &format!("http://{http}/api/v1/admin/sinks/nosuchsink/requeue"),
        false,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = request(
        "POST",
        &format!("http://{http}/api/v1/admin/sinks/webhook/requeue"),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["requeued"], 1, "{v}");
    wait_until(
        "the API's re-queued call delivered",
        Duration::from_secs(15),
        &relay,
        || delivered(&rx).contains_key(&ids[1]),
    )
    .await;

    // Two more dead letters; the page lists them with a button each; one re-queued by id, the
    // other by the page's form.
    push(400);
    push(400);
    send(&mut pbx, &lines[2]).await;
    send(&mut pbx, &lines[3]).await;
    wait_until(
        "two more dead letters",
        Duration::from_secs(15),
        &relay,
        || {
            rx.received
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.status == 400)
                .count()
                == 4
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, page) = request("GET", &format!("http://{http}/dead-letters"), false).await;
    assert_eq!(status, 200);
    for id in &ids[2..4] {
        let form = format!("/api/v1/admin/sinks/webhook/requeue?id={id}");
        assert!(page.contains(&form), "no button for {id} in {page}");
    }
    let (status, _, body) = request(
        "POST",
        &format!(
            "http://{http}/api/v1/admin/sinks/webhook/requeue?id={}",
            ids[2]
        ),
        false,
    )
    .await;
    assert_eq!(
        (status, body.contains("\"requeued\":1")),
        (200, true),
        "{body}"
    );
    let (status, location, _) = request(
        "POST",
        &format!(
            "http://{http}/api/v1/admin/sinks/webhook/requeue?id={}",
            ids[3]
        ),
        true,
    )
    .await;
    assert_eq!((status, location.as_str()), (303, "/dead-letters"));
    wait_until(
        "every call delivered",
        Duration::from_secs(15),
        &relay,
        || delivered(&rx).len() == 4,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = delivered(&rx);
    assert!(
        got.values().all(|n| *n == 1),
        "each delivered once: {got:?}"
    );
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    let sink = settled(http, 4).await;
    assert_eq!(
        (sink["delivered"].as_u64(), sink["dead"].as_u64()),
        (Some(4), Some(0))
    );
    assert!(relay.terminate().success());
}

/// A sink paused by the admin API delivers nothing: its calls stay pending (no attempt used,
/// none dead-lettered), the pause shows in `/api/v1/sinks`, the page and the metrics, and it
/// survives a restart. Resumed, every call goes out once. The command line pauses and resumes
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sink_keeps_its_calls_across_a_restart_until_resumed() {
    let dir = tempdir("admin-pause");
    let rx = Receiver::start(None, 200).await;
    let db = dir.join("relay.db");
    let env = [("WEBHOOK_URL", rx.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (lines, ids) = calls(3);

    let relay = Relay::listening(&db, &env, true);
    let http = relay.http.unwrap();
    let (status, _, body) = request(
        "POST",
        &format!("http://{http}/api/v1/admin/sinks/webhook/pause"),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"paused\":true"), "{body}");
    // Let the worker see it (it looks every second while running idle, at most 5 s).
    let metric = r#"cdr_relay_sink_paused{source="smdr",sink="webhook"} 1"#;
    for _ in 0..150 {
        let (_, _, m) = request("GET", &format!("http://{http}/metrics"), false).await;
        if m.lines().any(|l| l == metric) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, m) = request("GET", &format!("http://{http}/metrics"), false).await;
    assert!(m.lines().any(|l| l == metric), "{m}");
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    for line in &lines {
        send(&mut pbx, line).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rx.received.lock().unwrap().len(),
        0,
        "a paused sink sends nothing"
    );
    let sink = webhook_sink(http).await;
    assert_eq!(sink["paused"], true);
    assert_eq!(
        (sink["pending"].as_u64(), sink["dead"].as_u64()),
        (Some(3), Some(0)),
        "{sink}"
    );
    let (_, _, page) = request("GET", &format!("http://{http}/dead-letters"), false).await;
    assert!(page.contains("paused") && page.contains("/api/v1/admin/sinks/webhook/resume"));
    drop(pbx);
    assert!(relay.terminate().success());

    // The command line on the stopped relay: it is still paused.
    let (ok, out, err) = cli(&db, &rx.url(), &["--pause-sink", "webhook"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "webhook was already paused");

    // Restarted: still paused, nothing sent.
    let relay = Relay::listening(&db, &env, true);
    let http = relay.http.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.received.lock().unwrap().len(),
        0,
        "still paused after a restart"
    );
    let sink = webhook_sink(http).await;
    assert_eq!(sink["paused"], true);
    assert_eq!(sink["pending"].as_u64(), Some(3));

    // Resumed: each call goes out once.
    let (status, _, body) = request(
        "POST",
        &format!("http://{http}/api/v1/admin/sinks/webhook/resume"),
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "every call delivered",
        Duration::from_secs(15),
        &relay,
        || delivered(&rx).len() == 3,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received.lock().unwrap().len(), 3, "each call sent once");
    let mut want = ids.clone();
    want.sort();
    assert_eq!(delivered(&rx).keys().cloned().collect::<Vec<_>>(), want);
    let sink = webhook_sink(http).await;
    assert_eq!(sink["paused"], false);
    assert!(relay.terminate().success());

    // The command line pauses and resumes too.
    let (ok, out, _) = cli(&db, &rx.url(), &["--pause-sink", "webhook"]);
    assert!(ok);
    assert_eq!(out.trim(), "webhook paused");
    let (ok, out, _) = cli(&db, &rx.url(), &["--resume-sink", "webhook"]);
    assert!(ok);
    assert_eq!(out.trim(), "webhook resumed");
}
