#!/usr/bin/env bash
# The peer comparison: the orchestrator against Celery on this box, the same
# job on both sides (fork/exec /bin/true, its outcome stored in Postgres,
# RabbitMQ as the broker, the message acknowledged after the outcome), run
# back to back, and the ratio of completed jobs/s. See bench/peers/README.md.
#
#   bench/peers/run.sh                      # 5000 jobs, one run of each side
#   bench/peers/run.sh --jobs 2000 --runs 3 # sides alternate; medians compared
#
# Flags:
#   --jobs N                 jobs per run and side (default 5000)
#   --runs K                 runs per side (default 1); run k starts with
#                            ours when k is odd, with Celery when it is even
#   --celery-concurrency C   Celery prefork processes (default 2: the cores)
#   --celery-task true|noop  true: fork/exec /bin/true (default); noop: an
#                            in-process no-op (what Celery costs by itself)
#   --celery-confirm-publish the submitter waits for RabbitMQ's publisher
#                            confirm of each task (Celery's default: no)
#   --only ours|celery       run one side only (no ratio)
#   --max-seconds S          cap per side and run (default 900)
#   --rebuild                run `cargo build --release` even if the binaries exist
#   --keep-logs              keep the sides' outputs and logs (kept anyway on failure)
#
# Needs docker, python3 (>= 3.11, with venv) and cargo if the binaries are
# missing; run as root (the orchestrator's agents run jobs as `nobody` in
# cgroups of their own). The project's images (deploy/build-images.sh) are
# built if missing; nothing is pulled. Env: ORCH_POSTGRES_IMAGE,
# ORCH_RABBITMQ_IMAGE (as deploy/build-images.sh), CARGO_TARGET_DIR,
# PEERS_VENV (default bench/peers/.venv), PYTHON (default python3).
# Output: a table (system, run, jobs/s), the medians and the ratio
# ours/celery, then the whole as one JSON line on stdout.
set -euo pipefail

log() { printf '[peers] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

JOBS=5000
RUNS=1
CELERY_CONCURRENCY=2
CELERY_TASK=true
CONFIRM_PUBLISH=0
ONLY=
MAX_SECONDS=900
REBUILD=0
KEEP_LOGS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --jobs) JOBS=${2:?--jobs needs a number}; shift 2 ;;
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --celery-concurrency) CELERY_CONCURRENCY=${2:?--celery-concurrency needs a number}; shift 2 ;;
    --celery-task) CELERY_TASK=${2:?--celery-task needs true or noop}; shift 2 ;;
    --celery-confirm-publish) CONFIRM_PUBLISH=1; shift ;;
    --only) ONLY=${2:?--only needs ours or celery}; shift 2 ;;
    --max-seconds) MAX_SECONDS=${2:?--max-seconds needs a number}; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --keep-logs) KEEP_LOGS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_count "$JOBS" || die "--jobs must be a positive integer, not '$JOBS'"
{ is_count "$RUNS" && ((RUNS <= 20)); } || die "--runs must be 1 to 20, not '$RUNS'"
is_count "$CELERY_CONCURRENCY" || die "--celery-concurrency must be a positive integer"
is_count "$MAX_SECONDS" || die "--max-seconds must be a positive integer"
[[ $CELERY_TASK == true || $CELERY_TASK == noop ]] || die "--celery-task must be true or noop"
[[ -z $ONLY || $ONLY == ours || $ONLY == celery ]] || die "--only must be ours or celery"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADGEN="$TARGET_DIR/release/loadgen"
# The agent and its exec-job helper, staged together (see the build below).
AGENT_DIR="$TARGET_DIR/bench-agent"
AGENT="$AGENT_DIR/worker-agent"
PG_IMAGE="${ORCH_POSTGRES_IMAGE:-orchestrator-postgres:15}"
MQ_IMAGE="${ORCH_RABBITMQ_IMAGE:-orchestrator-rabbitmq:3}"
VENV="${PEERS_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"
# The orchestrator's side as the brief fixes it: 2 agents of capacity 16,
# batches of 200 jobs per submit request.
LOADGEN_ARGS=(--agents 2 --capacity 16 --batch 200)
# How long a side may take beyond --max-seconds to start and stop (its
# containers, the worker's warm shutdown) before it is killed.
GRACE_SECONDS=180

# ---- prerequisites --------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon: $(docker info 2>&1 | tail -n 1)"
[[ $(id -u) == 0 ]] || log "warning: not root; the orchestrator's agents need root for their jobs' user and cgroups"

if ! docker image inspect "$PG_IMAGE" >/dev/null 2>&1 || ! docker image inspect "$MQ_IMAGE" >/dev/null 2>&1; then
  log "building the project's images ($PG_IMAGE, $MQ_IMAGE) with deploy/build-images.sh"
  "$ROOT/deploy/build-images.sh" || die "deploy/build-images.sh failed"
fi

if [[ $ONLY != celery ]] && { [[ $REBUILD == 1 ]] || [[ ! -x $LOADGEN ]] || [[ ! -x $AGENT ]] || [[ ! -x $AGENT_DIR/worker-agent-exec ]] ||
  [[ $TARGET_DIR/release/worker-agent -nt $AGENT ]]; }; then
  command -v cargo >/dev/null 2>&1 || die "$LOADGEN or $AGENT is missing and cargo is not in PATH"
  log "building loadgen, worker-agent and its statically linked exec-job helper (release)"
  (cd "$ROOT" && cargo build --release -p integration-tests --bin loadgen -p worker-agent --bin worker-agent) ||
    die "cargo build failed"
  # The agent as a package installs it: the static helper beside it.
  install -D -m 0755 "$TARGET_DIR/release/worker-agent" "$AGENT"
  "$ROOT/deploy/build-exec-helper.sh" --into "$AGENT_DIR" >/dev/null || die "deploy/build-exec-helper.sh failed"
fi

setup_venv() {
  local want stamp="$VENV/.requirements.sha256"
  want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && $(cat "$stamp" 2>/dev/null) == "$want" ]]; then return; fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON to a Python 3.11 or newer)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); Celery's pinned SQLAlchemy needs Python 3.11 or newer (set PYTHON)"
  log "creating $VENV (Celery and its pinned dependencies from requirements.txt)"
  "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$HERE/requirements.txt" ||
    die "pip install -r $HERE/requirements.txt failed"
  echo "$want" > "$stamp"
}
setup_venv
PY="$VENV/bin/python"
summary() { PYTHONPATH="$HERE" "$PY" -m celery_bench.summary "$@"; }

# ---- state and cleanup ----------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/peers.XXXXXX")"
RESULTS="$WORK/results.jsonl"
CONTAINERS=()   # the Celery side's containers, removed at every exit
LOADGEN_PID=    # a running loadgen
CELERY_PID=     # a running bench.py
OK=0

# The containers a running loadgen started (testcontainers, label
# orchestrator.test, which other test runs on this box use too): those
# publishing a port that loadgen's own connections go to.
loadgen_containers() {
  local pid=$1 ports id
  ports=$(ss -Htnp 2>/dev/null | awk -v p="pid=$pid," 'index($0, p) { n = split($5, a, ":"); print a[n] }' | sort -u)
  [[ -n $ports ]] || return 0
  for id in $(docker ps -q --filter label=orchestrator.test); do
    if docker port "$id" 2>/dev/null | awk -F: '{ print $NF }' | grep -qxF -f <(printf '%s\n' "$ports"); then
      echo "$id"
    fi
  done
}

# Stops a loadgen that overran (its containers would outlive a killed
# process: it removes them only when it exits by itself).
stop_loadgen() {
  [[ -n $LOADGEN_PID ]] && kill -0 "$LOADGEN_PID" 2>/dev/null || return 0
  local ids agents
  ids=$(loadgen_containers "$LOADGEN_PID")
  # Its agents are its children: killed by their ids along with it
  # (kill_on_drop does not run on SIGKILL).
  agents=$(pgrep -P "$LOADGEN_PID" || true)
  # shellcheck disable=SC2086 # one pid per word
  kill -KILL "$LOADGEN_PID" $agents 2>/dev/null || true
  wait "$LOADGEN_PID" 2>/dev/null || true
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f -v $ids >/dev/null 2>&1 || true
  fi
  LOADGEN_PID=
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_loadgen
  if [[ -n $CELERY_PID ]] && kill -0 "$CELERY_PID" 2>/dev/null; then
    kill -TERM "$CELERY_PID" 2>/dev/null || true   # it stops its worker
    wait "$CELERY_PID" 2>/dev/null || true
  fi
  if ((${#CONTAINERS[@]})); then
    docker rm -f -v "${CONTAINERS[@]}" >/dev/null 2>&1 || true
  fi
  if [[ $OK == 1 && $KEEP_LOGS == 0 ]]; then
    rm -rf "$WORK"
  else
    log "logs kept in $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---- the orchestrator's side ----------------------------------------------
run_ours() { # run
  local run=$1 out="$WORK/ours-$1.out" err="$WORK/ours-$1.err" load waited=0 rc=0
  local cap=$((MAX_SECONDS + GRACE_SECONDS))
  load=$(loadavg)
  log "run $run: ours, loadgen --jobs $JOBS ${LOADGEN_ARGS[*]}"
  (cd "$ROOT" && exec "$LOADGEN" --agent-bin "$AGENT" --jobs "$JOBS" "${LOADGEN_ARGS[@]}" \
      --max-seconds "$MAX_SECONDS") >"$out" 2>"$err" &
  LOADGEN_PID=$!
  while kill -0 "$LOADGEN_PID" 2>/dev/null && ((waited < cap)); do
    sleep 1
    waited=$((waited + 1))
  done
  if kill -0 "$LOADGEN_PID" 2>/dev/null; then
    stop_loadgen
    die "loadgen ran longer than ${cap} s and was killed; its output: $out, $err"
  fi
  wait "$LOADGEN_PID" || rc=$?
  LOADGEN_PID=
  if ((rc != 0)); then
    tail -n 20 "$err" >&2
    die "loadgen failed (exit $rc); its output: $out, $err"
  fi
  grep -E '^[0-9]+ jobs' "$out" >&2 || true
  summary record --system ours --run "$run" --load "$load" "$out" "$RESULTS" ||
    die "run $run: no usable figure from loadgen ($out)"
}

# ---- the Celery side ------------------------------------------------------
wait_until() { # seconds command...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

running() { [[ $(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }
pg_ready() { running "$1" && docker exec "$1" pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; }
mq_ready() { running "$1" && docker logs "$1" 2>&1 | grep -q 'Server startup complete'; }
host_port() { # container port
  local mapped
  mapped=$(docker port "$1" "$2/tcp" | head -n 1)
  [[ -n $mapped ]] || die "container $1 publishes no port for $2"
  echo "${mapped##*:}"
}

run_celery() { # run
  local run=$1 out="$WORK/celery-$1.out" load pg mq pg_port mq_port rc=0
  local cap=$((MAX_SECONDS + GRACE_SECONDS))
  pg="peers-$$-$run-postgres"
  mq="peers-$$-$run-rabbitmq"
  log "run $run: celery, prefork -c $CELERY_CONCURRENCY, task $CELERY_TASK; starting $PG_IMAGE and $MQ_IMAGE"
  CONTAINERS+=("$pg" "$mq")
  # Published on the loopback only; durability is the images' own (fsync
  # and synchronous_commit on; persistent messages on durable queues). Data
  # on anonymous volumes (removed by `rm -v`), as the orchestrator side's
  # test containers have it (tests/src/containers.rs), so neither pays the
  # storage driver's FUSE layer.
  docker run -d --name "$pg" --label orchestrator.peers=1 -p 127.0.0.1::5432 \
    --mount type=volume,target=/var/lib/postgresql/data "$PG_IMAGE" >/dev/null ||
    die "starting $PG_IMAGE failed"
  docker run -d --name "$mq" --label orchestrator.peers=1 -p 127.0.0.1::5672 \
    --mount type=volume,target=/var/lib/rabbitmq/mnesia "$MQ_IMAGE" >/dev/null ||
    die "starting $MQ_IMAGE failed"
  wait_until 90 pg_ready "$pg" ||
    die "Postgres ($pg) not ready in 90 s: $(docker logs --tail 5 "$pg" 2>&1)"
  wait_until 180 mq_ready "$mq" ||
    die "RabbitMQ ($mq) not ready in 180 s: $(docker logs --tail 5 "$mq" 2>&1)"
  pg_port=$(host_port "$pg" 5432)
  mq_port=$(host_port "$mq" 5672)
  load=$(loadavg)
  (cd "$HERE" && PYTHONPATH="$HERE" \
     PEERS_BROKER_URL="amqp://guest:guest@127.0.0.1:$mq_port//" \
     PEERS_RESULT_URL="db+postgresql+psycopg2://postgres:postgres@127.0.0.1:$pg_port/postgres" \
     PEERS_CONFIRM_PUBLISH="$CONFIRM_PUBLISH" \
     exec timeout -k 30 "$cap" "$PY" -m celery_bench.bench --jobs "$JOBS" \
       --concurrency "$CELERY_CONCURRENCY" --task "$CELERY_TASK" \
       --max-seconds "$MAX_SECONDS" --log "$WORK/celery-worker-$run.log") >"$out" &
  CELERY_PID=$!
  wait "$CELERY_PID" || rc=$?
  CELERY_PID=
  docker rm -f -v "$pg" "$mq" >/dev/null 2>&1 || true
  CONTAINERS=()
  ((rc != 124)) || die "the Celery side ran longer than ${cap} s and was stopped; worker log: $WORK/celery-worker-$run.log"
  ((rc == 0)) || die "the Celery side failed (exit $rc); worker log: $WORK/celery-worker-$run.log"
  summary record --system celery --run "$run" --load "$load" "$out" "$RESULTS" ||
    die "run $run: no usable figure from the Celery side ($out)"
}

# ---- the runs -------------------------------------------------------------
log "$JOBS jobs, $RUNS run(s) per side, $(nproc) cores, load $(loadavg); logs in $WORK"
for ((run = 1; run <= RUNS; run++)); do
  if ((run % 2 == 1)); then order=(ours celery); else order=(celery ours); fi
  for side in "${order[@]}"; do
    [[ -z $ONLY || $ONLY == "$side" ]] || continue
    "run_$side" "$run"
    sleep 3  # let the removed containers' teardown settle before the next side
  done
done

echo
META=$(printf '{"jobs": %d, "runs": %d, "celery_concurrency": %d, "celery_task": "%s", "celery_confirm_publish": %s, "loadgen_args": "%s"}' \
  "$JOBS" "$RUNS" "$CELERY_CONCURRENCY" "$CELERY_TASK" "$([[ $CONFIRM_PUBLISH == 1 ]] && echo true || echo false)" \
  "${LOADGEN_ARGS[*]}")
if summary table "$RESULTS" --meta "$META" || [[ -n $ONLY ]]; then
  OK=1
else
  die "no ratio: a side has no figure"
fi
