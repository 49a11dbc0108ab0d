"""Ranking metrics for one relevant item per user (leave-one-out), and the candidate sets of the protocols."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import numpy as np


def rank_of(scores: Sequence[float], target_index: int) -> int:
    """0-based rank of the target among the candidates; ties count against the target (pessimistic).

    Args:
        scores: One score per candidate; higher is better.
        target_index: Position of the relevant item in ``scores``.
    """
    target = scores[target_index]
    return sum(1 for i, s in enumerate(scores) if i != target_index and s >= target)


def hit_rate(rank: int | None, k: int) -> float:
    """1 when the relevant item is in the top ``k`` (rank is 0-based; None = not retrieved)."""
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg(rank: int | None, k: int) -> float:
    """NDCG@k with a single relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def summarize(ranks: Iterable[int | None], ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Mean HR@k and NDCG@k over users, plus the number of users."""
    ranks = list(ranks)
    out: dict[str, float] = {"users": float(len(ranks))}
    for k in ks:
        out[f"HR@{k}"] = float(np.mean([hit_rate(r, k) for r in ranks])) if ranks else 0.0
        out[f"NDCG@{k}"] = float(np.mean([ndcg(r, k) for r in ranks])) if ranks else 0.0
    return out


def random_negatives(
    catalog_ids: Sequence[str], seen: set[str], n: int, rng: random.Random
) -> list[str]:
    """``n`` distinct items the user never interacted with, drawn uniformly.

    Raises:
        ValueError: fewer than ``n`` unseen items exist.
    """
    pool = [i for i in catalog_ids if i not in seen]
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} unseen items, {n} negatives asked for")
    return rng.sample(pool, n)


def candidate_list(target: str, negatives: Sequence[str], rng: random.Random) -> tuple[list[str], int]:
    """The target and its negatives in a random order (so position carries no signal); returns the target's index."""
    candidates = [target, *negatives]
    rng.shuffle(candidates)
    return candidates, candidates.index(target)
