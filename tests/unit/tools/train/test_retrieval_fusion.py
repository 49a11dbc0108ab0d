"""The retrieval fusion fit: its metric does not reward ties, and its queries come from the training bank."""

from __future__ import annotations

import numpy as np

from services.core.catalog import Catalog, Item
from tools.core import teacher
from tools.core.split import Case
from tools.eval import intentions
from tools.train.retrieval_fusion import _per_user_ndcg, training_queries

CATALOG = Catalog({i.item_id: i for i in [
    Item("1", "A", 1994, ("Comedy",)), Item("2", "B", 1975, ("Horror",)), Item("3", "C", 1996, ("Comedy", "Horror")),
]})


def test_a_constant_score_is_not_a_perfect_ranking() -> None:
    excluded = np.zeros((2, 41), dtype=bool)
    ndcg, hit = _per_user_ndcg(np.zeros((2, 41)), np.array([0, 7]), excluded)
    assert np.allclose(ndcg, 0.0) and not hit.any()  # the target's expected rank is 20 of 41
    scores = np.tile(np.arange(41.0), (2, 1))
    ndcg, hit = _per_user_ndcg(scores, np.array([40, 35]), excluded)
    assert np.allclose(ndcg, [1.0, 1 / np.log2(7)]) and hit.all()
    excluded[1, 36:] = True  # the history is never ranked
    assert _per_user_ndcg(scores, np.array([40, 35]), excluded)[0][1] == 1.0


def test_queries_alternate_vague_and_specific_from_the_training_bank() -> None:
    samples = [Case(user_id=str(n), history=("1",), target=str(1 + n % 3), seen=frozenset({"1"})) for n in range(12)]
    queries, kinds, wordings = training_queries(CATALOG, samples, seed=0)
    assert kinds == ["vague", "specific"] * 6
    training = {p for ps in teacher.VAGUE_BANK.values() for p in ps} | set(teacher.GENERIC_VAGUE)
    evaluation = {p for ps in intentions.EVAL_VAGUE_BANK.values() for p in ps}
    for query, kind, wording in zip(queries, kinds, wordings):
        if kind == "vague":
            assert query == wording and query in training and query not in evaluation
        else:
            assert wording in teacher.SPECIFIC_TEMPLATES and wording not in intentions.EVAL_SPECIFIC_TEMPLATES
    assert training_queries(CATALOG, samples, seed=0) == (queries, kinds, wordings)  # seeded
