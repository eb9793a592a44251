# A stand-in for python:3.11-slim built from Debian's packages (no image registry is reachable on the test
# machines): Debian bookworm's python3 (3.11), venv, and `python`/`python3` where the official image has them.
FROM local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/python3 /usr/local/bin/python3
# the host's local certificate authorities (a proxy to the package registries may need them) and pip told to use them
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
