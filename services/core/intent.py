"""Intention understanding: which attribute values a free-text intention asks for, as soft constraints.

A caller's intention ("something that will make me laugh", "any 1990s thriller title?") names attribute values
of the items it wants, in words a string filter cannot match. The :class:`IntentModel` reads them off the
text encoder's embedding of the intention alone: one softmax head per attribute over its values plus
:data:`NONE` (the intention does not say), trained on the training side's phrase bank (``tools/train/intent.py``,
at index build, against the same encoder version as the text index it is stored beside).

Retrieval turns what it understood into a score for every item (:meth:`IntentModel.item_scores`): per
attribute the intention names (its :data:`NONE` probability below ``1 - min_confidence``), the log of how much
more likely the item's value is under the intention than under no information, ``log(p(value | query) x V)``
with ``V`` values; the :data:`NONE` mass is spread uniformly, so a doubtful or flat reading moves scores little
and a confident one a lot. A soft constraint, not a filter: an item the intention does not fit can still be
recommended when everything else favours it strongly.

Numeric attributes are understood in buckets (``year`` in decades: "the 1990s" is bucket "1990").
Domain-generic: the heads name catalog attributes and values; nothing here knows about movies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core.catalog import Catalog
from services.core.filters import item_number, item_values

INTENT_FILE = "intent.json"
NONE = ""
"""The class of an intention that does not name a value of the attribute."""
FORMAT_VERSION = 1


class IntentFormatError(ValueError):
    """An intent model file that cannot be used."""


@dataclass(frozen=True)
class Understood:
    """One attribute an intention names: its most likely value and that value's probability."""

    attribute: str
    value: str
    probability: float
    distribution: dict[str, float]  # value -> probability, NONE's mass spread evenly over the values

    def describe(self) -> str:
        return f"{self.attribute}={self.value} (p {self.probability:.2f})"


@dataclass(frozen=True)
class AttributeHead:
    """A softmax over ``classes`` (the attribute's values, then :data:`NONE`) of ``weight @ e + bias``."""

    attribute: str
    classes: tuple[str, ...]
    weight: np.ndarray  # [C, D]
    bias: np.ndarray  # [C]
    bucket: float | None = None  # numeric attributes: bucket width (value // bucket * bucket)

    def probabilities(self, embedding: np.ndarray) -> np.ndarray:
        logits = self.weight @ embedding + self.bias
        logits = logits - logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def item_value(self, value: float) -> str:
        """The class a numeric value falls in (its bucket's lower bound)."""
        assert self.bucket
        return _number(math.floor(value / self.bucket) * self.bucket)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class IntentModel:
    """The heads, the encoder version they were trained against, and each catalog item's classes."""

    def __init__(self, heads: Sequence[AttributeHead], *, encoder_version: str = "", trained_on: int = 0,
                 examples_digest: str = "") -> None:
        if not heads:
            raise IntentFormatError("an intent model needs at least one attribute head")
        dims = {h.weight.shape[1] for h in heads}
        if len(dims) != 1:
            raise IntentFormatError(f"heads disagree on the embedding size: {sorted(dims)}")
        for h in heads:
            if h.classes[-1:] != (NONE,) or h.weight.shape[0] != len(h.classes) or h.bias.shape != (len(h.classes),):
                raise IntentFormatError(f"head {h.attribute!r}: classes, weight and bias do not line up")
        self.heads = tuple(heads)
        self.dim = dims.pop()
        self.encoder_version = encoder_version
        self.trained_on = trained_on
        self.examples_digest = examples_digest  # what it was trained on; a build with other examples refits
        self._memberships: dict[tuple[int, str], np.ndarray] = {}

    # ---- what an intention names ------------------------------------------------------------------------

    def understand(self, embedding: np.ndarray, min_confidence: float = 0.5) -> list[Understood]:
        """The attributes the intention names with probability at least ``min_confidence`` (1 - p(NONE))."""
        e = np.asarray(embedding, dtype=np.float64).reshape(-1)
        if e.shape[0] != self.dim:
            raise IntentFormatError(f"embedding has {e.shape[0]} dimensions, the intent model {self.dim}")
        out = []
        for head in self.heads:
            p = head.probabilities(e)
            named = 1.0 - float(p[-1])
            if named < min_confidence or named <= 0.0:
                continue
            values = p[:-1] + float(p[-1]) / (len(p) - 1)
            best = int(values.argmax())
            out.append(Understood(head.attribute, head.classes[best], float(values[best]),
                                  {c: float(v) for c, v in zip(head.classes[:-1], values)}))
        return out

    # ---- what it means for items ------------------------------------------------------------------------

    def _membership(self, catalog: Catalog, head: AttributeHead) -> tuple[list[str], np.ndarray]:
        """Catalog ids (catalog order) and a [N, C-1] 0/1 matrix: which of the head's values each item has."""
        key = (id(catalog), head.attribute)
        ids = [item.item_id for item in catalog]
        if key not in self._memberships:
            column = {c: n for n, c in enumerate(head.classes[:-1])}
            m = np.zeros((len(ids), len(column)), dtype=np.float32)
            for row, item in enumerate(catalog):
                if head.bucket:
                    number = item_number(item, head.attribute)
                    values = {head.item_value(number)} if number is not None else set()
                else:
                    values = item_values(item, head.attribute)
                for v in values:
                    if v in column:
                        m[row, column[v]] = 1.0
            self._memberships[key] = m
        return ids, self._memberships[key]

    def item_scores(self, understood: Sequence[Understood], catalog: Catalog, item_ids: Sequence[str],
                    floor: float = 1e-4) -> np.ndarray:
        """Per item (aligned with ``item_ids``), the sum over ``understood`` of ``log(p(item's best value) x V)``
        (V the attribute's number of values): positive for values the intention makes likelier than chance,
        negative otherwise; an item without the attribute, or without any value the head knows, counts as
        ``p = floor``."""
        total = np.zeros(len(item_ids), dtype=np.float64)
        heads = {h.attribute: h for h in self.heads}
        order = {item.item_id: n for n, item in enumerate(catalog)}
        rows = np.array([order.get(i, -1) for i in item_ids], dtype=np.int64)
        for u in understood:
            head = heads[u.attribute]
            _, m = self._membership(catalog, head)
            p = np.array([u.distribution.get(c, 0.0) for c in head.classes[:-1]], dtype=np.float64)
            fit = np.where(rows >= 0, (m[np.clip(rows, 0, None)] * p).max(axis=1, initial=0.0), 0.0)
            total += np.log(np.maximum(fit, floor) * len(p))
        return total

    # ---- files ------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / INTENT_FILE
        doc = {
            "format": FORMAT_VERSION,
            "encoder_version": self.encoder_version,
            "trained_on": self.trained_on,
            "examples_digest": self.examples_digest,
            "heads": [
                {"attribute": h.attribute, "classes": list(h.classes), "bucket": h.bucket,
                 "weight": np.asarray(h.weight, dtype=np.float32).tolist(),
                 "bias": np.asarray(h.bias, dtype=np.float32).tolist()}
                for h in self.heads
            ],
        }
        path.write_text(json.dumps(doc))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> IntentModel | None:
        """The model saved in ``directory``, or None when there is none (an index built without one)."""
        path = Path(directory) / INTENT_FILE
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT_VERSION:
                raise IntentFormatError(f"{path}: format {doc.get('format')!r}, expected {FORMAT_VERSION}")
            heads = [
                AttributeHead(h["attribute"], tuple(h["classes"]), np.asarray(h["weight"], dtype=np.float64),
                              np.asarray(h["bias"], dtype=np.float64), h.get("bucket"))
                for h in doc["heads"]
            ]
            return cls(heads, encoder_version=str(doc.get("encoder_version", "")),
                       trained_on=int(doc.get("trained_on", 0)),
                       examples_digest=str(doc.get("examples_digest", "")))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IntentFormatError):
                raise
            raise IntentFormatError(f"{path}: {exc}") from exc
