#!/usr/bin/env bash
# Starts the whole system from nothing: builds whatever images are missing
# (Postgres, RabbitMQ, a minimal runtime base; the controller and agent
# images from fresh release binaries), creates the secrets once (in
# deploy/.cache, mode 600), starts Postgres, RabbitMQ and the controller
# with docker-compose, waits until the API is ready, then runs AGENTS local
# agents (default 2) and prints how to use it all.
#
# Each local agent is a service of its own, agent-1 .. agent-N (its worker
# id), with a credential of its own that the controller issued for that
# worker id (deploy/.cache/agents/agent-I.token, mode 600), in a compose
# override written on every run (deploy/.cache/compose.agents.yaml, by
# deploy/agents-compose.sh). Running again with a larger AGENTS adds agents;
# with a smaller one stops the extra agents and revokes their credentials.
#   AGENTS=3 deploy/up.sh      ORCH_PORT=8080 deploy/up.sh
#   ORCH_BENCH=1 deploy/up.sh  # also publish Postgres for the load generator,
#                              # and let agents run commands (compose.bench.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS="${AGENTS:-2}"
PORT="${ORCH_PORT:-8000}"
CACHE=deploy/.cache
OVERRIDE=$CACHE/compose.agents.yaml
# The agent image's user (root, with few capabilities: it runs jobs as
# users of their own), who must own its credential file (mode 600).
AGENT_UID="${ORCH_AGENT_UID:-0}"
[[ $AGENTS =~ ^[0-9]+$ ]] || { echo "AGENTS must be a number, not $AGENTS" >&2; exit 1; }
COMPOSE=(docker-compose -p orchestrator -f deploy/compose.yaml -f "$OVERRIDE")
if [[ -n "${ORCH_BENCH:-}" ]]; then
    COMPOSE+=(-f deploy/compose.bench.yaml)
    export AGENT_ALLOW_COMMANDS=true
fi

# The tools of this script, certs.sh and agent-join.sh, installed when
# missing (each is also its Debian package's name).
missing=()
for tool in docker-compose curl python3 openssl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if (( ${#missing[@]} > 0 )); then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
deploy/build-app-images.sh
# Secrets only: no one but this user may list them.
mkdir -p "$CACHE/agents"
chmod 700 "$CACHE" "$CACHE/agents"

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
# A deployment of an older up.sh shared one agent token; nothing reads it now.
rm -f "$CACHE/agent.env"

# Root gives each credential file to the agent image's user; anyone else
# runs the agents as themselves, so they can read the files they own.
run_as=""
[[ $(id -u) == 0 ]] || run_as="$(id -u):$(id -g)"
deploy/agents-compose.sh "$AGENTS" "$run_as" > "$OVERRIDE"
# On a cgroup v2 host, the agents' cgroups (orchestrator/agent-N, bound
# into each agent) need the memory, pids and cpu controllers from their
# parent, which only the host's root can give.
if [[ $(id -u) == 0 && -f /sys/fs/cgroup/cgroup.controllers ]]; then
    mkdir -p /sys/fs/cgroup/orchestrator
    echo "+memory +pids +cpu" > /sys/fs/cgroup/orchestrator/cgroup.subtree_control
fi

ORCH_PORT="$PORT" "${COMPOSE[@]}" up -d --remove-orphans postgres rabbitmq controller
ready=0
for _ in $(seq 1 120); do
    if curl -fsS --cacert "$CACHE/tls/ca.pem" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 1
done
if [[ $ready == 0 ]]; then
    echo "the API did not become ready within 120 s; see: ${COMPOSE[*]} logs" >&2
    exit 1
fi

password=$(sed -n 's/^ORCH_ADMIN_PASSWORD=//p' "$CACHE/controller.env")
admin="${ORCH_ADMIN_USERNAME:-admin}"
API="https://127.0.0.1:$PORT/api"
# The admin's API token, for checking and revoking agents' credentials
# (empty if the login fails, e.g. when the admin's password was changed).
# The password goes through the environment and stdin, never through a
# command line (which other users see in ps).
login=$(LOGIN_USER="$admin" LOGIN_PASSWORD="$password" python3 -c 'import json, os
print(json.dumps({"username": os.environ["LOGIN_USER"], "password": os.environ["LOGIN_PASSWORD"]}))')
token=$(curl -fsS --cacert "$CACHE/tls/ca.pem" -X POST "$API/auth/login" \
    -H 'content-type: application/json' --data-binary @- <<<"$login" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') || token=""
unset login
# api METHOD PATH: the answer of one request as the admin.
api() {
    [[ -n $token ]] || return 1
    curl -fsS --cacert "$CACHE/tls/ca.pem" -X "$1" -H @- "$API$2" <<<"authorization: Bearer $token"
}
# live_credentials [WORKER_ID...]: "credential_id worker_id" of every live
# credential (of these workers only, if any are named).
live_credentials() {
    api GET /agents/credentials | python3 -c 'import json, sys
workers = set(sys.argv[1:])
for c in json.load(sys.stdin)["credentials"]:
    if c["revoked_at"] is None and (not workers or c["worker_id"] in workers):
        print(c["credential_id"], c["worker_id"])' "$@"
}

# A credential for each agent that has none, or whose credential is no
# longer live (revoked through the API, or replaced). The controller issues
# it in its own container (same settings; it revokes any earlier credential
# of that worker id); only a line of the credential's shape is kept,
# whatever else the command prints.
if ! live=$(live_credentials); then
    echo "WARNING: could not list the agents' credentials as $admin; kept credentials are not checked" >&2
    live=ALL
fi
reissued=()
for i in $(seq 1 "$AGENTS"); do
    id="agent-$i"
    file="$CACHE/agents/$id.token"
    if [[ -s $file ]]; then
        if [[ $live == ALL ]] || grep -q " $id\$" <<<"$live"; then
            continue
        fi
        reissued+=("$id")
    fi
    credential=$("${COMPOSE[@]}" exec -T controller controller issue-agent-credential --worker-id "$id" |
        grep -E '^orca_[0-9a-f]{32}_[A-Za-z0-9_-]+$' || true)
    if [[ -z $credential ]]; then
        echo "the controller did not issue a credential for $id (its errors are above)" >&2
        exit 1
    fi
    printf '%s\n' "$credential" > "$file.new"
    [[ $(id -u) == 0 ]] && chown "$AGENT_UID:$AGENT_UID" "$file.new"
    mv "$file.new" "$file"
done
unset credential

ORCH_PORT="$PORT" "${COMPOSE[@]}" up -d --remove-orphans
# An agent reads its credential when it starts.
if (( ${#reissued[@]} > 0 )); then
    echo "new credentials for ${reissued[*]} (the kept ones were no longer live)" >&2
    ORCH_PORT="$PORT" "${COMPOSE[@]}" restart "${reissued[@]}"
fi

# Agents beyond AGENTS are gone (--remove-orphans); their credentials go
# too (the controller also deletes their broker users).
extra=()
for file in "$CACHE"/agents/agent-*.token; do
    [[ -e $file ]] || continue
    id=$(basename "$file" .token)
    if (( ${id#agent-} > AGENTS )); then extra+=("$id"); fi
done
if (( ${#extra[@]} > 0 )); then
    if revoke=$(live_credentials "${extra[@]}"); then
        while read -r credential_id _; do
            if [[ -n $credential_id ]]; then
                api DELETE "/agents/credentials/$credential_id" >/dev/null
            fi
        done <<<"$revoke"
        for id in "${extra[@]}"; do rm -f "$CACHE/agents/$id.token"; done
        echo "stopped ${extra[*]} and revoked their credentials" >&2
    else
        echo "WARNING: stopped ${extra[*]} but could not revoke their credentials as $admin" >&2
    fi
fi

public="${ORCH_PUBLIC_HOSTNAME:-$(hostname -f)}"
cat <<MSG
Orchestrator is up: https://127.0.0.1:$PORT  (API docs: https://127.0.0.1:$PORT/docs)
Every link is TLS with the private CA $CACHE/tls/ca.pem: clients trust it with
  SSL_CERT_FILE=$PWD/$CACHE/tls/ca.pem   (the CLI, Python; or the CLI's --ca-file / ORCH_CA_FILE;
  curl ignores SSL_CERT_FILE: give it --cacert or CURL_CA_BUNDLE)
Admin: $admin / $password   (stored in $CACHE/controller.env)
Get a token:
  curl -s --cacert $CACHE/tls/ca.pem -X POST https://127.0.0.1:$PORT/api/auth/login \\
       -H 'content-type: application/json' -d '{"username":"$admin","password":"$password"}'
Local agents: $(if (( AGENTS > 0 )); then echo "agent-1 .. agent-$AGENTS, each with its own credential in $CACHE/agents/"; else echo none; fi).
Another host joins as an agent with: deploy/agent-join.sh WORKER_ID  (it reaches this
host as $public: the controller on https://$public:$PORT, the broker on amqps://$public:${ORCH_AMQPS_PORT:-5671};
set ORCH_PUBLIC_HOSTNAME before the first deploy/up.sh to put another name in the certificates)
Scale agents: AGENTS=5 deploy/up.sh     Stop: deploy/down.sh [--volumes]
MSG
