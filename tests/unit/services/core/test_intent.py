"""Intention understanding: what an embedding's heads name, what that means for items, and the file format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.core.catalog import Catalog, Item
from services.core.intent import NONE, AttributeHead, IntentFormatError, IntentModel

CATALOG = Catalog({i.item_id: i for i in [
    Item("1", "A", 1994, ("Comedy",)), Item("2", "B", 1975, ("Horror",)),
    Item("3", "C", 1996, ("Comedy", "Horror")), Item("4", "D", None, ()),
]})
# Embedding axes: 0 "comedy", 1 "horror", 2 "1990s", 3 "says nothing".
GENRES = AttributeHead("genres", ("Comedy", "Horror", NONE), np.array([[8.0, 0, 0, 0], [0, 8.0, 0, 0], [0, 0, 0, 8.0]]),
                       np.zeros(3))
YEAR = AttributeHead("year", ("1970", "1990", NONE), np.array([[0, 0, -4.0, 0], [0, 0, 8.0, 0], [4.0, 4.0, 0, 8.0]]),
                     np.zeros(3), bucket=10.0)


def model() -> IntentModel:
    return IntentModel([GENRES, YEAR], encoder_version="2")


def test_an_intention_names_only_the_attributes_it_speaks_of() -> None:
    comedy = model().understand(np.array([1.0, 0, 0, 0]))
    assert [(u.attribute, u.value) for u in comedy] == [("genres", "Comedy")]
    assert comedy[0].probability > 0.9 and math.isclose(sum(comedy[0].distribution.values()), 1.0)
    both = model().understand(np.array([0, 1.0, 1.0, 0]))
    assert [(u.attribute, u.value) for u in both] == [("genres", "Horror"), ("year", "1990")]
    assert model().understand(np.array([0, 0, 0, 1.0])) == []  # "something good tonight"


def test_items_that_fit_score_above_chance_and_the_rest_below() -> None:
    m = model()
    understood = m.understand(np.array([1.0, 0, 1.0, 0]))  # a 1990s comedy
    scores = dict(zip(CATALOG.items, m.item_scores(understood, CATALOG, list(CATALOG.items))))
    assert scores["1"] > 0 and scores["3"] > 0  # comedy, 1990s (the multi-genre item counts its best genre)
    assert scores["2"] < 0  # a 1970s horror film
    assert scores["4"] == min(scores.values())  # no genre, no year: the floor
    assert m.item_scores([], CATALOG, ["1", "2"]).tolist() == [0.0, 0.0]
    # Unknown ids (not in the catalog) get the floor rather than failing.
    assert m.item_scores(understood, CATALOG, ["nope"])[0] == pytest.approx(scores["4"])


def test_a_doubtful_reading_moves_scores_less_than_a_confident_one() -> None:
    m = model()
    sure = m.item_scores(m.understand(np.array([1.0, 0, 0, 0])), CATALOG, ["1", "2"])
    doubtful = m.item_scores(m.understand(np.array([0.2, 0, 0, 0.15])), CATALOG, ["1", "2"])
    assert sure[0] - sure[1] > doubtful[0] - doubtful[1] > 0


def test_save_load_round_trip_and_refusals(tmp_path) -> None:
    m = model()
    m.save(tmp_path)
    back = IntentModel.load(tmp_path)
    assert back.encoder_version == "2" and [h.attribute for h in back.heads] == ["genres", "year"]
    e = np.array([0.3, 0.1, 0.9, 0.0])
    assert [(u.value, round(u.probability, 6)) for u in back.understand(e)] == \
        [(u.value, round(u.probability, 6)) for u in m.understand(e)]
    assert IntentModel.load(tmp_path / "missing") is None
    (tmp_path / "intent.json").write_text('{"format": 99, "heads": []}')
    with pytest.raises(IntentFormatError, match="format"):
        IntentModel.load(tmp_path)
    (tmp_path / "intent.json").write_text("not json")
    with pytest.raises(IntentFormatError):
        IntentModel.load(tmp_path)
    with pytest.raises(IntentFormatError, match="dimensions"):
        m.understand(np.zeros(5))
    with pytest.raises(IntentFormatError, match="line up"):
        IntentModel([AttributeHead("genres", ("Comedy",), np.zeros((1, 4)), np.zeros(1))])
