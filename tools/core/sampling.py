"""Negative sampling: the unseen items a target is ranked against, drawn the same way by training and evaluation."""

from __future__ import annotations

import random
from collections.abc import Sequence


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
