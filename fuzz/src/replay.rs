//! Replaying fuzz inputs as ordinary stable tests (as x509-parser's
//! `tests/run_all_fuzz_files.rs` does). The parser crates' `tests/fuzz_corpus.rs` include this
//! file with `#[path]`; it needs only `std`.

use std::panic;
use std::path::{Path, PathBuf};

/// The `fuzz/` folder, from a crate beside it.
pub fn fuzz_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../fuzz")
}

/// The files of `fuzz/<dir>`, sorted by name; none if the folder does not exist.
pub fn files(fuzz: &Path, dir: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz.join(dir)) else {
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

/// Runs `check`; the panic message if it failed.
pub fn failure(check: impl FnOnce() + panic::UnwindSafe) -> Option<String> {
    panic::catch_unwind(check).err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Runs `check` on every file of `fuzz/corpus/<target>` (at least `min` of them) and panics
/// naming the first that fails.
pub fn replay_corpus(fuzz: &Path, target: &str, min: usize, check: fn(&[u8])) {
    let files = files(fuzz, &format!("corpus/{target}"));
    assert!(files.len() >= min, "only {} seed files", files.len());
    for (name, bytes) in &files {
        if let Some(msg) = failure(|| check(bytes)) {
            panic!("corpus/{target}/{name}: {msg}");
        }
    }
}

/// A fuzz target's name and its check.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Runs every kept crash input (`fuzz/artifacts-kept/<target>/*`) through its target's check.
/// Each must pass, except those named in `known_open` (`<target>/<file>`: bugs not fixed yet),
/// which must still fail, so the test asks for an entry to go once its bug is fixed.
pub fn replay_kept(fuzz: &Path, targets: &[Target<'_>], known_open: &[&str]) {
    let mut unexpected = Vec::new();
    let mut seen = Vec::new();
    for (target, check) in targets {
        for (name, bytes) in files(fuzz, &format!("artifacts-kept/{target}")) {
            let id = format!("{target}/{name}");
            let failed = failure(|| check(&bytes));
            match (failed, known_open.contains(&id.as_str())) {
                (Some(msg), false) => unexpected.push(format!("{id} fails: {msg}")),
                (None, true) => unexpected.push(format!(
                    "{id} passes now: remove it from KNOWN_OPEN (the bug is fixed)"
                )),
                _ => {}
            }
            seen.push(id);
        }
    }
    for id in known_open {
        if !seen.iter().any(|s| s == id) {
            unexpected.push(format!(
                "{id} is in KNOWN_OPEN but not in fuzz/artifacts-kept"
            ));
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

/// How [`replay_mutations`] changes the seeds.
pub struct Mutations<'a> {
    /// Where the xorshift sequence starts (non-zero).
    pub start: u64,
    /// How many mutated inputs are checked.
    pub rounds: u32,
    /// The most edits per input (at least one is made).
    pub max_edits: u64,
    /// The bytes that matter to the format: half of the bytes written come from here.
    pub markup: &'a [u8],
}

/// Checks pseudo-random mutations of the seeds in `corpus/<target>`: each a seed with bytes
/// overwritten, inserted and removed at places from a fixed xorshift sequence, so a failure
/// is the same on every run.
pub fn replay_mutations(fuzz: &Path, target: &str, m: &Mutations<'_>, check: fn(&[u8])) {
    let seeds = files(fuzz, &format!("corpus/{target}"));
    assert!(!seeds.is_empty(), "no seeds in corpus/{target}");
    let mut x = m.start;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..m.rounds {
        let Some((name, seed)) = seeds.get((next() % seeds.len() as u64) as usize) else {
            continue;
        };
        let mut data = seed.clone();
        for _ in 0..1 + next() % m.max_edits.max(1) {
            if data.is_empty() {
                break;
            }
            let at = (next() % data.len() as u64) as usize;
            let b = if next() % 2 == 0 {
                let i = (next() % m.markup.len().max(1) as u64) as usize;
                m.markup.get(i).copied().unwrap_or(b'"')
            } else {
                (next() % 256) as u8
            };
            match next() % 3 {
                0 => {
                    if let Some(d) = data.get_mut(at) {
                        *d = b;
                    }
                }
                1 => data.insert(at, b),
                _ => {
                    data.remove(at);
                }
            }
        }
        if let Some(msg) = failure(|| check(&data)) {
            panic!("mutation {i} of {name}: {msg}");
        }
    }
}
