#!/usr/bin/env bash
# The one command that runs every test: builds the project's Postgres and
# RabbitMQ images if they are missing (this machine has no registry) and the
# controller and agent images from this checkout (tag :test, for the
# multi-host fault test), then runs the whole workspace's tests against them. Extra arguments go to
# `cargo test` (e.g. `deploy/test.sh -p integration-tests core`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v docker >/dev/null || { echo "docker is required" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker engine is not reachable: $(docker info 2>&1 | tail -1)" >&2; exit 1; }

deploy/build-app-images.sh --test
# The API fuzzer (schemathesis, in a virtual environment) for tests/tests/fuzz.rs.
deploy/fuzz-tools.sh

# Containers of an earlier run that was killed before it could clean up.
cleanup() {
    docker ps -aq --filter label=orchestrator.test | xargs -r docker rm -f -v >/dev/null 2>&1 || true
    docker network ls -q --filter name=orch-mh- | xargs -r docker network rm >/dev/null 2>&1 || true
    # What test agents left in their cgroups (tests/src/cluster.rs and the
    # multi-host agents' subtrees): processes of killed agents' jobs, then
    # the cgroups themselves. Nothing outside orchestrator-test is touched.
    for d in /sys/fs/cgroup/*/orchestrator-test /sys/fs/cgroup/orchestrator-test; do
        [[ -d $d ]] || continue
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        sleep 0.2
        find "$d" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
    done
}
cleanup
trap cleanup EXIT

# One process per test binary, so each binary starts its containers once and
# its tests share them (each with its own database and broker prefix).
cargo test --workspace --all-targets "$@"
