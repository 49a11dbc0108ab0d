"""The leave-one-out split the suite serves and every offline tool reads, and its one record, :class:`Case`.

Test users' history is every interaction before the test item (train + the validation item); validation
cases (used to pick checkpoints and fit weights) have the training part as history and the validation item as
target. Training draws its cases from the training sequences only (``tools/train/examples.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from services.core.catalog import Catalog, read_interactions, user_sequences


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
