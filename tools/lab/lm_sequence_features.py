"""The every-prefix LM experiment's inputs (#15): each user's window of train + validation items, the frozen LM's
state at every item (one causal pass per user, cached on disk in chunks of users) and the flattened (prefix
state, next item) pairs with their MiniLM features and the sequence model's logits."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from tools.lab.frozen_lm import ExperimentInputs, FrozenLM, PromptTokenizer, read_states

log = logging.getLogger(__name__)


HEADER = "Movies this user watched, oldest first:"
TRAIN, VALID, TEST = "train", "valid", "test"


@dataclass
class LMSequenceConfig(ExperimentInputs):
    out_dir: Path = Path("var/lm-sequence/run")
    window: int = 24
    """Most recent items of train + validation read per user (one line each)."""
    read_layers: tuple[int, ...] = (15,)
    users: int = 0
    """Users (0: all); the first N of the split's order."""
    feature_batch: int = 8
    chunk_users: int = 64
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    dropout: float = 0.2
    head_rank: int = 0
    """Rank of the heads' item scores (0: a full Linear, inputs x items weights)."""
    draws: int = 5
    """1+9 random-negative lists per validation/test user."""
    negatives: int = 9
    cross_fit_sequence: int = 0
    """Folds of users for cross-fitted SASRec logits under the residual heads' training pairs: each user's come
    from a SASRec trained without that user (0: the committed model's, which was fitted on those very targets)."""
    fusion_folds: int = 5
    """Folds of validation users for the cross-fitted late-fusion weights."""
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class Window:
    """One user's window: the items read, what each state predicts and which split that target belongs to."""

    user: str
    items: tuple[str, ...]
    targets: tuple[str, ...]
    kinds: tuple[str, ...]


def windows(split, window: int, users: int = 0) -> list[Window]:
    """Train + validation (the last ``window``), each item's next item as its target, the test item last."""
    out = []
    valid = {c.user_id: c.target for c in split.valid_cases}
    for case in split.test_cases[: users or None]:
        seq = [*split.train.get(case.user_id, []), *([valid[case.user_id]] if case.user_id in valid else [])]
        items = seq[-window:]
        if not items:
            continue
        targets = [*items[1:], case.target]
        n_train = len(split.train.get(case.user_id, []))
        start = len(seq) - len(items)
        kinds = []
        for j in range(len(items)):
            t = start + j + 1  # the target's index in seq (len(seq) = the test item)
            kinds.append(TRAIN if t < n_train else VALID if t < len(seq) else TEST)
        out.append(Window(case.user_id, tuple(items), tuple(targets), tuple(kinds)))
    return out


def window_segments(catalog, items: Sequence[str]) -> tuple[str, list[str]]:
    return HEADER, [f"\n{prompts.candidate_text(catalog[i])}" for i in items]


def lm_states(lm: FrozenLM, catalog, rows: Sequence[Window], batch: int) -> tuple[list[torch.Tensor], int]:
    """[len(items), R, H] half-precision states per window (read layers then the final normed state); tokens."""
    tok = PromptTokenizer(lm.tokenizer)
    encoded = [tok(*window_segments(catalog, w.items)) for w in rows]
    states, _ = read_states(lm, encoded, batch)
    return states, sum(len(e[0]) for e in encoded)


def cached_states(config: LMSequenceConfig, catalog, rows: Sequence[Window]) -> tuple[list[torch.Tensor], dict]:
    """LM states of every window, computed in chunks of users that are cached on disk (so a stopped run resumes)."""
    from tqdm import tqdm

    cache = Path(config.cache_dir or config.out_dir / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    lm = None
    states: list[torch.Tensor] = []
    cost = {"tokens": 0, "seconds": 0.0, "computed_users": 0, "cached_users": 0}
    """tokens / seconds: the LM passes behind every state, whether computed now or read from the cache."""
    for start in tqdm(range(0, len(rows), config.chunk_users), desc="LM states"):
        chunk = rows[start: start + config.chunk_users]
        layers = "-".join(map(str, config.read_layers))
        key = f"w{config.window}-r{layers}-{chunk[0].user}-{chunk[-1].user}-{len(chunk)}"
        path = cache / f"{key}.pt"
        if path.exists():
            saved = torch.load(path)
            if saved["items"] == [list(w.items) for w in chunk]:
                states += saved["states"]
                cost["tokens"] += saved["tokens"]
                cost["seconds"] += saved["seconds"]
                cost["cached_users"] += len(chunk)
                continue
        if lm is None:
            lm = FrozenLM(config.base_model, 0, config.read_layers, torch.device("cpu"))
        began = time.monotonic()
        part, tokens = lm_states(lm, catalog, chunk, config.feature_batch)
        seconds = time.monotonic() - began
        torch.save({"items": [list(w.items) for w in chunk], "states": part, "tokens": tokens,
                    "seconds": seconds}, path)
        cost["tokens"] += tokens
        cost["seconds"] += seconds
        cost["computed_users"] += len(chunk)
        log.info("users %d-%d: %d tokens in %.0f s", start, start + len(chunk), tokens, seconds)
        states += part
    return states, cost


@dataclass
class Pairs:
    """Every (prefix state, next item) pair of every window, flattened."""

    user: list[str]
    kind: np.ndarray  # [P] str
    target: np.ndarray  # [P] catalog row of the target
    exclude: list[np.ndarray]  # catalog rows seen before the target (not ranked in full ranking)
    lm: torch.Tensor  # [P, R, H] half
    text: torch.Tensor  # [P, 2, D]: mean of the window's items so far, the last item (served text encoder)
    sasrec: torch.Tensor  # [P, N] the committed sequence model's logits of the full prefix
    prefix: list[list[str]] = field(default_factory=list)  # the full history before each target
    sasrec_train: torch.Tensor | None = None  # [P, N] the residual's base when training (None: ``sasrec``)


def build_pairs(split, rows: Sequence[Window], states: Sequence[torch.Tensor], retrieval) -> Pairs:
    position = retrieval.position
    valid = {c.user_id: c.target for c in split.valid_cases}
    user, kind, target, exclude, prefixes, text = [], [], [], [], [], []
    vectors = torch.from_numpy(np.asarray(retrieval.item_vectors, dtype=np.float32))
    for w in rows:
        seq = [*split.train.get(w.user, []), *([valid[w.user]] if w.user in valid else [])]
        start = len(seq) - len(w.items)
        rows_w = torch.tensor([position[i] for i in w.items])
        cumulative = vectors[rows_w].cumsum(0) / torch.arange(1, len(w.items) + 1).unsqueeze(1)
        for j, (t, k) in enumerate(zip(w.targets, w.kinds)):
            prefix = seq[: start + j + 1]
            user.append(w.user)
            kind.append(k)
            target.append(position[t])
            exclude.append(np.array([position[i] for i in set(prefix)]))
            prefixes.append(prefix)
            text.append(torch.stack([cumulative[j], vectors[rows_w[j]]]))
    sasrec = []
    for s in range(0, len(prefixes), 512):
        part = retrieval.sequence_scores(prefixes[s: s + 512])
        low = np.nanmin(part, axis=1, keepdims=True) - 1.0
        sasrec.append(torch.from_numpy(np.where(np.isnan(part), low, part).astype(np.float32)))
    return Pairs(user, np.array(kind), np.array(target), exclude, torch.cat([s.float() for s in states]).half(),
                 torch.stack(text), torch.cat(sasrec), prefixes)
