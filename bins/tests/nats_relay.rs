//! Relays publishing to NATS JetStream and `nats-relay` (the hub) consuming into its store, as
//! processes, against `nats-server -js` processes the tests start (free loopback ports, own
//! store directories): every call once at the hub, duplicates and redeliveries harmless,
//! redundant relays on one source.
//!
//! Every wait polls with a deadline; no fixed sleep is an assertion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods
)]

mod common;
#[path = "../../cdr-sinks/tests/support/nats_server.rs"]
mod nats_server;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::Relay;
use nats_server::NatsProc;

const SMDR: &str = env!("CARGO_BIN_EXE_smdr-relay");
const AMI: &str = env!("CARGO_BIN_EXE_ami-relay");
const HUB: &str = env!("CARGO_BIN_EXE_nats-relay");
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs a relay's `--replay` of `file` into the stream, to its end (every call delivered).
fn replay_to_nats(bin: &str, file: &Path, db: &Path, url: &str, stream: &str, site: &str) {
    let status = Command::new(bin)
        .args(["--replay", file.to_str().unwrap()])
        .args(["--http", "off", "--db", db.to_str().unwrap()])
        .args(["--site", site])
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env("NATS_URL", url)
        .env("NATS_STREAM", stream)
        .env("NATS_CREATE_STREAM", "true")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{bin} --replay {}: {status}",
        file.display()
    );
}

/// Starts the hub on `url`'s `stream`, its store at `db`.
fn hub(db: &Path, url: &str, stream: &str) -> Relay {
    Relay::start_bin(
        HUB,
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[
            ("NATS_URL", url),
            ("NATS_STREAM", stream),
            ("NATS_CONSUMER", "hub"),
        ],
        false,
        false,
    )
}

/// The hub's stored calls: (id, source, site).
fn stored(db: &Path) -> Vec<(String, String, String)> {
    let Ok(con) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let Ok(mut q) = con.prepare("SELECT id, source, site FROM calls ORDER BY seq") else {
        return Vec::new();
    };
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Waits until the hub's store holds `n` calls, then checks it stays there.
fn wait_stored(db: &Path, n: usize, hub: &Relay) -> Vec<(String, String, String)> {
    let start = Instant::now();
    loop {
        let got = stored(db);
        assert!(got.len() <= n, "more calls than sent: {}", got.len());
        if got.len() == n {
            return got;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the hub stored {} of {n} calls:\n{}",
            got.len(),
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the complete calls in the JSONL file a relay wrote.
fn ids_in(jsonl: &Path) -> BTreeSet<String> {
    common::read_jsonl::<serde_json::Value>(jsonl)
        .into_iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Messages in the stream, and the hub consumer's unacknowledged and undelivered counts.
fn stream_state(url: &str, stream: &str) -> (u64, u64, u64) {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(stream).await.unwrap();
        let messages = s.info().await.unwrap().state.messages;
        let mut c: jetstream::consumer::PullConsumer = s.get_consumer("hub").await.unwrap();
        let info = c.info().await.unwrap();
        (messages, info.num_ack_pending as u64, info.num_pending)
    })
}

/// Publishes each body again with no `Nats-Msg-Id` (as past the duplicate window): the stream
/// keeps these copies.
fn republish(url: &str, subject: &str, bodies: &[Vec<u8>]) {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        for b in bodies {
            js.publish(subject.to_owned(), b.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

fn smdr_fixture() -> PathBuf {
    common::fixture("ccbc_rw180105_day_34fields.txt")
}

/// An SMDR relay replays a day of calls into the stream; the hub stores every one of them
/// once, with its source and site, and acknowledges every message. Copies of messages the
/// stream kept (published again without the id, as past the duplicate window) and a hub
/// restart change nothing.
#[test]
fn the_hub_stores_every_relayed_call_once() {
    let dir = common::tempdir("nats-hub");
    let server = NatsProc::start(&dir.join("nats"), "");
    let url = server.url();
    let out = dir.join("relay.jsonl");
    // The relay's own record of what it sent, beside NATS.
    let status = Command::new(SMDR)
        .args(["--replay", smdr_fixture().to_str().unwrap()])
        .args([
            "--http",
            "off",
            "--db",
            dir.join("relay.db").to_str().unwrap(),
        ])
        .args(["--site", "london", "--sink", "nats"])
        .args(["--sink", &format!("jsonl:{}", out.display())])
        .env("NATS_URL", &url)
        .env("NATS_STREAM", "HUB")
        .env("NATS_CREATE_STREAM", "true")
        .env_remove("WEBHOOK_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let sent = ids_in(&out);
    assert!(sent.len() > 100, "a day of calls: {}", sent.len());

    let db = dir.join("hub.db");
    let relay = hub(&db, &url, "HUB");
    let got = wait_stored(&db, sent.len(), &relay);
    let ids: BTreeSet<String> = got.iter().map(|c| c.0.clone()).collect();
    assert_eq!(ids, sent, "each call once");
    assert!(got.iter().all(|c| c.1 == "smdr" && c.2 == "london"));

    // The same calls again in the stream (ids the duplicate window no longer holds).
    let bodies: Vec<Vec<u8>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .take(50)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    republish(&url, "cdr.smdr.london", &bodies);
    let start = Instant::now();
    while stream_state(&url, "HUB").1 + stream_state(&url, "HUB").2 > 0 {
        assert!(start.elapsed() < DEADLINE, "the hub acks the copies");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(relay.terminate().code(), Some(0));
    assert_eq!(stored(&db).len(), sent.len(), "copies not stored again");
    let (messages, ack_pending, pending) = stream_state(&url, "HUB");
    assert_eq!(messages as usize, sent.len() + 50);
    assert_eq!((ack_pending, pending), (0, 0), "every message acknowledged");

    // A restart resumes the durable consumer: nothing is consumed twice into the store.
    let relay = hub(&db, &url, "HUB");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(&db).len(), sent.len());
    assert_eq!(relay.terminate().code(), Some(0));
}

/// Two `ami-relay`s replay the same captures to one stream (redundant relays on one
/// Asterisk): the stream keeps each call once (same `Nats-Msg-Id`), and so does the hub.
#[test]
fn two_ami_relays_on_one_source_publish_each_call_once() {
    let dir = common::tempdir("nats-ami-pair");
    let server = NatsProc::start(&dir.join("nats"), "");
    let url = server.url();
    let mut want = BTreeSet::new();
    for capture in common::ami::captures() {
        let name = capture.file_name().unwrap().to_string_lossy().to_string();
        let raw = capture.join("ami.raw");
        for relay in ["a", "b"] {
            let db = dir.join(format!("{name}-{relay}.db"));
            replay_to_nats(AMI, &raw, &db, &url, "PAIR", "pbx1");
            let con = rusqlite::Connection::open(&db).unwrap();
            let mut q = con.prepare("SELECT id FROM calls").unwrap();
            let ids: Vec<String> = q
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            want.extend(ids);
        }
    }
    assert!(!want.is_empty());
    let db = dir.join("hub.db");
    let relay = hub(&db, &url, "PAIR");
    let got = wait_stored(&db, want.len(), &relay);
    let ids: BTreeSet<String> = got.iter().map(|c| c.0.clone()).collect();
    assert_eq!(ids, want);
    assert_eq!(relay.terminate().code(), Some(0));
    let (messages, _, _) = stream_state(&url, "PAIR");
    assert_eq!(
        messages as usize,
        want.len(),
        "each call once in the stream"
    );
}
