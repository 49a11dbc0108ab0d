"""The candidate lists and baseline scorers of protocols 1-3, over the cases of :mod:`tools.core.split`."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from tools.core.metrics import rank_of
from tools.core.sampling import candidate_list, random_negatives
from tools.core.split import Case, Split

# Scores candidates for one case: (history, candidates) -> one score per candidate, higher is better.
Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def random_candidates(split: Split, cases: Sequence[Case], negatives: int = 9, seed: int = 0) -> list[list[str]]:
    """Protocol 1: the target plus ``negatives`` unseen items drawn uniformly, shuffled (seeded per user)."""
    ids = list(split.catalog.items)
    out = []
    for case in cases:
        rng = random.Random(f"{seed}:{case.user_id}")
        candidates, _ = candidate_list(case.target, random_negatives(ids, set(case.seen), negatives, rng), rng)
        out.append(candidates)
    return out


def rank_cases(cases: Sequence[Case], candidates: Sequence[Sequence[str]], scorer: Scorer) -> list[int]:
    """The target's 0-based rank among each case's candidates under ``scorer``."""
    return [rank_of(list(scorer(c.history, cands)), list(cands).index(c.target)) for c, cands in zip(cases, candidates)]


def popularity_scorer(split: Split) -> Scorer:
    """Training interaction counts."""
    return lambda history, candidates: [float(split.popularity[c]) for c in candidates]


def random_scorer(seed: int = 0) -> Scorer:
    """Uniform random scores (the chance baseline)."""
    rng = random.Random(seed)
    return lambda history, candidates: [rng.random() for _ in candidates]
