#!/usr/bin/env bash
# The chaos soak: a multi-host deployment (two controller replicas, one
# broker, one Postgres, four agents, each in a container of its own on a
# private network of the project's) runs a steady stream of jobs of mixed
# kinds while, every 15-60 s, one part is SIGKILLed (an agent, a controller
# replica, the broker, Postgres) or an agent is cut off the network for
# 20 s. Then it drains, checks every job and prints the tables; it exits
# non-zero if any check fails. Not part of the test command (it runs for
# minutes); builds the images it needs first.
#
#   deploy/soak.sh                       # 10 minutes, 3 jobs/s
#   deploy/soak.sh --minutes 2 --seed 7  # any option of the soak binary (--help)
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then
    cargo run -q -p integration-tests --bin soak -- --help
    exit 0
  fi
done
command -v docker >/dev/null || { echo "docker is required" >&2; exit 1; }
deploy/build-images.sh
deploy/build-app-images.sh --test
source deploy/test-cleanup.sh
cleanup_test_leftovers
trap cleanup_test_leftovers EXIT
cargo run -q -p integration-tests --bin soak -- "$@"
