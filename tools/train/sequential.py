"""The sequential recommender served as ``sequence_encoder``: SASRec trained with full cross-entropy.

Architecture (Kang & McAuley 2018, as RecBole 1.2.1 builds it): item + learned position embeddings, layer
norm and dropout, post-norm Transformer blocks with GELU feed-forward nets and causal attention, the user
vector is the hidden state at the last (most recent) position, and an item's score is its dot product with
the shared item embedding. Training is next-item prediction at every position of each user's training
sequence, cross-entropy over the whole catalog; validation (NDCG@10 over the whole catalog, history
excluded, on the validation items) picks the epoch and stops the run.

Against RecBole 1.2.1's own SASRec on the same split (1+9 HR@1 0.579 there) this trainer's choices are the
ones its model card ablates: a wider GELU feed-forward net, heavier dropout, windows that end every
``window_stride`` items so that a target late in a long history sees its full context.

Inputs are left-padded with 0 (catalog items are 1..N), so the most recent item is always at the last
position and the user vector is ``hidden[:, -1]``: the ONNX export reads it the same way.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tools.core.metrics import ndcg_of_ranks
from tools.core.sequence_model import (
    PUBLISHED_DIR,
    SequenceModel,
    SequentialConfig,
    is_sequence_checkpoint,
    left_pad,
    save,
)

log = logging.getLogger(__name__)

@dataclass
class SequentialData:
    """Sequences as model indices: ``vocab[i - 1]`` is the catalog id of model item ``i``."""

    vocab: list[str]
    train: list[list[int]]
    valid: list[tuple[list[int], int]] = field(default_factory=list)

    @property
    def index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.vocab)}


def build_data(vocab: Sequence[str], train: Sequence[Sequence[str]],
               valid: Sequence[tuple[Sequence[str], str]] = ()) -> SequentialData:
    """Map catalog ids to model indices; ids not in ``vocab`` are dropped from histories."""
    index = {item: i + 1 for i, item in enumerate(vocab)}
    enc = [[index[i] for i in seq if i in index] for seq in train]
    val = [([index[i] for i in h if i in index], index[t]) for h, t in valid if t in index]
    return SequentialData(list(vocab), enc, val)


def training_rows(sequences: Sequence[Sequence[int]], max_len: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``[max_len + 1]`` ending every ``stride`` items (the last at each sequence's end), left-padded,
    and a mask [N, max_len] of the targets each window trains: those after the previous window's end, so
    every target is counted once and sees at least ``max_len - stride`` items of context (all it has when
    its history is shorter)."""
    rows, masks = [], []
    width = max_len + 1
    for seq in sequences:
        if len(seq) < 2:
            continue
        claimed_to = 1  # targets are the items at index 1..len-1
        for end in sorted(range(len(seq), 1, -stride)):
            window = seq[max(0, end - width):end]
            first_target = end - (len(window) - 1)
            mask = [0] * max_len
            for t in range(max(claimed_to, first_target), end):
                mask[max_len - (end - t)] = 1
            claimed_to = end
            rows.append(left_pad(window, width))
            masks.append(mask)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


@torch.no_grad()
def rank_metrics(model: SequenceModel, pairs: Sequence[tuple[Sequence[int], int]], k: int = 10,
                 batch: int = 512) -> dict[str, float]:
    """HR@k and NDCG@k of each pair's target over the whole catalog, its history excluded."""
    model.eval()
    hr = ndcg = 0.0
    items = model.item_vectors()
    batch = max(1, min(batch, _SCORES_PER_CHUNK // items.shape[0]))  # [batch, V] scores stay ~80 MB
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        seqs = torch.tensor([left_pad(h, model.config.max_len) for h, _ in chunk], dtype=torch.long)
        scores = model(seqs) @ items.T  # [B, V]
        scores[:, 0] = -torch.inf
        for row, (history, target) in enumerate(chunk):
            seen = [i for i in history if i != target]
            scores[row, seen] = -torch.inf
        targets = torch.tensor([t for _, t in chunk])
        target_scores = scores[torch.arange(len(chunk)), targets]
        ranks = (scores > target_scores.unsqueeze(1)).sum(dim=1).numpy()  # 0-based
        hr += float((ranks < k).sum())
        ndcg += float(ndcg_of_ranks(ranks, k).sum())
    n = max(1, len(pairs))
    return {f"HR@{k}": hr / n, f"NDCG@{k}": ndcg / n}


_SCORES_PER_CHUNK = 20_000_000


@dataclass
class TrainResult:
    model: SequenceModel
    record: dict


def batch_loss(model: SequenceModel, hidden: torch.Tensor, targets: torch.Tensor, negatives: int,
               rng: torch.Generator) -> torch.Tensor:
    """Cross-entropy of each target against the whole catalog, or (``negatives`` > 0 and fewer than the
    catalog) against ``negatives`` items drawn uniformly for the batch: logits [T, 1 + N], the target first."""
    vectors = model.item_vectors()  # [V + 1, H], row 0 padding
    num_items = vectors.shape[0] - 1
    if not negatives or negatives >= num_items:
        return nn.functional.cross_entropy(hidden @ vectors.T, targets)
    drawn = torch.randint(1, num_items + 1, (negatives,), generator=rng)  # [N]
    positive = (hidden * vectors[targets]).sum(-1, keepdim=True)  # [T, 1]
    negative = hidden @ vectors[drawn].T  # [T, N]
    negative = negative.masked_fill(drawn.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, negative], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def train_sequential(data: SequentialData, config: SequentialConfig = SequentialConfig(), *,
                     progress: Callable[[dict], None] | None = None, max_minutes: float = 0.0,
                     show_bar: bool = True, checkpoint: Path | None = None, resume: bool = False) -> TrainResult:
    """Train on ``data.train``; keep the epoch with the best validation NDCG@10; early-stop after ``patience``.

    With ``checkpoint`` the state (weights, optimizer, RNG, the best epoch so far, the history) is written
    after every epoch, and ``resume`` continues from it: a run cut short by a session's end loses one epoch.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = SequenceModel(len(data.vocab), config)
    rows, masks = training_rows(data.train, config.max_len, config.window_stride)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = torch.Generator().manual_seed(config.seed)
    best, best_state, best_epoch, waited = -1.0, None, 0, 0
    history: list[dict] = []
    first_epoch = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["config"] != asdict(config):
            raise ValueError(f"{checkpoint} was written with another configuration: {state['config']}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        best, best_state, best_epoch, waited = state["best"], state["best_state"], state["best_epoch"], state["waited"]
        history, first_epoch = state["history"], len(state["history"])
        log.info("resuming %s at epoch %d (best NDCG@10 %.4f at epoch %d)", checkpoint, first_epoch + 1, best,
                 best_epoch)
    start = time.monotonic() - (history[-1]["seconds"] if history else 0.0)
    stopped = waited >= config.patience
    bar = tqdm(range(first_epoch, 0 if stopped else config.epochs), desc="sequence_encoder", disable=not show_bar,
               initial=first_epoch, total=config.epochs)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(rows), generator=rng)
        total, count = 0.0, 0
        cut = False
        for s in range(0, len(order), config.batch_size):
            if max_minutes and s and time.monotonic() - start > max_minutes * 60:
                cut = True  # an epoch longer than the budget: validate what was trained so far, then stop
                break
            idx = order[s:s + config.batch_size]
            batch, mask = rows[idx], masks[idx]
            inputs, targets = batch[:, :-1], batch[:, 1:]  # [B, L]
            hidden = model.hidden_states(inputs)[mask]  # [T, H]
            loss = batch_loss(model, hidden, targets[mask], config.negatives, rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(hidden)
            count += len(hidden)
        metrics = rank_metrics(model, data.valid)
        entry = {"epoch": epoch + 1, "loss": total / max(1, count), **{f"valid_{k}": v for k, v in metrics.items()},
                 "seconds": round(time.monotonic() - start, 1), **({"rows_trained": s} if cut else {})}
        history.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", ndcg=f"{metrics['NDCG@10']:.4f}")
        if progress:
            progress(entry)
        if metrics["NDCG@10"] > best:
            best, best_epoch, waited = metrics["NDCG@10"], epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": rng.get_state(), "torch_rng": torch.get_rng_state(), "best": best,
                        "best_state": best_state, "best_epoch": best_epoch, "waited": waited, "history": history},
                       tmp)
            tmp.replace(checkpoint)
        if waited >= config.patience:
            break
        if max_minutes and time.monotonic() - start > max_minutes * 60:
            log.info("stopping after %.1f minutes (max_minutes)", max_minutes)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    best_entry = next((e for e in history if e["epoch"] == best_epoch), {})
    record = {"config": asdict(config), "epochs": history, "best_epoch": best_epoch, "best_valid_NDCG@10": best,
              "best": best_entry, "train_rows": len(rows), "train_targets": int(masks.sum()),
              "seconds": round(time.monotonic() - start, 1)}
    return TrainResult(model, record)


# ---- `instructrec train sequential` -----------------------------------------------------------------------

MODEL_DIR = "model"
CHECKPOINT_FILE = "checkpoint.pt"
RECORD_FILE = "record.json"


def run(data_dir: Path, out_dir: Path, config: SequentialConfig, *, resume: bool = False,
        max_minutes: float = 0.0, max_eval_users: int = 0, eval_seed: int | None = None) -> dict:
    """Train on the split in ``data_dir``; write ``OUT_DIR/model`` (the best epoch), the record, a checkpoint.

    Test items are never seen: the training sequences are the training part, the validation items pick
    the epoch. The record also holds the test metrics of the chosen epoch, for the model card only.
    ``max_eval_users`` (0: all) caps the validation and test users, drawn with the config's seed: at 10^6
    users a full-catalog validation of every user each epoch would cost more than the epoch. ``eval_seed``
    (default: the config's seed) draws them, so that runs with different seeds can be judged on the same users.
    """
    from tools.core.machine import machine, repo_path
    from tools.core.split import load_split

    split = load_split(Path(data_dir))
    vocab = list(split.catalog.items)
    draw = config.seed if eval_seed is None else eval_seed
    valid_cases, test_cases = (_at_most(cases, max_eval_users, draw)
                               for cases in (split.valid_cases, split.test_cases))
    data = build_data(vocab, list(split.train.values()), [(c.history, c.target) for c in valid_cases])
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train_sequential(data, config, max_minutes=max_minutes, checkpoint=out_dir / CHECKPOINT_FILE,
                              resume=resume)
    save(result.model, vocab, out_dir / MODEL_DIR)
    index = data.index
    test = [([index[i] for i in c.history if i in index], index[c.target]) for c in test_cases]
    record = {**result.record, "data_dir": repo_path(Path(data_dir)), "machine": machine(),
              "valid_users": len(data.valid), "test_users": len(test),
              "test_full_ranking": rank_metrics(result.model, test),
              "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    (out_dir / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _at_most(cases: Sequence, count: int, seed: int) -> list:
    """All of ``cases``, or ``count`` of them drawn with ``seed`` (in their order)."""
    if not count or len(cases) <= count:
        return list(cases)
    keep = sorted(random.Random(seed).sample(range(len(cases)), count))
    return [cases[n] for n in keep]


def model_card(record: dict, command: str) -> str:
    cfg = record["config"]
    best = record.get("best") or {}
    test = record.get("test_full_ranking") or {}
    return f"""# sequence_encoder: SASRec trained with full cross-entropy

The sequential recommender `instructrec prepare` exports as the Triton model `sequence_encoder` (item-id
history in, user vector out) and whose item vectors `instructrec build-index` puts into the sequence index
of the retrieval service. Weights: `model.safetensors` ({cfg['layers']} post-norm Transformer blocks, hidden
{cfg['hidden']}, feed-forward {cfg['inner']}, {cfg['heads']} heads, dropout {cfg['dropout']}, the last
{cfg['max_len']} items); `item_ids.json` maps model rows to catalog ids; `config.json` the architecture.

## Data
MovieLens-100K, the suite's leave-one-out split (`instructrec prepare`): training sequences only (next-item
cross-entropy over the whole catalog at every position). The validation items pick the epoch (NDCG@10 over
the whole catalog, history excluded) and stop the run after {cfg['patience']} epochs without a gain. Test
items are never used in training; their figures below are for the record.

## Command
```
{command}
```
Seed {cfg['seed']}; {len(record['epochs'])} epochs ({record['seconds']} s on {record['machine']['cpus']} CPUs),
best epoch {record['best_epoch']}. Full record: `record.json`.

## Figures (best epoch)
| split | HR@10 | NDCG@10 |
|---|---|---|
| validation (943 users) | {best.get('valid_HR@10', float('nan')):.4f} | {best.get('valid_NDCG@10', float('nan')):.4f} |
| test (943 users, in-process) | {test.get('HR@10', float('nan')):.4f} | {test.get('NDCG@10', float('nan')):.4f} |
"""


def publish(run_dir: Path, command: str, dest: Path = PUBLISHED_DIR) -> Path:
    """Copy a finished run's model, record and a model card into the committed folder."""
    source = run_dir / MODEL_DIR
    if not is_sequence_checkpoint(source):
        raise FileNotFoundError(f"{source} holds no trained model: train first")
    record = json.loads((run_dir / RECORD_FILE).read_text())
    tmp = dest.with_name(dest.name + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(record, command))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
