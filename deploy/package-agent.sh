#!/usr/bin/env bash
# Builds the worker agent's Debian package (orchestrator-agent_<version>_<arch>.deb)
# for a bare host: the binary, a hardened systemd unit, its settings file and
# its system user. Plain dpkg-deb from a staged tree: the package is a handful
# of files, and dpkg-deb is on every Debian host (no extra build tool).
#
#   deploy/package-agent.sh                         # release binary, into deploy/.cache/dist/
#   deploy/package-agent.sh --binary target/debug/worker-agent --out DIR
#
# The exec-job helper (worker-agent-exec) goes beside the agent: built
# statically linked (deploy/build-exec-helper.sh) for the release package,
# taken from beside --binary otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY=""
OUT=deploy/.cache/dist
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 1 ;;
  esac
done
HELPER=""
if [[ -z $BINARY ]]; then
  cargo build --release -p worker-agent
  BINARY="${CARGO_TARGET_DIR:-target}/release/worker-agent"
  HELPER=$(deploy/build-exec-helper.sh)
fi
[[ -x $BINARY ]] || { echo "no agent binary at $BINARY" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
SRC=deploy/agent-package
STAGE=$(mktemp -d)
chmod 0755 "$STAGE"
trap 'rm -rf "$STAGE"' EXIT

install -D -m 0755 "$BINARY" "$STAGE/usr/bin/worker-agent"
# The small exec-job helper, beside the agent where it looks for it (the
# agent falls back to its own binary without it).
HELPER="${HELPER:-$(dirname "$BINARY")/worker-agent-exec}"
if [[ -x $HELPER ]]; then
  install -D -m 0755 "$HELPER" "$STAGE/usr/bin/worker-agent-exec"
fi
install -D -m 0644 "$SRC/orchestrator-agent.service" "$STAGE/lib/systemd/system/orchestrator-agent.service"
install -D -m 0644 "$SRC/sysusers.conf" "$STAGE/usr/lib/sysusers.d/orchestrator-agent.conf"
install -D -m 0640 "$SRC/agent.env" "$STAGE/etc/orchestrator-agent/agent.env"
install -d -m 0755 "$STAGE/DEBIAN"
install -m 0755 "$SRC/postinst" "$SRC/prerm" "$STAGE/DEBIAN/"
echo /etc/orchestrator-agent/agent.env > "$STAGE/DEBIAN/conffiles"
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: orchestrator-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: Orchestrator developers <orchestrator@localhost>
Depends: libc6 (>= 2.34), passwd
Section: admin
Priority: optional
Installed-Size: $(du -ks "$STAGE" | cut -f1)
Description: worker agent of the orchestrator
 Consumes job shards from the orchestrator's broker, runs them as child
 processes and reports every outcome back to the controller. Runs as its
 own unprivileged user under a hardened systemd unit.
CONTROL

mkdir -p "$OUT"
DEB="$OUT/orchestrator-agent_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
