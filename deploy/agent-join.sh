#!/usr/bin/env bash
# Creates a credential for a new agent on the running cluster and prints what
# to run on the agent's host to join it: install the package, put the CA, the
# credential and the settings in place, start the unit.
#
#   deploy/agent-join.sh WORKER_ID [PUBLIC_HOSTNAME]
#
# PUBLIC_HOSTNAME is the name other hosts reach this one by (default:
# $ORCH_PUBLIC_HOSTNAME, else `hostname -f`); the controller's certificate
# must name it (deploy/certs.sh adds $ORCH_PUBLIC_HOSTNAME). Needs the admin
# credentials and the CA that deploy/up.sh wrote into deploy/.cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=deploy/.cache

WORKER_ID="${1:?usage: deploy/agent-join.sh WORKER_ID [PUBLIC_HOSTNAME]}"
PUBLIC="${2:-${ORCH_PUBLIC_HOSTNAME:-$(hostname -f)}}"
PORT="${ORCH_PORT:-8000}"
AMQPS_PORT="${ORCH_AMQPS_PORT:-5671}"
CA="$CACHE/tls/ca.pem"
for f in "$CACHE/controller.env" "$CA"; do
  [[ -f $f ]] || { echo "$f is missing: start the cluster with deploy/up.sh first" >&2; exit 1; }
done
# Issuing a credential revokes the worker's earlier one: a local agent's id
# would stop that agent (and the next deploy/up.sh would take it back).
if [[ -e $CACHE/agents/$WORKER_ID.token ]]; then
  echo "$WORKER_ID is a local agent of deploy/up.sh; give the new host another worker id" >&2
  exit 1
fi
api="https://127.0.0.1:$PORT"
admin="${ORCH_ADMIN_USERNAME:-admin}"
password=$(sed -n 's/^ORCH_ADMIN_PASSWORD=//p' "$CACHE/controller.env")

json() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# The password goes through the environment and stdin, never through a
# command line (which other users see in ps).
login=$(LOGIN_USER="$admin" LOGIN_PASSWORD="$password" python3 -c 'import json, os
print(json.dumps({"username": os.environ["LOGIN_USER"], "password": os.environ["LOGIN_PASSWORD"]}))')
token=$(curl -fsS --cacert "$CA" -X POST "$api/api/auth/login" -H 'content-type: application/json' \
  --data-binary @- <<<"$login" | json access_token)
body=$(python3 -c 'import json, sys; print(json.dumps({"worker_id": sys.argv[1]}))' "$WORKER_ID")
answer=$(curl -sS --cacert "$CA" -X POST "$api/api/agents/credentials" \
  -H @- -H 'content-type: application/json' -d "$body" -w '\n%{http_code}' <<<"authorization: Bearer $token")
status=${answer##*$'\n'}
answer=${answer%$'\n'*}
if [[ $status != 201 ]]; then
  echo "the controller refused the credential ($status): $answer" >&2
  exit 1
fi
credential=$(json token <<<"$answer")
credential_id=$(json credential_id <<<"$answer")

cat <<MSG
Credential created for worker "$WORKER_ID"; revoking it stops that agent:
  orchestrator agents credentials revoke $credential_id
or, as the admin (ADMIN_TOKEN: the access_token of POST /api/auth/login):
  curl -fsS --cacert $CA -X DELETE -H "authorization: Bearer \$ADMIN_TOKEN" \\
       $api/api/agents/credentials/$credential_id
On the new host (Debian 12), as root, with the package from
deploy/package-agent.sh copied over:

dpkg -i orchestrator-agent_*.deb
install -m 0644 /dev/stdin /etc/orchestrator-agent/ca.pem <<'PEM'
$(cat "$CA")
PEM
install -m 0600 /dev/stdin /etc/orchestrator-agent/agent-token <<'TOKEN'
$credential
TOKEN
install -m 0640 /dev/stdin /etc/orchestrator-agent/agent.env <<'ENV'
AGENT_CONTROLLER_URL=https://$PUBLIC:$PORT
AGENT_AMQP_URL=amqps://$PUBLIC:$AMQPS_PORT/%2f
AGENT_CA_FILE=/etc/orchestrator-agent/ca.pem
AGENT_WORKER_ID=$WORKER_ID
AGENT_CAPACITY=4
# As the local agents of deploy/up.sh: any agent may get any job, so all run
# a job's task description as a shell script, and run its own command only if
# AGENT_ALLOW_COMMANDS says so.
AGENT_EXECUTOR=/bin/sh
AGENT_ALLOW_COMMANDS=${AGENT_ALLOW_COMMANDS:-false}
ENV
systemctl enable --now orchestrator-agent.service
MSG
