# syntax=docker/dockerfile:1.7
# maskq GPU worker image: Celery + onnxruntime-gpu (CUDA execution provider) + the model files, on
# NVIDIA's CUDA runtime image. onnxruntime-gpu replaces onnxruntime (never both: they install the
# same module). Without a usable GPU (no device, driver too old) ONNX Runtime falls back to the CPU
# provider and the worker says so in its log (maskq's runtime logs the providers it got).
# Build from the repository root:
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t maskq-worker-gpu:0.1.0 .
# The CUDA major must match the onnxruntime-gpu wheel in requirements-worker-gpu.txt (PyPI's 1.31
# wheels are built for CUDA 13 and cuDNN 9); the host driver must support CUDA 13 (>= 580).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
# uv is used only to fetch a standalone CPython 3.11 (Ubuntu 24.04 ships 3.12); the uv release pins
# the exact 3.11 patch build it installs.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${CUDA_IMAGE} AS build
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11 \
    && uv venv --python 3.11 --seed /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/docker/requirements-worker-gpu.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY maskq ./maskq
COPY worker ./worker
# pip byte-compiles what it installs: the read-only image never needs to write a .pyc
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import onnxruntime as ort; p = ort.get_available_providers(); assert 'CUDAExecutionProvider' in p, p"

FROM ${CUDA_IMAGE} AS runtime
LABEL org.opencontainers.image.title="maskq-worker-gpu" \
      org.opencontainers.image.description="maskq Celery worker, ONNX Runtime CUDA provider with CPU fallback, models included" \
      org.opencontainers.image.source="deploy/docker/worker-gpu.Dockerfile"
RUN groupadd --system --gid 10001 maskq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin maskq
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY models /opt/maskq/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MASKQ_ENV=production \
    MASKQ_MODELS_DIR=/opt/maskq/models \
    MASKQ_DEVICE=gpu \
    MASKQ_WORKER_QUEUE=gpu \
    MASKQ_WORKER_BATCHING=true \
    MASKQ_WORKER_METRICS_PORT=9464
WORKDIR /tmp
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["test", "-f", "/tmp/maskq-worker-ready"]
STOPSIGNAL SIGTERM
# threads pool: one process and one CUDA context, 16 jobs in flight grouped into GPU batches.
# -Q gpu,cpu: the GPU pool takes its own queue and, once KEDA has woken it on a large CPU backlog,
# helps drain the CPU queue too (see deploy/README.md, "Scaling")
CMD ["celery", "-A", "worker.app", "worker", "-Q", "gpu,cpu", "-n", "gpu@%h", "-P", "threads", "--concurrency=16", "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
