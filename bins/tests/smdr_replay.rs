//! `smdr-relay --replay` as a user runs it: a real process, real files and pipes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smdr")
        .join(rel)
}

/// The relay in replay mode with its own database and no web server.
fn relay(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smdr-relay"));
    c.args(["--http", "off", "--db"])
        .arg(dir.join("relay.db"))
        .env_remove("SMDR_WEBHOOK_URL")
        .env_remove("SMDR_ADDR")
        .env_remove("SMDR_LISTEN");
    c
}

fn calls(jsonl: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(jsonl.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON call per line"))
        .collect()
}

#[test]
fn replays_a_file_into_a_jsonl_file() {
    let dir = tempdir();
    let out = dir.join("calls.jsonl");
    let status = relay(&dir)
        .arg("--replay")
        .arg(fixture("ccbc/ccbc_2017-06-16_orphan-conference-add.txt"))
        .arg("--sink")
        .arg(format!("jsonl:{}", out.display()))
        .status()
        .expect("run smdr-relay");
    assert!(status.success());
    let calls = calls(&std::fs::read(&out).expect("output file"));
    // 432 calls, one of them (the orphan 1003244) flushed incomplete at the end of the input.
    assert_eq!(calls.len(), 432);
    let incomplete: Vec<&serde_json::Value> =
        calls.iter().filter(|c| c["complete"] == false).collect();
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0]["call_id"], "1003244");
    assert_eq!(incomplete[0]["flush_reason"], "end_of_input");
    assert_eq!(calls.last().map(|c| &c["call_id"]), Some(&"1003244".into()));
    // The body the existing SMDR webhook sends, and more.
    let c = &calls[0];
    for key in ["id", "source", "complete", "call_id", "start", "records"] {
        assert!(c.get(key).is_some(), "missing {key}");
    }
    assert_eq!(c["source"], "smdr");
    let r = &c["records"][0];
    for key in [
        "start",
        "duration",
        "ring",
        "caller",
        "direction",
        "called",
        "dialled",
        "account",
        "is_internal",
        "call_id",
        "continued",
        "party_1_device",
        "party_1_name",
        "party_2_device",
        "party_2_name",
        "hold_time",
        "park_time",
        "unique_call_id_caller",
    ] {
        assert!(r.get(key).is_some(), "record lacks {key}");
    }
    assert!(r["duration"].is_u64() && r["is_internal"].is_boolean());
}

#[test]
fn stdin_to_stdout_with_bad_lines_reported_and_kept() {
    let dir = tempdir();
    let good = std::fs::read(fixture("ccbc_rw180105_day_34fields.txt")).expect("fixture");
    // Junk first, and a broken record after the 100th good line.
    let cut = good
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(99)
        .map(|(i, _)| i + 1)
        .expect("100 lines");
    let mut input = b"garbage that is not a record\r\n".to_vec();
    input.extend_from_slice(&good[..cut]);
    input.extend_from_slice(b"2017/99/99 00:00:00,bad\r\n");
    input.extend_from_slice(&good[cut..]);
    let mut child = relay(&dir)
        .args(["--replay", "-", "--sink", "jsonl:-"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smdr-relay");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reported: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("bad SMDR line"))
        .collect();
    assert_eq!(reported.len(), 2, "{stderr}");
    assert!(reported[0].contains("line=1 "), "{stderr}");
    assert!(
        reported[0].contains("1 fields, expected at least 17"),
        "{stderr}"
    );
    assert!(reported[1].contains("line=102 "), "{stderr}");
    assert!(
        reported[1].contains("2 fields, expected at least 17"),
        "{stderr}"
    );
    // Kept with their raw bytes in the reject table.
    let db = rusqlite::Connection::open(dir.join("relay.db")).expect("db");
    let raw: Vec<Vec<u8>> = db
        .prepare("SELECT raw FROM rejects ORDER BY seq")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("raw");
    assert_eq!(
        raw,
        [
            b"garbage that is not a record\r".to_vec(),
            b"2017/99/99 00:00:00,bad\r".to_vec()
        ]
    );
    // Every good record still arrived: the day file's 305 calls.
    assert_eq!(calls(&out.stdout).len(), 305);
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = relay(&tempdir())
        .args(["--replay", "/nonexistent/smdr.txt"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/smdr.txt"), "{stderr}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "smdr-relay-test-{}-{}",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Issue 16: a replay delivers to the sinks it is given. The same capture replayed twice into
/// one database, the second time with a new JSONL file as well: the new file gets every call
/// once, the first file gets nothing twice, and the closing line says what each sink got and
/// already had. (A capture whose calls all end: a call still open at the end of a replay is
/// flushed incomplete, and its records read again later make a later part of it, with its own
/// id, as they would from a PBX.)
#[test]
fn a_second_replay_delivers_the_history_to_a_new_sink_and_nothing_twice() {
    let dir = tempdir();
    let capture = fixture("ccbc/ccbc_2017-11-19_to_20_six-record-call.txt");
    let first = dir.join("first.jsonl");
    let second = dir.join("second.jsonl");
    let run = |sinks: &[&Path]| {
        let mut c = relay(&dir);
        c.arg("--replay").arg(&capture).env("RUST_LOG", "info");
        for s in sinks {
            c.arg("--sink").arg(format!("jsonl:{}", s.display()));
        }
        let out = c.output().expect("run smdr-relay");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "smdr-relay failed:\n{log}");
        log
    };
    let ids = |p: &Path| -> Vec<String> {
        calls(&std::fs::read(p).expect("output file"))
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    };

    let log = run(&[&first]);
    let once = ids(&first);
    assert_eq!(once.len(), 615);
    let line = closing_line(&log);
    assert!(line.contains("store: 615 new, 0 already stored"), "{line}");
    assert!(
        line.contains(&format!(
            "jsonl:{}: 615 queued, 0 already had",
            first.display()
        )),
        "{line}"
    );

    let log = run(&[&first, &second]);
    let line = closing_line(&log);
    assert!(line.contains("store: 0 new, 615 already stored"), "{line}");
    assert!(
        line.contains(&format!(
            "jsonl:{}: 0 queued, 615 already had",
            first.display()
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "jsonl:{}: 615 queued, 0 already had",
            second.display()
        )),
        "{line}"
    );
    // The first sink got nothing twice: its file is as the first run left it.
    assert_eq!(ids(&first), once);
    // The new sink got every call once, in the order they were first stored.
    let mut got = ids(&second);
    assert_eq!(got, once);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 615, "no call twice in the new file");

    // A third run with both sinks: nothing new anywhere.
    let line = closing_line(&run(&[&first, &second]));
    assert!(line.contains("store: 0 new, 615 already stored"), "{line}");
    assert!(
        line.contains(&format!(
            "jsonl:{}: 0 queued, 615 already had",
            second.display()
        )),
        "{line}"
    );
    assert_eq!(ids(&second).len(), 615);
}

fn closing_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("replay done in"))
        .unwrap_or_else(|| panic!("no closing line in:\n{log}"))
        .to_owned()
}
