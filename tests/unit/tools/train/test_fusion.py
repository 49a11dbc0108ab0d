"""The fusion fit's metric, on hand-computed cases."""

import numpy as np
import pytest

from tools.train.fusion import FusionCase, hit_rates


def test_hit_rates_rank_by_the_fused_score_per_kind_of_list():
    cases = [FusionCase("random", ("a", "b"), 0, ""), FusionCase("retrieved", ("a", "b"), 1, "")]
    lm = [np.log([0.2, 0.8]), np.log([0.3, 0.7])]  # the LM prefers b in both
    retrieval = [np.array([0.2, 0.0]), np.array([0.1, 0.0])]  # retrieval prefers a in both
    # Retrieval only: first list right, second wrong.
    assert hit_rates(cases, lm, retrieval, 0.0, 0.05) == {"HR@1 random": 1.0, "HR@1 retrieved": 0.0, "HR@1": 0.5}
    # Weight 1, temperature 0.05: list 1 a = log .2 + 4 = 2.39 vs b = log .8 = -0.22 -> a (hit);
    # list 2 a = log .3 + 2 = 0.80 vs b = log .7 = -0.36 -> a (miss).
    assert hit_rates(cases, lm, retrieval, 1.0, 0.05)["HR@1"] == pytest.approx(0.5)
    # Weight 10: list 1 a = 10 log .2 + 4 = -12.1 vs b = -2.2 -> b (miss); list 2 -> b (hit).
    assert hit_rates(cases, lm, retrieval, 10.0, 0.05) == {"HR@1 random": 0.0, "HR@1 retrieved": 1.0, "HR@1": 0.5}
