"""Reading a request: what a caller's free text wants, excludes, bounds and references, as filters on the catalog.

The request reader (the ``request_reader`` model on Triton, a token tagger) labels each word of the request with a
role (:data:`WORD_LABELS`, BIO over :data:`ROLES`): a value the caller wants (``WANT``), one of alternatives the
caller would take any of (``ALT``: "a western or a war film"), a value the caller excludes (``NOT``), a
quantity the items must lie in (``IN``), outside (``NOTIN``), below (``LT``, ``LE``) or above (``GT``, ``GE``),
or a title the caller refers to (``REF``). This module turns those labelled spans into a :class:`Reading` by
grounding them in the catalog, with nothing about movies in the code:

* value spans name values of the catalog's text attributes, matched by their names and the catalog's own
  synonyms (:class:`services.core.lexicon.Lexicon`), then by fuzzy matching;
* quantity spans are numbers, decades, years in words or era words ("recent", "old"), matched to the numeric
  attribute whose range holds them (a year-like attribute for decades and eras), and the direction words around
  them ("more recent than", "or earlier") settle whether they bound it from below or above
  (:mod:`services.core.directions`);
* wording the tagger reads as a wish although it turns the value down ("horror is a no-go", "not in the mood for
  musicals") makes it an exclusion, and an exclusion with no word of refusal near it ("a mystery with a bit of
  romance") a wish (:mod:`services.core.rejections`);
* wanted values of one attribute are "any of" where the words between them offer alternatives ("or", "failing
  that", "could be ..., could be ...") and "all of" otherwise (:mod:`services.core.alternatives`);
* reference spans are titles, matched by fuzzy title match (:class:`TitleMatcher`, rapidfuzz), the ambiguity
  resolved by popularity and reported;
* what is left (mood, tone) is the residual text, which still goes to the text encoder.

Training (``tools/train/reader_examples.py``) and serving import these labels and the word split, so a tagger is
trained on exactly the words and roles it is served.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from services.core.alternatives import or_clusters
from services.core.directions import directed_roles
from services.core.filters import ALL, ANY, RANGE, AttributeFilter
from services.core.lexicon import Lexicon, TitleMatch, TitleMatcher, normalise
from services.core.references import names_a_title, titles_in
from services.core.rejections import rejected_roles, unsupported_exclusions
from services.core.roles import (  # noqa: F401 (the roles are part of this module's interface)
    ALT,
    GE,
    GT,
    IN,
    LE,
    LT,
    NOT,
    NOTIN,
    QUANTITY_ROLES,
    REF,
    ROLES,
    VALUE_ROLES,
    WANT,
    WORD_LABELS,
)

# Words that announce an exclusion; dropped from the residual text with the excluded span they introduce.
NEGATION_CUES = frozenset({"not", "no", "nothing", "without", "except", "excluding", "but", "other", "than",
                           "anything", "skip", "avoid", "never", "none", "non", "n't", "dont", "don't", "hate",
                           "fan", "of", "a", "an", "the", "any", "please", "and", "or", "nor", "too", "also",
                           "sick", "tired", "rather", "instead", "exclude", "minus", "less", "aside", "from"})
# Words that make what follows them an exclusion wherever they stand (a subset of the cues above).
STRICT_NEGATION_CUES = frozenset({"not", "no", "nothing", "without", "except", "excluding", "skip", "avoid", "never",
                                  "none", "n't", "dont", "don't", "hate", "minus", "exclude", "but", "zero"})
# What may stand between the values of one negated list ("anything except dramas, comedies or thrillers").
LIST_JOINERS = frozenset({",", "or", "nor", "and", "/", "a", "an", "the", "any"})
READER_MAX_TOKENS = 64
"""Sub-word tokens of one request the reader reads (a longer request's tail words are read as O)."""
# A part read with less confidence than this is a soft preference, not a filter.
MIN_HARD_CONFIDENCE = 0.5
# The tagger's confidence a reference needs when its title is named exactly (a looser match needs MIN_HARD_CONFIDENCE).
EXACT_REFERENCE_MIN_CONFIDENCE = 0.25

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
    # Each span's text is grounded once per request, whether its role is settled here or below.
    values_of = functools.cache(lexicon.ground_values)
    quantity_of = functools.cache(lexicon.ground_quantity)
    titles_of = functools.cache(lambda mention: titles_in(mention, titles)) if titles is not None else None
    texts = [w.text for w in words]
    spans = grounded_roles(words, spans, values_of, titles, titles_of)

    def names_something(span: Span) -> bool:
        if span.role == REF:
            return titles_of is not None and bool(titles_of(span.text))
        return bool(values_of(span.text)) if span.role in VALUE_ROLES else quantity_of(span.text) is not None

    # The rules on the words around a span look past spans that name nothing ("zero", "is a no" tagged as spans).
    empty = [s for s in spans if not names_something(s)]
    spans, directions = directed_roles(texts, [s for s in spans if s not in empty])
    spans, rejections = rejected_roles(texts, unsupported_exclusions(texts, spans), directions)
    spans = sorted([*negated_lists(words, spans), *empty], key=lambda s: s.start)
    cue_words = rejections.union(*directions.values())
    wanted: dict[str, list[tuple[Span, list[str]]]] = {}
    excluded: dict[str, list[tuple[Span, list[str]]]] = {}
    ranges: list[tuple[str, float | None, float | None, bool, Span]] = []
    references: list[Reference] = []
    unread: list[str] = []
    for span in spans:
        if span.role in VALUE_ROLES:
            pairs = values_of(span.text)
            if not pairs:
                unread.append(span.text)
            by_attribute: dict[str, list[str]] = {}
            for attribute, value in pairs:
                by_attribute.setdefault(attribute, []).append(value)
            for attribute, values in by_attribute.items():
                (excluded if span.role == NOT else wanted).setdefault(attribute, []).append((span, values))
        elif span.role in QUANTITY_ROLES:
            grounded = quantity_of(span.text)
            if grounded is None:
                unread.append(span.text)
                continue
            attribute, lo, hi = grounded
            ranges.append((attribute.name, *_bounds(span.role, lo, hi, attribute.integers), span.role == NOTIN,
                           span))
        elif span.role == REF and titles_of is not None:
            found = titles_of(span.text)
            # A reference acts strongly (its neighbours are retrieved): an unsure tag or a loose title match is
            # no reference, and its words stay in the text ("a true story" is not "Toy Story"). A title named
            # exactly needs less of the tagger's confidence.
            exact = bool(found) and all(names_a_title(span.text, m[0]) for m in found)
            if not found or span.confidence < (EXACT_REFERENCE_MIN_CONFIDENCE if exact else MIN_HARD_CONFIDENCE):
                unread.append(span.text)
                continue
            references += [Reference(span.text, m[0].item_id, m[0].title, m[0].score, span.confidence, tuple(m[1:]))
                           for m in found]
    unread += _reconcile(wanted, excluded)
    # Words of other spans between two spans keep them apart ("comedy, 1945 or later, a western": no "or"); a span
    # the catalog has nothing for is no part of the reading and keeps nothing apart ("crime would do, or a doc").
    occupied = {n for span in spans if span.text not in unread for n in range(span.start, span.end)}
    range_filters, contradicted = _range_filters(ranges)
    unread += contradicted
    filters = [*_value_filters(wanted, words, occupied, exclude=False),
               *_value_filters(excluded, words, occupied, exclude=True), *range_filters]
    grounded = [span for span in spans if span.text not in unread]
    return Reading(tuple(filters), tuple(_unique_references(references)), _residual(text, words, grounded, cue_words),
                   tuple(unread), reader_version)


def grounded_roles(words: Sequence[Word], spans: Sequence[Span], values_of: Callable[[str], list[tuple[str, str]]],
                   titles: TitleMatcher | None, titles_of: Callable[[str], list[list[TitleMatch]]] | None
                   ) -> list[Span]:
    """The catalog settles what kind of thing a span names when the tagger's role cannot be grounded:

    * a value span (wanted, alternative, excluded) that names no value but exactly a title is a reference ("think
      Manhattan or The Client" tagged as alternatives); an excluded one only when no negation cue stands right
      before it ("close to Pulp Fiction", never "anything but Titanic", which stays unread);
    * a reference span that names no title but values is a wanted value ("part cowboys, part crime"), cut to the
      words that name them.

    The tagger's roles stay wherever they ground, so this only changes spans that would otherwise be unread.
    ``values_of`` / ``titles_of``: the span text's values and titles (the lexicon's and
    :func:`services.core.references.titles_in`)."""
    if titles is None or titles_of is None:
        return list(spans)
    out: list[Span] = []
    for span in spans:
        negated = bool({normalise(w.text) for w in words[max(0, span.start - 3):span.start]} & STRICT_NEGATION_CUES)
        if span.role in VALUE_ROLES and not values_of(span.text):
            matches = titles.match(span.text)
            if matches and names_a_title(span.text, matches[0]) and (span.role != NOT or not negated):
                span = replace(span, role=REF)
        elif span.role == REF and values_of(span.text) and not titles_of(span.text):
            span = _value_words(words, replace(span, role=NOT if negated else WANT), values_of)
        out.append(span)
    return out


def _value_words(words: Sequence[Word], span: Span, values_of: Callable[[str], list[tuple[str, str]]]) -> Span:
    """``span`` cut to its shortest run of words that names the same values: a reference span that ran on over the
    words around a value ("quick one: scifi gets a big fat" -> "scifi") leaves those words to the rules that read
    them ("... gets a big fat no from me")."""
    named = set(values_of(span.text))
    for size in range(1, span.end - span.start):
        for start in range(span.start, span.end - size + 1):
            text = " ".join(w.text for w in words[start:start + size])
            if set(values_of(text)) == named:
                return replace(span, start=start, end=start + size, text=text)
    return span


def negated_lists(words: Sequence[Word], spans: Sequence[Span]) -> list[Span]:
    """A negation covers the list it opens: an alternative (``ALT``) that follows an excluded value with only list
    words between them ("anything except dramas, comedies or thrillers"; "anything but a drama or a comedy") is
    excluded too. The tagger labels such continuations as alternatives, which read as wanted values: the
    opposite of the request. A wanted value (``WANT``) or any other word in between ends the list ("not a
    western, a comedy please"; "no horror, maybe a comedy")."""
    out: list[Span] = []
    previous: Span | None = None
    for span in spans:
        between = words[previous.end:span.start] if previous is not None else ()
        if (span.role == ALT and previous is not None and previous.role == NOT
                and all(normalise(w.text) in LIST_JOINERS or w.text in LIST_JOINERS for w in between)):
            span = replace(span, role=NOT)
        out.append(span)
        previous = span
    return out


def _reconcile(wanted: Mapping[str, list[tuple[Span, list[str]]]],
               excluded: dict[str, list[tuple[Span, list[str]]]]) -> list[str]:
    """A value the request both wants and excludes is wanted: the exclusion named a kind of it or a mix that
    contains it ("horror, but not the slasher kind", "new comedies, but no romcoms": romcom is Comedy and
    Romance, so Romance goes). An exclusion left with no value is returned as unread (the catalog cannot say
    it), never applied against what the request asks for."""
    unread = []
    for attribute, found in list(excluded.items()):
        wanted_values = {v for _, vs in wanted.get(attribute, ()) for v in vs}
        if not wanted_values:
            continue
        kept = [(span, [v for v in values if v not in wanted_values]) for span, values in found]
        unread += [span.text for span, values in kept if not values]
        kept = [(span, values) for span, values in kept if values]
        if kept:
            excluded[attribute] = kept
        else:
            del excluded[attribute]
    return unread


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
        for cluster in or_clusters(found, words, occupied):
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


def _range_filters(ranges: Sequence[tuple[str, float | None, float | None, bool, Span]]
                   ) -> tuple[list[ReadFilter], list[str]]:
    """Excluded ranges stay one filter each. The intervals a request wants on one attribute (``IN``: "the fifties
    or sixties", "from 1965 to 1975", "between the 70s and the 80s") are spanned by one range; bounds (before,
    after, ...) cut it ("the 80s, but after 1985"; "after 1980 and before 1990").

    Bounds that leave nothing ("at least $562 ... at most 62") contradict each other: the most confident span's
    bound is kept and the others are returned as unread (an empty range would match no item, and the filter
    path rightly refuses one); one span's backwards range is read forwards."""
    filters: list[ReadFilter] = []
    unread: list[str] = []
    wanted: dict[str, list] = {}
    for attribute, lo, hi, exclude, span in ranges:
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        if exclude:
            filters.append(ReadFilter(AttributeFilter(attribute, RANGE, min=lo, max=hi, exclude=True),
                                      span.confidence, span.text))
        else:
            wanted.setdefault(attribute, []).append((span, (lo, hi)))
    for attribute, found in wanted.items():
        lo, hi = _cut(found)
        if lo is not None and hi is not None and lo > hi:
            best = max(found, key=lambda entry: entry[0].confidence)
            unread += [span.text for span, _ in found if span is not best[0]]
            found = [best]
            lo, hi = best[1]
        spans = [s for s, _ in found]
        filters.append(ReadFilter(AttributeFilter(attribute, RANGE, min=lo, max=hi),
                                  min(s.confidence for s in spans), " / ".join(s.text for s in spans)))
    return filters, unread


def _cut(found: Sequence[tuple[Span, tuple[float | None, float | None]]]) -> tuple[float | None, float | None]:
    """The span of the wanted intervals, cut by the bounds."""
    intervals = [b for s, b in found if s.role == IN]
    lo, hi = _union(intervals) if intervals else (None, None)
    for span, (b_lo, b_hi) in found:
        if span.role != IN:
            lo = b_lo if lo is None else lo if b_lo is None else max(lo, b_lo)
            hi = b_hi if hi is None else hi if b_hi is None else min(hi, b_hi)
    return lo, hi


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


_LEAD_INS = NEGATION_CUES | {"like", "similar", "to", "before", "after", "since", "until", "under", "over", "than",
                             "older", "newer", "in", "made"}


def _residual(text: str, words: Sequence[Word], spans: Sequence[Span], cue_words: Iterable[int] = ()) -> str:
    """``text`` without the words of every span but the wanted values, without the negation cues before
    excluded spans and the direction and rejection words (``cue_words``). Cut out of ``text`` (never longer than
    it: what retrieval accepts, the request fitted)."""
    cues = set(cue_words)
    drop: set[int] = set()
    for span in spans:
        if span.role in (WANT, ALT):
            continue
        drop.update(range(span.start, span.end))
        if span.role in (NOT, NOTIN, LT, LE, GT, GE, REF):
            n = span.start - 1
            while n >= 0 and n not in drop and (n in cues or normalise(words[n].text) in _LEAD_INS):
                drop.add(n)
                n -= 1
    drop |= cues
    pieces, position = [], 0
    for n in sorted(drop):
        pieces.append(text[position:words[n].start])
        position = words[n].end
    pieces.append(text[position:])
    residual = re.sub(r"\s+", " ", "".join(pieces))
    return re.sub(r"\s+([,.!?;:])", r"\1", residual).strip(" ,;:-")


def reading_key(text: str) -> str:
    """The cache key of a request's reading: its words, lower case, single-spaced."""
    return " ".join(w.text.lower() for w in split_words(text))
