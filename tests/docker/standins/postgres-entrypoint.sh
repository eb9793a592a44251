#!/bin/sh
# first start: a cluster owned by postgres, the role and database the environment names; then the server itself
set -e
mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp) && printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile" && chown postgres "$pwfile"
    runuser -u postgres -- initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
    runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -c "CREATE ROLE \"$POSTGRES_USER\" LOGIN SUPERUSER PASSWORD '$POSTGRES_PASSWORD'" \
        -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\""
    runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
[ "$1" = postgres ] && shift
exec runuser -u postgres -- postgres -D "$PGDATA" "$@"
