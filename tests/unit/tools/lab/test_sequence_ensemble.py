"""The ensemble lab's metric: NDCG@10 of the target over the whole catalog, the history excluded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tools.lab.sequence_ensemble import _per_case_ndcg


def test_the_history_is_excluded_and_the_target_ranked_among_the_rest() -> None:
    index = {"a": 1, "b": 2, "c": 3}
    case = SimpleNamespace(history=["a"], target="c")
    scores = np.array([[9.0, 5.0, 4.0, 3.0]])  # padding, a (history), b, c
    assert np.isclose(_per_case_ndcg(scores, [case], index)[0], 1 / np.log2(3))  # b above c: rank 2
    scores = np.array([[9.0, 5.0, 1.0, 3.0]])
    assert np.isclose(_per_case_ndcg(scores, [case], index)[0], 1.0)
