#!/usr/bin/env bash
# Lints the fuzz crate and runs every fuzz target for a short while (CI's fuzz smoke).
# Usage: fuzz/smoke.sh [SECONDS per target, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
cargo +nightly clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
cargo +nightly fuzz build
for t in $(cargo +nightly fuzz list); do
  echo "::: fuzz $t for ${secs}s"
  # New inputs go to the git-ignored corpus-new/; the committed seeds stay as they are.
  cargo +nightly fuzz run "$t" "fuzz/corpus-new/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -create_missing_dirs=1
done
