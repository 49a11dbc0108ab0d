"""The intent heads' training data comes from the training bank and the fit reads held-out wording."""

from __future__ import annotations

import random

import numpy as np

from services.core.catalog import Catalog, Item
from services.core.intent import NONE
from tools.core import teacher
from tools.eval import intentions
from tools.train.intent import (
    BOTH_WORDINGS,
    WORDING_FOLDS,
    choose_l2,
    cross_fitted_models,
    fit_intent_model,
    held_out_wordings,
    intent_examples,
    training_phrases,
)

CATALOG = Catalog({i.item_id: i for i in [
    Item("1", "A", 1994, ("Comedy",)), Item("2", "B", 1975, ("Horror",)), Item("3", "C", 1996, ("Comedy", "Horror")),
]})


def test_examples_label_every_head_and_cover_values_buckets_and_none() -> None:
    examples, heads = intent_examples(CATALOG)
    assert heads == {"genres": (("Comedy", "Horror"), None), "year": (("1970", "1990"), 10.0)}
    assert all(set(e.labels) == set(heads) for e in examples)
    texts = {e.text: e.labels for e in examples}
    both = {e.wording for e in examples if e.labels == {"genres": "Comedy", "year": "1990"}}
    assert len(both & set(teacher.SPECIFIC_TEMPLATES)) == BOTH_WORDINGS  # several sentence shapes per pair
    assert texts["a movie from the 1970s"] == {"genres": NONE, "year": "1970"}
    assert texts["a good laugh"] == {"genres": "Comedy", "year": NONE}  # a training paraphrase
    assert texts["something good to watch tonight"] == {"genres": NONE, "year": NONE}


def test_the_evaluation_wording_is_not_among_the_heads_training_texts() -> None:
    training = training_phrases(CATALOG)
    vague = {p for bank in intentions.EVAL_VAGUE_BANK.values() for p in bank}
    assert not any(v in t or t in v for v in vague for t in training)
    specific = {t.format(genre=g, decade=d) for t in intentions.EVAL_SPECIFIC_TEMPLATES
                for g in ("comedy", "horror") for d in (1970, 1990)}
    assert not specific & training


def _bag_of_words(texts: list[str], vocabulary: list[str]) -> np.ndarray:
    x = np.array([[float(w in t.lower().split()) for w in vocabulary] for t in texts])
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def test_the_fit_reads_values_and_buckets_it_was_taught() -> None:
    examples, heads = intent_examples(CATALOG)
    vocabulary = sorted({w for e in examples for w in e.text.lower().split()})
    model = fit_intent_model(_bag_of_words([e.text for e in examples], vocabulary), examples, heads)
    read = {u.attribute: u.value for u in model.understand(_bag_of_words(["a horror movie from the 1970s"],
                                                                          vocabulary)[0])}
    assert read == {"genres": "Horror", "year": "1970"}
    l2, accuracy = choose_l2(_bag_of_words([e.text for e in examples], vocabulary), examples, heads,
                             grid=(1e-4, 1e-1))
    assert l2 in accuracy and set(accuracy) == {1e-4, 1e-1}


def test_each_fold_model_is_fitted_without_its_wording_and_the_fusion_fit_can_say_which() -> None:
    examples, heads = intent_examples(CATALOG)
    vocabulary = sorted({w for e in examples for w in e.text.lower().split()})
    x = _bag_of_words([e.text for e in examples], vocabulary)
    folds = cross_fitted_models(x, examples, heads, l2=1e-4)
    assert len(folds) == WORDING_FOLDS
    for fold, (held, model) in enumerate(folds):
        assert held == held_out_wordings(fold)
        assert model.trained_on == sum(e.wording not in held for e in examples) < len(examples)
    # Every wording the fusion fit draws a query from is held out by exactly one fold (the generic phrases by
    # none), so each query is read by heads that never saw it.
    held_by = [sum(w in held for held, _ in folds) for w in
               [*teacher.SPECIFIC_TEMPLATES, *(p for ps in teacher.VAGUE_BANK.values() for p in ps[:WORDING_FOLDS])]]
    assert set(held_by) == {1}
    rng = random.Random(0)
    for item in CATALOG:
        query, template = teacher.specific_request_and_template(item, rng)
        assert template in teacher.SPECIFIC_TEMPLATES and query.startswith(template.split("{")[0])
