//! The fleet under faults: a three-node JetStream cluster started by the test (nats-server
//! processes clustered on loopback, free ports), a stream with three replicas; a few thousand
//! SMDR calls through `smdr-relay` into it while one NATS node is killed and the relay is
//! SIGKILLed and restarted; `nats-relay` consuming into its store, SIGKILLed mid-stream and
//! restarted: every complete call in the hub's store exactly once, none lost.
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
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::Relay;
use nats_server::NatsCluster;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const HUB: &str = env!("CARGO_BIN_EXE_nats-relay");
const DEADLINE: Duration = Duration::from_secs(180);
const STREAM: &str = "FLEET";
/// Copies of the day's capture, each under its own Call IDs and days.
const COPIES: u64 = 10;

/// The day's SMDR capture `COPIES` times: copy `k` has its Call IDs raised by `k` * 100000 and
/// its dates moved `k` * 2 days on, so every copy's calls are new calls (and no Call ID goes
/// back near the PBX's base, which could look like a restart).
fn shifted_stream() -> Vec<u8> {
    let day = std::fs::read(common::fixture("ccbc_rw180105_day_34fields.txt")).unwrap();
    let text = String::from_utf8(day).unwrap();
    let mut out = String::new();
    for k in 0..COPIES {
        for line in text.split_inclusive('\n') {
            let (body, end) = match line.strip_suffix("\r\n") {
                Some(b) => (b, "\r\n"),
                None => match line.strip_suffix('\n') {
                    Some(b) => (b, "\n"),
                    None => (line, ""),
                },
            };
            if body.trim().is_empty() {
                continue;
            }
            let mut fields: Vec<String> = body.split(',').map(str::to_owned).collect();
            let start =
                chrono::NaiveDateTime::parse_from_str(&fields[0], "%Y/%m/%d %H:%M:%S").unwrap();
            fields[0] = (start + chrono::Duration::days(2 * k as i64))
                .format("%Y/%m/%d %H:%M:%S")
                .to_string();
            let id: u64 = fields[9].parse().unwrap();
            fields[9] = (id + k * 100_000).to_string();
            out.push_str(&fields.join(","));
            out.push_str(if end.is_empty() { "\r\n" } else { end });
        }
    }
    out.into_bytes()
}

/// The relay, listening for the PBX, publishing to the cluster, metrics on a free port.
fn relay(db: &Path, urls: &str) -> Relay {
    Relay::start(
        &[
            "--smdr-listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[
            ("NATS_URL", urls),
            ("NATS_STREAM", STREAM),
            ("WEBHOOK_RETRY_DELAY", "1"),
            ("WEBHOOK_RETRY_MAX_DELAY", "2"),
        ],
        true,
        true,
    )
}

fn hub(db: &Path, urls: &str) -> Relay {
    Relay::start_bin(
        HUB,
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[
            ("NATS_URL", urls),
            ("NATS_STREAM", STREAM),
            ("NATS_CONSUMER", "hub"),
            ("NATS_BATCH", "200"),
        ],
        false,
        false,
    )
}

async fn get(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    match client.get(url.parse().unwrap()).await {
        Ok(resp) => {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        }
        Err(_) => String::new(),
    }
}

/// Sends `lines` to the relay and waits until it has committed all of them (SMDR has no
/// acknowledgement: only then may the relay die without losing what it read). `before`:
/// records this relay process had committed already.
async fn send_committed(relay: &Relay, lines: &[Vec<u8>], before: usize) {
    let mut pbx = TcpStream::connect(relay.smdr.unwrap()).await.unwrap();
    for l in lines {
        pbx.write_all(l).await.unwrap();
    }
    pbx.flush().await.unwrap();
    let metrics = format!("http://{}/metrics", relay.http.unwrap());
    let want = format!(
        "cdr_relay_records_in_total{{source=\"smdr\"}} {}",
        before + lines.len()
    );
    let start = Instant::now();
    while !get(&metrics).await.lines().any(|l| l == want) {
        assert!(start.elapsed() < DEADLINE, "{}", relay.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pbx);
}

/// The hub's stored call ids (the table's id is unique: a repeat could not even be stored).
fn stored(db: &Path) -> Vec<String> {
    let Ok(con) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut q) = con.prepare("SELECT id FROM calls") else {
        return Vec::new();
    };
    q.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_reaches_the_hub_once_through_node_and_relay_failures() {
    let dir = common::tempdir("nats-cluster");
    let mut cluster = NatsCluster::start(&dir.join("cluster"), 3);
    let urls = cluster.urls();

    // The stream, three replicas, once the cluster has elected its leader.
    let js = jetstream::new(async_nats::connect(cluster.nodes[0].url()).await.unwrap());
    let start = Instant::now();
    loop {
        let cfg = jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["cdr.*.*".into()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        match js.get_or_create_stream(cfg).await {
            Ok(_) => break,
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "no stream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    let bytes = shifted_stream();
    let expected: BTreeSet<String> = common::expected_calls(&bytes)
        .into_iter()
        .filter(|c| c["complete"] == true)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        expected.len() > 2000,
        "a few thousand calls: {}",
        expected.len()
    );
    let lines = common::fixture_lines(&bytes);
    let third = lines.len() / 3;

    let relay_db = dir.join("relay.db");
    let hub_db = dir.join("hub.db");
    let mut hub_proc = hub(&hub_db, &urls);

    // First third; then one NATS node dies.
    let r = relay(&relay_db, &urls);
    send_committed(&r, &lines[..third], 0).await;
    cluster.nodes[1].kill();
    // Second third, then the relay is SIGKILLed (whatever it had not published yet is in its
    // outbox) and the hub too, mid-stream.
    send_committed(&r, &lines[third..2 * third], third).await;
    r.kill9();
    hub_proc.kill9();
    hub_proc = hub(&hub_db, &urls);
    let r = relay(&relay_db, &urls);
    send_committed(&r, &lines[2 * third..], 0).await;

    let start = Instant::now();
    loop {
        let got = stored(&hub_db);
        assert!(got.len() <= expected.len());
        if got.len() == expected.len() {
            let got: BTreeSet<String> = got.into_iter().collect();
            assert_eq!(got, expected, "every complete call, once");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the hub has {} of {} calls\nrelay:\n{}\nhub:\n{}",
            got.len(),
            expected.len(),
            r.log(),
            hub_proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.terminate().success());
    assert!(hub_proc.terminate().success());
    let mut s = js.get_stream(STREAM).await.unwrap();
    let messages = s.info().await.unwrap().state.messages;
    assert_eq!(
        messages as usize,
        expected.len(),
        "each call once in the stream (ids repeated by retries dropped)"
    );
}
