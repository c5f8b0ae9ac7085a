#!/usr/bin/env bash
# Profiles the whole box under load: runs `loadgen` (its arguments are this
# script's) while `perf` samples every CPU, then writes a flame graph of
# everything that ran (controller, agents, their jobs, Postgres, RabbitMQ,
# docker-proxy, the kernel) and the top entries by process and by symbol.
#
#   deploy/profile.sh --jobs 5000 --agents 2 --capacity 16
#
# Output in deploy/.cache/profile/: flame.svg, top-comm.txt (CPU by
# process name), top-symbols.txt (by process and symbol), perf.data.
#
# Installs what is missing: linux-perf (Debian), inferno (crates.io, into
# deploy/.cache/tools). Builds the controller, agent and loadgen with frame
# pointers, in a target directory of their own (deploy/.cache/profile-target)
# so that the usual builds are not invalidated. The controller runs as a
# process of its own (`loadgen --controller-bin`), so its samples are
# apart from the load generator's. This machine's kernel has no
# hardware counters for perf, so it samples the `cpu-clock` software event.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=deploy/.cache/profile
TOOLS=deploy/.cache/tools
TARGET=deploy/.cache/profile-target
mkdir -p "$OUT" "$TOOLS"

command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
if [[ ! -x $TOOLS/bin/inferno-flamegraph ]]; then
    cargo install --quiet --locked --root "$TOOLS" inferno
fi

export RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
cargo build --release --target-dir "$TARGET" -p controller -p worker-agent -p integration-tests \
    --bin controller --bin loadgen --bin worker-agent
# The agent as it is installed: its statically linked exec-job helper beside it.
install -D -m 0755 "$TARGET/release/worker-agent" "$TARGET/agent/worker-agent"
CARGO_TARGET_DIR="$TARGET" deploy/build-exec-helper.sh --into "$TARGET/agent" >/dev/null

"$TARGET/release/loadgen" --agent-bin "$TARGET/agent/worker-agent" \
    --controller-bin "$TARGET/release/controller" "$@" > "$OUT/loadgen.txt" 2>/dev/null &
LOADGEN=$!
# Let the containers and agents start before sampling, then sample until
# the run ends.
sleep "${PROFILE_SETTLE_SECONDS:-8}"
perf record -a -g -F 499 -e cpu-clock -o "$OUT/perf.data" -- \
    bash -c "while kill -0 $LOADGEN 2>/dev/null; do sleep 0.5; done" 2> "$OUT/perf-record.log"
wait "$LOADGEN" || { echo "loadgen failed: $(tail -5 "$OUT/loadgen.txt")" >&2; exit 1; }

perf script -i "$OUT/perf.data" 2>/dev/null | "$TOOLS/bin/inferno-collapse-perf" > "$OUT/stacks.folded"
"$TOOLS/bin/inferno-flamegraph" --title "loadgen $*" < "$OUT/stacks.folded" > "$OUT/flame.svg"
report() {
    perf report -i "$OUT/perf.data" --no-children -g none --percent-limit "$1" --sort "$2" --stdio 2>/dev/null |
        grep -v -e '^#' -e '^$' || true
}
report 0.5 comm > "$OUT/top-comm.txt"
report 0.3 comm,dso,sym > "$OUT/top-symbols.txt"

tail -2 "$OUT/loadgen.txt"
echo "--- CPU by process (top-comm.txt)"
head -15 "$OUT/top-comm.txt"
echo "flame graph: $OUT/flame.svg"
