"""Catalog attributes, attribute filters and the diversity cap (services/core/catalog.py, filters.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import filters as core_filters
from services.core.catalog import Catalog, DataFormatError, Item, item_text
from services.core.errors import InvalidArgument
from services.core.filters import AttributeFilter, CatalogAttributes, DiversityRule, FilterLimits, diversify

GENRES = ("Comedy", "Drama", "Horror", "Documentary")
SHOP = [
    {"item_id": "a", "title": "Trail shoe", "category": "shoes", "price": 89.5, "tags": ["sale", "new"],
     "in_stock": True},
    {"item_id": "b", "title": "Rain jacket", "category": "jackets", "price": 120, "tags": ["new"]},
    {"item_id": "c", "title": "Sock", "category": "socks", "price": 4, "in_stock": False, "colour": None},
]


def _shop(tmp_path: Path) -> Catalog:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SHOP))
    return Catalog.load(path)


def _movies(n: int = 40) -> Catalog:
    return Catalog({str(i): Item(str(i), f"Movie {i}", 1980 + i % 30, (GENRES[i % 4],) + ((GENRES[(i + 1) % 4],)
                                                                                    if i % 3 == 0 else ()))
                    for i in range(n)})


def test_every_other_catalog_key_is_an_attribute(tmp_path: Path) -> None:
    catalog = _shop(tmp_path)
    a = catalog["a"]
    assert a.attributes == {"category": "shoes", "price": 89.5, "tags": ("sale", "new"), "in_stock": "true"}
    assert "colour" not in catalog["c"].attributes  # null: no value
    assert CatalogAttributes(catalog).kinds == {"category": "text", "in_stock": "text", "price": "numeric",
                                                "tags": "text"}
    catalog.save(tmp_path / "again.jsonl")  # round trip keeps them
    assert Catalog.load(tmp_path / "again.jsonl")["a"].attributes == a.attributes


def test_genres_and_year_are_attributes_and_the_item_text_is_unchanged() -> None:
    item = Item("1", "Fargo", 1996, ("Crime", "Drama"))
    assert item.attributes == {"genres": ("Crime", "Drama"), "year": 1996}
    assert item.display_title() == "Fargo (1996)"
    assert item_text(item) == "Fargo (1996). Genres: Crime, Drama."
    assert item.to_json() == {"item_id": "1", "title": "Fargo", "year": 1996, "genres": ["Crime", "Drama"]}
    assert hash(item) == hash(Item("1", "Fargo", 1996, ("Crime", "Drama")))


@pytest.mark.parametrize("bad", ['{"x": {"a": 1}}', '{"x": [1, 2]}', '{"x": NaN}'])
def test_an_attribute_of_another_type_is_a_format_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "1", "title": "t", ' + bad[1:] + "\n")
    with pytest.raises(DataFormatError, match="expected a string, a number|not a finite number"):
        Catalog.load(path)


def test_value_sets_any_all_and_ranges_with_open_ends(tmp_path: Path) -> None:
    catalog = _shop(tmp_path)
    attrs = CatalogAttributes(catalog)

    def ids(*filters):
        return sorted(attrs.eligible(list(filters)))

    assert ids(AttributeFilter.any_of("tags", ["sale", "new"])) == ["a", "b"]
    assert ids(AttributeFilter.all_of("tags", ["sale", "new"])) == ["a"]
    assert ids(AttributeFilter.any_of("tags", ["new"], exclude=True)) == ["c"]  # c has no tags: kept
    assert ids(AttributeFilter.between("price", 4, 89.5)) == ["a", "c"]  # inclusive
    assert ids(AttributeFilter.between("price", hi=10)) == ["c"]
    assert ids(AttributeFilter.between("price", lo=100)) == ["b"]
    assert ids(AttributeFilter.between("price", lo=100, exclude=True)) == ["a", "c"]
    assert ids(AttributeFilter.any_of("price", ["120"])) == ["b"]  # numbers compare as their text
    assert ids(AttributeFilter.any_of("category", ["hats"])) == []  # unknown value: matches nothing
    assert ids(AttributeFilter.any_of("tags", ["new"]), AttributeFilter.between("price", hi=100)) == ["a"]
    assert attrs.eligible([]) is None


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (AttributeFilter.any_of("colour", ["red"]), r'filters\[0\].attribute: unknown attribute "colour"; '
                                                    r"known: genres, year"),
        (AttributeFilter.any_of("", ["red"]), r"filters\[0\].attribute: must not be empty"),
        (AttributeFilter.any_of("genres", []), r"filters\[0\].value_set.values: must not be empty"),
        (AttributeFilter.any_of("genres", ["x"] * 101), r"filters\[0\].value_set.values: 101 values, at most 100"),
        (AttributeFilter.any_of("genres", ["Comedy", ""]), r"filters\[0\].value_set.values\[1\]: must not be empty"),
        (AttributeFilter("genres", "values", ("Comedy",), "7"), r"filters\[0\].value_set.match: unknown value 7"),
        (AttributeFilter.between("year"), r"filters\[0\].range: set min, max or both"),
        (AttributeFilter.between("year", 2000, 1990), r"filters\[0\].range: min 2000 is greater than max 1990"),
        (AttributeFilter.between("year", float("nan")), r"filters\[0\].range.min: must be a finite number"),
        (AttributeFilter.between("genres", 1, 2), r'filters\[0\].range: attribute "genres" is not numeric'),
        (AttributeFilter("genres", ""), r"filters\[0\]: set value_set or range"),
    ],
)
def test_invalid_filters_name_the_field(f: AttributeFilter, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        CatalogAttributes(_movies()).validate_filters([f], FilterLimits())


def test_too_many_filters_and_a_bad_diversity_rule_are_refused() -> None:
    attrs = CatalogAttributes(_movies())
    with pytest.raises(InvalidArgument, match="filters: 17 filters, at most 16"):
        attrs.validate_filters([AttributeFilter.any_of("genres", ["Comedy"])] * 17, FilterLimits())
    with pytest.raises(InvalidArgument, match="diversity.max_items_per_value: must be >= 1"):
        attrs.validate_diversity(DiversityRule("genres", 0), FilterLimits())
    with pytest.raises(InvalidArgument, match='diversity.attribute: unknown attribute "genre"'):
        attrs.validate_diversity(DiversityRule("genre", 2), FilterLimits())


def test_diversify_keeps_order_and_caps_every_value_of_multi_valued_items() -> None:
    catalog = Catalog({i.item_id: i for i in [
        Item("1", "a", genres=("Comedy", "Drama")), Item("2", "b", genres=("Comedy",)),
        Item("3", "c", genres=("Drama",)), Item("4", "d"), Item("5", "e", genres=("Horror",)),
    ]})
    kept, dropped = diversify(["1", "2", "3", "4", "5"], catalog, DiversityRule("genres", 1))
    assert kept == ["1", "4", "5"] and dropped == [("2", "Comedy"), ("3", "Drama")]
    assert diversify(["1", "2", "3", "4", "5"], catalog, DiversityRule("genres", 1), limit=2)[0] == ["1", "4"]


# --- property-based: the precomputed sets agree with the item-by-item rule --------------------------------

_values = st.lists(st.sampled_from([*GENRES, "Western"]), min_size=1, max_size=3)
_filters = st.one_of(
    st.builds(AttributeFilter.any_of, st.just("genres"), _values, exclude=st.booleans()),
    st.builds(AttributeFilter.all_of, st.just("genres"), _values, exclude=st.booleans()),
    st.builds(AttributeFilter.any_of, st.just("year"), st.lists(st.integers(1975, 2012).map(str), min_size=1),
              exclude=st.booleans()),
    st.tuples(st.one_of(st.none(), st.integers(1975, 2012)), st.one_of(st.none(), st.integers(1975, 2012)),
              st.booleans())
    .filter(lambda t: (t[0] is not None or t[1] is not None) and (t[0] is None or t[1] is None or t[0] <= t[1]))
    .map(lambda t: AttributeFilter.between("year", t[0], t[1], exclude=t[2])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_filters, max_size=4))
def test_eligible_items_are_exactly_those_every_filter_allows(filters: list[AttributeFilter]) -> None:
    catalog = _movies()
    attrs = CatalogAttributes(catalog)
    attrs.validate_filters(filters, FilterLimits())
    expected = {i.item_id for i in catalog if core_filters.first_violation(i, filters) is None}
    got = attrs.eligible(filters)
    assert (got is None and not filters) or got == expected


def test_eligible_items_read_as_a_set_in_catalog_order_and_outlive_a_refresh() -> None:
    catalog = _movies()
    attrs = CatalogAttributes(catalog)
    got = attrs.eligible([AttributeFilter.between("year", 1990, None, exclude=True)])
    expected = [i.item_id for i in catalog if i.year < 1990]
    assert list(got) == expected and len(got) == len(expected) and got == set(expected)
    assert "no such id" not in got and (got & {expected[0], "x"}) == {expected[0]}
    attrs.refresh()  # a refresh builds new tables; what a request holds does not change
    assert list(got) == expected


@settings(max_examples=100, deadline=None)
@given(st.permutations([str(i) for i in range(40)]), st.integers(1, 4), st.sampled_from(["genres", "year"]))
def test_diversify_never_goes_over_the_cap(order: list[str], cap: int, attribute: str) -> None:
    catalog = _movies()
    rule = DiversityRule(attribute, cap)
    kept, dropped = diversify(order, catalog, rule)
    assert not core_filters.over_cap(kept, catalog, rule)
    assert len(kept) + len(dropped) == len(order)
    for item_id, value in dropped:
        assert value in core_filters.item_values(catalog[item_id], attribute)


def test_the_condition_cache_is_bounded_by_the_positions_it_holds(monkeypatch) -> None:
    """Cached conditions on a large catalog hold many positions each: the cache is cleared before it holds more than a
    few catalogs' worth, whatever the number of conditions."""
    monkeypatch.setattr(core_filters, "_CACHE_CATALOGS", 2)
    attributes = CatalogAttributes(_movies(40))
    everything = [AttributeFilter.between("year", 1900, 2100), AttributeFilter.between("year", 1899, 2100),
                  AttributeFilter.between("year", 1898, 2100)]
    for f in everything:
        assert len(attributes.eligible([f])) == 40
    assert attributes._cached_positions <= 2 * 40 and len(attributes._cache) <= 2
    assert attributes.eligible([everything[0]]) == attributes.all_items  # recomputed after the clear, the same


def test_a_catalog_shares_repeated_attribute_values_between_items(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"item_id": str(n), "title": f"T{n}", "category": "running shoes",
                                        "colors": ["black", "white"], "price": 10.0 + n}) + "\n" for n in range(3)))
    a, b, _ = Catalog.load(path)
    assert a.extra_attributes["category"] is b.extra_attributes["category"]
    assert a.extra_attributes["colors"] is b.extra_attributes["colors"]
    assert (a.extra_attributes["price"], b.extra_attributes["price"]) == (10.0, 11.0)
    assert not hasattr(a, "__dict__")  # slotted: no per-item dictionary
