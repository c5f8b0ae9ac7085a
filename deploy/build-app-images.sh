#!/usr/bin/env bash
# Builds the controller and worker-agent runtime images from this checkout's
# binaries, on the minimal Debian base (made by build-images.sh --runtime if
# it is missing). No registry is needed.
#
#   deploy/build-app-images.sh            # release binaries, tag :latest (deploy/up.sh)
#   deploy/build-app-images.sh --test     # the dev-profile binaries `cargo test`
#                                         # builds anyway, tag :test (the
#                                         # multi-host test; saves a release build)
#
# The binaries are compiled first (cargo skips them when up to date), copied
# into a temporary build context with the image's Dockerfile, and nothing is
# left in the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
TAG=latest
for arg in "$@"; do
  case "$arg" in
    --test) PROFILE=debug; TAG="test" ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 1 ;;
  esac
done

deploy/build-images.sh --runtime
if [[ $PROFILE == release ]]; then
  cargo build --release -p controller -p worker-agent
else
  # The same feature set as `cargo test --workspace --all-targets`, so the
  # test run reuses these artifacts instead of compiling them again.
  cargo build --workspace --all-targets
fi

TARGET_DIR="${CARGO_TARGET_DIR:-target}/$PROFILE"
RUNTIME_BASE="${ORCH_RUNTIME_BASE_IMAGE:-orchestrator-runtime-base:bookworm}"
CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

build() { # image-directory image-name binary...
  local dir=$1 image=$2
  shift 2
  rm -rf "${CONTEXT:?}"/*
  cp "deploy/images/$dir/Dockerfile" "$CONTEXT/"
  local binary
  for binary in "$@"; do cp "$binary" "$CONTEXT/"; done
  local out # the legacy builder's deprecation notice is noise unless it fails
  out="$(docker build -q --build-arg BASE="$RUNTIME_BASE" -t "$image:$TAG" "$CONTEXT" 2>&1)" || { echo "$out" >&2; return 1; }
  echo "[build-app-images] $image:$TAG from $*" >&2
}
build controller orchestrator-controller "$TARGET_DIR/controller"
# worker-agent-exec: the small helper each job starts through, statically
# linked (it starts once per job; see build-exec-helper.sh).
HELPER_FLAGS=()
[[ $PROFILE == debug ]] && HELPER_FLAGS+=(--debug)
HELPER=$(deploy/build-exec-helper.sh "${HELPER_FLAGS[@]}")
build agent orchestrator-agent "$TARGET_DIR/worker-agent" "$HELPER"
