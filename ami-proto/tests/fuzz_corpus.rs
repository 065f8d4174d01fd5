//! Replays the fuzz corpus and the kept crash inputs on stable, as x509-parser's
//! `tests/run_all_fuzz_files.rs` does, so that they are regression tests without nightly or
//! libFuzzer.
//!
//! The checks are the fuzz targets' own: `fuzz/src/ami_checks.rs` is included here with
//! `#[path]` (it needs only `ami_proto` and `std`). `fuzz/corpus/ami_parse` and
//! `fuzz/artifacts-kept/ami_parse` go through `check_ami_parse`, `fuzz/corpus/ami_framer` and
//! `fuzz/artifacts-kept/ami_framer` through `check_ami_framer`.

// Tests may unwrap, index and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/ami_checks.rs"]
mod ami_checks;

use ami_checks::{FramerInput, check_ami_framer, check_ami_parse};

/// Kept crash inputs (`<target>/<file>` under `fuzz/artifacts-kept`) of bugs that are not fixed
/// yet. Each must still fail its check, so the test stays green until the fix lands and then
/// asks for the entry to be removed.
const KNOWN_OPEN: &[&str] = &[];

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

fn fuzz() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

fn check_framer_file(bytes: &[u8]) {
    check_ami_framer(bytes);
    // The framer seeds are fixture streams: run the parse checks on their payload as well.
    check_ami_parse(FramerInput::decode(bytes).payload);
}

#[test]
fn corpus_ami_parse() {
    replay::replay_corpus(&fuzz(), "ami_parse", 20, check_ami_parse);
}

#[test]
fn corpus_ami_framer() {
    replay::replay_corpus(&fuzz(), "ami_framer", 10, check_framer_file);
}

#[test]
fn kept_crash_inputs() {
    replay::replay_kept(
        &fuzz(),
        &[
            ("ami_parse", check_ami_parse as fn(&[u8])),
            ("ami_framer", check_framer_file),
        ],
        KNOWN_OPEN,
    );
}

#[test]
fn the_model_and_the_framer_agree_on_every_fixture() {
    // The fuzz model over whole fixture streams, at several limits and chunkings.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut streams = 0;
    for sub in [
        "ami/goami2",
        "ami/panoramisk",
        "ami/asterisk-ami-events-stream",
    ] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned());
            if !matches!(ext.as_deref(), Some("ami" | "yaml" | "dump")) {
                continue;
            }
            streams += 1;
            let payload = std::fs::read(&p).unwrap();
            for header in [[255u8, 255, 0], [255, 255, 2], [10, 40, 1], [3, 8, 1]] {
                let mut input = header.to_vec();
                if header[2] > 0 {
                    input.push(if header[0] == 255 { 1 } else { 37 });
                }
                input.extend_from_slice(&payload);
                if let Some(msg) = replay::failure(|| check_ami_framer(&input)) {
                    panic!("{}: {header:?}: {msg}", p.display());
                }
            }
        }
    }
    assert_eq!(streams, 22);
}
