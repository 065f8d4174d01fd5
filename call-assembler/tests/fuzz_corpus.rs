//! Replays the `ami_assembler` fuzz corpus and its kept crash inputs on stable, as
//! x509-parser's `tests/run_all_fuzz_files.rs` does, so that they are regression tests without
//! nightly or libFuzzer.
//!
//! The checks are the fuzz target's own: `fuzz/src/ami_assembler_checks.rs` is included here
//! with `#[path]` (it needs only `call_assembler`, `ami_proto` and `std`).
//! `fuzz/corpus/ami_assembler` and `fuzz/artifacts-kept/ami_assembler` go through
//! `check_ami_assembler`, and so do a few hundred inputs from a fixed pseudo-random sequence.
//! (The SMDR `assembler` target's inputs are `arbitrary`-encoded and only replayed by
//! `cargo fuzz run assembler`.)

// Tests may unwrap, index and panic; the checks' base `Instant` comes from the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::path::PathBuf;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/ami_assembler_checks.rs"]
mod ami_assembler_checks;

use ami_assembler_checks::check_ami_assembler;

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

#[test]
fn corpus_ami_assembler() {
    replay::replay_corpus(&fuzz(), "ami_assembler", 5, check_ami_assembler);
}

#[test]
fn kept_crash_inputs() {
    replay::replay_kept(
        &fuzz(),
        &[("ami_assembler", check_ami_assembler as fn(&[u8]))],
        KNOWN_OPEN,
    );
}

/// Inputs from a fixed xorshift sequence: every mode, 50 to 250 operations each.
#[test]
fn pseudo_random_inputs() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..512u32 {
        let ops = 50 + (next() % 200) as usize;
        let mut data = vec![i as u8, (next() % 256) as u8];
        data.extend((0..ops * 4).map(|_| (next() % 256) as u8));
        if let Some(msg) = replay::failure(|| check_ami_assembler(&data)) {
            panic!("pseudo-random input {i}: {msg}");
        }
    }
}
