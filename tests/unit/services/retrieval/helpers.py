"""Shared by the retriever tests: item indexes written to disk, a fusion table and a Retriever with common settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.core.catalog import Catalog
from services.core.contracts import SEQUENCE_ENCODER, TEXT_ENCODER
from services.core.fusion import RetrievalFusion, SourceWeights
from services.core.index import COSINE, DOT, ItemIndex, write_item_index
from services.core.intent import IntentModel
from services.core.validation import Limits
from services.retrieval.retriever import Retriever, Snapshot

# When the sequence model cannot run: cos / 0.05 + log(1 + count).
TEXT_ONLY = SourceWeights(sequence=0.0, text=1.0, popularity=1.0)


def retrieval_fusion(*, text: float, popularity: float) -> RetrievalFusion:
    """Sequence weight 1 where the sequence model runs, ``text`` with a query (0 without), ``popularity`` in
    both; :data:`TEXT_ONLY` where it cannot run."""
    return RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=text, popularity=popularity),
                           without_query=SourceWeights(sequence=1.0, text=0.0, popularity=popularity),
                           without_sequence=TEXT_ONLY)


def item_index(folder: Path, ids: Sequence[str], vectors: np.ndarray, *, model: str, metric: str,
               version: str = "1", popularity: Sequence[int] | None = None) -> ItemIndex:
    """Write an item index into the new folder ``folder`` and load it."""
    folder.mkdir()
    write_item_index(folder, ids, vectors, model_version=version, model_name=model, metric=metric,
                     popularity=popularity)
    return ItemIndex.load(folder)


def snapshot_of(base: Path, ids: Sequence[str], sequence_vectors: np.ndarray, text_vectors: np.ndarray, *,
                popularity: Sequence[int] | None = None, intent: IntentModel | None = None) -> Snapshot:
    """A snapshot of version-1 indexes over ``ids`` under ``base``: the text encoder's (cosine, ``text/``) and
    the sequence model's (dot, ``seq/``), both with ``popularity``."""
    return Snapshot(
        item_index(base / "text", ids, text_vectors, model=TEXT_ENCODER, metric=COSINE, popularity=popularity),
        item_index(base / "seq", ids, sequence_vectors, model=SEQUENCE_ENCODER, metric=DOT, popularity=popularity),
        intent,
    )


def make_retriever(snapshot: Snapshot, catalog: Catalog, *, encode_text: Any, encode_history: Any,
                   fusion: RetrievalFusion, max_k: int, **settings: Any) -> Retriever:
    """A Retriever with the tests' common settings (history weight 0.5, 10 recent and 50 sequence history
    items, 20 candidates a source, 5 s timeouts, default k 20, default limits); ``settings`` override them."""
    common: dict[str, Any] = {
        "history_weight": 0.5, "recent_history_items": 10, "sequence_history_items": 50, "source_candidates": 20,
        "text_timeout_s": 5.0, "sequence_timeout_s": 5.0, "default_k": 20, "limits": Limits(),
    }
    return Retriever(snapshot, catalog, encode_text=encode_text, encode_history=encode_history, fusion=fusion,
                     max_k=max_k, **{**common, **settings})
