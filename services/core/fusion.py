"""How the stages' scores combine into one ranking (the served rule, also fitted and evaluated offline)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def fuse(lm_logprobs: np.ndarray, retrieval_scores: np.ndarray | None, lm_weight: float,
         temperature: float) -> np.ndarray:
    """The fused ranking logit of each candidate: ``lm_weight * log p_LM + retrieval_score / temperature``.

    A product of experts: the LM's listwise log-probabilities and the retriever's score on the scale of its
    training logits (``temperature`` = its InfoNCE temperature). Without retrieval scores, the LM alone.
    """
    lm = np.asarray(lm_logprobs, dtype=np.float64)
    if retrieval_scores is None:
        return lm
    return lm_weight * lm + np.asarray(retrieval_scores, dtype=np.float64) / temperature


@dataclass(frozen=True)
class SourceWeights:
    """Weights of the retrieval sources in one situation; every term is on the scale of a logit.

    ``score = sequence * s_seq + text * cos / temperature + popularity * log(1 + count) + intent * b``:
    ``s_seq`` is the sequence model's logit (user vector . item vector, trained with a softmax over the catalog),
    ``cos`` the text encoder's cosine (its InfoNCE logits are ``cos / temperature``), ``count`` the item's
    training interactions (the log-popularity prior the text encoder's popularity-sampled negatives took out),
    ``b`` the query's understood attribute values (``services/core/intent.py``: the sum over the attributes it
    names of log(p(item's value | query) x V), V the attribute's number of values; 0 without a query).
    """

    sequence: float = 1.0
    text: float = 0.0
    popularity: float = 0.0
    intent: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sequence", "text", "popularity", "intent"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} weight must be finite and >= 0, got {value}")


@dataclass(frozen=True)
class RetrievalFusion:
    """The retrieval rule's weights per situation, fitted on validation users by `instructrec fit-fusion`.

    ``with_query`` / ``without_query``: the sequence model runs (a history it knows). ``without_sequence``: it
    cannot (an anonymous caller with a query, history of items newer than the model, or the model failed), so
    the text, popularity and the query's understood attributes rank alone; its sequence weight is 0.
    """

    with_query: SourceWeights
    without_query: SourceWeights
    without_sequence: SourceWeights

    def __post_init__(self) -> None:
        if self.without_sequence.sequence != 0:
            raise ValueError("without_sequence: the sequence weight must be 0 (the sequence model does not run)")

    def weights(self, *, has_query: bool, has_sequence: bool = True) -> SourceWeights:
        if not has_sequence:
            return self.without_sequence
        return self.with_query if has_query else self.without_query

    def to_json(self) -> dict:
        return {name: asdict(getattr(self, name)) for name in SITUATIONS}

    @classmethod
    def from_json(cls, raw: dict) -> RetrievalFusion:
        return cls(**{name: SourceWeights(**raw[name]) for name in SITUATIONS})


SITUATIONS = ("with_query", "without_query", "without_sequence")


# The committed fit (tools/train/adapters/retrieval_fusion.json, `instructrec fit-fusion --stage retrieval`):
# what `make run` and the k8s deployment serve; a unit test keeps the two equal.
SERVED_RETRIEVAL_FUSION = RetrievalFusion(
    with_query=SourceWeights(sequence=1.0, text=0.5, popularity=1.0, intent=8.0),
    without_query=SourceWeights(sequence=1.0, text=0.0, popularity=0.5),
    without_sequence=SourceWeights(sequence=0.0, text=0.1, popularity=0.5, intent=4.0),
)


def fuse_retrieval(weights: SourceWeights, *, sequence: np.ndarray | None, text: np.ndarray | None,
                   log_popularity: np.ndarray, temperature: float, intent: np.ndarray | None = None) -> np.ndarray:
    """The fused retrieval score of each candidate (aligned arrays; a source that did not run is None).

    A candidate a source cannot score (an item the sequence model has never seen, marked NaN) gets the mean
    of that source's scores over the other candidates: neither favoured nor buried, so new catalog items
    stay reachable through the text. ``intent``: each candidate's understood-attribute score (``b`` above).
    The arrays may also be ``[requests, candidates]`` (the offline fits score many requests at once; each row
    as one request, ``log_popularity`` shared or per row): the service and the fits use this one function.
    """
    total = weights.popularity * np.asarray(log_popularity, dtype=np.float64)
    for values, weight, scale in ((sequence, weights.sequence, 1.0), (text, weights.text, 1.0 / temperature)):
        if values is None or weight == 0:
            continue
        v = np.asarray(values, dtype=np.float64)
        known = np.isfinite(v)
        count = known.sum(axis=-1, keepdims=True)
        fill = np.where(count > 0, np.where(known, v, 0.0).sum(axis=-1, keepdims=True) / np.maximum(count, 1), 0.0)
        total = total + weight * scale * np.where(known, v, fill)
    if intent is not None and weights.intent > 0:
        total = total + weights.intent * np.asarray(intent, dtype=np.float64)
    return total


def read_fusion_file(path: Path) -> RetrievalFusion:
    """The ``fusion`` entry of a fitted weights file (``instructrec fit-fusion --stage retrieval``, a workspace's
    ``retrieval_fusion.json``).

    Raises:
        ValueError: the file is missing or is not a fitted weights file.
    """
    try:
        return RetrievalFusion.from_json(json.loads(Path(path).read_text())["fusion"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a fitted retrieval weights file ({exc!r})") from exc
