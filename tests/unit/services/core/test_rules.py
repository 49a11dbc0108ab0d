"""The rules file and one request's policy (services/core/rules.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter, CatalogAttributes, DiversityRule, first_violation, over_cap
from services.core.rules import (
    REMOVED_BLOCKED,
    REMOVED_DIVERSITY,
    REMOVED_EXCLUDED,
    REMOVED_FILTER,
    Boost,
    Pin,
    Policy,
    Rules,
    RulesFormatError,
    load_rules,
    parse_rules,
)

GENRES = ("Comedy", "Drama", "Horror", "Documentary")
CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 1980 + i % 30, (GENRES[i % 4],)) for i in range(40)})
ATTRS = CatalogAttributes(CATALOG)

GOOD = {
    "version": "2025-06-01.1",
    "blocked_item_ids": ["3"],
    "blocked_attributes": [{"attribute": "genres", "value_set": {"values": ["Horror"]}}],
    "pinned": [{"item_id": "5", "position": 2}],
    "boosts": [{"item_ids": ["9"], "weight": 0.5},
               {"attribute": "year", "range": {"min": 2005}, "weight": -0.25}],
    "callers": {
        "kids-app": {"filters": [{"attribute": "genres", "value_set": {"values": ["Comedy", "Documentary"],
                                                                       "match": "VALUE_MATCH_ANY"}}],
                     "diversity": {"attribute": "genres", "max_items_per_value": 2}},
        "*": {"diversity": {"attribute": "genres", "max_items_per_value": 3}},
    },
}


def test_a_rules_file_is_read_with_every_kind_of_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(GOOD))
    rules = load_rules(path, ATTRS)
    assert rules.version == "2025-06-01.1" and rules.blocked_item_ids == {"3"}
    assert rules.blocked == (AttributeFilter.any_of("genres", ["Horror"], exclude=True),)
    assert rules.pins == (Pin("5", 2),)
    assert rules.boosts == (Boost(0.5, item_ids=frozenset({"9"})),
                            Boost(-0.25, condition=AttributeFilter.between("year", 2005)))
    assert rules.for_caller("kids-app")[1].diversity == DiversityRule("genres", 2)
    assert rules.for_caller("someone")[0] == "*" and rules.for_caller("")[0] == "*"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": None}, "version: required"),
        ({"version": ""}, "version: required"),
        ({"blocked_itemids": []}, "rules: unknown key 'blocked_itemids'"),
        ({"blocked_item_ids": "3"}, "blocked_item_ids: expected a list"),
        ({"blocked_attributes": [{"attribute": "colour", "value_set": {"values": ["red"]}}]},
         'blocked_attributes\\[0\\].attribute: unknown attribute "colour"; known: genres, year'),
        ({"blocked_attributes": [{"attribute": "genres", "value_set": {"values": []}}]},
         "blocked_attributes\\[0\\].value_set.values: must not be empty"),
        ({"blocked_attributes": [{"attribute": "genres", "value_set": {"values": ["x"]}, "exclude": True}]},
         "blocked_attributes\\[0\\].exclude: not allowed"),
        ({"pinned": [{"item_id": "999", "position": 1}]}, 'pinned\\[0\\].item_id: "999" is not in the catalog'),
        ({"pinned": [{"item_id": "5", "position": 0}]}, "pinned\\[0\\].position: 0 is outside"),
        ({"pinned": [{"item_id": "5", "position": 1}, {"item_id": "6", "position": 1}]}, "pinned twice"),
        ({"boosts": [{"item_ids": ["9"], "weight": "big"}]}, "boosts\\[0\\].weight: expected a finite number"),
        ({"boosts": [{"attribute": "year", "range": {"min": 2010, "max": 2000}, "weight": 1}]},
         "boosts\\[0\\].range: min 2010 is greater than max 2000"),
        ({"callers": {"x": {"filters": [{"attribute": "genres", "range": {"min": 1}}]}}},
         'callers\\["x"\\].filters\\[0\\].range: attribute "genres" is not numeric'),
        ({"callers": {"x": {"diversity": {"attribute": "genres", "max_items_per_value": 0}}}},
         'callers\\["x"\\].diversity.max_items_per_value: must be >= 1'),
        ({"callers": {"x": {"filter": []}}}, "unknown key 'filter'"),
    ],
)
def test_a_malformed_rules_file_is_refused_naming_the_place(change: dict, message: str) -> None:
    with pytest.raises(RulesFormatError, match=message):
        parse_rules({**GOOD, **change}, ATTRS)


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text('{"version": 1, ')
    with pytest.raises(RulesFormatError, match="not JSON"):
        load_rules(path, ATTRS)
    with pytest.raises(RulesFormatError, match="cannot read"):
        load_rules(tmp_path / "missing.json", ATTRS)


def test_the_policy_joins_request_caller_and_blocked_filters() -> None:
    rules = parse_rules(GOOD, ATTRS)
    request = AttributeFilter.between("year", 1990, 1999)
    policy = Policy.build(rules, filters=[request], caller_id="kids-app")
    assert [s.source for s in policy.filters] == ["request", "caller:kids-app", "rules"]
    assert policy.diversity == DiversityRule("genres", 2) and policy.diversity_source == "caller:kids-app"
    # A request's own diversity wins over the caller's default.
    own = Policy.build(rules, diversity=DiversityRule("year", 1), caller_id="kids-app")
    assert own.diversity == DiversityRule("year", 1) and own.diversity_source == "request"
    assert "caller defaults: kids-app" in policy.describe()


def test_order_checks_boosts_pins_caps_and_cuts() -> None:
    # Genres by id % 4: Comedy, Drama, Horror, Documentary.
    rules = Rules("v1", blocked_item_ids=frozenset({"3"}), pins=(Pin("32", 1),),
                  boosts=(Boost(1.0, item_ids=frozenset({"12"})),))
    policy = Policy.build(rules, filters=[AttributeFilter.any_of("genres", ["Horror"], exclude=True)],
                          diversity=DiversityRule("genres", 2))
    ranked = [(str(i), 1.0 - i / 100) for i in range(1, 21)]
    out = policy.order(ranked, CATALOG, 5)
    # 32 pinned on top (Comedy: 1), 12 boosted above the rest (Comedy: 2, so 4 and 8 are over the cap).
    assert [i for i, _ in out.items] == ["32", "12", "1", "5", "7"]
    assert out.items[1][1] == pytest.approx(1.88) and out.items[0][1] == 0.0
    removed = {r.item_id: r.reason for r in out.removed}
    assert removed == {"2": REMOVED_FILTER, "3": REMOVED_BLOCKED, "6": REMOVED_FILTER, "10": REMOVED_FILTER,
                       "14": REMOVED_FILTER, "18": REMOVED_FILTER, "4": REMOVED_DIVERSITY}
    assert {"boost +1: items 12", "pinned 32 at position 1"} <= set(out.notes)


def test_a_pin_that_breaks_a_filter_or_is_in_the_history_is_not_added() -> None:
    policy = Policy.build(Rules("v1", pins=(Pin("2", 1), Pin("4", 2), Pin("8", 3))),
                          filters=[AttributeFilter.any_of("genres", ["Horror"], exclude=True)])
    out = policy.order([("1", 0.9), ("5", 0.8), ("9", 0.7)], CATALOG, 5,
                       pin_blocked={"4": "in the user's history"}.get)
    assert [i for i, _ in out.items] == ["1", "5", "8", "9"]  # "8" at position 3, scored 0
    assert dict(out.items)["8"] == 0.0
    removed = {r.item_id: r.reason for r in out.removed}
    assert removed == {"2": REMOVED_FILTER, "4": REMOVED_EXCLUDED}
    assert "pinned 8 at position 3" in out.notes


def test_boosts_reorder_and_the_diversity_cap_reports_what_it_dropped() -> None:
    policy = Policy.build(Rules("v1", boosts=(Boost(0.5, item_ids=frozenset({"8"})),)),
                          diversity=DiversityRule("genres", 1))
    out = policy.order([("1", 0.9), ("5", 0.8), ("8", 0.5), ("2", 0.1)], CATALOG, 3)
    # "8" (Comedy, 1.0 boosted) comes first; "1" and "5" are Drama: one of them is over the cap.
    assert [i for i, _ in out.items] == ["8", "1", "2"]
    assert [(r.item_id, r.reason) for r in out.removed] == [("5", REMOVED_DIVERSITY)]
    assert out.items[0][1] == pytest.approx(1.0) and "boost +0.5: items 8" in out.notes


def test_with_caller_candidates_pins_only_move_items_that_are_there() -> None:
    policy = Policy.build(Rules("v1", pins=(Pin("9", 1), Pin("30", 2))))
    out = policy.order([("1", 0.9), ("9", 0.1)], CATALOG, 2, insert_pins=False)
    assert [i for i, _ in out.items] == ["9", "1"]


# --- property-based: no answer ever breaks a filter or a rule -------------------------------------------------

_ids = st.sampled_from([str(i) for i in range(40)])
_filter = st.one_of(
    st.builds(AttributeFilter.any_of, st.just("genres"), st.lists(st.sampled_from([*GENRES, "Western"]), min_size=1,
                                                                  max_size=3), exclude=st.booleans()),
    st.tuples(st.integers(1975, 2012), st.integers(0, 20), st.booleans())
    .map(lambda t: AttributeFilter.between("year", t[0], t[0] + t[1], exclude=t[2])),
)
_rules = st.builds(
    Rules,
    version=st.just("p1"),
    blocked_item_ids=st.frozensets(_ids, max_size=10),
    blocked=st.lists(_filter.map(lambda f: AttributeFilter(f.attribute, f.kind, f.values, f.match, f.min, f.max,
                                                           exclude=True)), max_size=2).map(tuple),
    pins=st.lists(st.tuples(_ids, st.integers(1, 12)), max_size=4, unique_by=(lambda p: p[0], lambda p: p[1]))
    .map(lambda ps: tuple(sorted((Pin(i, p) for i, p in ps), key=lambda p: p.position))),
    boosts=st.lists(st.builds(Boost, st.floats(-1, 1), item_ids=st.frozensets(_ids, max_size=5)), max_size=2)
    .map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(rules=_rules, filters=st.lists(_filter, max_size=3),
       diversity=st.one_of(st.none(), st.builds(DiversityRule, st.sampled_from(["genres", "year"]),
                                                st.integers(1, 3))),
       ranked=st.lists(_ids, unique=True, max_size=25), num_items=st.integers(1, 20))
def test_no_ordered_answer_breaks_a_filter_or_rule(rules, filters, diversity, ranked, num_items) -> None:
    policy = Policy.build(rules, filters=filters, diversity=diversity)
    history = {"0", "1"}
    scored = [(i, 1.0 / (n + 1)) for n, i in enumerate(ranked)]
    out = policy.order(scored, CATALOG, num_items, pin_blocked=lambda i: "history" if i in history else None)
    ids = [i for i, _ in out.items]
    assert len(ids) == len(set(ids)) <= num_items
    for item_id in ids:
        assert item_id not in rules.blocked_item_ids
        assert first_violation(CATALOG[item_id], policy.item_filters) is None
        assert item_id in ranked or item_id not in history
    if diversity is not None:
        assert not over_cap(ids, CATALOG, diversity)
    allowed = [i for i in ranked if policy.check(i, CATALOG) is None]
    if diversity is None:
        # Without a cap nothing allowed is lost: the answer is full unless fewer items are allowed.
        assert len(ids) >= min(num_items, len(allowed))
    for pin in rules.pins:
        # A pin past the answer's length does not apply: the item keeps its own rank (it is not demoted).
        if pin.item_id in ids and diversity is None and pin.position <= num_items:
            placed = ids.index(pin.item_id) + 1
            # At its position, or higher when too few other items were there to fill the places above it.
            pinned = {p.item_id for p in rules.pins}
            assert placed == pin.position or (
                placed < pin.position and not [i for i in ids[placed:] if i not in pinned])
