#!/usr/bin/env bash
# Builds the Debian package of the relays into target/debian/ (cdr-relay_VERSION-1_ARCH.deb):
# the release build of one binary, the multi-call `cdr-relay`, which the package installs with
# the five relays' names as links to it (one thin-LTO link instead of five: the build is most of
# this script's time). bins/Cargo.toml's [package.metadata.deb] says what else goes in: units,
# example settings, maintainer scripts. Installs cargo-deb (3.7 or later: links as assets) when
# it is missing or older.
#   scripts/package.sh            build the package and print its path (in
#                                 $CARGO_TARGET_DIR/debian when that is set)
#   scripts/check-package.sh      then check it (contents, units, --version, --check-config)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

# "cargo-deb 3.8.0" -> 3 8; too old (or missing) -> install from crates.io, pinned by its lock
# file (it is not in Debian 12's archive).
deb_version=$(cargo-deb --version 2>/dev/null | awk '{print $2}' || true)
IFS=. read -r major minor _ <<<"${deb_version:-0.0.0}"
if [ "${major:-0}" -lt 3 ] || { [ "$major" -eq 3 ] && [ "${minor:-0}" -lt 7 ]; }; then
  cargo install cargo-deb --locked --version '^3.7'
fi
command -v dpkg-deb >/dev/null 2>&1 || { echo "package.sh: dpkg-deb is needed (Debian/Ubuntu)" >&2; exit 1; }

out="${CARGO_TARGET_DIR:-target}/debian"
rm -f "$out"/cdr-relay_*.deb
cargo build --release --locked -p cdr-relay --bin cdr-relay
# --no-build: the binary above is all it packages. --fast: lighter xz compression, a few
# seconds instead of tens on 2 cores, for a few MB more.
mkdir -p "$out"
cargo deb -p cdr-relay --no-build --fast -o "$out"
ls -1 "$out"/cdr-relay_*.deb
