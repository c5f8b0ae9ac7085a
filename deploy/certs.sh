#!/usr/bin/env bash
# Creates, once, the private CA and the TLS certificates of the deployment
# in deploy/.cache/tls (directory 700, keys 600) with the openssl CLI:
#
#   ca.pem  ca.key                 the private CA (clients trust ca.pem)
#   controller/cert.pem key.pem    HTTPS of the controller's API
#   rabbitmq/cert.pem   key.pem    AMQPS of the broker
#   postgres/cert.pem   key.pem    TLS of Postgres
#
# Each server certificate names its compose service, localhost and
# 127.0.0.1; the controller's and the broker's also name
# $ORCH_PUBLIC_HOSTNAME (a DNS name or an IP address) when it is set, the
# name other hosts use to reach them. Files that exist are kept: delete one
# (or the whole directory) to make it again. A kept certificate that lacks
# $ORCH_PUBLIC_HOSTNAME is reported.
#
# The broker and Postgres containers read their mounted key as root and
# install it for their service user; the controller's container runs as uid
# 10001 and reads its key itself, so when run as root this script gives
# controller/ to $ORCH_CONTROLLER_UID (default 10001).
#
#   deploy/certs.sh                        # creates what is missing
#   ORCH_PUBLIC_HOSTNAME=ctl.example deploy/certs.sh
#   ORCH_TLS_DIR=/elsewhere deploy/certs.sh
set -euo pipefail

log() { printf '[certs] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "${1:-}" in
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

command -v openssl >/dev/null 2>&1 || die "the openssl CLI is missing (apt-get install openssl)"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${ORCH_TLS_DIR:-$HERE/.cache/tls}"
PUBLIC="${ORCH_PUBLIC_HOSTNAME:-}"
# Ten years for the CA; leaves within the 825 days that clients accept.
CA_DAYS=3650
LEAF_DAYS=825

umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

# A SAN entry for a name: IP:... for an IPv4 or IPv6 address, else DNS:...
san_entry() {
  if [[ $1 =~ ^[0-9.]+$ || $1 == *:* ]]; then printf 'IP:%s' "$1"; else printf 'DNS:%s' "$1"; fi
}

# An EC P-256 key (fast handshakes; every client here speaks it), mode 600.
new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

make_ca() {
  if [[ -f $DIR/ca.pem && -f $DIR/ca.key ]]; then
    return
  fi
  log "creating the private CA in $DIR"
  new_key "$DIR/ca.key"
  openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days "$CA_DAYS" \
    -subj "/CN=orchestrator private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/ca.pem"
  chmod 644 "$DIR/ca.pem"
}

# make_leaf NAME HOST... : NAME/cert.pem and NAME/key.pem for the hosts.
make_leaf() {
  local name=$1; shift
  local out="$DIR/$name"
  mkdir -p "$out"
  chmod 700 "$out"
  if [[ -f $out/cert.pem && -f $out/key.pem ]]; then
    warn_missing_public "$name" "$out/cert.pem"
    return
  fi
  local sans=() host
  for host in "$@"; do sans+=("$(san_entry "$host")"); done
  local joined
  joined=$(IFS=,; echo "${sans[*]}")
  log "creating the $name certificate ($joined)"
  new_key "$out/key.pem"
  openssl req -new -key "$out/key.pem" -subj "/CN=$1" -out "$out/req.csr"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=$joined" > "$out/ext.cnf"
  openssl x509 -req -in "$out/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -CAserial "$DIR/ca.srl" -sha256 -days "$LEAF_DAYS" \
    -extfile "$out/ext.cnf" -out "$out/cert.pem" 2>/dev/null
  rm -f "$out/req.csr" "$out/ext.cnf"
  chmod 644 "$out/cert.pem"
}

# Says so when a kept certificate does not name $ORCH_PUBLIC_HOSTNAME.
warn_missing_public() {
  [[ -n $PUBLIC && ( $1 == controller || $1 == rabbitmq ) ]] || return 0
  if ! openssl x509 -in "$2" -noout -ext subjectAltName 2>/dev/null | grep -qF "$PUBLIC"; then
    log "WARNING: $2 does not name $PUBLIC; delete it and run $0 again to include it"
  fi
}

make_ca
make_leaf controller controller localhost 127.0.0.1 ${PUBLIC:+"$PUBLIC"}
make_leaf rabbitmq rabbitmq localhost 127.0.0.1 ${PUBLIC:+"$PUBLIC"}
make_leaf postgres postgres localhost 127.0.0.1
CONTROLLER_UID="${ORCH_CONTROLLER_UID:-10001}"
if [[ $(id -u) == 0 ]]; then
  chown -R "$CONTROLLER_UID:$CONTROLLER_UID" "$DIR/controller"
else
  log "not root: make $DIR/controller readable by uid $CONTROLLER_UID if the controller runs in its image"
fi
log "TLS files ready in $DIR (clients trust $DIR/ca.pem)"
