#!/usr/bin/env bash
# Builds the Debian package of the relays into target/debian/ (cdr-relay_VERSION-1_ARCH.deb):
# the release build of the five binaries (bins/Cargo.toml's [package.metadata.deb] says what
# else goes in: units, example settings, maintainer scripts). Installs cargo-deb when missing.
#   scripts/package.sh            build the package and print its path
#   scripts/check-package.sh      then check it (contents, units, --version, --check-config)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

if ! command -v cargo-deb >/dev/null 2>&1; then
  # Not in Debian 12's archive; from crates.io, pinned by its own lock file.
  cargo install cargo-deb --locked
fi
command -v dpkg-deb >/dev/null 2>&1 || { echo "package.sh: dpkg-deb is needed (Debian/Ubuntu)" >&2; exit 1; }

rm -f target/debian/cdr-relay_*.deb
# --fast: lighter xz compression, a few seconds instead of tens on 2 cores, for a few MB more.
cargo deb -p cdr-relay --locked --fast
ls -1 target/debian/cdr-relay_*.deb
