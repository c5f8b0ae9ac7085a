#!/bin/bash
# Starts RabbitMQ as user rabbitmq. When /etc/orchestrator/tls (or
# $ORCH_TLS_DIR) holds cert.pem and key.pem (a server certificate, chain
# allowed, and its key), they are installed, readable by rabbitmq alone, and
# the AMQPS listener on 5671 is turned on (tls.conf). The mounted files may
# have any owner and mode 600: this script reads them as root, so the host
# keeps its keys private. The management API then also serves HTTPS on
# 15671. Set ORCH_AMQP_PLAIN=false to close the plain AMQP listener on 5672
# as well and keep the plain management listener (15672) to the container's
# loopback.
set -euo pipefail

src=${ORCH_TLS_DIR:-/etc/orchestrator/tls}
dst=/var/lib/rabbitmq/tls
confd=/etc/rabbitmq/conf.d

die() { echo "orchestrator-rabbitmq: $*" >&2; exit 1; }

if [[ -e $src/cert.pem || -e $src/key.pem ]]; then
  [[ -r $src/cert.pem && -r $src/key.pem ]] ||
    die "$src must hold both cert.pem and key.pem, readable by $(id -un)"
  install -d -m 0700 "$dst" "$confd"
  install -m 0600 "$src/cert.pem" "$src/key.pem" "$dst/"
  install -m 0644 /etc/orchestrator-rabbitmq/tls.conf "$confd/20-tls.conf"
  if [[ $(id -u) == 0 ]]; then
    chown -R rabbitmq:rabbitmq "$dst" "$confd"
  fi
  echo "orchestrator-rabbitmq: AMQPS on 5671 and management HTTPS on 15671 with $src/cert.pem" >&2
fi
if [[ ${ORCH_AMQP_PLAIN:-true} == false ]]; then
  install -d -m 0755 "$confd"
  printf 'listeners.tcp = none\nmanagement.tcp.ip = 127.0.0.1\n' > "$confd/30-no-plain.conf"
  [[ $(id -u) == 0 ]] && chown rabbitmq:rabbitmq "$confd/30-no-plain.conf"
fi

# Deployments name their own administrator (no guest): with
# ORCH_RABBITMQ_USER and ORCH_RABBITMQ_PASSWORD_FILE set, a first boot (an
# empty data directory) creates that user instead of guest.
if [[ -n ${ORCH_RABBITMQ_PASSWORD_FILE:-} ]]; then
  [[ -r $ORCH_RABBITMQ_PASSWORD_FILE && -n ${ORCH_RABBITMQ_USER:-} ]] ||
    die "ORCH_RABBITMQ_PASSWORD_FILE needs ORCH_RABBITMQ_USER and a readable file"
  install -d -m 0755 "$confd"
  umask 077
  {
    echo "default_user = $ORCH_RABBITMQ_USER"
    echo "default_pass = $(tr -d '\n' < "$ORCH_RABBITMQ_PASSWORD_FILE")"
    echo "default_user_tags.administrator = true"
  } > "$confd/40-users.conf"
  umask 022
  [[ $(id -u) == 0 ]] && chown rabbitmq:rabbitmq "$confd/40-users.conf"
fi

if [[ $(id -u) == 0 ]]; then
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- "$@"
fi
exec "$@"
