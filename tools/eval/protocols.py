"""Evaluation cases of the three protocols, built from the same leave-one-out split the suite serves.

Test users' history is every interaction before the test item (train + the validation item); validation
cases (used to pick checkpoints) have the training part as history and the validation item as target.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.catalog import Catalog, read_interactions, user_sequences
from tools.eval.metrics import candidate_list, random_negatives, rank_of

# Scores candidates for one case: (history, candidates) -> one score per candidate, higher is better.
Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class Case:
    """One user to evaluate: the history (oldest first), the held-out target, and everything they saw."""

    user_id: str
    history: tuple[str, ...]
    target: str
    seen: frozenset[str]


@dataclass(frozen=True)
class Split:
    """The data set as evaluation needs it."""

    catalog: Catalog
    train: dict[str, list[str]]
    valid_cases: list[Case]
    test_cases: list[Case]
    popularity: Counter


def load_split(data_dir: Path) -> Split:
    """Read items.jsonl, train.csv, valid.csv and test.csv written by `instructrec prepare`."""
    catalog = Catalog.load(data_dir / "items.jsonl")
    sequences = user_sequences(read_interactions(data_dir / "train.csv"))
    train = {u: [r.item_id for r in seq] for u, seq in sequences.items()}
    valid = {r.user_id: r.item_id for r in read_interactions(data_dir / "valid.csv")}
    test = {r.user_id: r.item_id for r in read_interactions(data_dir / "test.csv")}
    valid_cases, test_cases = [], []
    for user in sorted(test, key=lambda u: (len(u), u)):
        history = train.get(user, [])
        seen = frozenset(history) | {test[user]} | ({valid[user]} if user in valid else set())
        if user in valid:
            valid_cases.append(Case(user, tuple(history), valid[user], seen))
            history = [*history, valid[user]]
        test_cases.append(Case(user, tuple(history), test[user], seen))
    popularity = Counter(i for seq in train.values() for i in seq)
    return Split(catalog, train, valid_cases, test_cases, popularity)


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
