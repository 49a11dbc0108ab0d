"""The catalog's vocabulary for reading requests: value names and synonyms, numeric attributes and the words for
quantities (numbers, decades, years in words, eras), and fuzzy title matching. Built from the catalog and its
optional synonyms file, so nothing here knows about movies (``services/core/reading.py`` uses it to ground spans).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.core.catalog import Catalog
from services.core.title_index import TitleIndex

# Years around the newest item that "recent" and "old" mean: the newest five years, and 30 or more years older.
RECENT_YEARS = 5
OLD_YEARS = 29
# Fuzzy-match floors (rapidfuzz scores, 0-100) for a value name and a title.
VALUE_MATCH_MIN = 80.0
# Shorter words are matched to value names exactly, never fuzzily ("do" is not "doc").
FUZZY_VALUE_MIN_CHARS = 3
TITLE_MATCH_MIN = 80.0
# Titles within this many points of the best match are alternatives (reported; popularity picks among them).
TITLE_TIE_POINTS = 3.0
# A title found inside a longer mention ("my son loves Lion King") needs this many characters (its normalised form,
# without a leading article): shorter titles are ordinary words too ("Kids", "Them!", "Heat").
CONTAINED_TITLE_MIN_CHARS = 6
# From this many titles on, a mention is scored against the titles that share the most character trigrams with it
# (services/core/title_index.py) rather than against every title: a Python scorer over every title took 86 ms per
# mention at 10^4 titles, rapidfuzz's C scorers over every title 340 ms per request at 10^5 (issue #31).
PREFILTER_FROM_TITLES = 5_000
PREFILTER_CANDIDATES = 200
# At most this many titles are found inside one mention.
CONTAINED_TITLES_MAX = 3
# Words that separate titles listed in one mention ("Willy Wonka and Mary Poppins").
TITLE_LIST_WORDS = frozenset({"and", "or", "then", "plus"})
_ROMAN = {"ii": "2", "iii": "3", "iv": "4"}


def normalise(text: str) -> str:
    """Lower case, ``&`` as "and", every run of non-alphanumerics one space: the form names are compared in."""
    text = text.lower().replace("&", " and ").replace("’", "'")
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text).replace("'", "").split())


def _singular(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("ses", "s"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + replacement
    return word


def _variants(name: str) -> set[str]:
    """A name, its words singular, and without hyphens/apostrophes: "Children's" -> {"childrens", "children"}."""
    base = normalise(name)
    out = {base, " ".join(_singular(w) for w in base.split()), base.replace(" ", "")}
    return {v for v in out if v}


@dataclass(frozen=True)
class NumericAttribute:
    name: str
    low: float
    high: float
    integers: bool

    @property
    def year_like(self) -> bool:
        return self.integers and 1000 <= self.low and self.high <= 2200


class Lexicon:
    """The catalog's vocabulary: every value of its text attributes by name and synonym; its numeric attributes
    with their ranges. Built from the catalog (and an optional synonyms mapping that ships with the data)."""

    def __init__(self, catalog: Catalog, synonyms: Mapping[str, Sequence[str]] | None = None) -> None:
        values: dict[str, set[str]] = {}
        numbers: dict[str, list[float]] = {}
        for item in catalog:
            for attribute, value in item.attributes.items():
                if isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    numbers.setdefault(attribute, []).append(float(value))
                else:
                    for v in (value,) if isinstance(value, str) else value:
                        values.setdefault(attribute, set()).add(v)
        self.numeric = {name: NumericAttribute(name, min(v), max(v), all(float(x).is_integer() for x in v))
                        for name, v in numbers.items() if name not in values}
        # name form -> [(attribute, value), ...]; a synonym may stand for several values ("rom-com").
        self._names: dict[str, list[tuple[str, str]]] = {}
        for attribute, vs in sorted(values.items()):
            for value in sorted(vs):
                for form in _variants(value):
                    self._names.setdefault(form, []).append((attribute, value))
        known = {(a, v) for a, vs in values.items() for v in vs}
        for phrase, targets in (synonyms or {}).items():
            if phrase.startswith("_"):
                continue  # a comment in the synonyms file
            pairs = [_parse_target(t) for t in targets]
            pairs = [p for p in pairs if p in known] or [(a, v) for a, v in known if v in targets]
            for form in _variants(phrase):
                self._names[form] = sorted(set(self._names.get(form, [])) | set(pairs))
        self._forms = sorted(self._names)
        self.values = {a: sorted(vs) for a, vs in values.items()}

    def surface_forms(self) -> dict[str, list[tuple[str, str]]]:
        """Every name form the lexicon knows with the values it stands for (the training generator's vocabulary)."""
        return {form: list(pairs) for form, pairs in self._names.items()}

    def ground_values(self, text: str) -> list[tuple[str, str]]:
        """The (attribute, value) pairs a value span names: the whole span by name or synonym, else each of its
        words, else the closest name by fuzzy match; [] when nothing is close enough."""
        form = normalise(text)
        for candidate in (form, " ".join(_singular(w) for w in form.split()), form.replace(" ", "")):
            if candidate in self._names:
                return list(self._names[candidate])
        found: list[tuple[str, str]] = []
        words = form.split()
        n = 0
        while n < len(words):  # longest known phrase first, left to right ("romantic comedy" -> two values)
            for size in range(min(3, len(words) - n), 0, -1):
                phrase = " ".join(words[n:n + size])
                hit = self._names.get(phrase) or self._names.get(" ".join(_singular(w) for w in phrase.split()))
                if hit:
                    found += [p for p in hit if p not in found]
                    n += size
                    break
            else:
                n += 1
        if found:
            return found
        from rapidfuzz import fuzz, process

        candidates = [process.extractOne(f, self._forms, scorer=fuzz.ratio, score_cutoff=VALUE_MATCH_MIN)
                      for f in {form, " ".join(_singular(w) for w in form.split())} if len(f) >= FUZZY_VALUE_MIN_CHARS]
        best = max((c for c in candidates if c), key=lambda c: c[1], default=None)
        return list(self._names[best[0]]) if best else []

    def ground_quantity(self, text: str) -> tuple[NumericAttribute, float | None, float | None] | None:
        """The numeric attribute and the interval a quantity span names ("1960", "the 80s", "nineteen eighty",
        "recent", "$100"); None when it names none the catalog has."""
        parsed = parse_quantity(text)
        if parsed is None:
            return None
        kind, lo, hi = parsed
        years = [a for a in self.numeric.values() if a.year_like]
        if kind in ("decade", "year", "era") and years:
            attribute = years[0]
            if kind == "era":
                newest = attribute.high
                lo, hi = ((newest - (RECENT_YEARS - 1), None) if lo == "recent" else (None, newest - OLD_YEARS))
            elif kind == "decade" and lo < 100:  # "the 80s": the century that holds the catalog's years
                century = max((c for c in range(int(attribute.low) // 100 * 100, int(attribute.high) + 1, 100)
                               if c + lo <= attribute.high), default=1900)
                lo, hi = century + lo, century + hi
            return attribute, lo, hi
        if kind == "era":
            return None
        candidates = [a for a in self.numeric.values() if not a.year_like and a.low <= lo <= a.high * 10]
        candidates = candidates or [a for a in self.numeric.values() if a.low <= lo <= a.high]
        return (candidates[0], lo, hi) if candidates else None


def _parse_target(target: str) -> tuple[str, str]:
    attribute, _, value = target.partition("=")
    return (attribute, value) if value else ("", target)


_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_DECADE_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                 "eighties": 80, "nineties": 90}
_RECENT = {"recent", "new", "newer", "newest", "latest", "modern", "current", "contemporary", "fresh"}
_OLD = {"old", "older", "oldie", "oldies", "vintage", "classic", "classics", "golden"}


def _words_number(words: list[str]) -> int | None:
    """"nineteen eighty five" -> 1985, "fifty" -> 50, "two hundred" -> 200; None if not a number in words."""
    if not words or not all(w in _UNITS or w in _TENS or w in ("hundred", "thousand") for w in words):
        return None
    if len(words) >= 2 and words[0] in _UNITS and _UNITS[words[0]] >= 10 and words[1] in _TENS:
        rest = _words_number(words[1:])  # "nineteen eighty five": a year in two halves
        return _UNITS[words[0]] * 100 + rest if rest is not None and rest < 100 else None
    total, current = 0, 0
    for w in words:
        if w == "hundred":
            current = max(current, 1) * 100
        elif w == "thousand":
            total, current = total + max(current, 1) * 1000, 0
        else:
            current += _UNITS.get(w, 0) + _TENS.get(w, 0)
    return total + current


def parse_quantity(text: str) -> tuple[str, float | str, float | str | None] | None:
    """A quantity span as (kind, low, high): kind "decade" (low/high within a century unless four digits given),
    "year" (a four-digit number), "era" ("recent"/"old" as low), or "number"; None if it is none of those."""
    form = text.lower().replace("’", "'").replace(",", "")
    words = [w for w in re.findall(r"[a-z]+|\d+(?:\.\d+)?'?s?|'\d0s", form) if w not in ("the", "early", "late")]
    if not words:
        return None
    if any(w in _RECENT for w in words):
        return "era", "recent", None
    if any(w in _OLD for w in words):
        return "era", "old", None
    for w in words:
        m = re.fullmatch(r"'?(\d{2}|\d{4})'?s", w)
        if m:
            start = int(m.group(1))
            start -= start % 10
            return "decade", start, start + 9
        if w in _DECADE_WORDS:
            prefix = _words_number([x for x in words if x in _UNITS])
            base = prefix * 100 if prefix and prefix >= 10 else 0
            return "decade", base + _DECADE_WORDS[w], base + _DECADE_WORDS[w] + 9
    numbers = [float(w) for w in words if re.fullmatch(r"\d+(?:\.\d+)?", w)]
    if numbers:
        n = numbers[0]
        kind = "year" if n.is_integer() and 1000 <= n <= 2200 else "number"
        return kind, n, n
    spoken = _words_number([w for w in words if w not in ("dollars", "bucks", "euros", "and")])
    if spoken is not None:
        return ("year" if 1000 <= spoken <= 2200 else "number"), float(spoken), float(spoken)
    return None


@dataclass(frozen=True)
class TitleMatch:
    item_id: str
    title: str
    score: float


class TitleMatcher:
    """Fuzzy title match over the catalog (rapidfuzz), ties resolved by popularity."""

    def __init__(self, catalog: Catalog, popularity: Mapping[str, int] | None = None) -> None:
        self._ids = [item.item_id for item in catalog]
        self._titles = {item.item_id: item.title for item in catalog}
        self._forms = [_title_form(item.title) for item in catalog]
        self._position = {item_id: n for n, item_id in enumerate(self._ids)}
        self._index = TitleIndex(self._forms) if len(self._forms) >= PREFILTER_FROM_TITLES else None
        self._popularity = dict(popularity or {})

    def match(self, mention: str) -> list[TitleMatch]:
        """The best match first, then every title within :data:`TITLE_TIE_POINTS` of it (the alternatives); []
        when no title is close enough."""
        from rapidfuzz import process

        form = _title_form(mention)
        if not form:
            return []
        found = process.extract(form, self._candidates(form), scorer=_title_score, score_cutoff=TITLE_MATCH_MIN,
                                limit=8)
        if not found:
            return []
        best = found[0][1]
        close = [(score, self._ids[n]) for _, score, n in found if score >= best - TITLE_TIE_POINTS]
        # Among titles that match about as well, exact form first, then the more popular, then catalog order.
        close.sort(key=lambda x: (-(self._forms[self._position[x[1]]] == form), -round(x[0]),
                                  -self._popularity.get(x[1], 0)))
        return [TitleMatch(item_id, self._titles[item_id], float(score)) for score, item_id in close]


    def _candidates(self, form: str) -> list[str] | dict[int, str]:
        """Every title form, or in a large catalog the ``PREFILTER_CANDIDATES`` that share the most character
        trigrams with ``form``, in catalog order (so that ties resolve as in a full scan)."""
        if self._index is None:
            return self._forms
        return {n: self._forms[n] for n in self._index.candidates(form, PREFILTER_CANDIDATES)}

    def within(self, mention: str, min_score: float) -> list[list[TitleMatch]]:
        """Titles named inside a mention longer than them, each as :meth:`match` gives it (the best first, then
        its alternatives): a tagger's reference span that ran on ("my son loves Lion King", "Rear Window back to
        back") or that lists several ("Willy Wonka and Mary Poppins were hits"). A title counts when its words
        match whole words of the mention at ``min_score`` or better, it is long enough
        (:data:`CONTAINED_TITLE_MIN_CHARS`) and no number follows it that it lacks; what is left, where it holds a
        list word, is split there and matched as parts of titles."""
        from rapidfuzz import fuzz, process

        runs, found = [_title_form(mention).split()], []
        while runs and len(found) < CONTAINED_TITLES_MAX:
            best = None
            for r, run in enumerate(runs):
                text = " ".join(run)
                for form, _, n in process.extract(text, self._candidates(text), scorer=fuzz.partial_ratio,
                                                  score_cutoff=min_score, limit=10):
                    if not CONTAINED_TITLE_MIN_CHARS <= len(form) <= len(text):
                        continue
                    start, end = _word_bounds(run, fuzz.partial_ratio_alignment(form, text))
                    if end < len(run) and run[end].isdigit() and run[end] not in form.split():
                        continue  # a number right after a title is its sequel's ("Terminator 2")
                    score = fuzz.ratio(form, " ".join(run[start:end]))
                    key = (score, len(form), self._popularity.get(self._ids[n], 0))
                    if score >= min_score and (best is None or key > best[0]):
                        best = (key, r, start, end)
            if best is None:
                break
            _, r, start, end = best
            found.append(self.match(" ".join(runs[r][start:end])))
            runs[r:r + 1] = [part for part in (runs[r][:start], runs[r][end:]) if part]
        for run in runs:
            if not TITLE_LIST_WORDS & set(run):
                continue
            for piece in " ".join(w if w not in TITLE_LIST_WORDS else "|" for w in run).split("|"):
                matches = self.match(piece) if len(piece.split()) >= 2 and len(found) < CONTAINED_TITLES_MAX else []
                if matches and matches[0].score >= min_score:
                    found.append(matches)
        return [m for m in found if m]


def _word_bounds(words: Sequence[str], alignment) -> tuple[int, int]:
    """The words of ``" ".join(words)`` that an alignment's destination characters touch."""
    start, end, offset = None, 0, 0
    for n, word in enumerate(words):
        if offset + len(word) > alignment.dest_start and offset < alignment.dest_end:
            start = n if start is None else start
            end = n + 1
        offset += len(word) + 1
    start = start or 0
    return start, max(end, start + 1)


def _title_form(text: str) -> str:
    """How titles and mentions are compared: normalised, without a leading or trailing article, Roman numerals
    as digits ("The Godfather: Part II" and "godfather part 2")."""
    return " ".join(_ROMAN.get(w, w) for w in normalise(without_article(text)).split())


def _title_score(mention: str, title: str, **_: object) -> float:
    """How well a mention matches a title: the whole strings (word order free), or the mention as a part of a
    longer title ("Dr. Strangelove" in "Dr. Strangelove or: How I Learned..."), never a short title inside a
    longer mention ("M" in "Mmic")."""
    from rapidfuzz import fuzz

    whole = fuzz.token_sort_ratio(mention, title)
    # A part counts when it is most of the title or several words of it: "treasure" alone is not "Muppet Treasure
    # Island", "dr strangelove" is "Dr. Strangelove or: How I Learned ...".
    long_enough = len(mention) >= 4 and (len(mention) >= len(title) / 2 or len(mention.split()) >= 2)
    part = fuzz.partial_ratio(mention, title) if len(title) > len(mention) + 2 and long_enough else 0.0
    return max(whole, part * 0.95)


def without_article(title: str) -> str:
    """"Godfather, The" and "The Godfather" -> "Godfather"."""
    text = re.sub(r",\s*(the|a|an)$", "", title.strip(), flags=re.I)
    return re.sub(r"^(the|a|an)\s+", "", text, flags=re.I)
