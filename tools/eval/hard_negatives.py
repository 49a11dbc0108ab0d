"""Protocol 2's hard negatives from a model the served stack does not use: the base all-MiniLM-L6-v2.

Each user's negatives are the unseen items nearest (cosine of the base encoder's item-text embeddings) to
the mean vector of their most recent history items. The served retrieval fuses the tuned encoder, the
sequence model and popularity, none of which picked these lists, so the protocol is not rigged against the
served system by construction (drawing them from the served retriever was: its negatives were the items its
own score ranks highest).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from services.core.catalog import item_text
from services.core.contracts import RECENT_HISTORY_ITEMS
from tools.core.split import Case, Split

SOURCE = "base all-MiniLM-L6-v2: unseen items nearest to the mean of the recent history's item vectors"


def item_vectors(split: Split) -> tuple[list[str], np.ndarray]:
    """Unit vectors of every catalog item's text under the base MiniLM, in catalog order."""
    import torch

    from services.core.modeltext import mean_pooled_encoder
    from tools.core.base_models import minilm_dir
    from tools.core.text_encoder import encode, load_encoder

    ids = list(split.catalog.items)
    model, tokenizer = load_encoder(minilm_dir(), torch.device("cpu"))
    with torch.no_grad():
        vectors = encode(mean_pooled_encoder(model), tokenizer, [item_text(split.catalog[i]) for i in ids],
                         torch.device("cpu")).numpy()
    return ids, vectors


def hard_negative_lists(split: Split, cases: Sequence[Case], *, negatives: int = 9, seed: int = 0) -> list[list[str]]:
    """The target and its ``negatives`` hardest unseen items per case, shuffled (position carries no signal)."""
    ids, vectors = item_vectors(split)
    position = {item: n for n, item in enumerate(ids)}
    out = []
    for case in cases:
        recent = [position[i] for i in case.history[-RECENT_HISTORY_ITEMS:] if i in position]
        query = vectors[recent].mean(axis=0) if recent else vectors.mean(axis=0)
        order = np.argsort(-(vectors @ query), kind="stable")
        chosen = [ids[n] for n in order if ids[n] not in case.seen][:negatives]
        shuffled = [case.target, *chosen]
        random.Random(f"{seed}:{case.user_id}").shuffle(shuffled)
        out.append(shuffled)
    return out
