"""The served retrieval score over the whole catalog, for many requests at once: what the fits optimise and the
evaluation and experiments rank by.

Every part is the service's own: the fused score is :func:`services.core.fusion.fuse_retrieval`, the text side
is the request text encoded and blended with the recent history's item vectors by
:func:`services.core.index.user_vector`, the sequence side is the user vector's dot product with the item
vectors, NaN for items the sequence model does not know. ``tests/unit/tools/core/test_retrieval_score.py``
checks the result equals what the retrieval service returns for the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.core.contracts import RETRIEVAL_HISTORY_WEIGHT, RETRIEVAL_TEMPERATURE
from services.core.fusion import SourceWeights, fuse_retrieval
from services.core.index import user_vector


class CatalogScorer:
    """Each source's score of every catalog item (columns, in ``ids`` order) for a batch of requests (rows)."""

    def __init__(self, ids: Sequence[str], popularity: Mapping[str, int], text_vectors: np.ndarray,
                 sequence_vectors: Mapping[str, np.ndarray] | None = None, *,
                 history_weight: float = RETRIEVAL_HISTORY_WEIGHT, temperature: float = RETRIEVAL_TEMPERATURE) -> None:
        """
        Args:
            ids: The catalog's item ids, in the column order of every score.
            popularity: Training interactions per item (absent: 0); the prior is ``log(1 + count)``.
            text_vectors: [items, D] unit text vectors of the items (the text index's), in ``ids`` order.
            sequence_vectors: The sequence model's item vector of each item it knows (the sequence index's).
            history_weight: The blend of the request text with the history (``RETRIEVAL_HISTORY_WEIGHT``).
            temperature: The text encoder's InfoNCE temperature (``RETRIEVAL_TEMPERATURE``).
        """
        self.ids = list(ids)
        self.position = {item: n for n, item in enumerate(self.ids)}
        self.log_popularity = np.log1p(np.array([popularity.get(i, 0) for i in self.ids], dtype=np.float64))
        self.text_vectors = np.asarray(text_vectors, dtype=np.float32)
        self._history_weight = history_weight
        self._temperature = temperature
        self._sequence_known = np.zeros(len(self.ids), dtype=bool)
        self._sequence_vectors = None
        if sequence_vectors:
            dim = len(next(iter(sequence_vectors.values())))
            self._sequence_vectors = np.zeros((len(self.ids), dim), dtype=np.float32)
            for item, vector in sequence_vectors.items():
                if item in self.position:
                    self._sequence_vectors[self.position[item]] = vector
                    self._sequence_known[self.position[item]] = True

    def sequence_logits(self, user_vectors: np.ndarray) -> np.ndarray:
        """[N, items] ``user . item`` logits of the sequence model's user vectors [N, H]; NaN for unknown items."""
        if self._sequence_vectors is None:
            raise ValueError("this scorer has no sequence item vectors")
        out = np.asarray(user_vectors, dtype=np.float32) @ self._sequence_vectors.T  # [N, items]
        out = out.astype(np.float64)
        out[:, ~self._sequence_known] = np.nan
        return out

    def text_cosines(self, request_vectors: np.ndarray, recent: Sequence[Sequence[str]]) -> np.ndarray:
        """[N, items] cosines of each request's text vector (its encoded request text, blended with the text
        vectors of its ``recent`` history items as the service blends them) with every item."""
        rows = []
        for vector, items in zip(np.asarray(request_vectors, dtype=np.float32), recent):
            known = [self.position[i] for i in items if i in self.position]
            blended = user_vector(vector, self.text_vectors[known] if known else None, self._history_weight)
            # Nothing to search with (no text, no history): the service calls no encoder; every cosine is 0.
            rows.append(blended if blended is not None else np.zeros(self.text_vectors.shape[1], np.float32))
        return np.stack(rows).astype(np.float32) @ self.text_vectors.T

    def fused(self, weights: SourceWeights, *, sequence: np.ndarray | None = None, text: np.ndarray | None = None,
              intent: np.ndarray | None = None) -> np.ndarray:
        """[N, items] the served fused score (a source that does not run is None)."""
        return fuse_retrieval(weights, sequence=sequence, text=text, log_popularity=self.log_popularity,
                              temperature=self._temperature, intent=intent)
