#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need and the machine lacks first,
# so that this one command is all a newcomer types. `scripts/test.sh --deps` only installs.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need (binary -> Debian package). Sources and sinks that talk to
# servers add their packages here.
#   chromium      bins/tests/browser.rs drives the web page in headless Chromium
#   redis-server  the Redis list source and sink tests run their own server
declare -A need=(
  [chromium]=chromium
  [redis-server]=redis-server
)
missing=()
for bin in "${!need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${need[$bin]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
if [ "${1:-}" = "--deps" ]; then
  exit 0
fi

# The real captured data the tests replay lives beside the repository.
if [ ! -d ../shared/fixtures/smdr ]; then
  echo "test.sh: ../shared/fixtures not found: the tests replay the captured data in shared/fixtures" >&2
  exit 1
fi

cargo test --workspace --locked
cargo test --benches --locked -p cdr-benches
