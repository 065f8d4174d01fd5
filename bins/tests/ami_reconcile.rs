//! `ami-relay` reconciling AMI with Asterisk's CDR (the book of record), as a process: an AMI
//! capture with a gap cut out of it, replayed beside the full cdr_csv file of the same traffic,
//! delivers every call exactly once; the calls from the gap are rebuilt from the CDR and marked
//! reconciled, a call AMI had that the CDR lacks is flagged, and disagreements are counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use call_assembler::Call;
use chrono::Timelike as _;
use common::ami::capture_dir;
use common::read_jsonl;

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

/// Runs `ami-relay` to its end; the calls it delivered and its log.
fn run_to_end(args: &[&str], envs: &[(&str, &str)], dir: &Path, name: &str) -> (Vec<Call>, String) {
    let out_path = dir.join(format!("{name}.jsonl"));
    let out = Command::new(BIN)
        .args(args)
        .args(["--sink", &format!("jsonl:{}", out_path.display())])
        .args(["--http", "off", "--db"])
        .arg(dir.join(format!("{name}.db")))
        .env_remove("AMI_HOST")
        .env_remove("WEBHOOK_URL")
        .env_remove("CEL_MODE")
        .env_remove("CDR_CSV_PATH")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{args:?} {envs:?}: {}\n{log}",
        out.status
    );
    (read_jsonl(&out_path), log)
}

/// The AMI messages of a capture without its greeting line (so captures can be joined).
fn messages(raw: &[u8]) -> &[u8] {
    match raw.strip_prefix(b"Asterisk Call Manager/".as_slice()) {
        Some(rest) => {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            &rest[eol + 2..]
        }
        None => raw,
    }
}

/// The first `n` messages of an AMI stream (blocks end with a blank line).
fn first_messages(stream: &[u8], n: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..n {
        let Some(i) = stream[at..].windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        at += i + 4;
    }
    &stream[..at]
}

fn message_count(stream: &[u8]) -> usize {
    stream.windows(4).filter(|w| *w == b"\r\n\r\n").count()
}

#[test]
fn a_gap_in_ami_is_filled_from_the_cdr_and_every_call_arrives_once() {
    let dir = common::tempdir("ami-reconcile");
    let read = |c: &str, f: &str| std::fs::read(capture_dir(c).join(f)).unwrap();
    let (c01, c03, c05, c07) = (
        "01_answered_caller_hangup",
        "03_no_answer",
        "05_blind_transfer",
        "07_queue_two_agents",
    );

    // What each capture gives on its own (AMI replay): the calls the reconciled run must match.
    let mut alone = Vec::new();
    for c in [c01, c03, c05, c07] {
        let (calls, _) = run_to_end(
            &["--replay", capture_dir(c).join("ami.raw").to_str().unwrap()],
            &[],
            &dir,
            &format!("alone-{c}"),
        );
        assert_eq!(calls.len(), 1, "{c}");
        alone.push(calls.into_iter().next().unwrap());
    }

    // AMI: 01 whole, 03 cut off mid-call (the connection dropped: its end never came), 05
    // missing altogether (the gap), 07 whole.
    let ami03 = read(c03, "ami.raw");
    let ami03 = messages(&ami03);
    let mut ami = read(c01, "ami.raw");
    ami.extend_from_slice(first_messages(ami03, message_count(ami03) / 2));
    ami.extend_from_slice(messages(&read(c07, "ami.raw")));
    let ami_path = dir.join("gap.ami.raw");
    std::fs::write(&ami_path, &ami).unwrap();
    // The CDR: 01, 03 and 05; 07's rows are missing.
    let mut cdr = Vec::new();
    for c in [c01, c03, c05] {
        cdr.extend_from_slice(&read(c, "cdr.csv"));
    }
    let cdr_path = dir.join("Master.csv");
    std::fs::write(&cdr_path, &cdr).unwrap();

    let (calls, log) = run_to_end(
        &["--replay", ami_path.to_str().unwrap()],
        &[("CDR_CSV_PATH", cdr_path.to_str().unwrap())],
        &dir,
        "reconciled",
    );
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "a call delivered twice: {ids:?}");
    let want: BTreeSet<&str> = alone.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(unique, want, "every call once\n{log}");

    for expected in &alone {
        let got = calls.iter().find(|c| c.id == expected.id).unwrap();
        if expected.linkedid == alone[2].linkedid {
            // 05 was in the gap: rebuilt from its CDR rows, marked, and the same call.
            assert!(got.reconciled, "{got:?}");
            assert!(got.complete);
            assert_eq!(got.disposition, expected.disposition);
            assert_eq!(got.answered, expected.answered);
            assert_eq!(
                got.start_time,
                expected.start_time.with_nanosecond(0).unwrap()
            );
            assert!(got.billsec.unwrap().abs_diff(expected.billsec.unwrap()) <= 1);
            let rows = String::from_utf8(read(c05, "cdr.csv"))
                .unwrap()
                .lines()
                .count();
            assert_eq!(got.cdr.len(), rows);
            assert!(got.cdr.iter().all(|r| r["linkedid"] == expected.linkedid));
        } else {
            assert!(!got.reconciled, "{got:?}");
        }
    }
    // 03 was cut off: AMI's call went out as it stood (flushed), the CDR's matched it and the
    // two disagree on its outcome; 07 is missing from the CDR.
    let l03 = &alone[1].linkedid;
    let l05 = &alone[2].linkedid;
    let l07 = &alone[3].linkedid;
    let got03 = calls.iter().find(|c| c.linkedid == *l03).unwrap();
    assert!(!got03.complete);
    assert!(
        log.lines()
            .any(|l| l.contains("rebuilt from the CDR") && l.contains(l05.as_str())),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("has no row in the CDR") && l.contains(l07.as_str())),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("has no row in the CDR") && !l.contains(l07.as_str())),
        "{log}"
    );
    if got03.disposition != alone[1].disposition {
        assert!(
            log.lines()
                .any(|l| l.contains("disagree") && l.contains(l03.as_str())),
            "{log}"
        );
    }
}

#[test]
fn the_full_ami_capture_beside_its_cdr_rebuilds_nothing() {
    let dir = common::tempdir("ami-reconcile-full");
    for c in [
        "01_answered_caller_hangup",
        "05_blind_transfer",
        "07_queue_two_agents",
        "16_sip_blind_transfer",
        "19_sip_queue",
    ] {
        let cap = capture_dir(c);
        let (plain, _) = run_to_end(
            &["--replay", cap.join("ami.raw").to_str().unwrap()],
            &[],
            &dir,
            &format!("plain-{c}"),
        );
        let (calls, log) = run_to_end(
            &["--replay", cap.join("ami.raw").to_str().unwrap()],
            &[("CDR_CSV_PATH", cap.join("cdr.csv").to_str().unwrap())],
            &dir,
            &format!("with-cdr-{c}"),
        );
        assert_eq!(
            serde_json::to_value(&calls).unwrap(),
            serde_json::to_value(&plain).unwrap(),
            "{c}"
        );
        assert!(!log.contains("rebuilt from the CDR"), "{c}\n{log}");
        assert!(!log.contains("has no row in the CDR"), "{c}\n{log}");
        assert!(!log.contains("disagree"), "{c}\n{log}");
    }
}
