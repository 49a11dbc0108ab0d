"""The protocol-7 lab: the item-item model it fuses scores co-occurring items above the rest."""

from __future__ import annotations

import numpy as np

from tools.lab.filtered_fusion import ease_scores


def test_ease_scores_what_was_watched_with_the_history_highest() -> None:
    train = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["a", "b", "c"], "u4": ["c", "d"], "u5": ["d"]}
    ids = ["a", "b", "c", "d"]
    scores = ease_scores(train, ids, [["a"], ["d"]], l2=0.5)
    assert scores.shape == (2, 4)
    assert np.argmax(scores[0]) == ids.index("b")  # a's companion
    assert scores[1, ids.index("c")] > scores[1, ids.index("a")]
    assert scores[0, 0] == 0.0  # an item never scores itself
