#!/usr/bin/env bash
# One-shot GPU benchmark: set up, serve on the GPU, run `instructrec bench --device cuda`, stop.
#
# Run from a fresh clone on a Linux x86_64 machine with an NVIDIA GPU and driver (nvidia-smi works),
# Python 3.11 and access to PyPI:
#
#     bash scripts/gpu_bench.sh                 # figures in var/bench/gpu-<time>.json/.png, stack log beside them
#     PYTHON=python3.11 DURATION=20 bash scripts/gpu_bench.sh
#
# UNVERIFIED: written without a GPU at hand (see docs/performance.md). What it relies on: torch==2.13.0 from
# PyPI is the CUDA build on Linux x86_64; onnxruntime-gpu provides CUDAExecutionProvider and must replace
# onnxruntime (both install the same `onnxruntime` module); the Triton 2.51 binary in nvidia-pytriton runs
# python-backend models on KIND_GPU instances; the model.py adapters pick CUDA on a KIND_GPU instance.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DURATION=${DURATION:-30}
CONCURRENCY=${CONCURRENCY:-1,16,64}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-var/bench/gpu-$STAMP}
mkdir -p "$(dirname "$OUT")"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

# 1. Environment: the project (its torch pin resolves to the CUDA wheel here), then the GPU build of ONNX Runtime.
make setup PYTHON="$PYTHON"
.venv/bin/pip install -q matplotlib
ORT_VERSION=$(.venv/bin/python -c "import onnxruntime; print(onnxruntime.__version__)")
.venv/bin/pip uninstall -q -y onnxruntime
.venv/bin/pip install -q "onnxruntime-gpu==$ORT_VERSION" || .venv/bin/pip install -q "onnxruntime-gpu>=1.20"
.venv/bin/python - <<'EOF'
import onnxruntime, torch
providers = onnxruntime.get_available_providers()
assert "CUDAExecutionProvider" in providers, f"onnxruntime-gpu has no CUDA provider here: {providers}"
assert torch.cuda.is_available(), "torch has no CUDA here: install the CUDA build of torch==2.13.0"
print("CUDA ok:", torch.cuda.get_device_name(0), "onnxruntime", onnxruntime.__version__, providers)
EOF

# 2. Data, base models, the exported model versions (skips what exists).
.venv/bin/instructrec prepare

# 3. The stack in the background (CPU configs; the bench moves the models to KIND_GPU instances through
#    Triton's model control and restores the configs at the end).
.venv/bin/instructrec run > "$OUT.stack.log" 2>&1 &
STACK_PID=$!
stop_stack() { kill -INT "$STACK_PID" 2>/dev/null && wait "$STACK_PID" || true; }
trap stop_stack EXIT
for _ in $(seq 300); do
    grep -q "ready in" "$OUT.stack.log" && break
    kill -0 "$STACK_PID" 2>/dev/null || { tail -50 "$OUT.stack.log"; exit 1; }
    sleep 1
done
grep "ready in" "$OUT.stack.log"

# 4. The benchmark: the realistic mix with batching on and off, then cached requests only (no statement
#    generation on the path) with larger ranker batches, which is where a GPU's throughput shows.
.venv/bin/python -m tools.bench --device cuda --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --batching both --out "$OUT"
.venv/bin/python -m tools.bench --device cuda --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --batching on --mix known=0.7,candidates=0.3 --no-baseline \
    --set ranker:max_batch_size=64 --set ranker:max_queue_delay_us=2000 \
    --set text_encoder:max_queue_delay_us=500 --out "$OUT-cached"
nvidia-smi
echo "figures: $OUT.json $OUT.png $OUT-cached.json $OUT-cached.png"
