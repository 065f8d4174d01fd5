//! Replays the `cms_parse` fuzz corpus on stable (as `fuzz_corpus.rs` does for
//! `ami_assembler`): `fuzz/src/cms_checks.rs` is included with `#[path]` (it needs only
//! `call_assembler` and `std`), and every seed in `fuzz/corpus/cms_parse` and kept crash input in
//! `fuzz/artifacts-kept/cms_parse` goes through `check_cms_parse`, with a few hundred
//! pseudo-random mutations of the seeds.

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
#[path = "../../fuzz/src/cms_checks.rs"]
mod cms_checks;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use cms_checks::check_cms_parse;

fn fuzz() -> PathBuf {
    replay::fuzz_dir(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn corpus_cms_parse() {
    replay::replay_corpus(&fuzz(), "cms_parse", 20, check_cms_parse);
}

#[test]
fn kept_crash_inputs() {
    replay::replay_kept(&fuzz(), &[("cms_parse", check_cms_parse as fn(&[u8]))], &[]);
}

/// Each seed with bytes overwritten, inserted and removed at places from a fixed xorshift
/// sequence.
#[test]
fn pseudo_random_mutations_of_the_seeds() {
    let m = replay::Mutations {
        start: 0x2545_f491_4f6c_dd1d,
        rounds: 512,
        max_edits: 4,
        markup: b"<>/=\"&;# \n!?[]",
    };
    replay::replay_mutations(&fuzz(), "cms_parse", &m, check_cms_parse);
}
