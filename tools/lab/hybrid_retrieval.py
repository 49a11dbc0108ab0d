"""The served hybrid retrieval score computed in-process, as the LM experiments (#15) use it: the fused score of
every catalog item under the retrieval rule their recorded runs were made on, and the sequence model's logits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from services.core.catalog import item_text
from services.core.fusion import SERVED_RETRIEVAL_FUSION, RetrievalFusion, SourceWeights
from tools.core.retrieval_score import CatalogScorer
from tools.core.sequence_model import SequenceScorer
from tools.train.examples import TrainingData

# The base score the recorded runs (docs/lab/ranker-experiments.md) were made on: the retrieval rule fitted
# without the intent heads' term (these experiments do not run the heads), so that they stay reproducible now that the
# served rule's query weights are fitted jointly with that term.
BASE_FUSION = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=2.0, popularity=0.75),
                              without_query=SERVED_RETRIEVAL_FUSION.without_query,
                              without_sequence=SERVED_RETRIEVAL_FUSION.without_sequence)


class HybridRetrieval:
    """The served fused retrieval score of every catalog item, from the committed sequence model and encoder
    (:class:`tools.core.retrieval_score.CatalogScorer`, the one offline form of the served score)."""

    def __init__(self, data: TrainingData, encoder_path: Path, sequence_path: Path, device: torch.device) -> None:
        from services.core.modeltext import mean_pooled_encoder
        from tools.core.text_encoder import encode, load_encoder

        self.data, self.device, self._encode_fn = data, device, encode
        catalog = data.catalog
        self.ids = list(catalog.items)
        self.position = {item: n for n, item in enumerate(self.ids)}
        encoder, self.tokenizer = load_encoder(encoder_path, device)
        self.pooled = mean_pooled_encoder(encoder)
        self.item_vectors = self.encode([item_text(catalog[i]) for i in self.ids])  # [N, 384]
        self.sequence = SequenceScorer(sequence_path)
        self.scorer = CatalogScorer(self.ids, data.split.popularity, self.item_vectors, self.sequence.item_vectors())
        self.log_pop = self.scorer.log_popularity

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.item_vectors.shape[1] if hasattr(self, "item_vectors") else 384), np.float32)
        with torch.no_grad():
            return self._encode_fn(self.pooled, self.tokenizer, list(texts), self.device).cpu().numpy()

    def sequence_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[B, N] sequence-model logits (NaN for items it does not know)."""
        return self.scorer.sequence_logits(self.sequence.user_vectors(histories))

    def fused(self, histories: Sequence[Sequence[str]], queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Fused scores [B, N] (history items -inf) and the sequence logits [B, N], as the retrieval service."""
        catalog = self.data.catalog
        seq = self.sequence_scores(histories)
        recent = [[catalog[i] for i in h[-prompts.DEFAULT_MAX_HISTORY_ITEMS:]] for h in histories]
        texts = [prompts.retrieval_text(q, r, prompts.DEFAULT_MAX_HISTORY_ITEMS) for q, r in zip(queries, recent)]
        text = self.scorer.text_cosines(self.encode(texts), [[i.item_id for i in r] for r in recent])
        out = np.empty_like(seq)
        for row, (h, q) in enumerate(zip(histories, queries)):
            weights = BASE_FUSION.weights(has_query=bool(q.strip()))
            out[row] = self.scorer.fused(weights, sequence=seq[row:row + 1],
                                         text=text[row:row + 1] if weights.text > 0 else None)[0]
            out[row, [self.position[i] for i in h if i in self.position]] = -np.inf
        return out, seq
