import math
import random

import pytest

from tools.core.metrics import hit_rate, ndcg, rank_of, summarize
from tools.core.sampling import candidate_list, random_negatives


def test_rank_counts_candidates_scored_at_least_as_high():
    assert rank_of([0.1, 0.9, 0.5], 1) == 0
    assert rank_of([0.1, 0.9, 0.5], 0) == 2
    assert rank_of([0.5, 0.5, 0.1], 1) == 1  # a tie counts against the target


@pytest.mark.parametrize(
    ("rank", "k", "hr", "dcg"),
    [
        (0, 1, 1.0, 1.0),
        (1, 1, 0.0, 0.0),
        (1, 3, 1.0, 1 / math.log2(3)),
        (2, 3, 1.0, 0.5),
        (3, 3, 0.0, 0.0),
        (4, 5, 1.0, 1 / math.log2(6)),
        (None, 10, 0.0, 0.0),
    ],
)
def test_hit_rate_and_ndcg_by_hand(rank, k, hr, dcg):
    assert hit_rate(rank, k) == hr
    assert ndcg(rank, k) == pytest.approx(dcg)


def test_summary_averages_over_users():
    s = summarize([0, 2, None, 5], ks=(1, 3))
    assert s["users"] == 4
    assert s["HR@1"] == 0.25 and s["HR@3"] == 0.5
    assert s["NDCG@3"] == pytest.approx((1.0 + 0.5) / 4)


def test_negatives_are_unseen_distinct_and_the_target_lands_anywhere():
    rng = random.Random(0)
    negatives = random_negatives([str(i) for i in range(20)], {"1", "2", "3"}, 9, rng)
    assert len(set(negatives)) == 9 and not {"1", "2", "3"} & set(negatives)
    positions = {candidate_list("1", negatives, random.Random(seed))[1] for seed in range(50)}
    assert len(positions) > 5
    with pytest.raises(ValueError):
        random_negatives(["a", "b"], {"a"}, 2, rng)


def test_an_earlier_run_joins_under_its_own_name_unless_this_run_has_it():
    from tools.core.metrics import paired_method_name

    assert paired_method_name("reading off", ["served", "popularity"]) == "reading off"
    assert paired_method_name("served", ["served", "popularity"]) == "served (earlier run)"
    assert paired_method_name("served", ["served", "served (earlier run)"]) == "served (earlier run 2)"
