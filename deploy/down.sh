#!/usr/bin/env bash
# Stops the system started by deploy/up.sh; `--volumes` also wipes its data
# (Postgres and RabbitMQ volumes) and the generated secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--volumes" ]]; then
    docker-compose -p orchestrator -f deploy/compose.yaml down --volumes
    rm -rf deploy/.cache
else
    docker-compose -p orchestrator -f deploy/compose.yaml down
fi
