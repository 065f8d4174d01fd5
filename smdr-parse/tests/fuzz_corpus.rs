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

use std::panic;
use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/smdr_checks.rs"]
mod smdr_checks;

use smdr_checks::{FramerInput, check_framer, check_parse_smdr};

/// Kept crash inputs (`<target>/<file>` under `fuzz/artifacts-kept`) of bugs that are not fixed
/// yet. Each must still fail its check, so the test stays green until the fix lands and then
/// asks for the entry to be removed.
const KNOWN_OPEN: &[&str] = &[];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir` (relative to `fuzz/`), sorted; none if it does not exist.
fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Runs `check` on `bytes`; the panic message if it failed.
fn failure(check: impl FnOnce() + panic::UnwindSafe) -> Option<String> {
    panic::catch_unwind(check).err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

fn check_framer_file(bytes: &[u8]) {
    check_framer(bytes);
    // The framer seeds are fixture streams: parse their payload as well.
    check_parse_smdr(FramerInput::decode(bytes).payload);
}

#[test]
fn corpus_parse_smdr() {
    let files = files("corpus/parse_smdr");
    assert!(files.len() >= 20, "only {} seed files", files.len());
    for (name, bytes) in &files {
        if let Some(msg) = failure(|| check_parse_smdr(bytes)) {
            panic!("corpus/parse_smdr/{name}: {msg}");
        }
    }
}

#[test]
fn corpus_framer() {
    let files = files("corpus/framer");
    assert!(files.len() >= 10, "only {} seed files", files.len());
    for (name, bytes) in &files {
        if let Some(msg) = failure(|| check_framer_file(bytes)) {
            panic!("corpus/framer/{name}: {msg}");
        }
    }
}

#[test]
fn kept_crash_inputs() {
    let mut unexpected = Vec::new();
    let mut seen = Vec::new();
    for (target, check) in [
        ("parse_smdr", check_parse_smdr as fn(&[u8])),
        ("framer", check_framer_file),
    ] {
        for (name, bytes) in files(&format!("artifacts-kept/{target}")) {
            let id = format!("{target}/{name}");
            let failed = failure(|| check(&bytes));
            let open = KNOWN_OPEN.contains(&id.as_str());
            match (failed, open) {
                (Some(msg), false) => unexpected.push(format!("{id} fails: {msg}")),
                (None, true) => unexpected.push(format!(
                    "{id} passes now: remove it from KNOWN_OPEN (the bug is fixed)"
                )),
                _ => {}
            }
            seen.push(id);
        }
    }
    for id in KNOWN_OPEN {
        if !seen.iter().any(|s| s == id) {
            unexpected.push(format!(
                "{id} is in KNOWN_OPEN but not in fuzz/artifacts-kept"
            ));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}
