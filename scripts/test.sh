#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need and the machine lacks first,
# so that this one command is all a newcomer types. `scripts/test.sh --deps` only installs.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need (binary -> Debian package). Sources and sinks that talk to
# servers add their packages here.
#   chromium      bins/tests/browser.rs drives the web page in headless Chromium
#   redis-server  the Redis list source and sink tests run their own server
#   mariadb-install-db, pg_ctlcluster  the CEL database source and the SQL sink tests run
#                 MariaDB and PostgreSQL servers of their own (bins/tests/sql_sink.rs,
#                 bins/tests/ami_db.rs) beside the machine's
#   nats-server   the NATS JetStream sink and nats-relay tests run their own servers and clusters
declare -A need=(
  [chromium]=chromium
  [redis-server]=redis-server
  [mariadb-install-db]=mariadb-server
  [pg_ctlcluster]=postgresql
  [nats-server]=nats-server
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

# Servers the tests talk to on loopback: started when installed but not answering. Tests that
# stop a server start their own instance on a free port instead.
#   PostgreSQL 127.0.0.1:5432 (trust)  bins/tests/ami_db.rs (CEL_MODE=db), the SQL sink's tests
#   MariaDB    127.0.0.1:3306 (root)   bins/tests/ami_db.rs (CEL_MODE=db), the SQL sink's tests
#   Redis      127.0.0.1:6379          bins/tests/list_relay.rs, cdr-sinks' Redis sink tests
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.2; done; echo "test.sh: nothing answers on 127.0.0.1:$1 ($2)" >&2; return 1; }
if ! up 5432 && ls /etc/postgresql >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_up 5432 PostgreSQL
fi
if ! up 3306 && command -v mariadbd >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_up 3306 MariaDB
fi
if ! up 6379 && command -v redis-server >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_up 6379 Redis
fi

if [ "${1:-}" = "--deps" ]; then
  exit 0
fi

cargo test --workspace --locked
cargo test --benches --locked -p cdr-benches
