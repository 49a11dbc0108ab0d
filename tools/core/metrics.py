"""Ranking metrics for one relevant item per user (leave-one-out), and the paired bootstrap that compares two
systems on the same users: the one implementation every trainer, fit, evaluation and lab experiment uses."""

from __future__ import annotations

import math
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


def ndcg_of_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    """:func:`ndcg` of each of an array of 0-based ranks (float ranks allowed, e.g. half-counted ties)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def catalog_ranks(scores: np.ndarray, targets: Sequence[int], excluded: Sequence[Sequence[int]]) -> np.ndarray:
    """0-based rank of each row's target column among the row's scores, the ``excluded`` columns (the history)
    left out: full ranking of the whole catalog. NaN scores (items a model does not know) rank last."""
    ranks = np.empty(len(targets), dtype=np.int64)
    for row, (target, skip) in enumerate(zip(targets, excluded)):
        s = np.nan_to_num(np.asarray(scores[row], dtype=np.float64), nan=-np.inf)
        s[[c for c in skip if c != target]] = -np.inf
        ranks[row] = int((s > s[target]).sum())
    return ranks


def at_10(ranks: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 of 0-based ranks, rounded to 4 digits."""
    return {"HR@10": round(float((np.asarray(ranks) < 10).mean()), 4),
            "NDCG@10": round(float(ndcg_of_ranks(ranks, 10).mean()), 4)}


def summarize(ranks: Iterable[int | None], ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Mean HR@k and NDCG@k over users, plus the number of users."""
    ranks = list(ranks)
    out: dict[str, float] = {"users": float(len(ranks))}
    for k in ks:
        out[f"HR@{k}"] = float(np.mean([hit_rate(r, k) for r in ranks])) if ranks else 0.0
        out[f"NDCG@{k}"] = float(np.mean([ndcg(r, k) for r in ranks])) if ranks else 0.0
    return out


BOOTSTRAP_ROUNDS = 1000


def bootstrap(served: np.ndarray, other: np.ndarray, seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS) -> dict[str, float]:
    """Mean of ``served - other`` over users and its 95 % paired-bootstrap interval."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(served, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "relative": float(diff.mean() / max(np.mean(other), 1e-12))}


def paired_method_name(system: str, taken: Iterable[str]) -> str:
    """The name an earlier run's system joins a report's tables under: its own, unless a method of this run has it
    (an earlier run of the same served system, both called "served"), then ``"<system> (earlier run)"``, so that
    the earlier figures never replace this run's."""
    taken = set(taken)
    name, n = system, 1
    while name in taken:
        name = f"{system} (earlier run)" if n == 1 else f"{system} (earlier run {n})"
        n += 1
    return name
