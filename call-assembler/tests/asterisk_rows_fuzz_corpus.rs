//! Replays the `asterisk_rows` fuzz corpus on stable (as `fuzz_corpus.rs` does for
//! `ami_assembler`): `fuzz/src/asterisk_rows_checks.rs` is included with `#[path]` (it needs
//! only `call_assembler`, `compact_str`, `serde_json` and `std`), and every seed in
//! `fuzz/corpus/asterisk_rows` and kept crash input in `fuzz/artifacts-kept/asterisk_rows` goes
//! through `check_asterisk_rows`, with a few hundred pseudo-random mutations of the seeds.

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
#[path = "../../fuzz/src/asterisk_rows_checks.rs"]
mod asterisk_rows_checks;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use asterisk_rows_checks::check_asterisk_rows;

fn fuzz() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn corpus_asterisk_rows() {
    replay::replay_corpus(&fuzz(), "asterisk_rows", 10, check_asterisk_rows);
}

#[test]
fn kept_crash_inputs() {
    replay::replay_kept(
        &fuzz(),
        &[("asterisk_rows", check_asterisk_rows as fn(&[u8]))],
        &[],
    );
}

/// Each seed with bytes overwritten, inserted and removed (in the header or the CSV) at places
/// from a fixed xorshift sequence.
#[test]
fn pseudo_random_mutations_of_the_seeds() {
    let m = replay::Mutations {
        start: 0x6a09_e667_f3bc_c909,
        rounds: 256,
        max_edits: 6,
        markup: b"\",\n\r:.- 0123456789${}()",
    };
    replay::replay_mutations(&fuzz(), "asterisk_rows", &m, check_asterisk_rows);
}
