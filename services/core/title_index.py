"""Candidate titles for a mention without a pass over the whole catalog (issue #31).

Every title form is indexed by its character trigrams (each word padded with spaces, so "fargo" gives " fa",
"far", "arg", "rgo", "go "): numpy postings (gram -> title positions), built once with the catalog. A mention's
candidates are the titles that share the most of its trigrams, each gram weighted by its rarity (log N / df),
summed with one weighted ``bincount`` over the postings of the mention's grams (a rare word counts, a shared
sequel digit breaks ties); grams found in more than ``common_share`` of the titles are skipped (unless the
mention has nothing else). Typos keep most trigrams, a title inside a longer mention shares
all of its own, so the fuzzy scorers that rank the candidates (``services/core/lexicon.py``) see the titles
they would rank first in a full scan. Pure domain logic: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def trigrams(form: str) -> set[str]:
    """The character trigrams of each word of ``form``, the word padded with one space each side."""
    grams: set[str] = set()
    for word in form.split():
        padded = f" {word} "
        grams.update(padded[i:i + 3] for i in range(len(padded) - 2))
    return grams


class TitleIndex:
    """Trigram postings over title forms (positions into ``forms``)."""

    def __init__(self, forms: Sequence[str], common_share: float = 0.25) -> None:
        ids: dict[str, int] = {}
        gram_of: list[int] = []
        title_of: list[int] = []
        for n, form in enumerate(forms):
            for gram in trigrams(form):
                gram_of.append(ids.setdefault(gram, len(ids)))
                title_of.append(n)
        grams = np.asarray(gram_of, dtype=np.int32)
        titles = np.asarray(title_of, dtype=np.int32)
        order = np.argsort(grams, kind="stable")
        self._titles = titles[order]  # postings, gram by gram
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(grams, minlength=len(ids)))])
        self._ids = ids
        self._size = len(forms)
        self._common = max(1, int(common_share * len(forms)))

    def _postings(self, grams: Iterable[str]) -> list[np.ndarray]:
        found = [self._ids[g] for g in grams if g in self._ids]
        return [self._titles[self._offsets[g]:self._offsets[g + 1]] for g in found]

    def candidates(self, form: str, limit: int) -> list[int]:
        """Positions of the (at most ``limit``) titles sharing the most trigrams with ``form``, in catalog order."""
        postings = self._postings(trigrams(form))
        rare = [p for p in postings if len(p) <= self._common]
        chosen = rare or postings
        if not chosen:
            return []
        weights = np.concatenate([np.full(len(p), np.log(self._size / len(p)), dtype=np.float32) for p in chosen])
        counts = np.bincount(np.concatenate(chosen), weights=weights, minlength=self._size)
        hit = np.flatnonzero(counts)
        if len(hit) > limit:
            hit = hit[np.argpartition(-counts[hit], limit - 1)[:limit]]
        return sorted(hit.tolist())
