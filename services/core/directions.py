"""Direction words around a quantity: whether a request bounds it from below or above.

The tagger labels a quantity's words with a role (in it, not in it, before, up to, after, from on), learnt from the
wording its training families use. Comparatives are a small closed class of English, and the wording the tagger
never saw is where it fails ("from 1985 forward" read as the year 1985, "more recent than 1960" as before it,
"the 90s at the latest" as after them). When the words right before or after a quantity span are a direction
phrase of the table below, that phrase decides the role; otherwise the tagger's role stands.

* Phrases before the quantity ("more recent than", "prior to") and after it ("or earlier", "onwards") are matched
  longest first, between the neighbouring spans; a few words between phrase and quantity change nothing ("before
  the 80s", "pre-1960").
* A negation right before a comparative turns it round: "not before" is from on, "no more recent than" up to,
  "nothing made after" up to, "nothing from 1987 or later" before 1987 (a few verbs and nouns may stand between:
  :data:`_BETWEEN`).
* With phrases on both sides pointing the same way ("since 1990 onwards", "from as early as 1985 on") the one
  after the quantity decides; phrases that point opposite ways leave the tagger's role.

Nothing here is about movies: the phrases are the comparatives English uses for years, prices and counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from services.core.lexicon import normalise
from services.core.roles import GE, GT, LE, LT, QUANTITY_ROLES

S = TypeVar("S")


def _phrases(table: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    return {tuple(phrase.split()): role for phrase, role in table.items()}


BEFORE: dict[tuple[str, ...], str] = _phrases({
    # strictly below
    "before": LT, "b4": LT, "earlier than": LT, "older than": LT, "prior to": LT, "predating": LT, "preceding": LT,
    "pre": LT, "ahead of": LT, "less than": LT, "fewer than": LT, "lower than": LT, "cheaper than": LT,
    "under": LT, "below": LT, "beneath": LT, "sooner than": LT,
    # up to and including
    "up to": LE, "until": LE, "till": LE, "til": LE, "up until": LE, "through": LE, "thru": LE,
    "at most": LE, "at the latest": LE, "on or before": LE, "in or before": LE, "or before": LE,
    "ending": LE, "ending in": LE, "ending with": LE, "not exceeding": LE, "as late as": LE,
    # strictly above
    "after": GT, "later than": GT, "newer than": GT, "more recent than": GT, "younger than": GT,
    "following": GT, "post": GT, "postdating": GT, "more than": GT, "greater than": GT, "higher than": GT,
    "pricier than": GT, "dearer than": GT, "over": GT, "above": GT, "beyond": GT,
    # from on
    "since": GE, "ever since": GE, "starting": GE, "starting in": GE, "starting from": GE, "starting with": GE,
    "beginning": GE, "beginning in": GE, "beginning with": GE, "as of": GE, "at least": GE,
    "at the earliest": GE, "on or after": GE, "in or after": GE, "or after": GE, "as early as": GE,
    "from as early as": GE,
})
"""Direction phrases that stand right before a quantity ("made before 1960")."""

AFTER: dict[tuple[str, ...], str] = _phrases({
    "or earlier": LE, "and earlier": LE, "or before": LE, "and before": LE, "or older": LE, "and older": LE,
    "at the latest": LE, "or less": LE, "and less": LE, "or under": LE, "and under": LE, "or below": LE,
    "and below": LE, "at most": LE, "tops": LE, "max": LE, "or prior": LE, "or cheaper": LE, "or fewer": LE,
    "or sooner": LE, "backwards": LE,
    "or later": GE, "and later": GE, "or after": GE, "and after": GE, "or newer": GE, "and newer": GE,
    "or more recent": GE, "and more recent": GE, "onwards": GE, "onward": GE, "on": GE, "forward": GE,
    "forwards": GE, "and up": GE, "and upwards": GE, "and beyond": GE, "or more": GE, "or above": GE,
    "and above": GE, "or over": GE, "at the earliest": GE, "or thereafter": GE, "and thereafter": GE,
    "and onwards": GE, "and onward": GE, "or higher": GE, "or younger": GE, "on out": GE,
})
"""Direction phrases that stand right after a quantity ("1985 or later")."""

NEGATIONS = frozenset({"not", "no", "nothing", "never", "none", "nt", "dont", "isnt", "arent", "wasnt", "werent"})
_BETWEEN = frozenset({"made", "released", "shot", "filmed", "produced", "dating", "dated", "from", "anything",
                      "something", "that", "which", "came", "come", "comes", "out", "is", "was", "are", "were", "be",
                      "movies", "films", "movie", "film", "ones", "one", "stuff", "any", "a", "an", "the", "want",
                      "need", "see", "watch", "show", "me", "give", "recommend", "suggest", "i"})
"""Words that may stand between a negation and the comparative it turns round ("nothing made after")."""
_SKIPPED = frozenset({"the", "a", "an", "-", "year", "years", "of"})
"""Words between a phrase and its quantity that do not change it ("before the 80s", "pre-1960")."""
_LOOKING_FOR = frozenset({"im", "am", "were", "re", "are", "is", "was", "s"})
"""Words before "after" that make it "looking for" ("I'm after the 80s", "we're after a western")."""
_NEEDS_FROM = frozenset({("on",), ("on", "out")})
_OPPOSITE = {LT: GE, LE: GT, GT: LE, GE: LT}
_KIND = {LT: "below", LE: "below", GT: "above", GE: "above"}
_LONGEST = max(len(p) for p in (*BEFORE, *AFTER))


@dataclass(frozen=True)
class Direction:
    """The role direction words give a quantity span, and the indices of those words (not the quantity's)."""

    role: str
    cue: tuple[int, ...]


def direction(words: Sequence[str], start: int, end: int, *, left_limit: int = 0,
              right_limit: int | None = None) -> Direction | None:
    """The direction the words around ``words[start:end]`` (a quantity span) give it, or None if none does.

    ``words``: the request's words as written; ``left_limit``/``right_limit``: where the neighbouring spans
    end and begin (the context never reaches into them)."""
    norm = [normalise(w) or w for w in words]
    right_limit = len(norm) if right_limit is None else right_limit
    before = _before(norm, start, left_limit)
    after = _after(norm, start, end, right_limit)
    if before and after:
        if _KIND[before.role] != _KIND[after.role]:
            return None
        return Direction(after.role, before.cue + after.cue)
    if after is not None:
        # A negation before the quantity turns a phrase after it round too ("nothing from 1987 or later").
        negation = _negation_before(norm, _skip_back(norm, start, left_limit), left_limit)
        if negation is not None:
            return Direction(_OPPOSITE[after.role], (negation, *after.cue))
    return after or before


def directed_roles(words: Sequence[str], spans: Sequence[S]) -> tuple[list[S], dict[int, tuple[int, ...]]]:
    """``spans`` (the tagger's, with ``role``, ``start``, ``end``) with each quantity span's role set by the
    direction words around it, and those words' indices by the start of the span they direct. Two quantities a
    word or two apart ("from 1980 to 1990", "1980 through 1990") are one range the tagger reads as a pair: their
    inner sides are not looked at."""
    out: list[S] = []
    cues: dict[int, tuple[int, ...]] = {}
    for n, span in enumerate(spans):
        if span.role in QUANTITY_ROLES:
            left = spans[n - 1].end if n else 0
            right = spans[n + 1].start if n + 1 < len(spans) else len(words)
            if n and _paired(spans[n - 1], span.start - left):
                left = span.start
            if n + 1 < len(spans) and _paired(spans[n + 1], right - span.end):
                right = span.end
            found = direction(words, span.start, span.end, left_limit=left, right_limit=right)
            if found is not None:
                cues[span.start] = found.cue
                if found.role != span.role:
                    span = replace(span, role=found.role)
        out.append(span)
    return out, cues


def _paired(other, gap: int) -> bool:
    """Whether a neighbouring span is the other end of a range ("from 1980 to 1990")."""
    return other.role in QUANTITY_ROLES and gap <= 2


def _before(norm: Sequence[str], start: int, limit: int) -> Direction | None:
    n = _skip_back(norm, start, limit)
    for length in range(min(_LONGEST, n - limit), 0, -1):
        phrase = tuple(norm[n - length:n])
        if phrase not in BEFORE:
            continue
        role, first = BEFORE[phrase], n - length
        if phrase == ("after",) and first > limit and norm[first - 1] in _LOOKING_FOR:
            return None  # "I'm after the 1930s": looking for them
        # A negation before the comparative turns it round ("not before", "no more recent than", "nothing made
        # after"), with a few verbs and nouns allowed between them.
        negation = _negation_before(norm, first, limit)
        if negation is not None:
            return Direction(_OPPOSITE[role], tuple(range(negation, n)))
        return Direction(role, tuple(range(first, n)))
    return None


def _after(norm: Sequence[str], start: int, end: int, limit: int) -> Direction | None:
    for length in range(min(_LONGEST, limit - end), 0, -1):
        phrase = tuple(norm[end:end + length])
        if phrase not in AFTER:
            continue
        # "on" after a quantity is a direction only after "from" / "since" ("from 1985 on", not "1985 on video").
        n = _skip_back(norm, start, 0)
        if phrase in _NEEDS_FROM and (n == 0 or norm[n - 1] not in ("from", "since")):
            continue
        return Direction(AFTER[phrase], tuple(range(end, end + length)))
    return None


def _negation_before(norm: Sequence[str], position: int, limit: int) -> int | None:
    """The index of a negation before ``position`` with only :data:`_BETWEEN` words after it, or None."""
    m = position
    while m > limit and norm[m - 1] in _BETWEEN:
        m -= 1
    return m - 1 if m > limit and norm[m - 1] in NEGATIONS else None


def _skip_back(norm: Sequence[str], start: int, limit: int) -> int:
    n = start
    while n > limit and norm[n - 1] in _SKIPPED:
        n -= 1
    return n
