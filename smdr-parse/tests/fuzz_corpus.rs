//! Replays the fuzz corpus and the kept crash inputs on stable, as x509-parser's
//! `tests/run_all_fuzz_files.rs` does, so that they are regression tests without nightly or
//! libFuzzer.
//!
//! The checks are the fuzz targets' own: `fuzz/src/smdr_checks.rs` is included here with `#[path]`
//! (it needs only `smdr_parse` and `std`). Files are replayed per target:
//! `fuzz/corpus/parse_smdr` and `fuzz/artifacts-kept/parse_smdr` through `check_parse_smdr`
//! (`parse_smdr`, `SmdrRecord::parse`, the round trip), `fuzz/corpus/framer` and
//! `fuzz/artifacts-kept/framer` through `check_framer`. The `assembler` target's inputs are
//! `arbitrary`-encoded operations and are only replayed by `cargo fuzz run assembler`.

use std::path::PathBuf;

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/smdr_checks.rs"]
mod smdr_checks;

use smdr_checks::{FramerInput, check_framer, check_parse_smdr};

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
    check_framer(bytes);
    // The framer seeds are fixture streams: parse their payload as well.
    check_parse_smdr(FramerInput::decode(bytes).payload);
}

#[test]
fn corpus_parse_smdr() {
    replay::replay_corpus(&fuzz(), "parse_smdr", 20, check_parse_smdr);
}

#[test]
fn corpus_framer() {
    replay::replay_corpus(&fuzz(), "framer", 10, check_framer_file);
}

#[test]
fn kept_crash_inputs() {
    replay::replay_kept(
        &fuzz(),
        &[
            ("parse_smdr", check_parse_smdr as fn(&[u8])),
            ("framer", check_framer_file),
        ],
        KNOWN_OPEN,
    );
}
