#!/usr/bin/env bash
# Stops the system started by deploy/up.sh, its local agents included (the
# services of deploy/.cache/compose.agents.yaml, and any agent container an
# older up.sh left); `--volumes` also wipes its data (Postgres and RabbitMQ
# volumes) and the generated secrets, certificates and agent credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=(docker-compose -p orchestrator -f deploy/compose.yaml)
[[ -f deploy/.cache/compose.agents.yaml ]] && COMPOSE+=(-f deploy/.cache/compose.agents.yaml)
case "${1:-}" in
    --volumes)
        "${COMPOSE[@]}" down --remove-orphans --volumes
        rm -rf deploy/.cache
        ;;
    "") "${COMPOSE[@]}" down --remove-orphans ;;
    *) echo "usage: deploy/down.sh [--volumes]" >&2; exit 1 ;;
esac
