"""The evaluation's intention bank is apart from training's, and the string filter reads specific intentions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.core.catalog import Catalog, Item
from tools.core import teacher
from tools.core.metrics import bootstrap
from tools.eval import intentions


def _training_phrases() -> set[str]:
    return ({p for bank in teacher.VAGUE_BANK.values() for p in bank} | set(teacher.GENERIC_VAGUE)
            | set(teacher.SPECIFIC_TEMPLATES))


def test_the_evaluation_and_training_banks_share_no_phrase() -> None:
    evaluation, training = intentions.phrases(), _training_phrases()
    assert not evaluation & training
    assert not any(e in t or t in e for e in evaluation for t in training)
    # The specific wording differs from the teacher's "a <genres> movie from the <decade>s" too.
    item = Item("1", "X", 1994, ("Crime",))
    rng = random.Random(0)
    assert all(intentions.intention(item, intentions.SPECIFIC, rng) != teacher.specific_intention(item)
               for _ in range(10))
    # Nor does any request the training side words (one genre + decade, as evaluation's I2) match one of its.
    requests = {teacher.specific_request(item, random.Random(n)) for n in range(50)}
    assert len(requests) > 3
    assert not requests & {intentions.intention(item, intentions.SPECIFIC, random.Random(n)) for n in range(50)}


def test_the_string_filter_reads_genre_and_decade_and_orders_matches_first() -> None:
    catalog = Catalog({i.item_id: i for i in [Item("1", "A", 1994, ("Crime",)), Item("2", "B", 1985, ("Crime",)),
                                               Item("3", "C", 1995, ("Sci-Fi",)), Item("4", "D", 1992, ("Crime",))]})
    f = intentions.StringFilter(catalog)
    assert f.parse("any 1990s crime title?") == ({"Crime"}, 1990)
    assert f.parse("something that will make me laugh") == (set(), None)
    order = f.order("looking for crime from the 1990s", ["2", "3", "1", "4"], [4.0, 3.0, 1.0, 2.0])
    assert order == ["4", "1", "2", "3"]
    assert f.singles_out("show me sci-fi released in the 1990s", "3", ["1", "2", "3"])
    assert not f.singles_out("looking for crime from the 1990s", "1", ["1", "4"])


def test_literal_wording_names_the_genre_the_paraphrase_stands_for() -> None:
    catalog = Catalog({i.item_id: i for i in [Item("1", "A", 1994, ("Comedy", "Crime", "Horror")),
                                               Item("2", "B", None, ())]})
    f = intentions.StringFilter(catalog)
    for seed in range(20):
        vague = intentions.intention(catalog["1"], intentions.VAGUE, random.Random(seed))
        literal = intentions.intention(catalog["1"], intentions.VAGUE, random.Random(seed), literal=True)
        genres, era = f.parse(literal)
        assert len(genres) == 1 and era is None and f.parse(vague) == (set(), None)
        assert vague in intentions.EVAL_VAGUE_BANK[genres.pop()]  # the same draw: the same genre
        specific = intentions.intention(catalog["1"], intentions.SPECIFIC, random.Random(seed))
        assert intentions.intention(catalog["1"], intentions.SPECIFIC, random.Random(seed), literal=True) == specific
    assert intentions.intention(catalog["2"], intentions.VAGUE, random.Random(0), literal=True) == "looking for a film"


def test_validation_runs_cannot_use_literal_wording() -> None:
    from pathlib import Path

    from tools.eval.evaluate import EvalConfig
    from tools.eval.search import SearchEvaluation

    with pytest.raises(ValueError, match="literal"):
        EvalConfig(data_dir=Path("x"), validation=True, literal_intentions=True)
    assert EvalConfig(data_dir=Path("x"), literal_intentions=True).wording == "literal"
    assert EvalConfig(data_dir=Path("x"), validation=True).wording == "training"
    with pytest.raises(ValueError, match="wording must be one of"):
        SearchEvaluation(None, None, None, seed=0, concurrency=1, name="s", wording="oracle")


def test_paired_bootstrap_interval_covers_a_clear_gain() -> None:
    served, other = np.ones(200), np.zeros(200)
    d = bootstrap(served, other)
    assert d["diff"] == 1.0 and d["ci_low"] == d["ci_high"] == 1.0
    noisy = bootstrap(np.random.default_rng(1).random(300), np.random.default_rng(2).random(300))
    assert noisy["ci_low"] < 0 < noisy["ci_high"]


def test_an_earlier_run_joins_the_tables_by_user_and_users_it_lacks_are_refused() -> None:
    from tools.eval.search import _join_paired

    rows = [{"full": {"served": 0}, "sampled": {"served": [0, 1]}},
            {"full": {"served": None}, "sampled": {"served": [3]}}]
    report = {"system": "ablation", "4": {"I2": {"ranks": {"users": ["a", "b"], "full": [5, None],
                                                           "sampled": [[2, 2], [0]]}}}}
    _join_paired(rows, report, "4", "I2", ["a", "b"])
    assert [r["full"]["ablation"] for r in rows] == [5, None] and rows[1]["sampled"]["ablation"] == [0]
    # A run on fewer users pairs with theirs, by user id.
    one = [{"full": {"served": 1}, "sampled": {"served": [1]}}]
    _join_paired(one, report, "4", "I2", ["b"])
    assert one[0]["full"]["ablation"] is None and one[0]["sampled"]["ablation"] == [0]
    with pytest.raises(ValueError, match="other users"):
        _join_paired(rows, report, "4", "I2", ["a", "c"])
    with pytest.raises(ValueError, match="no per-user ranks"):
        _join_paired(rows, report, "5", "I1", ["a", "b"])


def test_an_earlier_run_of_the_same_system_never_replaces_this_runs_figures() -> None:
    from tools.eval.search import _join_paired

    rows = [{"full": {"served": 0}, "sampled": {"served": [0]}}]
    earlier = {"system": "served", "4": {"I1": {"ranks": {"users": ["a"], "full": [None], "sampled": [[4]]}}}}
    _join_paired(rows, earlier, "4", "I1", ["a"])
    assert rows[0]["full"] == {"served": 0, "served (earlier run)": None}
    assert rows[0]["sampled"]["served"] == [0] and rows[0]["sampled"]["served (earlier run)"] == [4]
