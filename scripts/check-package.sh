#!/usr/bin/env bash
# Checks the Debian package scripts/package.sh built (the newest target/debian/cdr-relay_*.deb,
# or $CDR_RELAY_DEB) without installing it on this machine: it is unpacked into a throwaway
# tree, then
#   - its metadata, its complete file list (owners, modes) and its conffiles are as intended;
#   - the maintainer scripts create the cdr-relay user and /var/lib/cdr-relay, give the
#     settings to root:cdr-relay 0640, and carry cargo-deb's systemd snippets;
#   - each unit has the service settings the package promises and, where systemd-analyze is
#     installed, passes `systemd-analyze verify` against the unpacked tree (the packaged
#     binaries at their ExecStart paths, this machine's own units for the targets);
#   - the one binary, the multi-call /usr/bin/cdr-relay, is stripped and the five relays' names
#     are relative links to it; each relay, invoked through its link as the unit invokes it,
#     prints its name, version and commit, and accepts its packaged example settings
#     (`--check-config`) in a clean environment.
# bins/tests/package.rs then runs the packaged smdr-relay on a captured stream.
set -euo pipefail
cd "$(dirname "$0")/.."

relays="smdr-relay ami-relay list-relay cdr-receiver nats-relay"
fail() { echo "check-package: $*" >&2; exit 1; }

deb=${CDR_RELAY_DEB:-$(ls -1t "${CARGO_TARGET_DIR:-target}"/debian/cdr-relay_*.deb 2>/dev/null | head -1)}
[ -n "$deb" ] && [ -f "$deb" ] || fail "no package: run scripts/package.sh first"
echo "package: $deb ($(du -h "$deb" | cut -f1))"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$work/control"

# --- Metadata ---------------------------------------------------------------------------
dpkg-deb -f "$deb" Package Version Architecture Depends Section
[ "$(dpkg-deb -f "$deb" Package)" = cdr-relay ] || fail "package name"
version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in *adduser*) ;; *) fail "Depends lacks adduser (postinst uses it): $depends" ;; esac
case "$depends" in *libc6*) ;; *) fail "Depends lacks libc6 (\$auto): $depends" ;; esac

# --- Contents: exactly these files, these owners and modes ------------------------------
# Mode, owner, path (and a link's target: "-> cdr-relay").
listing() { dpkg-deb -c "$deb" | awk '{printf "%s %s", $1, $2; for (i = 6; i <= NF; i++) printf " %s", $i; print ""}'; }
echo "contents:"
listing | sed 's/^/  /'
# Owners as names (cargo-deb writes ids: 0/0 is root/root).
actual=$(listing | awk '$1 !~ /^d/ {sub(/^0\/0$/, "root/root", $2); print}' | sort)
expected=$(
  {
    echo "-rwxr-xr-x root/root ./usr/bin/cdr-relay"
    for r in $relays; do
      echo "lrwxrwxrwx root/root ./usr/bin/$r -> cdr-relay"
      echo "-rw-r--r-- root/root ./usr/lib/systemd/system/$r.service"
      echo "-rw-r----- root/root ./etc/cdr-relay/$r.toml"
    done
    echo "-rw-r--r-- root/root ./usr/lib/systemd/system/smdr-relay@.service"
    echo "-rw-r--r-- root/root ./usr/share/doc/cdr-relay/README.md"
    echo "-rw-r--r-- root/root ./usr/share/doc/cdr-relay/copyright"
  } | sort
)
if [ "$actual" != "$expected" ]; then
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  fail "the package's files differ from the intended list (< intended, > packaged)"
fi

# The settings are conffiles: dpkg never overwrites an edited one on upgrade.
conffiles=$(sort "$work/control/conffiles")
[ "$conffiles" = "$(for r in $relays; do echo "/etc/cdr-relay/$r.toml"; done | sort)" ] \
  || fail "conffiles: $conffiles"

# --- Maintainer scripts -----------------------------------------------------------------
for s in postinst prerm postrm; do
  [ -x "$work/control/$s" ] || fail "no $s"
  sh -n "$work/control/$s" || fail "$s: shell syntax"
  grep -q '#DEBHELPER#' "$work/control/$s" && fail "$s: #DEBHELPER# left unreplaced"
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -s sh -S warning "$work/control/postinst" "$work/control/prerm" "$work/control/postrm"
fi
# need SCRIPT REGEX WHAT: SCRIPT (its continued lines joined) has a line matching REGEX.
need() {
  local text
  text=$(sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' "$work/control/$1")
  grep -qE -- "$2" <<<"$text" || fail "$1 does not $3"
}
need postinst 'addgroup --system .*cdr-relay' "create the cdr-relay group"
need postinst 'adduser --system .*--home /var/lib/cdr-relay .*cdr-relay' "create the cdr-relay user"
need postinst 'mkdir -p /var/lib/cdr-relay' "create the state directory"
need postinst 'override cdr-relay cdr-relay 0750 /var/lib/cdr-relay' "give the state to cdr-relay"
need postinst 'override root cdr-relay 0640 "/etc/cdr-relay/\$relay.toml"' "make the settings root:cdr-relay 0640"
need postinst "CONFIGS=\"$relays\"" "cover every relay's settings"
need postinst 'deb-systemd-helper' "register the units (cargo-deb's systemd snippet)"
need postinst 'try-restart' "restart running relays on upgrade"
need postinst "systemctl try-restart 'smdr-relay@\\*.service'" "restart the template's instances on upgrade"
need prerm 'deb-systemd-invoke stop' "stop the relays on removal"
need prerm "systemctl stop 'smdr-relay@\\*.service'" "stop the template's instances on removal"
need postrm 'rm -rf /var/lib/cdr-relay' "remove the state on purge"
need postrm 'daemon-reload' "reload systemd on removal"
echo "maintainer scripts: user, state directory, settings' owner and mode, systemd snippets"

# --- Units ------------------------------------------------------------------------------
units="smdr-relay@.service"
for r in $relays; do units="$units $r.service"; done
for u in $units; do
  f="$root/usr/lib/systemd/system/$u"
  r=${u%%[@.]*}
  for line in "User=cdr-relay" "Restart=on-failure" "ProtectSystem=strict" "NoNewPrivileges=yes" \
      "PrivateTmp=yes" "ReadWritePaths=/var/lib/cdr-relay" "KillSignal=SIGTERM" \
      "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" "AmbientCapabilities=CAP_NET_BIND_SERVICE" \
      "StandardError=journal" "WantedBy=multi-user.target"; do
    grep -qxF "$line" "$f" || fail "$u lacks $line"
  done
  case "$u" in
    *@.service) config="/etc/cdr-relay/$r-%i.toml"; state="cdr-relay/$r-%i" ;;
    *) config="/etc/cdr-relay/$r.toml"; state="cdr-relay/$r" ;;
  esac
  grep -qxF "ExecStart=/usr/bin/$r --config $config" "$f" || fail "$u: ExecStart"
  grep -qxF "StateDirectory=$state" "$f" || fail "$u: StateDirectory"
done
echo "units: $units"

if command -v systemd-analyze >/dev/null 2>&1 && [ -d /usr/lib/systemd/system ]; then
  # verify loads each unit with its dependencies (targets) and checks its settings and that
  # ExecStart is an executable: against the unpacked tree (--root), into which this machine's
  # units are copied for the targets. Any complaint fails, unknown keys included (verify
  # itself only warns about those). It cannot check what needs a running systemd: that the
  # sandbox lets the relay run (bins/tests/package.rs runs it, without systemd).
  vroot=$work/verify
  cp -a "$root" "$vroot"
  cp -rn /usr/lib/systemd/system/. "$vroot/usr/lib/systemd/system/"
  for u in $units; do
    name=${u/@./@pbx1.}
    out=$(cd / && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$vroot" "$name" 2>&1) \
      || fail "systemd-analyze verify $name: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $name: $out"
  done
  echo "systemd-analyze verify: $units clean ($(systemd-analyze --version | head -1))"
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    for u in smdr-relay.service smdr-relay@pbx1.service; do
      (cd / && systemd-analyze security --offline=yes --root="$vroot" "$u" 2>/dev/null | tail -1)
    done
  fi
else
  echo "systemd-analyze verify: skipped (no systemd-analyze or no /usr/lib/systemd/system here)"
fi

# --- The packaged binary and its links ---------------------------------------------------
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
multi="$root/usr/bin/cdr-relay"
if command -v readelf >/dev/null 2>&1; then
  readelf -S "$multi" | grep -q '\.symtab' && fail "cdr-relay is not stripped"
fi
v=$("$multi" --version)
echo "$v"
case "$v" in "cdr-relay $upstream (commit "*")") ;; *) fail "cdr-relay --version: $v (package $version)" ;; esac
# Not named after a relay, it names them (and fails: it ran none).
usage_rc=0
usage=$("$multi" 2>&1) || usage_rc=$?
[ "$usage_rc" = 2 ] || fail "cdr-relay with no relay named: exit code $usage_rc, not 2"
for r in $relays; do
  grep -qE "^ +$r " <<<"$usage" || fail "cdr-relay's usage does not list $r: $usage"
done
for r in $relays; do
  bin="$root/usr/bin/$r"
  [ -L "$bin" ] && [ "$(readlink "$bin")" = cdr-relay ] || fail "/usr/bin/$r is not a link to cdr-relay"
  v=$("$bin" --version)
  echo "$v"
  case "$v" in "$r $upstream (commit "*")") ;; *) fail "$r --version: $v (package $version)" ;; esac
  if [ -n "$commit" ] && [ -z "${CDR_RELAY_GIT_COMMIT:-}" ]; then
    [ "$v" = "$r $upstream (commit $commit)" ] || fail "$r --version: $v, HEAD is $commit"
  fi
  # As the unit runs it: a clean environment, its state directory, the packaged settings (the
  # AMI password is the one thing the ami-relay example leaves to the operator).
  out=$(cd "$work" && env -i PATH=/usr/bin:/bin STATE_DIRECTORY="/var/lib/cdr-relay/$r" \
        AMI_PASSWORD=operator-sets-this "$bin" --config "$root/etc/cdr-relay/$r.toml" \
        --check-config 2>&1) || fail "$r --check-config with its packaged example: $out"
  grep -qxF "database: /var/lib/cdr-relay/$r/cdr-relay.db" <<<"$out" \
    || fail "$r: the database is not in the state directory: $out"
  grep -qxF "configuration ok" <<<"$out" || fail "$r --check-config: $out"
  echo "  --check-config $r.toml: ok ($(grep -m1 '^source:' <<<"$out"))"
done
echo "check-package: ok"
