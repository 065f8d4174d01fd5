//! `ami-relay` as a process: replays of every Asterisk capture, and a live session against a
//! loopback AMI server (plain and MD5 login) that streams a capture in random chunks, drops the
//! connection mid-call, and answers the resync after the reconnect; a relay killed with SIGKILL
//! mid-call finishes the call from its journal after a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ami_proto::{AmiFramer, AmiMessage, Frame};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call, Output};
use common::Relay;
use common::ami::{
    AmiServer, SECRET, Session, USER, capture_dir, capture_messages, captures, live_channels,
};

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

/// The calls the assembler makes of a capture in-process, fed at one instant as a replay is.
fn expected(dir: &Path) -> Vec<Call> {
    let raw = std::fs::read(dir.join("ami.raw")).unwrap();
    let mut framer = AmiFramer::default();
    framer.push(&raw);
    let mut asm = AmiAssembler::new(AmiAssemblerConfig::default());
    let now = Instant::now();
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame() {
        if let Frame::Message { bytes, .. } = f {
            asm.handle_message(now, &AmiMessage::parse(bytes).unwrap());
        }
    }
    asm.flush(now);
    while let Some(o) = asm.poll_output() {
        if let Output::Call(c) = o {
            out.push(c);
        }
    }
    out
}

/// The calls in a jsonl file (each line one call), once `n` are there.
fn wait_jsonl(path: &Path, n: usize, relay: &Relay) -> Vec<Call> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let calls: Vec<Call> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if calls.len() >= n {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} calls in {}; relay log:\n{}",
            calls.len(),
            path.display(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What must agree between two assemblies of the same call.
fn summary(
    c: &Call,
) -> (
    String,
    bool,
    String,
    u32,
    Option<u32>,
    usize,
    Option<String>,
) {
    (
        c.id.clone(),
        c.complete,
        c.disposition.to_string(),
        c.duration,
        c.billsec,
        c.legs.len(),
        c.answered_by.as_ref().map(|p| p.device.to_string()),
    )
}

#[test]
fn replay_of_every_capture_gives_the_assemblers_calls_and_asterisks_count() {
    let dir = common::tempdir("ami-replay");
    for capture in captures() {
        let name = capture.file_name().unwrap().to_string_lossy().to_string();
        let out = dir.join(format!("{name}.jsonl"));
        let db = dir.join(format!("{name}.db"));
        let status = std::process::Command::new(BIN)
            .args(["--replay", capture.join("ami.raw").to_str().unwrap()])
            .args(["--sink", &format!("jsonl:{}", out.display())])
            .args(["--http", "off", "--db", db.to_str().unwrap()])
            .env_remove("AMI_HOST")
            .env_remove("WEBHOOK_URL")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{name}: {status}");
        let got: Vec<Call> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = expected(&capture);
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(capture.join("truth.json")).unwrap()).unwrap();
        let truth_calls = truth["calls"].as_object().unwrap();
        assert_eq!(got.len(), truth_calls.len(), "{name}: calls");
        for c in &got {
            assert!(c.complete, "{name}: {} incomplete", c.id);
            assert!(
                truth_calls.contains_key(c.linkedid.as_str()),
                "{name}: {} not in truth.json",
                c.linkedid
            );
            let rows = truth_calls[c.linkedid.as_str()]["cdr"].as_array().unwrap();
            assert_eq!(c.cdr.len(), rows.len(), "{name}: Cdr rows");
        }
        let got: BTreeMap<_, _> = got.iter().map(|c| (c.id.clone(), summary(c))).collect();
        let want: BTreeMap<_, _> = want.iter().map(|c| (c.id.clone(), summary(c))).collect();
        assert_eq!(got, want, "{name}");
    }
}

/// The capture used for live sessions, its messages, and where to cut them: in the middle of
/// the call, after it was answered.
fn live_capture() -> (PathBuf, Vec<Vec<u8>>, usize) {
    let dir = capture_dir("05_blind_transfer");
    let msgs = capture_messages(&dir);
    let cut = msgs
        .iter()
        .position(|m| m.starts_with(b"Event: BridgeEnter"))
        .unwrap()
        + 3;
    assert!(cut < msgs.len() / 2 + msgs.len() / 4, "cut too late");
    (dir, msgs, cut)
}

fn relay_args<'a>(port: &'a str, db: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--ami-host",
        "127.0.0.1",
        "--ami-port",
        port,
        "--ami-username",
        USER,
        "--http",
        "off",
        "--db",
        db,
        "--sink",
        out,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_call_resyncs_and_loses_nothing() {
    let (dir, msgs, cut) = live_capture();
    let before: Vec<u8> = msgs[..cut].concat();
    let half = &msgs[cut][..msgs[cut].len() / 2];
    let server = AmiServer::start(vec![
        Session::new(Vec::new(), [before.as_slice(), half].concat(), true),
        Session::new(live_channels(&msgs[..cut]), msgs[cut..].concat(), false),
    ])
    .await;
    let tmp = common::tempdir("ami-drop");
    let (db, out) = (tmp.join("relay.db"), tmp.join("calls.jsonl"));
    let port = server.port.to_string();
    let sink = format!("jsonl:{}", out.display());
    let relay = Relay::start_bin(
        BIN,
        &relay_args(&port, db.to_str().unwrap(), &sink),
        &[("AMI_PASSWORD", SECRET)],
        false,
        false,
    );
    let want = expected(&dir);
    let got = tokio::task::block_in_place(|| wait_jsonl(&out, want.len(), &relay));
    server.wait_accepted(2, Duration::from_secs(5)).await;
    assert_eq!(
        *server.logins.lock().unwrap(),
        ["md5", "md5"],
        "the MD5 challenge by default"
    );
    assert!(!relay.log().contains("AMI_AUTH=plain"), "{}", relay.log());
    let got: Vec<_> = got.iter().map(summary).collect();
    let want: Vec<_> = want.iter().map(summary).collect();
    assert_eq!(got, want, "relay log:\n{}", relay.log());
    let status = relay.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_channels_vanished_during_a_gap_are_closed_by_the_resync() {
    let (dir, msgs, cut) = live_capture();
    let server = AmiServer::start(vec![
        Session::new(Vec::new(), msgs[..cut].concat(), true),
        // The call ended while the relay was away: no channel is alive any more.
        Session::new(Vec::new(), Vec::new(), false),
    ])
    .await;
    let tmp = common::tempdir("ami-gap");
    let (db, out) = (tmp.join("relay.db"), tmp.join("calls.jsonl"));
    let port = server.port.to_string();
    let sink = format!("jsonl:{}", out.display());
    let mut args = relay_args(&port, db.to_str().unwrap(), &sink);
    args.extend(["--ami-auth", "plain"]);
    let relay = Relay::start_bin(BIN, &args, &[("AMI_PASSWORD", SECRET)], false, false);
    let got = tokio::task::block_in_place(|| wait_jsonl(&out, 1, &relay));
    assert_eq!(
        *server.logins.lock().unwrap(),
        ["plain", "plain"],
        "only when asked"
    );
    assert!(
        relay.log().contains("WARN") && relay.log().contains("AMI_AUTH=plain"),
        "{}",
        relay.log()
    );
    let want = expected(&dir);
    assert_eq!(got.len(), 1, "{got:?}");
    let call = &got[0];
    assert_eq!(call.id, want[0].id, "same call, same id");
    assert!(!call.complete);
    assert_eq!(
        serde_json::to_value(call).unwrap()["flush_reason"],
        "resync",
        "{call:?}"
    );
    relay.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_call_finishes_the_call_from_its_journal() {
    let (dir, msgs, cut) = live_capture();
    let server = AmiServer::start(vec![
        Session::new(Vec::new(), msgs[..cut].concat(), false),
        Session::new(live_channels(&msgs[..cut]), msgs[cut..].concat(), false),
    ])
    .await;
    let tmp = common::tempdir("ami-kill");
    let db = tmp.join("relay.db");
    let port = server.port.to_string();
    let first = format!("jsonl:{}", tmp.join("first.jsonl").display());
    let relay = Relay::start_bin(
        BIN,
        &relay_args(&port, db.to_str().unwrap(), &first),
        &[("AMI_PASSWORD", SECRET)],
        false,
        false,
    );
    // Wait until the open call's messages are journaled, then kill the relay hard.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let journaled: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0)))
            .unwrap_or(0);
        if journaled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing journaled:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.kill9();
    let second = tmp.join("second.jsonl");
    let sink = format!("jsonl:{}", second.display());
    let relay = Relay::start_bin(
        BIN,
        &relay_args(&port, db.to_str().unwrap(), &sink),
        &[("AMI_PASSWORD", SECRET)],
        false,
        false,
    );
    let want = expected(&dir);
    let got = tokio::task::block_in_place(|| wait_jsonl(&second, want.len(), &relay));
    let got: Vec<_> = got.iter().map(summary).collect();
    let want: Vec<_> = want.iter().map(summary).collect();
    assert_eq!(got, want, "relay log:\n{}", relay.log());
    assert!(
        std::fs::read_to_string(tmp.join("first.jsonl"))
            .unwrap_or_default()
            .is_empty(),
        "the first relay delivered nothing: the call was still open"
    );
    relay.terminate();
    let journaled: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM journal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journaled, 0, "the finished call's journal entries are gone");
}

#[test]
fn without_a_host_it_says_what_to_set_and_check_config_describes_the_rest() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .env_remove("AMI_HOST")
            .env_remove("AMI_USERNAME")
            .env_remove("AMI_PASSWORD")
            .env_remove("CALL_SHIPPING_MODE")
            .stdin(std::process::Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ami-relay: set AMI_HOST"), "{err}");

    let out = run(
        &["--check-config"],
        &[
            ("AMI_HOST", "pbx.example"),
            ("AMI_USERNAME", "relay"),
            ("AMI_PASSWORD", "hidden-secret"),
            ("AMI_TLS", "true"),
            ("AMI_AUTH", "md5"),
            ("CALL_SHIPPING_MODE", "progressive"),
            ("LONG_CALL_UPDATE_INTERVAL", "30"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("AMI at pbx.example:5039 as relay (TLS, MD5 login)"),
        "{err}"
    );
    assert!(
        err.contains("progressive (started, updated every 30 s, ended)"),
        "{err}"
    );
    assert!(!err.contains("hidden-secret"), "{err}");

    let out = run(
        &["--check-config"],
        &[
            ("AMI_HOST", "pbx.example"),
            ("AMI_USERNAME", "relay"),
            ("AMI_PASSWORD", "x"),
            ("CALL_SHIPPING_MODE", "sometimes"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected complete or progressive"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_mode_sends_started_updates_and_the_end_under_one_id() {
    let (dir, msgs, cut) = live_capture();
    let mut session = Session::new(Vec::new(), msgs[..cut].concat(), false);
    session.pause = Duration::from_millis(2500);
    session.later = msgs[cut..].concat();
    let server = AmiServer::start(vec![session]).await;
    let tmp = common::tempdir("ami-progressive");
    let (db, out) = (tmp.join("relay.db"), tmp.join("calls.jsonl"));
    let port = server.port.to_string();
    let sink = format!("jsonl:{}", out.display());
    let relay = Relay::start_bin(
        BIN,
        &relay_args(&port, db.to_str().unwrap(), &sink),
        &[
            ("AMI_PASSWORD", SECRET),
            ("CALL_SHIPPING_MODE", "progressive"),
            ("LONG_CALL_UPDATE_INTERVAL", "1"),
        ],
        false,
        false,
    );
    let want = expected(&dir);
    let records: Vec<serde_json::Value> = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: Vec<serde_json::Value> = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if v.iter().any(|r| r["update"]["event"] == "ended") {
                return v;
            }
            assert!(Instant::now() < deadline, "no end: {v:?}\n{}", relay.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["update"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"started"), "{events:?}");
    assert_eq!(events.last(), Some(&"ended"), "{events:?}");
    assert!(
        events.contains(&"updated"),
        "a 2.5 s pause with a 1 s interval: {events:?}"
    );
    for r in &records {
        assert_eq!(r["id"], want[0].id.as_str(), "one id for every record");
    }
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["update"]["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs[0], 0);
    let last: Call = serde_json::from_value(records.last().unwrap().clone()).unwrap();
    assert_eq!(summary(&last), summary(&want[0]));
    relay.terminate();
    // The store keeps the final call only.
    let stored: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 1);
}

/// Live AMI with a gap beside a growing cdr_csv file: the call that happened while the
/// connection was down is rebuilt from the CDR and delivered once, marked reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_missed_during_an_ami_outage_comes_from_the_cdr_file() {
    let (d01, d05, d07) = (
        capture_dir("01_answered_caller_hangup"),
        capture_dir("05_blind_transfer"),
        capture_dir("07_queue_two_agents"),
    );
    // The first connection carries 01 and drops; 05 happens while the relay is away; the
    // second connection carries 07.
    let server = AmiServer::start(vec![
        Session::new(Vec::new(), capture_messages(&d01).concat(), true),
        Session::new(Vec::new(), capture_messages(&d07).concat(), false),
    ])
    .await;
    let tmp = common::tempdir("ami-live-reconcile");
    let (db, out, cdr) = (
        tmp.join("relay.db"),
        tmp.join("calls.jsonl"),
        tmp.join("Master.csv"),
    );
    // Asterisk appends each call's rows when it ends: 01's are there at the start.
    std::fs::write(&cdr, std::fs::read(d01.join("cdr.csv")).unwrap()).unwrap();
    let port = server.port.to_string();
    let sink = format!("jsonl:{}", out.display());
    let relay = Relay::start_bin(
        BIN,
        &relay_args(&port, db.to_str().unwrap(), &sink),
        &[
            ("AMI_PASSWORD", SECRET),
            ("CDR_CSV_PATH", cdr.to_str().unwrap()),
            ("RECONCILE_WAIT", "5"),
            ("RECONCILE_FLAG_AFTER", "30"),
        ],
        false,
        false,
    );
    server.wait_accepted(2, Duration::from_secs(20)).await;
    for d in [&d05, &d07] {
        let mut f = std::fs::OpenOptions::new().append(true).open(&cdr).unwrap();
        std::io::Write::write_all(&mut f, &std::fs::read(d.join("cdr.csv")).unwrap()).unwrap();
    }
    let got = tokio::task::block_in_place(|| wait_jsonl(&out, 3, &relay));
    let want: Vec<Call> = [&d01, &d05, &d07]
        .iter()
        .flat_map(|d| expected(d))
        .collect();
    let mut got_ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    let mut want_ids: Vec<&str> = want.iter().map(|c| c.id.as_str()).collect();
    got_ids.sort_unstable();
    want_ids.sort_unstable();
    assert_eq!(got_ids, want_ids, "every call once; log:\n{}", relay.log());
    for c in &got {
        let from_gap = c.linkedid == want[1].linkedid;
        assert_eq!(c.reconciled, from_gap, "{c:?}");
        if from_gap {
            assert_eq!(c.disposition, want[1].disposition);
            assert_eq!(c.answered, want[1].answered);
        }
    }
    let log = relay.log();
    assert!(log.contains("rebuilt from the CDR"), "{log}");
    let status = relay.terminate();
    assert!(status.success(), "{status}");
}
