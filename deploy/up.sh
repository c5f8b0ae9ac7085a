#!/usr/bin/env bash
# Starts the whole system from nothing: builds whatever images are missing
# (Postgres, RabbitMQ, a minimal runtime base; the controller and agent
# images from fresh release binaries), creates the secrets once (in
# deploy/.cache, mode 600), starts Postgres, RabbitMQ, the controller and
# AGENTS agents (default 2) with docker-compose, waits until the API is ready
# and prints how to use it.
#   AGENTS=3 deploy/up.sh      ORCH_PORT=8080 deploy/up.sh
#   ORCH_BENCH=1 deploy/up.sh  # also publish Postgres for the load generator
#                              # (deploy/compose.bench.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS="${AGENTS:-2}"
PORT="${ORCH_PORT:-8000}"
CACHE=deploy/.cache
COMPOSE=(docker-compose -p orchestrator -f deploy/compose.yaml)
[[ -n "${ORCH_BENCH:-}" ]] && COMPOSE+=(-f deploy/compose.bench.yaml)

command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
deploy/build-app-images.sh
mkdir -p "$CACHE"

umask 077
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# The private CA and the certificates of the controller, the broker and
# Postgres (kept once made).
deploy/certs.sh
for f in postgres-password rabbitmq-password; do
    [[ -f $CACHE/$f ]] || random > "$CACHE/$f"
done
if [[ ! -f $CACHE/controller.env ]]; then
    {
        printf 'ORCH_JWT_SECRET=%s\nORCH_ADMIN_PASSWORD=%s\n' "$(random)" "$(random | head -c 20)"
        printf 'ORCH_DATABASE_URL=postgres://postgres:%s@postgres:5432/postgres\n' "$(cat "$CACHE/postgres-password")"
        printf 'ORCH_AMQP_URL=amqps://orchestrator:%s@rabbitmq:5671/%%2f\n' "$(cat "$CACHE/rabbitmq-password")"
    } > "$CACHE/controller.env"
fi
if [[ ! -f $CACHE/agent.env ]]; then
    token=$(docker run --rm --env-file "$CACHE/controller.env" orchestrator-controller:latest issue-agent-token)
    printf 'AGENT_TOKEN=%s\n' "$token" > "$CACHE/agent.env"
fi

ORCH_PORT="$PORT" "${COMPOSE[@]}" up -d --scale agent="$AGENTS"
for _ in $(seq 1 120); do
    if curl -fsS --cacert "$CACHE/tls/ca.pem" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
        password=$(sed -n 's/^ORCH_ADMIN_PASSWORD=//p' "$CACHE/controller.env")
        public="${ORCH_PUBLIC_HOSTNAME:-$(hostname -f)}"
        cat <<MSG
Orchestrator is up: https://127.0.0.1:$PORT  (API docs: https://127.0.0.1:$PORT/docs)
Every link is TLS with the private CA $CACHE/tls/ca.pem: clients trust it with
  SSL_CERT_FILE=$PWD/$CACHE/tls/ca.pem   (or the CLI's --ca-file / ORCH_CA_FILE)
Admin: ${ORCH_ADMIN_USERNAME:-admin} / $password   (stored in $CACHE/controller.env)
Get a token:
  curl -s --cacert $CACHE/tls/ca.pem -X POST https://127.0.0.1:$PORT/api/auth/login \\
       -H 'content-type: application/json' -d '{"username":"${ORCH_ADMIN_USERNAME:-admin}","password":"$password"}'
Another host joins as an agent with: deploy/agent-join.sh WORKER_ID  (it reaches this
host as $public: the controller on https://$public:$PORT, the broker on amqps://$public:${ORCH_AMQPS_PORT:-5671};
set ORCH_PUBLIC_HOSTNAME before the first deploy/up.sh to put another name in the certificates)
Scale agents: AGENTS=5 deploy/up.sh     Stop: deploy/down.sh [--volumes]
MSG
        exit 0
    fi
    sleep 1
done
echo "the API did not become ready within 120 s; see: ${COMPOSE[*]} logs" >&2
exit 1
