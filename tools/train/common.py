"""The training loop the three trainers share: seeds, LoRA, AdamW with warm-up, validation, checkpoints, record.

A run writes into its output folder:

* ``adapter/``: the best adapter so far by the validation metric (PEFT format, what `instructrec export`
  merges), with the tokenizer;
* ``checkpoint/``: the latest adapter, optimizer, scheduler and RNG states, for ``--resume``;
* ``record.json``: the configuration, every validation, timings and the outcome, rewritten as the run goes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tools.core.machine import machine, repo_path

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoint"
RECORD_FILE = "record.json"
TRAINER_STATE = "trainer_state.pt"


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping settings common to every trainer."""

    steps: int = 200
    batch_size: int = 4
    lr: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 50
    checkpoint_every: int = 25
    max_minutes: float = 0.0
    """Stop (after a final validation) once this much wall time has passed; 0 = no limit."""
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    """torch intra-op threads on the CPU; 0 = all cores."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device on this machine")
    return torch.device(device)


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: dataclasses as dicts, paths relative to the repository, tuples as lists."""
    if is_dataclass(value):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return repo_path(value)
    return value


@dataclass
class Record:
    """What a run did, written to ``record.json`` after every validation and at the end."""

    model: str
    config: Any
    path: Path
    validations: list[dict] = field(default_factory=list)
    best: dict | None = None
    status: str = "running"
    started_at: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)

    def write(self) -> None:
        data = {
            "model": self.model,
            "status": self.status,
            "config": jsonable(self.config),
            "best": self.best,
            "validations": self.validations,
            "seconds": round(time.time() - self.started_at, 1),
            "machine": machine(),
            **jsonable(self.extra),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.path)


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


@dataclass
class Task:
    """What a trainer plugs into :func:`run_loop`.

    ``loss(batch)`` returns the scalar loss of one batch; ``validate()`` returns metrics (the ``metric`` key
    picks the best adapter, higher is better); ``save(dir)`` writes the adapter (and tokenizer) to ``dir``.
    """

    model: torch.nn.Module
    batches: Iterator[Any]
    loss: Callable[[Any], torch.Tensor]
    validate: Callable[[], dict[str, float]]
    save: Callable[[Path], None]
    metric: str


def _save_checkpoint(out: Path, task: Task, optimizer, scheduler, step: int, best: dict | None) -> None:
    tmp = out / (CHECKPOINT_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    task.save(tmp)
    torch.save(
        {
            "step": step,
            "best": best,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        },
        tmp / TRAINER_STATE,
    )
    final = out / CHECKPOINT_DIR
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def load_trainable_state(model: torch.nn.Module, adapter_dir: Path) -> None:
    """Load the trainable (adapter and head) weights saved in ``adapter_dir`` into ``model``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)


def run_loop(task: Task, loop: LoopConfig, out: Path, record: Record, resume: bool = False) -> Record:
    """Train ``task.model``'s trainable parameters; validate, keep the best adapter, checkpoint, record."""
    out.mkdir(parents=True, exist_ok=True)
    params = [p for p in task.model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(loop.warmup_steps, loop.steps))
    step, best = 0, None
    checkpoint = out / CHECKPOINT_DIR
    if resume:
        if not (checkpoint / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint}")
        state = torch.load(checkpoint / TRAINER_STATE, weights_only=False)
        load_trainable_state(task.model, checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        if (out / RECORD_FILE).is_file():
            previous = json.loads((out / RECORD_FILE).read_text())
            record.validations = previous.get("validations", [])
        log.info("resumed at step %d", step)
        for _ in range(step):  # the example stream is deterministic: skip what was consumed
            next(task.batches)
    record.best = best
    record.write()
    started = time.monotonic()

    def validate_and_keep(at: int) -> None:
        nonlocal best
        task.model.eval()
        with torch.no_grad():
            metrics = task.validate()
        task.model.train()
        entry = {"step": at, **{k: round(v, 5) for k, v in metrics.items()},
                 "elapsed_s": round(time.monotonic() - started, 1)}
        record.validations.append(entry)
        if best is None or metrics[task.metric] > best[task.metric]:
            best = entry
            task.save(out / ADAPTER_DIR)
        record.best = best
        record.write()
        log.info("validation at step %d: %s", at, entry)

    if step == 0:
        validate_and_keep(0)
    task.model.train()
    bar = tqdm(total=loop.steps, initial=step, desc=record.model, unit="step")
    running = None
    stopped_early = False
    while step < loop.steps:
        loss = task.loss(next(task.batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, loop.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.update()
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        out_of_time = loop.max_minutes > 0 and time.monotonic() - started > loop.max_minutes * 60
        if step % loop.eval_every == 0 or step == loop.steps or out_of_time:
            record.extra["train_loss"] = round(running, 5)
            validate_and_keep(step)
        if step % loop.checkpoint_every == 0 or step == loop.steps or out_of_time:
            _save_checkpoint(out, task, optimizer, scheduler, step, best)
        if out_of_time and step < loop.steps:
            log.warning("stopping at step %d: --max-minutes %.1f reached", step, loop.max_minutes)
            stopped_early = True
            break
    bar.close()
    record.extra["steps_done"] = step
    record.status = "stopped at time limit" if stopped_early else "finished"
    record.write()
    return record


def lora_layers(num_layers: int, top_layers: int) -> list[int] | None:
    """Indices of the top ``top_layers`` transformer layers (None = all): LoRA there only, so the backward
    pass stops at the lowest adapted layer (the frozen layers below run without storing activations)."""
    if top_layers <= 0 or top_layers >= num_layers:
        return None
    return list(range(num_layers - top_layers, num_layers))


def cycle(make: Callable[[int], list[Any]]) -> Iterator[Any]:
    """Endless epochs of ``make(epoch)`` (each epoch's list is built, e.g. shuffled, from its number)."""
    epoch = 0
    while True:
        yield from make(epoch)
        epoch += 1


def setup_torch(loop: LoopConfig) -> torch.device:
    seed_everything(loop.seed)
    if loop.threads:
        torch.set_num_threads(loop.threads)
    return resolve_device(loop.device)
