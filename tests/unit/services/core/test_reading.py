"""Reading a request: labelled words -> constraints on the catalog, with nothing about movies in the code."""

from __future__ import annotations

from services.core.catalog import Catalog, Item
from services.core.filters import ALL, ANY, RANGE
from services.core.lexicon import Lexicon, TitleMatcher, parse_quantity
from services.core.reading import WORD_LABELS, decode_spans, read, split_words

MOVIES = Catalog({i.item_id: i for i in [
    Item("1", "Star Wars", 1977, ("Action", "Sci-Fi")), Item("2", "Fargo", 1996, ("Crime", "Drama")),
    Item("3", "Heat", 1995, ("Action", "Crime")), Item("4", "Godfather, The", 1972, ("Crime", "Drama")),
    Item("5", "Sleepless in Seattle", 1993, ("Comedy", "Romance")), Item("6", "Casablanca", 1942, ("Drama",)),
    Item("7", "Scream", 1996, ("Horror",)), Item("8", "Star Trek", 1979, ("Sci-Fi",)),
    Item("9", "Sabrina", 1954, ("Comedy", "Romance")), Item("10", "Sabrina", 1995, ("Comedy", "Romance")),
]})
SHOP = Catalog({i.item_id: i for i in [
    Item("s1", "Trail Runner 2", extra_attributes={"category": "running shoes", "brand": "Nike", "price": 120.0}),
    Item("s2", "Road Glide", extra_attributes={"category": "running shoes", "brand": "Asics", "price": 90.0}),
    Item("s3", "Court Pro", extra_attributes={"category": "tennis shoes", "brand": "Adidas", "price": 70.0}),
]})
LEXICON = Lexicon(MOVIES, {"_comment": "ignored", "sci-fi": ["genres=Sci-Fi"], "rom-com": ["genres=Comedy",
                                                                                            "genres=Romance"]})


def _reading(text: str, tags: dict[str, str], lexicon: Lexicon = LEXICON, catalog: Catalog = MOVIES):
    """Read ``text`` with the given word tags (word -> label name; others O), as the tagger would label it."""
    words = split_words(text)
    labels = [WORD_LABELS.index(tags.get(f"{n}:{w.text}", tags.get(w.text, "O"))) for n, w in enumerate(words)]
    spans = decode_spans(words, labels, [0.9] * len(words))
    return read(text, words, spans, lexicon, TitleMatcher(catalog, {"1": 500, "8": 10, "10": 50}))


def test_words_keep_hyphens_decades_and_prices_whole() -> None:
    assert [w.text for w in split_words("sci-fi from the '80s, under $100!")] == [
        "sci-fi", "from", "the", "'80s", ",", "under", "$100", "!"]


def test_an_exclusion_is_an_exclude_filter_and_leaves_the_residual_text() -> None:
    r = _reading("anything except dramas, something cozy", {"dramas": "B-NOT"})
    (f,) = r.filters
    assert (f.filter.attribute, f.filter.values, f.filter.exclude) == ("genres", ("Drama",), True)
    assert "dramas" not in r.residual_text and "except" not in r.residual_text and "cozy" in r.residual_text


def test_the_residual_text_is_cut_out_of_the_request_never_longer() -> None:
    text = "a!b@c#d$e%" * 100  # 1,000 characters of single-character words: joined by spaces they would be 1,899
    assert _reading(text, {}).residual_text == text
    r = _reading("no dramas ,  something  cozy's fine", {"dramas": "B-NOT"})
    assert r.residual_text == "something cozy's fine"  # the request's own spelling, single-spaced


def test_wanted_values_are_all_of_unless_joined_by_or() -> None:
    both = _reading("a horror comedy", {"horror": "B-WANT", "comedy": "B-WANT"})
    assert [(f.filter.values, f.filter.match) for f in both.filters] == [(("Comedy", "Horror"), ALL)]
    either = _reading("a horror or a comedy", {"horror": "B-WANT", "comedy": "B-WANT"})
    assert [(f.filter.values, f.filter.match) for f in either.filters] == [(("Comedy", "Horror"), ANY)]
    for offered in ("a horror, failing that a comedy", "could be horror, could be comedy", "horror, otherwise comedy",
                    "maybe horror, maybe comedy"):
        r = _reading(offered, {"horror": "B-WANT", "comedy": "B-WANT"})
        assert [(f.filter.values, f.filter.match) for f in r.filters] == [(("Comedy", "Horror"), ANY)], offered
    # A hedge before the second value only adds it ("maybe" is no "or" unless it offers each of them).
    r = _reading("a horror, maybe a comedy", {"horror": "B-WANT", "comedy": "B-WANT"})
    assert [(f.filter.values, f.filter.match) for f in r.filters] == [(("Comedy", "Horror"), ALL)]
    # Alternatives the tagger read one at a time are one group across "and" or "but"; those words part groups only.
    for offered in ("torn between horror and comedy, either would do", "leaning horror but honestly comedy works"):
        r = _reading(offered, {"horror": "B-ALT", "comedy": "B-ALT"})
        assert [(f.filter.values, f.filter.match) for f in r.filters] == [(("Comedy", "Horror"), ANY)], offered
    r = _reading("a horror or a drama, and a comedy or a sci-fi", {"horror": "B-ALT", "drama": "B-ALT",
                                                                      "comedy": "B-ALT", "sci-fi": "B-ALT"})
    assert sorted((f.filter.values, f.filter.match) for f in r.filters) == [
        (("Comedy", "Sci-Fi"), ANY), (("Drama", "Horror"), ANY)]
    synonym = _reading("a rom-com", {"rom-com": "B-WANT"})
    assert [(f.filter.values, f.filter.match) for f in synonym.filters] == [(("Comedy", "Romance"), ALL)]


def test_a_negation_covers_the_list_it_opens() -> None:
    def excluded(text, tags):
        return sorted((f.filter.values, f.filter.exclude) for f in _reading(text, tags).filters)

    # The tagger labels a negated list's continuation as alternatives.
    assert excluded("anything except dramas, comedies or horror",
                    {"dramas": "B-NOT", "comedies": "B-ALT", "horror": "B-ALT"}) == [
        (("Comedy", "Drama", "Horror"), True)]
    assert excluded("anything but a drama or a comedy", {"drama": "B-NOT", "comedy": "B-ALT"}) == [
        (("Comedy", "Drama"), True)]
    # A wanted value, or other words, end the list.
    assert excluded("not action, a comedy please", {"action": "B-NOT", "comedy": "B-WANT"}) == [
        (("Action",), True), (("Comedy",), False)]
    assert excluded("no horror, maybe a comedy or a drama", {"horror": "B-NOT", "comedy": "B-ALT",
                                                              "drama": "B-ALT"}) == [
        (("Comedy", "Drama"), False), (("Horror",), True)]


def test_a_value_both_wanted_and_excluded_is_wanted() -> None:
    # "no rom-coms" beside a wanted comedy excludes what else a rom-com is; an exclusion of a kind of the wanted
    # value ("horror, but not the slasher kind") is reported, never applied against the request.
    r = _reading("a comedy, but no rom-com", {"comedy": "B-WANT", "rom-com": "B-NOT"})
    assert [(f.filter.values, f.filter.exclude) for f in r.filters] == [(("Comedy",), False), (("Romance",), True)]
    kind = _reading("a comedy but not the comedy kind", {"1:comedy": "B-WANT", "5:comedy": "B-NOT"})
    assert [(f.filter.values, f.filter.exclude) for f in kind.filters] == [(("Comedy",), False)]
    assert kind.unread == ("comedy",)
    alone = _reading("no rom-com", {"rom-com": "B-NOT"})
    assert [(f.filter.values, f.filter.exclude) for f in alone.filters] == [(("Comedy", "Romance"), True)]


def test_bounds_decades_years_in_words_and_eras() -> None:
    def ranges(text, tags):
        return [(f.filter.min, f.filter.max, f.filter.exclude) for f in _reading(text, tags).filters
                if f.filter.kind == RANGE]

    assert ranges("a film made before 1960", {"1960": "B-LT"}) == [(None, 1959.0, False)]
    assert ranges("from the eighties", {"the": "B-IN", "eighties": "I-IN"}) == [(1980, 1989, False)]
    assert ranges("a thriller, but not one from the 90s", {"5:the": "B-NOTIN", "90s": "I-NOTIN"}) == [
        (1990, 1999, True)]
    assert ranges("after 1980 and before 1990", {"1980": "B-GT", "1990": "B-LT"}) == [(1981.0, 1989.0, False)]
    assert ranges("the fifties or sixties", {"the": "B-IN", "fifties": "I-IN", "sixties": "B-IN"}) == [
        (1950, 1969, False)]
    assert ranges("something recent", {"recent": "B-IN"}) == [(1996 - 4, None, False)]  # the newest is 1996
    assert ranges("nineteen eighty five or later", {"nineteen": "B-GE", "eighty": "I-GE", "five": "I-GE"}) == [
        (1985.0, None, False)]
    assert parse_quantity("the 1980s") == ("decade", 1980, 1989)


def test_references_resolve_fuzzy_titles_and_report_alternatives() -> None:
    r = _reading("something like Star Wares and the godfater", {"Star": "B-REF", "Wares": "I-REF",
                                                               "6:the": "B-REF", "godfater": "I-REF"})
    assert [x.item_id for x in r.references] == ["1", "4"]
    assert "Star" not in r.residual_text and "like" not in r.residual_text
    sabrina = _reading("like Sabrina", {"Sabrina": "B-REF"}).references[0]
    assert sabrina.item_id == "10" and [a.item_id for a in sabrina.alternatives] == ["9"]  # the more popular wins
    loose = _reading("like Star", {"Star": "B-REF"})  # part of two titles: no reference, the word stays
    assert loose.references == () and loose.unread == ("Star",) and "Star" in loose.residual_text


def test_a_reference_span_that_runs_on_or_lists_titles_names_the_titles_inside_it() -> None:
    def refs(text: str) -> list[str]:
        words = split_words(text)
        return [x.item_id for x in _reading(text, {w.text: "I-REF" for w in words[1:]} | {words[0].text: "B-REF"})
                .references]

    assert refs("my son loves Casablanca") == ["6"]
    assert refs("Sleepless in Seattle and Casablanca were hits") == ["5", "6"]
    assert refs("Casablanca-type movies") == ["6"]
    assert refs("Scream 2") == []  # a number after a title is a sequel's, not this title
    assert refs("my kids love Heat") == []  # a short title is also an ordinary word: only whole spans name it
    sequel = TitleMatcher(Catalog({"1": Item("1", "Godfather: Part II, The", 1974, ("Crime",))}))
    assert [m.item_id for m in sequel.match("the godfather part 2")] == ["1"]  # Roman numerals as digits


def test_the_catalog_settles_a_span_whose_role_cannot_be_grounded() -> None:
    # Titles tagged as alternatives or as an exclusion without a negation cue are references.
    r = _reading("think Fargo or Casablanca", {"Fargo": "B-ALT", "Casablanca": "B-ALT"})
    assert [x.item_id for x in r.references] == ["2", "6"] and r.filters == ()
    assert [x.item_id for x in _reading("close to Casablanca", {"Casablanca": "B-NOT"}).references] == ["6"]
    # ... but an excluded title after a negation cue is never turned into its opposite: it stays unread.
    r = _reading("anything but Casablanca", {"Casablanca": "B-NOT"})
    assert r.references == () and r.filters == () and r.unread == ("Casablanca",)
    # A reference span naming no title but a value is a wanted value (excluded after a negation cue).
    r = _reading("part sci-fi, part drama", {"1:sci-fi": "B-REF", "4:drama": "B-WANT"})
    assert {(f.filter.values, f.filter.exclude) for f in r.filters} == {(("Drama", "Sci-Fi"), False)}
    r = _reading("no sci-fi please", {"sci-fi": "B-REF"})
    assert [(f.filter.values, f.filter.exclude) for f in r.filters] == [(("Sci-Fi",), True)]
    # ... cut to the words that name the value, so that the words after it are read ("... is a no").
    r = _reading("quick one: sci-fi is a hard no", {"quick": "B-REF", "one": "I-REF", ":": "I-REF", "sci-fi": "I-REF",
                                                    "is": "I-REF"})
    assert [(f.filter.values, f.filter.exclude) for f in r.filters] == [(("Sci-Fi",), True)]
    # A one-word title in lower case is an ordinary word ("robots, aliens or time travel" names no "Aliens").
    assert _reading("a heat wave of action", {"heat": "B-WANT"}).references == ()
    # Only an exact title turns a value span into a reference ("a crowd pleaser" is not "The Crow").
    r = _reading("think Fargo or Casablanka", {"Fargo": "B-ALT", "Casablanka": "B-ALT"})
    assert [x.item_id for x in r.references] == ["2"] and r.unread == ("Casablanka",)
    # A span the catalog has nothing for keeps no alternatives apart ("horror would do, or drama").
    r = _reading("horror would do, or drama", {"horror": "B-ALT", "do": "B-ALT", "drama": "B-ALT"})
    assert [(f.filter.values, f.filter.match) for f in r.filters] == [(("Drama", "Horror"), ANY)]
    assert r.unread == ("do",)
    # Where the tagger's role grounds, it stands.
    assert _reading("like Heat", {"Heat": "B-REF"}).references[0].item_id == "3"
    assert _reading("no drama", {"drama": "B-NOT"}).filters[0].filter.exclude


def test_a_title_named_exactly_needs_less_of_the_taggers_confidence_and_the_best_title_inside_a_span_wins() -> None:
    words = split_words("like Casablanca")
    unsure = decode_spans(words, [0, WORD_LABELS.index("B-REF")], [0.99, 0.3])
    assert [x.item_id for x in read("like Casablanca", words, unsure, LEXICON, TitleMatcher(MOVIES)).references] == [
        "6"]
    words = split_words("like Casablanka")  # a loose match still needs a sure tag
    unsure = decode_spans(words, [0, WORD_LABELS.index("B-REF")], [0.99, 0.3])
    assert read("like Casablanka", words, unsure, LEXICON, TitleMatcher(MOVIES)).references == ()
    # "Scream x" matches no title as a whole as well as "Scream" inside it does.
    assert [x.item_id for x in _reading("for fans of Scream x", {"Scream": "B-REF", "x": "I-REF"}).references] == [
        "7"]


def test_short_words_name_values_exactly_never_fuzzily() -> None:
    docs = Lexicon(Catalog({"1": Item("1", "A", 1990, ("Documentary",))}), {"doc": ["genres=Documentary"]})
    assert docs.ground_values("do") == [] and docs.ground_values("doc") == [("genres", "Documentary")]
    assert docs.ground_values("docs") == [("genres", "Documentary")]


def test_what_the_catalog_lacks_is_reported_not_dropped() -> None:
    r = _reading("a telenovela please", {"telenovela": "B-WANT"})
    assert r.filters == () and r.unread == ("telenovela",)


def test_a_shop_catalog_is_read_the_same_way() -> None:
    lexicon = Lexicon(SHOP)
    r = _reading("running shoes under 100, not Nike", {"running": "B-WANT", "shoes": "I-WANT", "100": "B-LT",
                                                        "Nike": "B-NOT"}, lexicon, SHOP)
    found = {(f.filter.attribute, f.filter.values, f.filter.max, f.filter.exclude) for f in r.filters}
    assert found == {("category", ("running shoes",), None, False), ("brand", ("Nike",), None, True),
                     ("price", (), 99.0, False)}  # whole-number prices: under 100 is at most 99
    allowed = [i.item_id for i in SHOP if all(f.filter.allows(i) for f in r.filters)]
    assert allowed == ["s2"]


def test_bounds_that_leave_nothing_keep_the_surest_one_and_report_the_other() -> None:
    # Found by bench-scale: "(take 62)" tagged as an upper bound beside "not less than $562": an empty range,
    # which the filter path refuses (INVALID_ARGUMENT for a valid request).
    lexicon = Lexicon(SHOP)
    text = "not less than $562, definitely not Nike (take 62)"
    words = split_words(text)
    tags = {"$562": "B-GE", "Nike": "B-NOT", "62)": "B-LE", "62": "B-LE"}
    labels = [WORD_LABELS.index(tags.get(w.text, "O")) for w in words]
    confidences = [0.6 if w.text.startswith("62") else 0.95 for w in words]
    r = read(text, words, decode_spans(words, labels, confidences), lexicon, TitleMatcher(SHOP, {}))
    prices = [(f.filter.min, f.filter.max) for f in r.filters if f.filter.attribute == "price"]
    assert prices == [(562.0, None)]
    assert any("62" in u and "562" not in u for u in r.unread)


def test_low_confidence_parts_are_soft() -> None:
    words = split_words("no horror")
    spans = decode_spans(words, [0, WORD_LABELS.index("B-NOT")], [0.99, 0.3])
    r = read("no horror", words, spans, LEXICON)
    assert r.filters[0].confidence == 0.3 and not r.filters[0].hard and r.hard_filters() == []


def test_the_served_adapter_splits_words_by_the_same_pattern() -> None:
    import ast
    from pathlib import Path

    from services.core import reading

    adapter = Path(__file__).resolve().parents[4] / "model_repository" / "request_reader" / "1" / "model.py"
    assigned = {n.targets[0].id: n.value.value for n in ast.walk(ast.parse(adapter.read_text()))
                if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                and isinstance(n.value, ast.Constant)}
    assert assigned["WORD_PATTERN"] == reading.WORD_PATTERN


def test_a_large_catalog_matches_titles_as_a_full_scan_would(monkeypatch) -> None:
    import random

    from services.core import lexicon as lexicon_module
    from tools.synthetic import Shop, ShopSpec

    lines = list(Shop(ShopSpec(items=6_000, users=1)).item_lines())
    catalog = Catalog({line["item_id"]: Item(line["item_id"], line["title"]) for line in lines})
    popularity = {line["item_id"]: n % 7 for n, line in enumerate(lines)}
    matcher = TitleMatcher(catalog, popularity)
    rng = random.Random(0)
    mentions = []
    for line in rng.sample(lines, 40):
        words = line["title"].lower().split()
        typo = words[1][:-1] if len(words[1]) > 3 else words[1]
        mentions += [line["title"], " ".join([words[0], typo, *words[2:]]), " ".join(words[:2])]
    prefiltered = [matcher.match(m) for m in mentions]
    within = [matcher.within(f"my kid loves {m} a lot", 88.0) for m in mentions[::3]]
    monkeypatch.setattr(lexicon_module, "PREFILTER_FROM_TITLES", 10**9)
    full = TitleMatcher(catalog, popularity)  # the same titles, scored against every one
    assert full._index is None and matcher._index is not None
    exact = [full.match(m) for m in mentions]
    same_best = sum(p[:1] == e[:1] or bool(p and e and p[0].score == e[0].score) for p, e in zip(prefiltered, exact))
    assert same_best == len(mentions)  # the best match (or one as good) is always found
    assert sum(p == e for p, e in zip(prefiltered, exact)) >= 0.9 * len(mentions)  # alternatives too, nearly always
    assert [w[:1] for w in within] == [full.within(f"my kid loves {m} a lot", 88.0)[:1] for m in mentions[::3]]
    assert sum(bool(p) for p in prefiltered) >= len(mentions) * 0.6
