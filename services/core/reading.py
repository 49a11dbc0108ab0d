"""Reading a request: what a caller's free text wants, excludes, bounds and references, as filters on the catalog.

The request reader (the ``request_reader`` model on Triton, a token tagger) labels each word of the request with a
role (:data:`WORD_LABELS`, BIO over :data:`ROLES`): a value the caller wants (``WANT``), one of alternatives the
caller would take any of (``ALT``: "a western or a war film"), a value the caller excludes (``NOT``), a
quantity the items must lie in (``IN``), outside (``NOTIN``), below (``LT``, ``LE``) or above (``GT``, ``GE``),
or a title the caller refers to (``REF``). This module turns those labelled spans into a :class:`Reading` by
grounding them in the catalog, with nothing about movies in the code:

* value spans name values of the catalog's text attributes, matched by their names and the catalog's own
  synonyms (:class:`Lexicon`), then by fuzzy matching;
* quantity spans are numbers, decades, years in words or era words ("recent", "old"), matched to the numeric
  attribute whose range holds them (a year-like attribute for decades and eras);
* reference spans are titles, matched by fuzzy title match (:class:`TitleMatcher`, rapidfuzz), the ambiguity
  resolved by popularity and reported;
* what is left (mood, tone) is the residual text, which still goes to the text encoder.

Training (``tools/train/reader_examples.py``) and serving import these labels and the word split, so a tagger is
trained on exactly the words and roles it is served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.core.catalog import Catalog
from services.core.filters import ALL, ANY, RANGE, AttributeFilter

WANT, ALT, NOT = "WANT", "ALT", "NOT"
IN, NOTIN, LT, LE, GT, GE, REF = "IN", "NOTIN", "LT", "LE", "GT", "GE", "REF"
ROLES = (WANT, ALT, NOT, IN, NOTIN, LT, LE, GT, GE, REF)
WORD_LABELS = ("O", *(f"{prefix}-{role}" for role in ROLES for prefix in ("B", "I")))
"""The tagger's word labels, in the order of its output classes."""
VALUE_ROLES = (WANT, ALT, NOT)
QUANTITY_ROLES = (IN, NOTIN, LT, LE, GT, GE)

# Words that join alternatives: wanted values of one attribute with one of these between them are "any of".
ALTERNATIVE_WORDS = frozenset({"or", "/"})
# Words that separate two groups of alternatives ("a comedy or a drama, and a western or a war film").
GROUP_BREAK_WORDS = frozenset({"and", ";", "but", "also", "plus"})
# Words that announce an exclusion; dropped from the residual text with the excluded span they introduce.
NEGATION_CUES = frozenset({"not", "no", "nothing", "without", "except", "excluding", "but", "other", "than",
                           "anything", "skip", "avoid", "never", "none", "non", "n't", "dont", "don't", "hate",
                           "fan", "of", "a", "an", "the", "any", "please", "and", "or", "nor", "too", "also",
                           "sick", "tired", "rather", "instead", "exclude", "minus", "less", "aside", "from"})
# Years around the newest item that "recent" and "old" mean: the newest five years, and 30 or more years older.
RECENT_YEARS = 5
OLD_YEARS = 29
READER_MAX_TOKENS = 64
"""Sub-word tokens of one request the reader reads (a longer request's tail words are read as O)."""
# Fuzzy-match floors (rapidfuzz scores, 0-100) for a value name and a title.
VALUE_MATCH_MIN = 80.0
TITLE_MATCH_MIN = 80.0
# Titles within this many points of the best match are alternatives (reported; popularity picks among them).
TITLE_TIE_POINTS = 3.0
# A part read with less confidence than this is a soft preference, not a filter.
MIN_HARD_CONFIDENCE = 0.5

WORD_PATTERN = r"\$?\d+(?:[.,]\d+)*(?:'?s)?|[’']\d0s|\w+(?:[-'’][^\W\d]\w*)*|[^\w\s]"
"""What a word is (``model_repository/request_reader/1/model.py`` spells the same pattern; a test compares them)."""
_WORD = re.compile(WORD_PATTERN)


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int


def split_words(text: str) -> list[Word]:
    """The words the tagger labels: runs of letters/digits (with inner hyphens and apostrophes, "sci-fi",
    "80's"), prices ("$50"), and single punctuation marks, with their character offsets."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class Span:
    """Consecutive words with one role."""

    role: str
    start: int
    """Index of the first word."""
    end: int
    """Index after the last word."""
    text: str
    confidence: float


def decode_spans(words: Sequence[Word], labels: Sequence[int], confidences: Sequence[float]) -> list[Span]:
    """BIO decoding of the tagger's word labels (an ``I-`` label that does not continue its role starts a span).

    Raises:
        ValueError: ``labels`` and ``words`` differ in length, or a label id is unknown.
    """
    if len(labels) != len(words) or len(confidences) != len(words):
        raise ValueError(f"{len(words)} words but {len(labels)} labels and {len(confidences)} confidences")
    spans: list[Span] = []
    role, start, scores = None, 0, []

    def close(end: int) -> None:
        if role is not None:
            text = " ".join(w.text for w in words[start:end])
            spans.append(Span(role, start, end, text, float(min(scores))))

    for n, (label, confidence) in enumerate(zip(labels, confidences)):
        if not 0 <= int(label) < len(WORD_LABELS):
            raise ValueError(f"label id {label} is not one of the {len(WORD_LABELS)} labels")
        name = WORD_LABELS[int(label)]
        if name == "O":
            close(n)
            role = None
            continue
        prefix, this = name.split("-", 1)
        if prefix == "I" and this == role:
            scores.append(float(confidence))
            continue
        close(n)
        role, start, scores = this, n, [float(confidence)]
    close(len(words))
    return spans


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
                      for f in {form, " ".join(_singular(w) for w in form.split())}]
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
        self._forms = [normalise(_without_article(item.title)) for item in catalog]
        self._popularity = dict(popularity or {})

    def match(self, mention: str) -> list[TitleMatch]:
        """The best match first, then every title within :data:`TITLE_TIE_POINTS` of it (the alternatives); []
        when no title is close enough."""
        from rapidfuzz import process

        form = normalise(_without_article(mention))
        if not form:
            return []
        found = process.extract(form, self._forms, scorer=_title_score, score_cutoff=TITLE_MATCH_MIN, limit=8)
        if not found:
            return []
        best = found[0][1]
        close = [(score, self._ids[n]) for _, score, n in found if score >= best - TITLE_TIE_POINTS]
        # Among titles that match about as well, exact form first, then the more popular, then catalog order.
        close.sort(key=lambda x: (-(self._forms[self._ids.index(x[1])] == form), -round(x[0]),
                                  -self._popularity.get(x[1], 0)))
        return [TitleMatch(item_id, self._titles[item_id], float(score)) for score, item_id in close]


def _title_score(mention: str, title: str, **_: object) -> float:
    """How well a mention matches a title: the whole strings (word order free), or the mention as a part of a
    longer title ("Dr. Strangelove" in "Dr. Strangelove or: How I Learned..."), never a short title inside a
    longer mention ("M" in "Mmic")."""
    from rapidfuzz import fuzz

    whole = fuzz.token_sort_ratio(mention, title)
    part = fuzz.partial_ratio(mention, title) if len(title) > len(mention) + 2 and len(mention) >= 4 else 0.0
    return max(whole, part * 0.95)


def _without_article(title: str) -> str:
    """"Godfather, The" and "The Godfather" -> "Godfather"."""
    text = re.sub(r",\s*(the|a|an)$", "", title.strip(), flags=re.I)
    return re.sub(r"^(the|a|an)\s+", "", text, flags=re.I)


@dataclass(frozen=True)
class ReadFilter:
    """One filter read from the request, with how sure the reader is and the words it came from."""

    filter: AttributeFilter
    confidence: float
    text: str

    @property
    def hard(self) -> bool:
        return self.confidence >= MIN_HARD_CONFIDENCE


@dataclass(frozen=True)
class Reference:
    """A title the caller named, resolved to a catalog item (``alternatives``: other titles that matched about
    as well, so the caller can see the choice)."""

    mention: str
    item_id: str
    title: str
    score: float
    confidence: float
    alternatives: tuple[TitleMatch, ...] = ()


@dataclass(frozen=True)
class Reading:
    """The structured reading of one request."""

    filters: tuple[ReadFilter, ...] = ()
    references: tuple[Reference, ...] = ()
    residual_text: str = ""
    """The request without what became filters or references: what the text encoder reads."""
    unread: tuple[str, ...] = ()
    """Spans the reader tagged but the catalog has nothing for (reported, never silently dropped)."""
    reader_version: str = ""

    def hard_filters(self) -> list[AttributeFilter]:
        return [f.filter for f in self.filters if f.hard]

    def describe(self) -> str:
        """One line for the instruction and for people."""
        parts = [f.filter.describe() for f in self.filters]
        parts += [f"like {r.title}" for r in self.references]
        return "; ".join(parts)


def read(text: str, words: Sequence[Word], spans: Sequence[Span], lexicon: Lexicon,
         titles: TitleMatcher | None = None, reader_version: str = "") -> Reading:
    """Ground the tagger's spans of ``text`` in the catalog (see the module docstring)."""
    wanted: dict[str, list[tuple[Span, list[str]]]] = {}
    excluded: dict[str, list[tuple[Span, list[str]]]] = {}
    ranges: list[tuple[str, float | None, float | None, bool, Span]] = []
    references: list[Reference] = []
    unread: list[str] = []
    for span in spans:
        if span.role in VALUE_ROLES:
            pairs = lexicon.ground_values(span.text)
            if not pairs:
                unread.append(span.text)
            by_attribute: dict[str, list[str]] = {}
            for attribute, value in pairs:
                by_attribute.setdefault(attribute, []).append(value)
            for attribute, values in by_attribute.items():
                (excluded if span.role == NOT else wanted).setdefault(attribute, []).append((span, values))
        elif span.role in QUANTITY_ROLES:
            grounded = lexicon.ground_quantity(span.text)
            if grounded is None:
                unread.append(span.text)
                continue
            attribute, lo, hi = grounded
            ranges.append((attribute.name, *_bounds(span.role, lo, hi, attribute.integers), span.role == NOTIN,
                           span))
        elif span.role == REF and titles is not None:
            matches = titles.match(span.text)
            if not matches:
                unread.append(span.text)
                continue
            best = matches[0]
            references.append(Reference(span.text, best.item_id, best.title, best.score, span.confidence,
                                        tuple(matches[1:])))
    # Words of other spans between two spans keep them apart ("comedy, 1945 or later, a western": no "or").
    occupied = {n for span in spans for n in range(span.start, span.end)}
    filters = [*_value_filters(wanted, words, occupied, exclude=False),
               *_value_filters(excluded, words, occupied, exclude=True), *_range_filters(ranges, words, occupied)]
    return Reading(tuple(filters), tuple(_unique_references(references)), _residual(words, spans), tuple(unread),
                   reader_version)


def _bounds(role: str, lo: float | None, hi: float | None, integers: bool) -> tuple[float | None, float | None]:
    """The closed interval a role puts on an attribute, from the interval [lo, hi] the span names."""
    step = 1.0 if integers else 0.0
    if role in (IN, NOTIN):
        return lo, hi
    if role == LT:
        return None, (lo if lo is not None else hi) - step
    if role == LE:
        return None, hi if hi is not None else lo
    if role == GT:
        return (hi if hi is not None else lo) + step, None
    return lo if lo is not None else hi, None  # GE


def _value_filters(groups: Mapping[str, list[tuple[Span, list[str]]]], words: Sequence[Word], occupied: set[int],
                   *, exclude: bool) -> Iterable[ReadFilter]:
    """Excluded values: one filter per attribute (an item with any of them goes). Wanted values: each group of
    alternatives (``ALT`` spans, or ``WANT`` spans joined by "or") is one "any of" filter; the other wanted
    spans' values are all wanted, one "all of" filter."""
    for attribute, found in groups.items():
        if exclude:
            yield _value_filter(attribute, found, ANY, exclude=True)
            continue
        singles: list[tuple[Span, list[str]]] = []
        for cluster in _or_clusters(found, words, occupied):
            if len({s for s, _ in cluster}) > 1 or cluster[0][0].role == ALT:
                yield _value_filter(attribute, cluster, ANY, exclude=False)
            else:
                singles += cluster
        if singles:
            yield _value_filter(attribute, singles, ALL, exclude=False)


def _value_filter(attribute: str, found: Sequence[tuple[Span, list[str]]], match: str, *,
                  exclude: bool) -> ReadFilter:
    values = tuple(sorted({v for _, vs in found for v in vs}))
    spans = sorted({s for s, _ in found}, key=lambda s: s.start)
    return ReadFilter(AttributeFilter(attribute, values=values, match=match if len(values) > 1 else ANY,
                                      exclude=exclude),
                      min(s.confidence for s in spans), " / ".join(dict.fromkeys(s.text for s in spans)))


def _or_clusters(found: Sequence, words: Sequence[Word], occupied: set[int]) -> list[list]:
    """``found`` ((span, payload) pairs) in word order, grouped: consecutive spans with an alternative word
    ("or", "/") between them are one group, and so are consecutive ``ALT`` spans unless a word such as "and"
    separates them."""
    ordered = sorted(found, key=lambda x: x[0].start)
    clusters: list[list] = []
    for entry in ordered:
        if clusters:
            previous = clusters[-1][-1][0]
            gap = range(previous.end, entry[0].start)
            between = {normalise(words[n].text) or words[n].text for n in gap}
            apart = any(n in occupied for n in gap)
            alternatives = previous.role == entry[0].role == ALT and not between & GROUP_BREAK_WORDS
            if previous == entry[0] or (not apart and (between & ALTERNATIVE_WORDS or alternatives)):
                clusters[-1].append(entry)
                continue
        clusters.append([entry])
    return clusters


def _range_filters(ranges: Sequence[tuple[str, float | None, float | None, bool, Span]],
                   words: Sequence[Word], occupied: set[int]) -> Iterable[ReadFilter]:
    """Excluded ranges stay one filter each. Wanted ranges joined by "or" ("the fifties or sixties") are their
    union when it is one interval; the others on one attribute intersect ("after 1980 and before 1990")."""
    wanted: dict[str, list] = {}
    for attribute, lo, hi, exclude, span in ranges:
        if exclude:
            yield ReadFilter(AttributeFilter(attribute, RANGE, min=lo, max=hi, exclude=True), span.confidence,
                             span.text)
        else:
            wanted.setdefault(attribute, []).append((span, (lo, hi)))
    for attribute, found in wanted.items():
        lo: float | None = None
        hi: float | None = None
        first = True
        for cluster in _or_clusters(found, words, occupied):
            c_lo, c_hi = _union([b for _, b in cluster])
            lo = c_lo if first else (lo if c_lo is None else c_lo if lo is None else max(lo, c_lo))
            hi = c_hi if first else (hi if c_hi is None else c_hi if hi is None else min(hi, c_hi))
            first = False
        spans = [s for s, _ in found]
        yield ReadFilter(AttributeFilter(attribute, RANGE, min=lo, max=hi), min(s.confidence for s in spans),
                         " / ".join(s.text for s in spans))


def _union(bounds: Sequence[tuple[float | None, float | None]]) -> tuple[float | None, float | None]:
    """The smallest interval that holds every one of ``bounds`` (an open end stays open)."""
    lows = [lo for lo, _ in bounds]
    highs = [hi for _, hi in bounds]
    return (None if None in lows else min(lows)), (None if None in highs else max(highs))


def _unique_references(references: Sequence[Reference]) -> list[Reference]:
    seen: set[str] = set()
    out = []
    for r in references:
        if r.item_id not in seen:
            seen.add(r.item_id)
            out.append(r)
    return out


def _residual(words: Sequence[Word], spans: Sequence[Span]) -> str:
    """The words outside every span but the wanted values, without the negation cues before excluded spans."""
    drop: set[int] = set()
    for span in spans:
        if span.role in (WANT, ALT):
            continue
        drop.update(range(span.start, span.end))
        if span.role in (NOT, NOTIN, LT, LE, GT, GE, REF):
            n = span.start - 1
            while n >= 0 and n not in drop and normalise(words[n].text) in NEGATION_CUES | {"like", "similar",
                                                                                         "to", "before", "after",
                                                                                         "since", "until", "under",
                                                                                         "over", "than", "older",
                                                                                         "newer", "in", "made"}:
                drop.add(n)
                n -= 1
    kept = [w.text for n, w in enumerate(words) if n not in drop]
    text = " ".join(kept)
    return re.sub(r"\s+([,.!?;:])", r"\1", text).strip(" ,;:-")


def reading_key(text: str) -> str:
    """The cache key of a request's reading: its words, lower case, single-spaced."""
    return " ".join(w.text.lower() for w in split_words(text))
