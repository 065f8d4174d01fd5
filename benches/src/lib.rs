//! Helpers the benches in `benches/benches/` share: the corpus size, the read chunk, where the
//! fixtures are, and whether divan is measuring or only smoke-testing. The benches themselves
//! and the `e2e` binary live beside this library.

use std::path::PathBuf;

pub mod corpus;

/// Size of a bench corpus when measuring: the fixtures are repeated to at least this many bytes.
pub const BENCH_BYTES: usize = 32 * 1024 * 1024;

/// Chunk size pushed into a framer, as a socket read would deliver it.
pub const CHUNK: usize = 64 * 1024;

/// Whether divan is measuring: `cargo bench` passes `--bench`; `cargo test --benches` does not
/// (divan's test mode runs each bench once, on a single copy of the fixtures).
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test")
}

/// The fixture folder `rel` under the repository's `fixtures`, or the folder named by
/// the environment variable `var` when it is set.
pub fn fixture_dir(var: &str, rel: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures")
                .join(rel)
        },
        PathBuf::from,
    )
}

/// `one` copy of the fixtures repeated to [`BENCH_BYTES`] when measuring (once otherwise), and
/// the number of copies.
pub fn corpus_bytes(one: &[u8]) -> (Vec<u8>, usize) {
    let copies = if measuring() {
        BENCH_BYTES.div_ceil(one.len().max(1))
    } else {
        1
    };
    (one.repeat(copies), copies)
}
