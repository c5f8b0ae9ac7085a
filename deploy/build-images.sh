#!/usr/bin/env bash
# Build the local Postgres and RabbitMQ images used by the integration tests
# straight from Debian packages, so no container registry is needed.
#
#   deploy/build-images.sh           # build whatever is missing (idempotent)
#   deploy/build-images.sh --force   # rebuild base + both images
#   deploy/build-images.sh --runtime # also the minimal base of the controller
#                                    # and agent images (used by deploy/up.sh)
#
# Env overrides (name:tag):
#   ORCH_POSTGRES_IMAGE   default orchestrator-postgres:15
#   ORCH_RABBITMQ_IMAGE   default orchestrator-rabbitmq:3
#   ORCH_BASE_IMAGE       default orchestrator-base:bookworm (rootfs both build FROM)
#   ORCH_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   ORCH_DEBIAN_SECURITY_MIRROR  default: ORCH_DEBIAN_MIRROR with debian -> debian-security
#
# Steps: (1) mmdebstrap a minbase bookworm rootfs with postgresql-15 and
# rabbitmq-server and `docker import` it; (2) docker build images/postgres and
# images/rabbitmq FROM it. An image that already exists is left alone, unless
# its build context changed since (a label holds the context's digest).
set -euo pipefail

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

FORCE=0
RUNTIME=0
for arg in "$@"; do
  case "$arg" in
    -f|--force) FORCE=1 ;;
    --runtime) RUNTIME=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE_IMAGE="${ORCH_BASE_IMAGE:-orchestrator-base:bookworm}"
POSTGRES_IMAGE="${ORCH_POSTGRES_IMAGE:-orchestrator-postgres:15}"
RABBITMQ_IMAGE="${ORCH_RABBITMQ_IMAGE:-orchestrator-rabbitmq:3}"
MIRROR="${ORCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${ORCH_DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"
SUITE=bookworm
# Legacy builder: works with a FROM image that exists only locally and needs
# no buildx plugin (not installed on the dev machines).
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
docker info >/dev/null 2>&1 ||
  die "cannot reach the Docker daemon (${DOCKER_HOST:-unix:///var/run/docker.sock}); is dockerd running and may $(id -un) use it?"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
wanted() { [[ $FORCE == 1 ]] || ! have_image "$1"; }

ensure_mmdebstrap() {
  command -v mmdebstrap >/dev/null 2>&1 && return
  [[ $(id -u) == 0 ]] || die "mmdebstrap is missing; install it (apt-get install mmdebstrap) or run as root"
  log "installing mmdebstrap"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap gpg
}

build_base() {
  ensure_mmdebstrap
  log "bootstrapping $SUITE rootfs -> $BASE_IMAGE (downloads ~150 MB, takes a few minutes)"
  local tmp="orchestrator-base-building:$$"
  # Size (516 MB -> ~310 MB): no docs, man pages or translations, and no LLVM:
  # postgresql-15 hard-depends on libllvm14 (+libz3) only for its JIT, which
  # the image turns off (jit = off); without llvmjit.so Postgres never loads it.
  # The packages stay "installed" for dpkg/apt, their files are just not unpacked.
  # The postgresql-15 postinst creates a 'main' cluster under /var/lib/postgresql/15
  # that we never use (the image initdb's its own data dir): delete it.
  # mmdebstrap itself keeps daemons from starting and wipes apt lists/caches.
  # shellcheck disable=SC2016 # "$1" in the hook is expanded by mmdebstrap
  if ! mmdebstrap --variant=minbase \
      --include=postgresql-15,rabbitmq-server,ca-certificates \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/lib/*/libLLVM-*' \
      --dpkgopt='path-exclude=/usr/lib/*/libz3.so*' \
      --dpkgopt='path-exclude=/usr/lib/postgresql/*/lib/llvmjit*' \
      --dpkgopt='path-exclude=/usr/lib/postgresql/*/lib/bitcode/*' \
      --customize-hook='rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15 "$1"/var/log/postgresql/*' \
      "$SUITE" - \
      "deb $MIRROR $SUITE main" \
      "deb $MIRROR $SUITE-updates main" \
      "deb $SECURITY_MIRROR $SUITE-security main" |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      - "$tmp" >/dev/null
  then
    docker image rm -f "$tmp" >/dev/null 2>&1 || true
    die "building the base rootfs failed"
  fi
  # Tag only once the import fully succeeded, so a failed run never leaves a
  # half-built image under the real name.
  docker tag "$tmp" "$BASE_IMAGE"
  docker image rm "$tmp" >/dev/null
}

# A minimal rootfs (no database, no broker) for the controller and agent
# images: small, and nothing in it but what a Rust binary needs.
build_runtime_base() {
  local image="${ORCH_RUNTIME_BASE_IMAGE:-orchestrator-runtime-base:bookworm}"
  if [[ $FORCE == 0 ]] && have_image "$image"; then log "$image exists, reusing"; return; fi
  ensure_mmdebstrap
  log "bootstrapping the runtime rootfs -> $image"
  mmdebstrap --variant=minbase --mode=root --include=ca-certificates \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" - "deb $MIRROR $SUITE main" "deb $SECURITY_MIRROR $SUITE-security main" |
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null || die "building the runtime rootfs failed"
}

# A digest of an image's build context (its Dockerfile and the files it
# copies), stored as a label: an image built from an older context is
# rebuilt, so a changed Dockerfile never leaves a stale image behind.
context_hash() { (cd "$HERE/images/$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16; }
stale() { # image dir
  [[ $(docker image inspect -f '{{index .Config.Labels "orchestrator.context"}}' "$1" 2>/dev/null) != "$(context_hash "$2")" ]]
}

build_image() { # image dir
  log "building $1 from $2"
  docker build --build-arg BASE="$BASE_IMAGE" --label "orchestrator.context=$(context_hash "$2")" -t "$1" "$HERE/images/$2"
}

# IDs of images we are about to replace, removed at the end (best effort) so
# --force does not pile up dangling <none> images.
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
OLD_IDS=()

BUILT_BASE=0
if wanted "$POSTGRES_IMAGE" || wanted "$RABBITMQ_IMAGE"; then
  if wanted "$BASE_IMAGE"; then OLD_IDS+=("$(image_id "$BASE_IMAGE")"); build_base; BUILT_BASE=1; else log "$BASE_IMAGE exists, reusing"; fi
fi
# A freshly built base invalidates images made from an older one.
for pair in "$POSTGRES_IMAGE=postgres" "$RABBITMQ_IMAGE=rabbitmq"; do
  img="${pair%=*}" dir="${pair#*=}"
  if [[ $BUILT_BASE == 1 ]] || wanted "$img" || stale "$img" "$dir"; then
    OLD_IDS=("$(image_id "$img")" "${OLD_IDS[@]}")  # children before their base
    build_image "$img" "$dir"
  else log "$img exists, skipping (--force rebuilds)"; fi
done
for id in "${OLD_IDS[@]}"; do
  # Only untagged leftovers; `rm` also fails harmlessly if a container uses one.
  if [[ -n $id && $(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null) == 0 ]]; then
    docker image rm "$id" >/dev/null 2>&1 || true
  fi
done
if [[ $RUNTIME == 1 ]]; then
  build_runtime_base
fi
log "done: $POSTGRES_IMAGE $RABBITMQ_IMAGE"
