//! `ami-relay` with `RECORDINGS_DIRS`: recording files named after a call's Linkedid or a leg's
//! Uniqueid, anywhere under the directories, are attached to the call; other files (another
//! id that merely starts the same, a file too old) are not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use call_assembler::Call;

const BIN: &str = env!("CARGO_BIN_EXE_ami-relay");

fn touch(path: &Path, age: Duration) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    path.to_path_buf()
}

#[test]
fn recordings_named_after_the_call_or_its_legs_are_attached() {
    let dir = common::tempdir("ami-recordings");
    let cap = common::ami::capture_dir("01_answered_caller_hangup");
    // Learn the call's ids from a plain replay first.
    let run = |envs: &[(&str, &str)], name: &str| -> Vec<Call> {
        let out = dir.join(format!("{name}.jsonl"));
        let status = Command::new(BIN)
            .args(["--replay", cap.join("ami.raw").to_str().unwrap()])
            .args(["--sink", &format!("jsonl:{}", out.display())])
            .args(["--http", "off", "--db"])
            .arg(dir.join(format!("{name}.db")))
            .env_remove("AMI_HOST")
            .env_remove("CDR_CSV_PATH")
            .env_remove("RECORDINGS_DIRS")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        common::read_jsonl(&out)
    };
    let plain = run(&[], "plain");
    assert_eq!(plain.len(), 1);
    let call = &plain[0];
    assert!(call.recordings.is_empty());
    let linkedid = call.linkedid.to_string();
    let leg = call
        .legs
        .iter()
        .map(|l| l.uniqueid.to_string())
        .find(|u| *u != linkedid)
        .unwrap();

    let spool = dir.join("monitor");
    let other = dir.join("other");
    let fresh = Duration::from_secs(60);
    let by_call = touch(
        &spool.join(format!(
            "2026/11/22/out-2001-1001-20261122-135408-{linkedid}.wav"
        )),
        fresh,
    );
    let by_leg = touch(&other.join(format!("{leg}-agent.wav")), fresh);
    // Not this call's: a longer id that starts the same, and a file older than the max age.
    touch(&spool.join(format!("{linkedid}0.wav")), fresh);
    touch(
        &spool.join(format!("old/{linkedid}-old.wav")),
        Duration::from_secs(100 * 3600),
    );
    let dirs = format!("{},{}", spool.display(), other.display());
    let with = run(&[("RECORDINGS_DIRS", dirs.as_str())], "with");
    assert_eq!(with.len(), 1);
    let mut got: Vec<String> = with[0].recordings.iter().map(ToString::to_string).collect();
    got.sort();
    let mut want = vec![
        by_call.to_string_lossy().to_string(),
        by_leg.to_string_lossy().to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    // Nothing else about the call changed.
    let mut same = with[0].clone();
    same.recordings.clear();
    assert_eq!(
        serde_json::to_value(&same).unwrap(),
        serde_json::to_value(call).unwrap()
    );
}
