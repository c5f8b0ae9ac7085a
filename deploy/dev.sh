#!/usr/bin/env bash
# Starts the system on this machine: builds the Postgres and RabbitMQ images
# if missing, runs one container of each (ports on 127.0.0.1 only), then runs
# the controller against them in the foreground. Ctrl-C stops the controller;
# `deploy/dev.sh --down` removes the containers.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT="${ORCH_DEV_PG_PORT:-55432}"
MQ_PORT="${ORCH_DEV_AMQP_PORT:-55672}"
LABEL=orchestrator.dev

if [[ "${1:-}" == "--down" ]]; then
    docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f -v >/dev/null
    echo "dev containers removed"
    exit 0
fi

deploy/build-images.sh
start() { # name image port container-port
    if [[ -z "$(docker ps -q --filter "name=^$1$")" ]]; then
        docker rm -f "$1" >/dev/null 2>&1 || true
        docker run -d --name "$1" --label "$LABEL=1" -p "127.0.0.1:$3:$4" "$2" >/dev/null
    fi
}
start orchestrator-dev-postgres "${ORCH_POSTGRES_IMAGE:-orchestrator-postgres:15}" "$PG_PORT" 5432
start orchestrator-dev-rabbitmq "${ORCH_RABBITMQ_IMAGE:-orchestrator-rabbitmq:3}" "$MQ_PORT" 5672
until docker exec orchestrator-dev-postgres pg_isready -q -h 127.0.0.1 2>/dev/null; do sleep 0.5; done

export ORCH_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$PG_PORT/postgres"
export ORCH_AMQP_URL="amqp://guest:guest@127.0.0.1:$MQ_PORT/%2f"
export ORCH_LISTEN="${ORCH_LISTEN:-127.0.0.1:8000}"
export ORCH_JWT_SECRET="${ORCH_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export ORCH_ADMIN_USERNAME="${ORCH_ADMIN_USERNAME:-admin}"
export ORCH_ADMIN_PASSWORD="${ORCH_ADMIN_PASSWORD:-admin-password}"
# Plain HTTP on loopback, chosen explicitly (the controller warns about it);
# set ORCH_TLS_CERT_FILE and ORCH_TLS_KEY_FILE (deploy/certs.sh makes a pair)
# and ORCH_INSECURE_HTTP=false for HTTPS.
export ORCH_INSECURE_HTTP="${ORCH_INSECURE_HTTP:-true}"
echo "controller on http://$ORCH_LISTEN (admin: $ORCH_ADMIN_USERNAME / \$ORCH_ADMIN_PASSWORD)"
exec cargo run --release -p controller -- serve
