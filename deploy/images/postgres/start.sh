#!/bin/bash
# Starts Postgres as user postgres. When /etc/orchestrator/tls (or
# $ORCH_TLS_DIR) holds cert.pem and key.pem (a server certificate, chain
# allowed, and its key), they are installed where only postgres can read
# them (Postgres refuses a key others can read) and TLS is turned on with
# `-c` options. The mounted files may have any owner and mode 600: this
# script reads them as root, so the host keeps its keys private. A mounted
# /etc/orchestrator/pg_hba.conf replaces the image's client rules (e.g.
# `hostssl` lines only, so a plain connection is refused).
set -euo pipefail

src=${ORCH_TLS_DIR:-/etc/orchestrator/tls}
dst=/var/lib/postgresql/tls
hba=/etc/orchestrator/pg_hba.conf
args=("$@")

die() { echo "orchestrator-postgres: $*" >&2; exit 1; }

if [[ -e $src/cert.pem || -e $src/key.pem ]]; then
  [[ -r $src/cert.pem && -r $src/key.pem ]] ||
    die "$src must hold both cert.pem and key.pem, readable by $(id -un)"
  install -d -m 0700 "$dst"
  install -m 0600 "$src/cert.pem" "$src/key.pem" "$dst/"
  [[ $(id -u) == 0 ]] && chown -R postgres:postgres "$dst"
  args+=(-c ssl=on -c "ssl_cert_file=$dst/cert.pem" -c "ssl_key_file=$dst/key.pem"
         -c ssl_min_protocol_version=TLSv1.2)
  echo "orchestrator-postgres: TLS on with $src/cert.pem" >&2
fi
if [[ -e $hba ]]; then
  [[ -r $hba ]] || die "$hba is not readable by $(id -un)"
  install -m 0600 "$hba" /var/lib/postgresql/pg_hba.conf
  [[ $(id -u) == 0 ]] && chown postgres:postgres /var/lib/postgresql/pg_hba.conf
  args+=(-c hba_file=/var/lib/postgresql/pg_hba.conf)
  echo "orchestrator-postgres: client rules from $hba" >&2
fi

# A deployment's own superuser password (the image's is "postgres"): set in
# single-user mode before the server listens, so no connection ever sees the
# old one. The password is read from a file, never from the environment.
if [[ -n ${ORCH_POSTGRES_PASSWORD_FILE:-} ]]; then
  [[ -r $ORCH_POSTGRES_PASSWORD_FILE ]] || die "$ORCH_POSTGRES_PASSWORD_FILE is not readable"
  pw=$(tr -d '\n' < "$ORCH_POSTGRES_PASSWORD_FILE")
  [[ $pw =~ ^[A-Za-z0-9]+$ ]] || die "the password in $ORCH_POSTGRES_PASSWORD_FILE must be letters and digits"
  single=(postgres --single -D "$PGDATA" -c password_encryption=scram-sha-256 postgres)
  if [[ $(id -u) == 0 ]]; then
    single=(setpriv --reuid=postgres --regid=postgres --init-groups -- "${single[@]}")
  fi
  echo "ALTER ROLE postgres PASSWORD '$pw';" | "${single[@]}" >/dev/null ||
    die "setting the superuser's password failed"
  echo "orchestrator-postgres: superuser password from $ORCH_POSTGRES_PASSWORD_FILE" >&2
fi

if [[ $(id -u) == 0 ]]; then
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${args[@]}"
fi
exec "${args[@]}"
