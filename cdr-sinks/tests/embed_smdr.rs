//! The `embed_smdr` example as a process: run whole, run again (nothing sent twice), and killed
//! with SIGKILL at several points of a large capture and run again each time (every call
//! exactly once, equal to the whole run).
//!
//! `cargo test` builds the crate's examples beside its tests (`target/<profile>/examples`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary, built by `cargo test` beside this test's (`deps/..` -> `examples/`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("embed_smdr");
    assert!(
        bin.exists(),
        "{} not built: run `cargo test -p cdr-sinks` (it builds the examples) or `cargo build -p cdr-sinks --example embed_smdr`",
        bin.display()
    );
    bin
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdr-sinks-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every real capture of one site, in order: 4,336 records, 4,104 calls, two PBX restarts.
fn capture(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr/ccbc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut bytes = Vec::new();
    for f in files {
        bytes.extend(std::fs::read(f).unwrap());
    }
    let path = dir.join("capture.txt");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn start(input: &Path, output: &Path, db: &Path) -> Child {
    Command::new(example())
        .args([input, output, db])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run(input: &Path, output: &Path, db: &Path) {
    let status = start(input, output, db).wait().unwrap();
    assert!(status.success(), "embed_smdr failed: {status}");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_second_run_on_the_same_database_sends_nothing() {
    let dir = dir("again");
    let input = capture(&dir);
    let (output, db) = (dir.join("out.jsonl"), dir.join("outbox.db"));
    run(&input, &output, &db);
    let first = lines(&output);
    let first_ids = ids(&first);
    assert_eq!(first.len(), 4104);
    assert_eq!(first_ids.iter().collect::<BTreeSet<_>>().len(), first.len());
    run(&input, &output, &db);
    assert_eq!(lines(&output), first);
}

#[test]
fn killed_at_any_point_and_run_again_every_call_goes_out_once() {
    let dir = dir("kill9");
    let input = capture(&dir);
    let (whole, whole_db) = (dir.join("whole.jsonl"), dir.join("whole.db"));
    run(&input, &whole, &whole_db);
    let mut want = lines(&whole);
    want.sort();

    let (output, db) = (dir.join("out.jsonl"), dir.join("outbox.db"));
    // Kill points: right after start (reading, nothing delivered yet), then after more and more
    // calls reached the file (reading and delivering at once, then delivering only).
    let mut killed = 0;
    for (after, lines_at_least) in [
        (Duration::from_millis(30), 0),
        (Duration::ZERO, 1),
        (Duration::ZERO, 700),
        (Duration::ZERO, 2500),
        (Duration::ZERO, 4000),
    ] {
        let mut child = start(&input, &output, &db);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let have = lines(&output).len();
            if started.elapsed() >= after && have >= lines_at_least {
                child.kill().unwrap();
                killed += 1;
                break;
            }
            assert!(Instant::now() < deadline, "no progress: {have} lines");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.wait().unwrap();
    }
    assert!(
        killed >= 3,
        "killed only {killed} times: the capture went out too fast"
    );
    run(&input, &output, &db);
    let mut got = lines(&output);
    let got_ids = ids(&got);
    assert_eq!(
        got_ids.iter().collect::<BTreeSet<_>>().len(),
        got_ids.len(),
        "a call went out twice"
    );
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the calls differ from an uninterrupted run");
}
