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
# Headless Chromium and chromedriver for the dashboard's browser tests.
deploy/browser-tools.sh

# Containers, networks and cgroups of an earlier run that was killed before
# it could clean up.
source deploy/test-cleanup.sh
cleanup() { cleanup_test_leftovers; }
cleanup
trap cleanup EXIT

# One process per test binary, so each binary starts its containers once and
# its tests share them (each with its own database and broker prefix).
cargo test --workspace --all-targets "$@"
