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
use nats_server::{NatsProc, Operator};

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

    // A restart resumes the durable consumer: nothing is consumed twice into the store. A new
    // call published after the restart is delivered after everything before it in the
    // stream, so once it is stored, anything the consumer would have sent again is stored too.
    let relay = hub(&db, &url, "HUB");
    let mut marker: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    marker["id"] = "after-the-restart".into();
    republish(
        &url,
        "cdr.smdr.london",
        &[serde_json::to_vec(&marker).unwrap()],
    );
    let got = wait_stored(&db, sent.len() + 1, &relay);
    assert_eq!(
        got.last().unwrap().0,
        "after-the-restart",
        "only the new call stored after the restart"
    );
    assert_eq!(relay.terminate().code(), Some(0));
}

/// Operator mode (JWT authentication): a relay publishes and the hub consumes, each with a
/// `.creds` file of its own user; every call reaches the hub's store.
#[test]
fn relay_and_hub_with_creds_files() {
    let dir = common::tempdir("nats-creds");
    let op = Operator::new();
    let server = NatsProc::start(&dir.join("nats"), &op.server_config());
    let url = server.url();
    let (relay_creds, hub_creds) = (dir.join("relay.creds"), dir.join("hub.creds"));
    std::fs::write(&relay_creds, op.user_creds()).unwrap();
    std::fs::write(&hub_creds, op.user_creds()).unwrap();
    let out = dir.join("relay.jsonl");
    let (code, log) = run_to_exit(
        SMDR,
        &[
            "--replay",
            smdr_fixture().to_str().unwrap(),
            "--http",
            "off",
            "--db",
            dir.join("relay.db").to_str().unwrap(),
            "--sink",
            "nats",
            "--sink",
            &format!("jsonl:{}", out.display()),
        ],
        &[
            ("NATS_URL", &url),
            ("NATS_STREAM", "CREDS"),
            ("NATS_CREATE_STREAM", "true"),
            ("NATS_CREDS", relay_creds.to_str().unwrap()),
        ],
    );
    assert_eq!(code, Some(0), "{log}");
    let sent = ids_in(&out);
    assert!(!sent.is_empty());
    let db = dir.join("hub.db");
    let relay = Relay::start_bin(
        HUB,
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[
            ("NATS_URL", &url),
            ("NATS_STREAM", "CREDS"),
            ("NATS_CREDS", hub_creds.to_str().unwrap()),
        ],
        false,
        false,
    );
    let got = wait_stored(&db, sent.len(), &relay);
    let ids: BTreeSet<String> = got.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, sent);
    assert_eq!(relay.terminate().code(), Some(0));
}

/// Runs `bin` with `args` and `envs` until it exits by itself (within the deadline): its exit
/// code and what it wrote to stdout and stderr.
fn run_to_exit(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    // Each run its own files: tests run in parallel.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = common::tempdir(&format!("nats-run-{run}"));
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("NATS_URL")
        .env_remove("WEBHOOK_URL")
        .env_remove("AMI_HOST")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{bin} did not exit:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    (status.code(), text)
}

/// A consumer the server refuses as configured (its filter subject is outside the stream's
/// subjects): the hub exits at start with the server's reason and the settings to check,
/// instead of retrying for ever.
#[test]
fn the_hub_exits_when_the_server_refuses_its_consumer() {
    let dir = common::tempdir("nats-refused");
    let server = NatsProc::start(&dir.join("nats"), "");
    let url = server.url();
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        js.create_stream(jetstream::stream::Config {
            name: "REFUSED".into(),
            subjects: vec!["cdr.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let db = dir.join("hub.db");
    let (code, log) = run_to_exit(
        HUB,
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[
            ("NATS_URL", &url),
            ("NATS_STREAM", "REFUSED"),
            ("NATS_FILTER_SUBJECTS", "elsewhere.>"),
        ],
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("refuses") && log.contains("NATS_FILTER_SUBJECTS"),
        "a clear reason: {log}"
    );
}

/// Secrets for NATS (a token in the URL, a password, an NKey seed) appear nowhere in what the
/// relays print: not in `--check-config`, not in their logs at `trace` level, where async-nats
/// logs the servers it dials and the `CONNECT` line it sends.
#[test]
fn no_nats_secret_is_ever_printed() {
    let dir = common::tempdir("nats-secrets");
    let token = "t0k3n-not-for-logs";
    let tokens = NatsProc::start(
        &dir.join("token"),
        &format!("authorization {{ token: \"{token}\" }}"),
    );
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let password = "pa55-not-for-logs";
    let users = NatsProc::start(
        &dir.join("users"),
        &format!(
            "authorization {{ users: [ {{ user: relay, password: \"{password}\" }}, {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ),
    );
    let token_url = format!("nats://{token}@127.0.0.1:{}", tokens.port);
    let users_url = users.url();
    let password_url = format!("nats://relay:{password}@127.0.0.1:{}", users.port);
    let secrets = [token, password, seed.as_str()];
    let clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret:\n{text}");
        }
    };

    // The relays publishing (each way of authenticating), to their end.
    let fixture = smdr_fixture();
    let sent = common::read_jsonl::<serde_json::Value>(&{
        let out = dir.join("sent.jsonl");
        for (i, envs) in [
            vec![("NATS_URL", token_url.as_str())],
            vec![("NATS_URL", password_url.as_str())],
            vec![
                ("NATS_URL", users_url.as_str()),
                ("NATS_NKEY", seed.as_str()),
            ],
        ]
        .into_iter()
        .enumerate()
        {
            let db = dir.join(format!("relay-{i}.db"));
            let mut envs = envs.clone();
            envs.extend([
                ("NATS_STREAM", "SECRETS"),
                ("NATS_CREATE_STREAM", "true"),
                ("RUST_LOG", "trace"),
            ]);
            let args = [
                "--replay",
                fixture.to_str().unwrap(),
                "--http",
                "off",
                "--db",
                db.to_str().unwrap(),
                "--sink",
                "nats",
                "--sink",
                &format!("jsonl:{}", out.display()),
            ];
            let (code, log) = run_to_exit(SMDR, &args, &envs);
            assert_eq!(code, Some(0), "{log}");
            assert!(
                log.contains("async_nats"),
                "async-nats's own lines are in the log: {log}"
            );
            clean("smdr-relay's log", &log);
            let mut check = args.to_vec();
            check.push("--check-config");
            let (code, shown) = run_to_exit(SMDR, &check, &envs);
            assert_eq!(code, Some(0), "{shown}");
            assert!(shown.contains("nats"), "{shown}");
            clean("smdr-relay --check-config", &shown);
        }
        out
    });
    assert!(!sent.is_empty());

    // The hub, with the token in its URL, consuming what the first relay published.
    let db = dir.join("hub.db");
    let relay = Relay::start_bin(
        HUB,
        &["--http", "off", "--db", db.to_str().unwrap()],
        &[
            ("NATS_URL", &token_url),
            ("NATS_STREAM", "SECRETS"),
            ("RUST_LOG", "trace"),
        ],
        false,
        false,
    );
    let start = Instant::now();
    while stored(&db).is_empty() {
        assert!(start.elapsed() < DEADLINE, "{}", relay.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = relay.log();
    assert_eq!(relay.terminate().code(), Some(0));
    assert!(log.contains("async_nats"), "{log}");
    clean("nats-relay's log", &log);
    let (code, shown) = run_to_exit(
        HUB,
        &[
            "--http",
            "off",
            "--db",
            db.to_str().unwrap(),
            "--check-config",
        ],
        &[("NATS_URL", &token_url), ("NATS_STREAM", "SECRETS")],
    );
    assert_eq!(code, Some(0), "{shown}");
    clean("nats-relay --check-config", &shown);
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
