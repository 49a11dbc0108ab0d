#!/usr/bin/env bash
# One prepared GPU run of the experimental intent ranker (#15): the larger configuration of
# `python -m tools.lab.intent_ranker` on cuda, validated on validation users, in under 8 minutes.
#
#     bash scripts/gpu_train.sh              # record + checkpoint in $OUT (if set) or var/gpu-train/
#
# The same entry point as the CPU recipe (docs/lab/ranker-experiments.md), with --device cuda and a
# bigger configuration: 12,000 training lists, all validation users, the top 4 decoder layers trained over
# cached lower-layer states. UNVERIFIED on a GPU (none was lent to the task that wrote it); its CPU path is
# what the unit test and the CPU runs exercise. What it writes to the output folder: record.json (config,
# timings, tokens/example, the validation curve, the comparison with paired-bootstrap intervals),
# checkpoint.pt (heads, top layers, optimisers; `--resume` continues from it), train.log.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-var/gpu-train}
CACHE=${CACHE:-var/gpu-train-cache}   # frozen-feature cache (GBs): kept out of $OUT so it is not sent back
mkdir -p "$OUT" "$CACHE"

[ -x .venv/bin/python ] || make setup PYTHON="$PYTHON"
.venv/bin/python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device: this script needs the GPU"
print("CUDA:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
# Data split and the converted base model (idempotent: returns at once when present).
.venv/bin/python - <<'PY'
from pathlib import Path
from tools.core.base_models import smollm2_dir
from tools.data import prepare_movielens
data = Path("var/data/movielens-100k")
if not (data / "valid.csv").is_file():
    prepare_movielens(data, Path("var/cache"))
print("base model:", smollm2_dir(Path("var")))
PY

# 7.5 minutes at most for the run itself; the trainer also stops its training loop after --max-minutes and
# validates + checkpoints before exiting, so a slow feature stage still leaves a record.
timeout 450 .venv/bin/python -m tools.lab.intent_ranker \
    --device cuda --out "$OUT" --cache-dir "$CACHE" \
    --train-examples 12000 --validation-users 0 --candidates 10 --history-items 5 \
    --top-layers 4 --read-layers 15 --head mlp --head-hidden 256 \
    --steps 1500 --batch-size 64 --lr 1e-3 --layer-lr 5e-5 --eval-every 250 \
    --feature-batch 64 --max-minutes 3 2>&1 | tee "$OUT/train.log"
echo "record: $OUT/record.json"
