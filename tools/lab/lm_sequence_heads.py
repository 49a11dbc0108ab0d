"""The every-prefix LM experiment's heads (#15): a catalog-wide head over one feature set, alone or as a residual
on the sequence model's logits, its training on the training pairs (model chosen on validation), and the
full-ranking and 1+K random-list metrics it is judged by."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tools.core.metrics import ndcg_of_ranks
from tools.core.sampling import random_negatives
from tools.lab.lm_sequence_features import LMSequenceConfig, Pairs

log = logging.getLogger(__name__)


class CatalogHead(nn.Module):
    """LayerNorm per feature block, dropout, Linear to one score per catalog item (with a per-item bias).

    ``zero``: the output weight and bias start at 0, so a residual head starts exactly at the score under it.
    ``dims`` empty: the bias alone (learned popularity). ``rank`` > 0: the Linear is factored through ``rank``
    dimensions (a projection, then ``rank``-dimensional item vectors), ``rank x (inputs + items)`` weights instead
    of ``inputs x items``."""

    def __init__(self, dims: Sequence[int], items: int, dropout: float, zero: bool, rank: int = 0) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(items))
        self.linear = None
        if dims:
            out = nn.Linear(rank or sum(dims), items)
            self.linear = nn.Sequential(nn.Linear(sum(dims), rank, bias=False), out) if rank else out
            nn.init.zeros_(out.bias)
            if zero:
                nn.init.zeros_(out.weight)

    def forward(self, blocks: torch.Tensor | None) -> torch.Tensor:
        if self.linear is None:
            return self.bias.unsqueeze(0)
        x = torch.cat([norm(blocks[:, b].float()) for b, norm in enumerate(self.norms)], dim=1)
        return self.linear(self.dropout(x)) + self.bias


@dataclass
class Scorer:
    """A trained head over one feature set, alone or as a residual on the sequence model's logits."""

    name: str
    features: str | None  # "lm", "text" or None (bias only)
    residual: bool

    def blocks(self, pairs: Pairs, rows) -> torch.Tensor | None:
        return None if self.features is None else getattr(pairs, self.features)[rows]

    def base(self, pairs: Pairs, rows, training: bool = False) -> torch.Tensor:
        if not self.residual:
            return torch.zeros(len(rows), pairs.sasrec.shape[1])
        return (pairs.sasrec_train if training and pairs.sasrec_train is not None else pairs.sasrec)[rows]


SCORERS = (
    Scorer("bias alone", None, False),
    Scorer("LM alone", "lm", False),
    Scorer("MiniLM alone", "text", False),
    Scorer("SASRec + bias", None, True),
    Scorer("SASRec + LM", "lm", True),
    Scorer("SASRec + MiniLM", "text", True),
)


def full_ranks(scores: torch.Tensor, pairs: Pairs, rows: Sequence[int]) -> np.ndarray:
    """0-based rank of each target among the catalog items not seen before it (ties count against it)."""
    out = np.empty(len(rows), dtype=np.int64)
    for n, r in enumerate(rows):
        s = scores[n].clone()
        s[torch.from_numpy(pairs.exclude[r])] = -math.inf
        t = pairs.target[r]
        out[n] = int((s >= s[t]).sum()) - 1
    return out


def list_ranks(scores: torch.Tensor, pairs: Pairs, rows: Sequence[int], lists: Sequence[np.ndarray]) -> np.ndarray:
    """[len(rows), draws] ranks of the target within each 1+K list (catalog rows, target included)."""
    out = np.empty((len(rows), len(lists[0])), dtype=np.int64)
    for n, (r, user_lists) in enumerate(zip(rows, lists)):
        t = scores[n, pairs.target[r]]
        for d, cands in enumerate(user_lists):
            out[n, d] = int((scores[n, torch.from_numpy(cands)] >= t).sum()) - 1
    return out


def metrics(full: np.ndarray, lists: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user metrics: full-ranking HR@10 / NDCG@10, 1+K HR@1 / NDCG@5 averaged over the draws."""
    return {"HR@10": (full < 10).astype(float), "NDCG@10": ndcg_of_ranks(full, 10),
            "HR@1 (1+9)": (lists < 1).mean(axis=1), "NDCG@5 (1+9)": ndcg_of_ranks(lists, 5).mean(axis=1)}


def random_lists(split, pairs: Pairs, rows: Sequence[int], draws: int, negatives: int, seed: int,
                 position: dict[str, int]) -> list[np.ndarray]:
    """Per row, ``draws`` lists of the target + ``negatives`` random items the user never interacted with."""
    ids = list(split.catalog.items)
    seen = {c.user_id: c.seen for c in split.test_cases}
    out = []
    for r in rows:
        user = pairs.user[r]
        rng = random.Random(f"{seed}:{user}:{pairs.kind[r]}")
        out.append(np.array([[pairs.target[r], *(position[i] for i in random_negatives(ids, set(seen[user]),
                                                                                        negatives, rng))]
                             for _ in range(draws)]))
    return out


def scores_of(head: CatalogHead, scorer: Scorer, pairs: Pairs, rows: Sequence[int], batch: int = 512) -> torch.Tensor:
    head.eval()
    with torch.no_grad():
        parts = []
        for s in range(0, len(rows), batch):
            r = rows[s: s + batch]
            parts.append(scorer.base(pairs, r) + head(scorer.blocks(pairs, r)))
    return torch.cat(parts)


def evaluate_scores(scores: torch.Tensor, pairs: Pairs, rows, lists) -> dict[str, np.ndarray]:
    return metrics(full_ranks(scores, pairs, rows), list_ranks(scores, pairs, rows, lists))


def evaluate_rows(head, scorer, pairs, rows, lists) -> dict[str, np.ndarray]:
    return evaluate_scores(scores_of(head, scorer, pairs, rows), pairs, rows, lists)


def fit(scorer: Scorer, pairs: Pairs, train_rows: np.ndarray, valid_rows, valid_lists, config: LMSequenceConfig):
    """Train one head; keep the epoch with the best validation NDCG@10 (epoch 0 = the untrained head)."""
    torch.manual_seed(config.seed)
    dims = [] if scorer.features is None else [getattr(pairs, scorer.features).shape[2]] * \
        getattr(pairs, scorer.features).shape[1]
    head = CatalogHead(dims, pairs.sasrec.shape[1], config.dropout, zero=scorer.residual, rank=config.head_rank)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    targets = torch.from_numpy(pairs.target)
    curve, best, best_state = [], -1.0, None
    began = time.monotonic()
    for epoch in range(config.epochs + 1):
        if epoch:
            head.train()
            order = rng.permutation(train_rows)
            losses = []
            for s in range(0, len(order), config.batch_size):
                r = order[s: s + config.batch_size]
                logits = scorer.base(pairs, r, training=True) + head(scorer.blocks(pairs, r))
                loss = nn.functional.cross_entropy(logits, targets[r])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        m = evaluate_rows(head, scorer, pairs, valid_rows, valid_lists)
        point = {"epoch": epoch, "loss": float(np.mean(losses)) if epoch else None,
                 **{k: float(v.mean()) for k, v in m.items()}}
        curve.append(point)
        log.info("%s epoch %d: %s", scorer.name, epoch, point)
        if point["NDCG@10"] > best:
            best, best_state = point["NDCG@10"], {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head, curve, time.monotonic() - began
