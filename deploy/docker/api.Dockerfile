# syntax=docker/dockerfile:1.7
# maskq API image: FastAPI + uvicorn, no ONNX Runtime (the API never imports it).
# Build from the repository root:
#   docker build -f deploy/docker/api.Dockerfile -t maskq-api:0.1.0 .
# Pin the base by digest in your registry mirror for fully reproducible builds:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first, from the lock: this layer changes only when the lock does
COPY deploy/docker/requirements-api.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY maskq ./maskq
COPY api ./api
# the API sends Celery tasks by name; worker/ is copied only so that a shared Celery config can be imported
COPY worker ./worker
# pip byte-compiles what it installs: the read-only image never needs to write a .pyc
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('onnxruntime') is not None)"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="maskq-api" \
      org.opencontainers.image.description="maskq HTTP API (FastAPI), no ONNX Runtime" \
      org.opencontainers.image.source="deploy/docker/api.Dockerfile"
# uid/gid 10001: numeric so that Kubernetes' runAsNonRoot can verify it
RUN groupadd --system --gid 10001 maskq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin maskq
COPY --from=build /opt/venv /opt/venv
# read-only root file system: nothing is written outside /tmp (mount a tmpfs or emptyDir there)
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MASKQ_ENV=production
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# exec form: uvicorn is PID 1 and gets SIGTERM directly (graceful shutdown of in-flight requests)
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20"]
