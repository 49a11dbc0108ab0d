# syntax=docker/dockerfile:1
# NVIDIA's Triton Inference Server with the Python packages our python-backend models import
# (model_repository/*/1/model.py). Built from the repository root (docs/deployment.md):
#
#   docker build -f docker/triton.Dockerfile -t instructrec-triton:0.1.0 .
#
# The model repository is not in the image: a Kubernetes Job exports it onto a volume mounted at /models.
#
# Tag pinned: 24.12 (Triton 2.53) is the first release on Ubuntu 24.04 with Python 3.12; transformers 5 and
# onnxruntime 1.32 need Python 3.11 or later, so the 22.04-based releases (Python 3.10) cannot host the
# models. Its CUDA 12.6 needs NVIDIA driver 560+ (or the R470/R525/R535/R545 data-centre branches).
FROM nvcr.io/nvidia/tritonserver:24.12-py3

# The adapters run ONNX Runtime's CPU provider and torch on CPU (instance_group KIND_CPU), so the CPU wheels
# of torch are enough; pass TORCH_INDEX_URL= (empty) to take PyPI's CUDA build instead.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY docker/requirements-triton.txt /tmp/requirements-triton.txt
# Init container's step: waits until the export Job has written the models (k8s/base/triton.yaml).
COPY docker/wait_for.py /opt/instructrec/wait_for.py
# Ubuntu 24.04 marks the system Python as externally managed; this image exists to add to it.
RUN python3 -m pip install --no-cache-dir --break-system-packages \
        ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} -r /tmp/requirements-triton.txt \
    && python3 -c "import numpy, onnxruntime, tokenizers, torch, transformers; assert numpy.__version__ < '2'" \
    && groupadd --gid 10001 instructrec \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin instructrec

# Read-only root filesystem in Kubernetes: no bytecode next to the models, caches under /tmp, never a hub.
ENV PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/v2/health/ready', timeout=4)"]
# NVIDIA's entrypoint stays (it sets up CUDA forward compatibility); the server command is the CMD, which the
# Kubernetes manifests replace with their own `args`.
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=text_encoder", "--load-model=ranker", "--load-model=preference_generator"]
