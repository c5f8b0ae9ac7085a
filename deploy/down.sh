#!/usr/bin/env bash
# Stops the system started by deploy/up.sh, its local agents included (the
# services of deploy/.cache/compose.agents.yaml, and any agent container an
# older up.sh left); `--volumes` also wipes its data (Postgres and RabbitMQ
# volumes) and the generated secrets, certificates and agent credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=(docker-compose -p orchestrator -f deploy/compose.yaml)
# docker-compose reads the controller's env file even to stop it: when the
# secrets are already gone, an empty stand-in for the length of this script.
ENV_FILE=deploy/.cache/controller.env
if [[ ! -e $ENV_FILE ]]; then
    mkdir -p deploy/.cache
    trap 'rm -f "$ENV_FILE"' EXIT
    : > "$ENV_FILE"
fi
[[ -f deploy/.cache/compose.agents.yaml ]] && COMPOSE+=(-f deploy/.cache/compose.agents.yaml)
case "${1:-}" in
    --volumes)
        "${COMPOSE[@]}" down --remove-orphans --volumes
        rm -rf deploy/.cache
        ;;
    "") "${COMPOSE[@]}" down --remove-orphans ;;
    *) echo "usage: deploy/down.sh [--volumes]" >&2; exit 1 ;;
esac
# The agents' cgroup subtrees on the host (empty once their containers are
# gone; a cgroup still in use is not removed).
if [[ $(id -u) == 0 ]]; then
    for d in /sys/fs/cgroup/*/orchestrator /sys/fs/cgroup/orchestrator; do
        [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
fi
