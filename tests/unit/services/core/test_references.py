"""Which titles a reference span names: a common noun in lower case does not name a title by chance."""

from __future__ import annotations

from services.core.catalog import Catalog, Item
from services.core.lexicon import TitleMatcher
from services.core.references import titles_in

TITLES = TitleMatcher(Catalog({i.item_id: i for i in (
    Item("1", "Little Women", 1994, ("Drama",)), Item("2", "Outlaw, The", 1943, ("Western",)),
    Item("3", "Fargo", 1996, ("Crime",)), Item("4", "Pulp Fiction", 1994, ("Crime",)),
    Item("5", "Star Wars", 1977, ("Sci-Fi",)), Item("6", "Outbreak", 1995, ("Thriller",)))}))


def named(mention: str) -> list[str]:
    return [m[0].item_id for m in titles_in(mention, TITLES)]


def test_a_lowercase_word_names_a_title_only_whole_and_exact() -> None:
    assert named("little") == []  # "safe for my little nephew": one word of a longer title
    assert named("dusty outlaws on horseback") == [] and named("outlaws") == []  # a word built on a title
    assert named("fargo") == ["3"] and named("star wars") == ["5"]  # lower case, but the whole title
    assert named("pulp fictoin") == ["4"] and named("the fargoo") == ["3"]  # typos in a whole title still name it
    assert named("anything along the lines of outbrak") == ["6"]


def test_a_capital_makes_the_mention_a_title() -> None:
    assert named("Little") == ["1"]
    assert named("The Outlaws") == ["2"]
