"""`instructrec train`: presets, running the three trainers, and publishing adapters with a model card.

Published adapters live in ``tools/train/adapters/<model>/`` (committed: LoRA weights, the run's record
and a model card); `instructrec prepare` exports them, merged, as the served Triton models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from tools.core.adapters import PUBLISHED_ADAPTERS
from tools.export import PREFERENCE_GENERATOR, RANKER, REQUEST_READER, TEXT_ENCODER, combined_sha256, weights_sha256
from tools.train.common import ADAPTER_DIR, RECORD_FILE, LoopConfig
from tools.train.examples import RankerMix

ADAPTERS_DIR = PUBLISHED_ADAPTERS
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CARD_FILE = "README.md"
# Order matters: the ranker's hard negatives come from the tuned retriever when it was trained first.
TRAIN_ORDER = (TEXT_ENCODER, RANKER, PREFERENCE_GENERATOR, REQUEST_READER)

# Presets: "default" fits 2 CPU cores in under an hour for all three; "large" is for a GPU.
PRESETS: dict[str, dict[str, dict]] = {
    "default": {
        TEXT_ENCODER: {"loop": LoopConfig(steps=50, batch_size=64, lr=1e-3, warmup_steps=5, eval_every=25,
                                          checkpoint_every=10, max_minutes=12)},
        RANKER: {"loop": LoopConfig(steps=280, batch_size=4, lr=2e-3, warmup_steps=10, eval_every=70,
                                    checkpoint_every=20, max_minutes=32), "validation_users": 100,
                 "mix": RankerMix(pointwise_share=0.1)},
        PREFERENCE_GENERATOR: {"loop": LoopConfig(steps=40, batch_size=8, lr=1e-3, warmup_steps=4, eval_every=20,
                                                  checkpoint_every=10, max_minutes=10),
                               "validation_users": 32, "generation_users": 8},
        REQUEST_READER: {"loop": LoopConfig(steps=3000, batch_size=32, lr=1e-3, warmup_steps=50, eval_every=416,
                                            checkpoint_every=416, max_minutes=45), "examples": 50_000},
    },
    "large": {
        TEXT_ENCODER: {"loop": LoopConfig(steps=2000, batch_size=256, lr=5e-4, warmup_steps=100, eval_every=250,
                                          checkpoint_every=250), "validation_users": 943},
        RANKER: {"loop": LoopConfig(steps=6000, batch_size=16, lr=2e-4, warmup_steps=200, eval_every=500,
                                    checkpoint_every=500), "top_layers": 0, "validation_users": 943,
                 "examples_per_epoch": 100000},
        PREFERENCE_GENERATOR: {"loop": LoopConfig(steps=1500, batch_size=32, lr=2e-4, warmup_steps=50,
                                                  eval_every=250, checkpoint_every=250), "top_layers": 0},
        REQUEST_READER: {"loop": LoopConfig(steps=6000, batch_size=64, lr=5e-4, warmup_steps=100, eval_every=500,
                                            checkpoint_every=500), "examples": 100_000},
    },
}


def published_adapter(name: str, adapters_dir: Path = ADAPTERS_DIR) -> Path | None:
    """The committed adapter folder of ``name``, or None when there is none."""
    folder = Path(adapters_dir) / name
    return folder if all((folder / f).is_file() for f in ADAPTER_FILES) else None


def adapter_sha256(adapter_dir: Path) -> str:
    """The hash the export records as ``source_sha256`` for an adapter folder."""
    return combined_sha256(weights_sha256(adapter_dir))


def make_config(name: str, preset: str, data_dir: Path, out_dir: Path, base_model: Path, device: str,
                seed: int, steps: int | None, max_minutes: float | None, hard_negative_encoder: Path | None):
    """The trainer configuration of ``name`` under ``preset`` with the command line's overrides."""
    from tools.train.generator import GeneratorTrainConfig
    from tools.train.ranker import RankerTrainConfig
    from tools.train.reader import ReaderTrainConfig
    from tools.train.retriever import RetrieverTrainConfig

    classes = {TEXT_ENCODER: RetrieverTrainConfig, RANKER: RankerTrainConfig,
               PREFERENCE_GENERATOR: GeneratorTrainConfig, REQUEST_READER: ReaderTrainConfig}
    options = dict(PRESETS[preset][name])
    loop = replace(options.pop("loop"), device=device, seed=seed)
    if steps is not None:
        loop = replace(loop, steps=steps, eval_every=min(loop.eval_every, steps),
                       checkpoint_every=min(loop.checkpoint_every, steps))
    if max_minutes is not None:
        loop = replace(loop, max_minutes=max_minutes)
    if name == RANKER:
        options["hard_negative_encoder"] = hard_negative_encoder
    return classes[name](data_dir=data_dir, base_model=base_model, out_dir=out_dir / name, loop=loop, **options)


def train_one(name: str, config, resume: bool = False):
    from tools.train.generator import train_generator
    from tools.train.ranker import train_ranker
    from tools.train.reader import train_reader
    from tools.train.retriever import train_retriever

    trainers = {TEXT_ENCODER: train_retriever, RANKER: train_ranker, PREFERENCE_GENERATOR: train_generator,
                REQUEST_READER: train_reader}
    return trainers[name](config, resume=resume)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_DATA = {
    "": "MovieLens-100K, the suite's leave-one-out split (`instructrec prepare`), training part only: examples cut\n"
        "each user's training sequence at random points (history -> next item). Validation users' held-out validation\n"
        "item picks the checkpoint; test items are never used. Preferences and intentions come from\n"
        "`tools/core/teacher.py` (our substitute for the paper's teacher LLM); templates from "
        "`services/core/prompts.py`.",
    REQUEST_READER: "Requests rendered from the training bank's clause families (`tools/train/reader_examples.py`) "
                    "over the\ncatalog's vocabulary (value names, `synonyms.json`, years, titles), each word "
                    "labelled with its role\n(`services/core/reading.py`). A fresh draw of the same bank picks the "
                    "checkpoint; the evaluation bank's\nwording and held-out value combinations, and the "
                    "hand-written set, are never seen.",
}


def model_card(name: str, record: dict, command: str, sha: str) -> str:
    """Markdown card: what it is, the data, the command, seed, metrics, and how it is served."""
    config = record["config"]
    loop = config["loop"]
    best = record.get("best") or {}
    first = (record.get("validations") or [{}])[0]
    metrics = "\n".join(f"| {k} | {first.get(k, ''):} | {v} |" for k, v in best.items()
                        if k not in ("step", "elapsed_s"))
    return f"""# {name}: LoRA adapter

Base model: `{Path(config['base_model']).name}` (the copy `instructrec prepare` converts from the packages).
Adapter weights sha256 (as `metadata.json` records it after export): `{sha}`.

## Data
{_DATA.get(name, _DATA[""])}

## Command
```
{command}
```
Seed {loop['seed']}, device `{loop['device']}`, {record.get('steps_done', '')} steps of
batch {loop['batch_size']} (lr {loop['lr']}), {record['seconds']} s on {record['machine']['cpus']} CPUs
({record['status']}); trained at commit `{record.get('commit', 'unknown')}`. Full record: `record.json`.

## Validation (best step {best.get('step')}; step 0 is the base model)
| metric | base (step 0) | tuned |
|---|---|---|
{metrics}

## Serving
`instructrec prepare` (and so `make run`) merges this adapter into the base model and exports it as the
next version of `{name}`; Triton serves the latest version. `instructrec prepare --models base` keeps the
base models instead.
"""


def publish(name: str, run_dir: Path, command: str, adapters_dir: Path = ADAPTERS_DIR) -> Path:
    """Copy the best adapter of a finished run into the committed adapters folder with its card."""
    source = run_dir / ADAPTER_DIR
    missing = [f for f in ADAPTER_FILES if not (source / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: train first")
    dest = Path(adapters_dir) / name
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ADAPTER_FILES:
        shutil.copy2(source / f, tmp / f)
    config = json.loads((tmp / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = ""  # a local path from the training machine means nothing elsewhere
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    record = json.loads((run_dir / RECORD_FILE).read_text())
    record["commit"] = _git_commit()
    record["published_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    (tmp / CARD_FILE).write_text(model_card(name, record, command, adapter_sha256(tmp)))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
