//! `smdr-relay` end to end on loopback: a test PBX, the relay process, a webhook receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn by_id(received: &[Received]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut m: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in received {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        m.entry(v["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(v);
    }
    m
}

/// Every expected call arrived exactly once by id, with the assembler's body.
fn assert_exactly_once(received: &[Received], expected: &[serde_json::Value]) {
    let got = by_id(received);
    let want: BTreeMap<String, &serde_json::Value> = expected
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_owned(), c))
        .collect();
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} calls missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected calls {extra:?}");
    for (id, bodies) in &got {
        assert_eq!(
            bodies.len(),
            1,
            "call {id} delivered {} times",
            bodies.len()
        );
        assert_eq!(&bodies[0], want[id], "body of {id}");
    }
}

async fn stream_to_listening_relay(seed: u64) {
    let dir = tempdir(&format!("listen-{seed}"));
    let rx = Receiver::start(None, 200).await;
    let db = dir.join("relay.db");
    let relay = Relay::listening(
        &db,
        &[
            ("SMDR_WEBHOOK_URL", &rx.url()),
            ("SMDR_WEBHOOK_KEY", "Bearer relay-test"),
            ("SMDR_WEBHOOK_SECRET", &format!("whsec_{SECRET}")),
        ],
        true,
    );
    let bytes = std::fs::read(fixture("ccbc/ccbc_2017-12-16_transfers.txt")).unwrap();
    let expected = expected_calls(&bytes);
    assert_eq!(expected.len(), 227);
    let addr = relay.smdr.unwrap();
    pbx_send(
        &fixture_lines(&bytes),
        || async move { TcpStream::connect(addr).await.unwrap() },
        seed,
        37,
    )
    .await;
    let got = rx
        .wait_accepted(expected.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = rx.accepted();
    assert_eq!(got.len(), got_all.len(), "{}", relay.log());
    assert_exactly_once(&got_all, &expected);
    for r in &got_all {
        assert_eq!(r.headers["authorization"], "Bearer relay-test");
        assert_eq!(r.headers["webhook-id"], r.headers["idempotency-key"]);
        assert!(verify_signature(SECRET, r), "signature of {:?}", r.headers);
    }
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_connects_in_random_chunks_and_drops_mid_line() {
    stream_to_listening_relay(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_connects_to_a_listening_pbx_and_reconnects() {
    let dir = tempdir("connect");
    let rx = Receiver::start(None, 200).await;
    let pbx = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx.local_addr().unwrap().to_string();
    let db = dir.join("relay.db");
    let relay = Relay::start(
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[("SMDR_ADDR", &pbx_addr), ("SMDR_WEBHOOK_URL", &rx.url())],
        false,
        false,
    );
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let expected = expected_calls(&bytes);
    assert_eq!(expected.len(), 305);
    let pbx = std::sync::Arc::new(pbx);
    pbx_send(
        &fixture_lines(&bytes),
        || {
            let pbx = pbx.clone();
            async move { pbx.accept().await.unwrap().0 }
        },
        11,
        50,
    )
    .await;
    rx.wait_accepted(expected.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exactly_once(&rx.accepted(), &expected);
    assert!(relay.terminate().success());
}

/// Sends one line and waits until the receiver has seen `n` requests in all.
async fn send_and_wait(
    stream: &mut TcpStream,
    line: &[u8],
    rx: &Receiver,
    n: usize,
    relay: &Relay,
) -> Vec<Received> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(line).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = rx.received.lock().unwrap().clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(std::time::Instant::now() < deadline, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_honoured_or_dead_lettered() {
    let dir = tempdir("failures");
    let rx = Receiver::start(None, 200).await;
    let db = dir.join("relay.db");
    let relay = Relay::listening(
        &db,
        &[
            ("SMDR_WEBHOOK_URL", &rx.url()),
            ("SMDR_WEBHOOK_RETRY_DELAY", "1"),
        ],
        true,
    );
    // One single-record call at a time, so each scripted answer goes to a known call.
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let lines = fixture_lines(&bytes);
    let mut stream = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    let id = |r: &Received| r.headers["webhook-id"].to_str().unwrap().to_owned();

    // 500, then 200: retried, under the same id, with the same body.
    rx.script.lock().unwrap().queue.push_back((500, None));
    let seen = send_and_wait(&mut stream, &lines[0], &rx, 2, &relay).await;
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200]
    );
    assert_eq!((id(&seen[0]), &seen[0].body), (id(&seen[1]), &seen[1].body));

    // 429 with Retry-After: 2, then 200: the retry waits at least 2 s.
    rx.script
        .lock()
        .unwrap()
        .queue
        .push_back((429, Some(("retry-after", "2".into()))));
    let seen = send_and_wait(&mut stream, &lines[1], &rx, 4, &relay).await;
    assert_eq!(
        seen[2..].iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert_eq!(id(&seen[2]), id(&seen[3]));
    assert!(
        seen[3].at.duration_since(seen[2].at) >= Duration::from_secs(2),
        "Retry-After honoured"
    );

    // 400: a dead letter at once, never retried.
    rx.script.lock().unwrap().queue.push_back((400, None));
    let seen = send_and_wait(&mut stream, &lines[2], &rx, 5, &relay).await;
    assert_eq!(seen[4].status, 400);
    let dead_id = id(&seen[4]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.received.lock().unwrap().len(), 5, "a 400 is not retried");

    // The dead letter is visible in the API and the metrics.
    let http = relay.http.unwrap();
    let dead = get(&format!("http://{http}/api/v1/dead-letters")).await;
    assert!(dead.contains(&dead_id), "{dead}");
    let metrics = get(&format!("http://{http}/metrics")).await;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("sink=\"webhook\""))
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
            .to_owned()
    };
    assert!(
        line("cdr_relay_outbox_dead{").ends_with(" 1.0")
            || line("cdr_relay_outbox_dead{").ends_with(" 1")
    );
    assert!(line("cdr_relay_deliveries_total{").contains("webhook"));
    let call = get(&format!("http://{http}/api/v1/calls/{dead_id}")).await;
    assert!(call.contains("\"dead\""), "{call}");
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_the_whole_first_run() {
    let dir = tempdir("down");
    let db = dir.join("relay.db");
    // Reserve a port for the receiver, then free it: nothing listens there during run 1.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{port}/hook");
    let bytes = std::fs::read(fixture("ccbc/ccbc_2017-12-16_transfers.txt")).unwrap();
    let expected = expected_calls(&bytes);
    {
        let relay = Relay::listening(
            &db,
            &[
                ("SMDR_WEBHOOK_URL", &url),
                ("SMDR_WEBHOOK_RETRY_DELAY", "1"),
            ],
            false,
        );
        let addr = relay.smdr.unwrap();
        pbx_send(
            &fixture_lines(&bytes),
            || async move { TcpStream::connect(addr).await.unwrap() },
            3,
            0,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(relay.terminate().success());
    }
    let rx = Receiver::start(Some(port), 200).await;
    let relay = Relay::listening(
        &db,
        &[
            ("SMDR_WEBHOOK_URL", &url),
            ("SMDR_WEBHOOK_RETRY_DELAY", "1"),
        ],
        false,
    );
    rx.wait_accepted(expected.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exactly_once(&rx.accepted(), &expected);
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing() {
    let dir = tempdir("kill9");
    let db = dir.join("relay.db");
    let rx = Receiver::start(None, 200).await;
    let bytes = std::fs::read(fixture("ccbc/ccbc_2017-11-19_to_20_six-record-call.txt")).unwrap();
    let expected = expected_calls(&bytes);
    let lines = fixture_lines(&bytes);
    let mut sent = 0usize;
    let mut round = 0u64;
    while sent < lines.len() {
        round += 1;
        let relay = Relay::listening(
            &db,
            &[
                ("SMDR_WEBHOOK_URL", &rx.url()),
                ("SMDR_WEBHOOK_RETRY_DELAY", "1"),
            ],
            true,
        );
        let addr = relay.smdr.unwrap();
        let n = (37 + (round * 97) as usize % 120).min(lines.len() - sent);
        let batch = &lines[sent..sent + n];
        // Send and wait until the relay has committed every record (SMDR has no
        // acknowledgement: bytes read but not committed when a relay dies are lost to it, see
        // the README), then kill it at a varying point of the delivery: mid-request,
        // mid-outcome, idle.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        for line in batch {
            stream.write_all(line).await.unwrap();
        }
        stream.flush().await.unwrap();
        let metrics = format!("http://{}/metrics", relay.http.unwrap());
        let committed = format!("cdr_relay_records_in_total{{source=\"smdr\"}} {n}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !get(&metrics).await.lines().any(|l| l == committed) {
            assert!(std::time::Instant::now() < deadline, "{}", relay.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis((round * 53) % 250)).await;
        relay.kill9();
        sent += n;
    }
    assert!(round >= 3, "killed {round} times");
    // A last run delivers whatever was still queued.
    let relay = Relay::listening(
        &db,
        &[
            ("SMDR_WEBHOOK_URL", &rx.url()),
            ("SMDR_WEBHOOK_RETRY_DELAY", "1"),
        ],
        false,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while by_id(&rx.accepted()).len() < expected.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = by_id(&rx.accepted());
    let want: BTreeSet<String> = expected
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let have: BTreeSet<String> = got.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{} missing: {:?}",
        missing.len(),
        missing.first()
    );
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(extra.is_empty(), "calls under other ids: {extra:?}");
    // Duplicates only as retries of one id (a kill between send and commit of the outcome),
    // always with the same body.
    for (id, bodies) in &got {
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{id}");
    }
    assert!(relay.terminate().success());
}

async fn get(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_gets_dead_letters_and_honest_cron_check_ins() {
    let dir = tempdir("sentry");
    let hook = Receiver::start(None, 400).await;
    let sentry = Receiver::start(None, 200).await;
    let dsn = format!("http://publickey@{}/42", sentry.addr);
    let cron = format!("http://{}/api/0/cron/relay/key/?env=test", sentry.addr);
    let db = dir.join("relay.db");
    let relay = Relay::listening(
        &db,
        &[
            ("SMDR_WEBHOOK_URL", &hook.url()),
            ("SMDR_SENTRY_DSN", &dsn),
            ("SMDR_SENTRY_CRON_URL", &cron),
            ("SMDR_SENTRY_CRON_INTERVAL", "1"),
        ],
        false,
    );
    // No PBX yet: the check-in says error.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let addr = relay.smdr.unwrap();
    let mut pbx = TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let bytes = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    pbx.write_all(&fixture_lines(&bytes)[0]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let envelopes = loop {
        let got: Vec<Received> = sentry
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == hyper::Method::POST)
            .cloned()
            .collect();
        if !got.is_empty() || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!envelopes.is_empty(), "{}", relay.log());
    let e = &envelopes[0];
    assert_eq!(e.uri.path(), "/api/42/envelope/");
    assert!(
        e.headers["x-sentry-auth"]
            .to_str()
            .unwrap()
            .contains("sentry_key=publickey")
    );
    let text = String::from_utf8_lossy(&e.body);
    assert!(text.contains("dead-lettered"), "{text}");
    // Check-ins: error while no PBX was connected, ok afterwards.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let statuses: Vec<String> = sentry
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == hyper::Method::GET)
        .map(|r| r.uri.query().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("env=test&status=error")
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("env=test&status=ok"),
        "{statuses:?}"
    );
    assert!(relay.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_record_after_a_flush_and_a_restart_is_delivered_as_a_later_part() {
    use tokio::io::AsyncWriteExt;
    let dir = tempdir("late");
    let db = dir.join("relay.db");
    let rx = Receiver::start(None, 200).await;
    let envs = [
        ("SMDR_WEBHOOK_URL", rx.url()),
        ("SMDR_IDLE_TIMEOUT", "1".to_owned()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A call's first record (continuation 1), then silence: flushed incomplete after 1 s.
    let first = b"2017/05/26 10:00:00,00:00:17,3,6049471660,I,203,6049471660,,0,1000001,1,E201,Name,T9001,Line 1.0,0,0\r\n";
    let last = b"2017/05/26 10:00:00,00:00:09,0,6049471660,I,203,6049471660,,0,1000001,0,E202,Name,T9001,Line 1.0,0,0\r\n";
    {
        let relay = Relay::listening(&db, &envs, false);
        let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
        pbx.write_all(first).await.unwrap();
        let got = rx.wait_accepted(1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1, "{}", relay.log());
        relay.kill9();
    }
    let relay = Relay::listening(&db, &envs, false);
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    pbx.write_all(last).await.unwrap();
    let got = rx.wait_accepted(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "{}", relay.log());
    let calls: Vec<serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(calls[0]["complete"], false);
    assert_eq!(calls[0]["flush_reason"], "idle_timeout");
    assert_eq!(calls[1]["complete"], true);
    assert_eq!(calls[1]["part"], 1);
    assert_eq!(calls[0]["call_id"], calls[1]["call_id"]);
    assert_ne!(
        calls[0]["id"], calls[1]["id"],
        "the late part has its own id"
    );
    assert!(relay.terminate().success());
}
