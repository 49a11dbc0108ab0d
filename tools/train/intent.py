"""Train the intention-understanding heads (``services/core/intent.py``) on the training side's phrase bank.

Examples come from the catalog's attributes and ``tools/core/teacher.py``'s banks, never from the evaluation's
(``tools/eval/intentions.py``; ``tests/unit/tools/eval/test_intentions.py`` checks the two share no phrase):

* a categorical value named plainly ("a comedy movie", "comedy movies") or by a training paraphrase of it
  ("a good laugh");
* a numeric bucket (``year`` in decades: "a movie from the 1990s", "movies of the 1970s");
* both at once, in three of ``teacher.SPECIFIC_TEMPLATES``' wordings per (value, bucket) pair ("a comedy movie
  from the 1990s", "1990s comedy movies") and with a paraphrase ("a good laugh from the 1990s");
* neither ("something good to watch tonight"): every head's NONE class.

Each head is a softmax regression on the frozen text-encoder embedding of the text (the encoder version the
text index is built with; ``tools/index.py`` fits it at index build), with L2 regularisation, full-batch.
Fitting takes about a second; embedding the few hundred examples is most of the cost.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.core.catalog import GENRES, YEAR, Catalog
from services.core.contracts import INTENT_MIN_CONFIDENCE
from services.core.filters import CatalogAttributes, item_number
from services.core.intent import NONE, AttributeHead, IntentModel
from tools.core import teacher

BUCKETS: dict[str, float] = {YEAR: 10.0}
"""Numeric attributes understood in buckets, and the bucket width."""
MAX_VALUES = 64
"""Categorical attributes with more distinct values than this get no head (ids, titles, free text)."""

_PLAIN = ("a {value} {noun}", "{value} {nouns}")
_BUCKET = ("a {noun} from the {value}s", "{nouns} of the {value}s")
BOTH_WORDINGS = 3
"""Wordings of ``teacher.SPECIFIC_TEMPLATES`` drawn per (genre, decade) pair."""
_PARAPHRASE_BUCKET = "{phrase} from the {bucket}s"


@dataclass(frozen=True)
class Example:
    text: str
    labels: dict[str, str]  # attribute -> value, NONE for the others
    wording: str = ""  # the bank phrase or template it was made from (held out together in cross-validation)


def _heads(catalog: Catalog) -> dict[str, tuple[tuple[str, ...], float | None]]:
    """attribute -> (its classes without NONE, bucket width or None)."""
    attributes = CatalogAttributes(catalog)
    out: dict[str, tuple[tuple[str, ...], float | None]] = {}
    for name in sorted(attributes.kinds):
        if attributes.is_numeric(name):
            width = BUCKETS.get(name)
            if width:
                numbers = {item_number(item, name) for item in catalog} - {None}
                out[name] = (tuple(sorted({_bucket(n, width) for n in numbers}, key=float)), width)
        else:
            values = attributes.values_of(name)
            if 1 < len(values) <= MAX_VALUES:
                out[name] = (tuple(values), None)
    return out


def _bucket(number: float, width: float) -> str:
    value = int(number // width * width)
    return str(value)


def intent_examples(catalog: Catalog, noun: str = "movie", seed: int = 0) -> tuple[list[Example], dict]:
    """The training examples and the heads they train (attribute -> (classes, bucket))."""
    heads = _heads(catalog)
    rng = random.Random(seed)
    nouns = noun + "s"
    none = dict.fromkeys(heads, NONE)
    out: list[Example] = []
    categorical = [a for a, (_, bucket) in heads.items() if bucket is None]
    numeric = [a for a, (_, bucket) in heads.items() if bucket is not None]
    for attribute in categorical:
        for value in heads[attribute][0]:
            phrases = [p.format(value=value.lower(), noun=noun, nouns=nouns) for p in _PLAIN]
            if attribute == GENRES:
                phrases += list(teacher.VAGUE_BANK.get(value, ()))
            out += [Example(p, {**none, attribute: value}, p) for p in phrases]
            for bucket_attr in numeric:
                for bucket in heads[bucket_attr][0]:
                    for template in rng.sample(teacher.SPECIFIC_TEMPLATES, BOTH_WORDINGS):
                        out.append(Example(template.format(genre=value.lower(), decade=bucket),
                                           {**none, attribute: value, bucket_attr: bucket}, template))
                if attribute == GENRES:
                    for phrase in teacher.VAGUE_BANK.get(value, ()):
                        bucket = rng.choice(heads[bucket_attr][0])
                        out.append(Example(_PARAPHRASE_BUCKET.format(phrase=phrase, bucket=bucket),
                                           {**none, attribute: value, bucket_attr: bucket}, phrase))
    for attribute in numeric:
        for bucket in heads[attribute][0]:
            out += [Example(p.format(value=bucket, noun=noun, nouns=nouns), {**none, attribute: bucket})
                    for p in _BUCKET]
    out += [Example(p, dict(none)) for p in teacher.GENERIC_VAGUE]
    return out, heads


def examples_digest(examples: Sequence[Example]) -> str:
    """A fingerprint of the training examples (texts and labels): an index whose heads were fitted on other
    examples (an older bank) is refitted (``tools/runtime/stack.py``)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.text, sorted(e.labels.items())]).encode("utf-8"))
    return h.hexdigest()[:16]


def fit_intent_model(embeddings: np.ndarray, examples: Sequence[Example], heads: dict, *, encoder_version: str = "",
                     l2: float = 3e-4, steps: int = 400, lr: float = 0.1, seed: int = 0) -> IntentModel:
    """Softmax regression per head on ``embeddings`` [N, D] (aligned with ``examples``)."""
    import torch

    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    fitted = []
    for attribute, (values, bucket) in heads.items():
        classes = (*values, NONE)
        column = {c: n for n, c in enumerate(classes)}
        y = torch.tensor([column[e.labels[attribute]] for e in examples])
        # Balance the classes: NONE and the values with many combined examples would otherwise dominate.
        counts = torch.bincount(y, minlength=len(classes)).clamp(min=1).float()
        weight = torch.zeros(len(classes), x.shape[1], requires_grad=True)
        bias = torch.zeros(len(classes), requires_grad=True)
        optimiser = torch.optim.Adam([weight, bias], lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / counts / len(classes))
        for _ in range(steps):
            optimiser.zero_grad()
            loss = loss_fn(x @ weight.T + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            optimiser.step()
        fitted.append(AttributeHead(attribute, classes, weight.detach().double().numpy(),
                                    bias.detach().double().numpy(), bucket))
    return IntentModel(fitted, encoder_version=encoder_version, trained_on=len(examples),
                       examples_digest=examples_digest(examples))


L2_GRID = (1e-5, 1e-4, 3e-4, 1e-3, 1e-2)
L2_UNCHOSEN = 1e-3
"""The L2 weight when the bank has no held-out wording to choose it by."""
# Cross-validation by wording: fold ``f`` holds out the ``f``-th paraphrase of every genre and every
# WORDING_FOLDS-th specific template from the ``f``-th (``Example.wording``).
WORDING_FOLDS = min(len(v) for v in teacher.VAGUE_BANK.values())


def held_out_wordings(fold: int) -> set[str]:
    """The bank phrases and templates fold ``fold`` holds out (heads fitted without them read them as unseen
    wording; a phrase in no fold, such as the generic ones, is never held out)."""
    return ({ps[fold] for ps in teacher.VAGUE_BANK.values()}
            | set(teacher.SPECIFIC_TEMPLATES[fold::WORDING_FOLDS]))


def cross_fitted_models(embeddings: np.ndarray, examples: Sequence[Example], heads: dict, l2: float,
                        ) -> list[tuple[set[str], IntentModel]]:
    """One model per fold, each fitted without its fold's wording: ``(held-out wording, model)``."""
    x = np.asarray(embeddings)
    out = []
    for fold in range(WORDING_FOLDS):
        held = held_out_wordings(fold)
        keep = [n for n, e in enumerate(examples) if e.wording not in held]
        out.append((held, fit_intent_model(x[keep], [examples[n] for n in keep], heads, l2=l2)))
    return out


def choose_l2(embeddings: np.ndarray, examples: Sequence[Example], heads: dict, grid: Sequence[float] = L2_GRID,
              ) -> tuple[float, dict[float, float]]:
    """The L2 weight that reads held-out wording best: fold ``f`` holds out the ``f``-th paraphrase of every
    genre (alone and with a decade) and every ``folds``-th specific template from the ``f``-th, and scores the
    share of (example, head) pairs read right (the value when one is named, NONE otherwise). Only the training
    bank is used: the evaluation's wording is never looked at."""
    x = np.asarray(embeddings)
    accuracy: dict[float, float] = {}
    if not any(e.wording in held_out_wordings(fold) for fold in range(WORDING_FOLDS) for e in examples):
        # Nothing to hold out (a catalog without genres has none of the bank's paraphrases): no fold can score,
        # so nothing is fitted to choose by; the middle of the grid.
        return L2_UNCHOSEN, accuracy
    for l2 in grid:
        scores = []
        for held, model in cross_fitted_models(x, examples, heads, l2):
            test = [n for n, e in enumerate(examples) if e.wording in held]
            if not test:
                continue
            right = 0
            for n in test:
                for head in model.heads:
                    p = head.probabilities(x[n].astype(np.float64))
                    want = examples[n].labels[head.attribute]
                    named = 1.0 - p[-1] >= INTENT_MIN_CONFIDENCE
                    right += (not named) if want == NONE else (named and head.classes[int(p[:-1].argmax())] == want)
            scores.append(right / (len(test) * len(model.heads)))
        accuracy[l2] = float(np.mean(scores)) if scores else 0.0
    return max(grid, key=lambda l2: (accuracy[l2], -l2)), accuracy


def training_phrases(catalog: Catalog, noun: str = "movie") -> set[str]:
    """Every text the heads train on (for the disjointness test against the evaluation bank)."""
    return {e.text for e in intent_examples(catalog, noun)[0]}

