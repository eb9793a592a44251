# syntax=docker/dockerfile:1
# FaceSearch: CPU image. Build: docker build -t facesearch .   Run: docker compose up

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU-only torch wheels (the default PyPI wheels carry CUDA: gigabytes the image does not need)
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4" "torchvision>=0.19"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY index ./index
COPY facesearch ./facesearch
# the same install as the README's first command; docker-compose.scale.yml adds the Milvus client (EXTRAS=[milvus])
ARG EXTRAS=""
RUN pip install ".${EXTRAS}"

FROM python:3.11-slim AS runtime
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]
# one uvicorn worker per container: the model is loaded once
CMD ["facesearch", "serve"]
