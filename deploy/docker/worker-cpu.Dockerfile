# syntax=docker/dockerfile:1.7
# maskq CPU worker image: Celery + ONNX Runtime (CPU wheel) + the model files.
# Build from the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t maskq-worker-cpu:0.1.0 .
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
COPY deploy/docker/requirements-worker-cpu.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY maskq ./maskq
COPY worker ./worker
# pip byte-compiles what it installs: the read-only image never needs to write a .pyc
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import onnxruntime as ort; assert 'CPUExecutionProvider' in ort.get_available_providers()"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="maskq-worker-cpu" \
      org.opencontainers.image.description="maskq Celery worker, ONNX Runtime on the CPU, models included" \
      org.opencontainers.image.source="deploy/docker/worker-cpu.Dockerfile"
# uid/gid 10001: numeric so that Kubernetes' runAsNonRoot can verify it
RUN groupadd --system --gid 10001 maskq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin maskq
COPY --from=build /opt/venv /opt/venv
# the models ship inside the image (read-only, owned by root): a pod never downloads weights
COPY models /opt/maskq/models
# read-only root file system: nothing is written outside /tmp (mount a tmpfs or emptyDir there);
# the readiness file /tmp/maskq-worker-ready appears once the model is loaded
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MASKQ_ENV=production \
    MASKQ_MODELS_DIR=/opt/maskq/models \
    MASKQ_DEVICE=cpu \
    MASKQ_INTRA_OP_THREADS=1 \
    MASKQ_WORKER_METRICS_PORT=9464
WORKDIR /tmp
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["test", "-f", "/tmp/maskq-worker-ready"]
# exec form: Celery is PID 1, so SIGTERM reaches it and starts a warm shutdown (running tasks finish,
# reserved ones go back to the queue). Give it more than the task hard limit to stop (360 s in k8s).
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker.app", "worker", "-Q", "cpu,webhooks", "-n", "cpu@%h", "--concurrency=2", "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
