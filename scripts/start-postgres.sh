#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1 for the store tests; print its URL.
# Installs Debian's postgresql package when missing. Usage: eval "$(scripts/start-postgres.sh)"
set -euo pipefail
port="${PGPORT_TEST:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
data="$(mktemp -d /tmp/footdrop-pg.XXXXXX)"
chown postgres "$data"
su postgres -s /bin/sh -c "$bin/initdb -D '$data' -A trust -U postgres --no-sync" >/dev/null
su postgres -s /bin/sh -c "$bin/pg_ctl -D '$data' -l '$data/server.log' -w \
  -o \"-k /tmp -p $port -h 127.0.0.1 -c fsync=off\" start" >/dev/null
echo "export FOOTDROP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
echo "export FOOTDROP_PGDATA=$data"
echo "export FOOTDROP_PGBIN=$bin"
