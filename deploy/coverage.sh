#!/usr/bin/env bash
# Line coverage per module of the whole test suite (real containers), with
# Debian's llvm-22 tools and cargo-llvm-cov, both installed here if missing.
# Prints the per-file table; `--html` writes target/llvm-cov/html as well.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/lib/llvm-22/bin/llvm-cov ]; then
    apt-get update -qq && apt-get install -y -qq llvm-22 >/dev/null
fi
command -v cargo-llvm-cov >/dev/null || cargo install cargo-llvm-cov --locked
export LLVM_COV=/usr/lib/llvm-22/bin/llvm-cov LLVM_PROFDATA=/usr/lib/llvm-22/bin/llvm-profdata

deploy/build-images.sh
cleanup() { docker ps -aq --filter label=orchestrator.test | xargs -r docker rm -f -v >/dev/null 2>&1 || true; }
cleanup
trap cleanup EXIT
cargo llvm-cov --workspace --all-targets --ignore-filename-regex '(tests/|worker-agent/src/main.rs|controller/src/main.rs)' "$@"
