# FaceSearch: CPU image. Build: docker build -t facesearch .   Run: FACESEARCH_API_KEY=... docker compose up
# Builds with the classic builder and with BuildKit alike (no BuildKit-only syntax). Tested by tests/docker/.

FROM python:3.11-slim AS build
# the build stage is thrown away: `docker image prune -f --filter label=facesearch.stage=build` removes it
LABEL facesearch.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY index ./index
COPY facesearch ./facesearch
# the same install as the README's first command: no PyTorch (the service runs the shipped ONNX graphs);
# docker-compose.scale.yml adds the Milvus client (EXTRAS=[milvus])
ARG EXTRAS=""
RUN pip install ".${EXTRAS}"

FROM python:3.11-slim AS runtime
# FACESEARCH_HOST=0.0.0.0: inside a container on Docker's bridge network the published port reaches it only there;
# with host networking set FACESEARCH_HOST=127.0.0.1 (or the one interface to serve on), as tests/docker/ does
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACESEARCH_DATA_DIR=/data \
    FACESEARCH_HOST=0.0.0.0 \
    FACESEARCH_PORT=8000
RUN useradd --create-home --uid 10001 facesearch && mkdir /data && chown facesearch /data
COPY --from=build /opt/venv /opt/venv
USER facesearch
VOLUME ["/data"]
EXPOSE 8000
# probes the port the service listens on (FACESEARCH_PORT), not a fixed one
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('FACESEARCH_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4).status == 200 else 1)"]
# one uvicorn worker per container: the model is loaded once
CMD ["facesearch", "serve"]
