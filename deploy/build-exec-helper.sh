#!/usr/bin/env bash
# Builds the exec-job helper (`worker-agent-exec`, the small binary every
# job starts through) statically linked against musl, and prints its path.
# Statically linked it starts without the dynamic loader, and musl's start
# runs no CPU-feature probes: glibc's, static or not, issue dozens of
# `cpuid` instructions, which trap to the hypervisor on a virtual machine.
# On the 2-core box that is about 0.9 ms of CPU less for every job than a
# static glibc build (see docs/benchmarks.md). The agent looks for it
# beside its own binary, so `--into DIR` copies it there.
#
#   deploy/build-exec-helper.sh                # release build
#   deploy/build-exec-helper.sh --debug        # dev-profile build
#   deploy/build-exec-helper.sh --into DIR     # and copy it to DIR/worker-agent-exec
#   deploy/build-exec-helper.sh --glibc        # static glibc instead of musl
#
# The musl target's standard library comes from rustup (`rustup target
# add`, about 20 MB, once); where rustup or that download is missing the
# helper is built against a static glibc instead, with a warning. The
# helper is a crate of its own with three small dependencies, so this
# second build takes seconds. It uses a target directory of its own
# (target/static) so that the usual builds keep their flags and artifacts.
# glibc's static archive (libc.a) comes with libc6-dev, which the Rust
# toolchain's linker needs anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
INTO=""
LIBC=musl
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) PROFILE=debug; shift ;;
    --into) INTO="$2"; shift 2 ;;
    --glibc) LIBC=gnu; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 1 ;;
  esac
done

HOST=$(rustc -vV | sed -n 's/^host: //p')
MUSL="${HOST%%-*}-unknown-linux-musl"

# Whether the musl target's standard library is installed or can be.
musl_ready() {
  command -v rustup >/dev/null || return 1
  rustup target list --installed 2>/dev/null | grep -qx "$MUSL" && return 0
  echo "[build-exec-helper] adding the $MUSL target (rustup, once)" >&2
  rustup target add "$MUSL" >&2
}

TRIPLE=$HOST
if [[ $LIBC == musl ]]; then
  if musl_ready; then
    TRIPLE=$MUSL
  else
    echo "[build-exec-helper] warning: no $MUSL target; building against a static glibc (about 0.9 ms of CPU more per job)" >&2
  fi
fi
TARGET="${CARGO_TARGET_DIR:-target}/static"
FLAGS=()
[[ $PROFILE == release ]] && FLAGS+=(--release)
# --target: RUSTFLAGS then reach only the helper's own crates, not build
# scripts or proc macros (which cannot be static). musl links statically
# by default; the flag makes glibc do so too.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build "${FLAGS[@]}" --quiet -p worker-agent-exec --target "$TRIPLE" --target-dir "$TARGET" >&2
HELPER="$TARGET/$TRIPLE/$PROFILE/worker-agent-exec"
if [[ -n $INTO ]]; then
  install -D -m 0755 "$HELPER" "$INTO/worker-agent-exec"
  HELPER="$INTO/worker-agent-exec"
fi
echo "$HELPER"
