# A stand-in for postgres:16 from Debian's PostgreSQL 15 (the compose file's settings and health check work alike):
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB create the role and database on first start, and the
# container's command is passed to the server (`postgres -c wal_recycle=off ...`).
FROM local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod +x /usr/local/bin/docker-entrypoint.sh && mkdir -p /var/run/postgresql \
    && chown postgres:postgres /var/run/postgresql
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
