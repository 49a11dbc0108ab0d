"""Which wanted values are alternatives: a request that names several values of one attribute wants all of them
("a comedy and a romance", "a dark, funny drama") unless the words between them offer one instead of another ("a
western or a war film", "a western, failing that sci-fi", "could be suspense, could be a war film"), which is one
"any of" filter (:func:`services.core.reading.read`). Nothing here is about a catalog: only English words that offer
alternatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.core.lexicon import normalise
from services.core.roles import ALT

# Words that join alternatives: wanted values of one attribute with one of these between them are "any of".
ALTERNATIVE_WORDS = frozenset({"or", "/"})
# Phrases that offer one wanted value instead of another ("a western, failing that sci-fi").
ALTERNATIVE_PHRASES = frozenset({("failing", "that"), ("failing",), ("otherwise",), ("or", "else"), ("else",),
                                 ("if", "not"), ("alternatively",), ("at", "a", "pinch")})
# Hedges that offer alternatives when they stand before each of them ("could be suspense, could be a war film").
PARALLEL_HEDGES = frozenset({("could", "be"), ("might", "be"), ("maybe",), ("perhaps",), ("possibly",)})
_HEDGE_FILLERS = frozenset({",", "-", "–", "—", "...", "a", "an", "the", "some", "then", "something", "just"})
# Words that separate two groups of alternatives ("a comedy or a drama, and a western or a war film").
GROUP_BREAK_WORDS = frozenset({"and", ";", "but", "also", "plus"})


def or_clusters(found: Sequence, words: Sequence, occupied: set[int]) -> list[list]:
    """``found`` ((span, payload) pairs) in word order, grouped: consecutive spans with an alternative word ("or",
    "/") or phrase (:func:`_hedged`) between them are one group, and so are consecutive ``ALT`` spans unless a word
    such as "and" separates them. ``words``: the request's words (with ``text``); ``occupied``: the indices of words
    in other spans, which keep two spans apart."""
    ordered = sorted(found, key=lambda x: x[0].start)
    clusters: list[list] = []
    for entry in ordered:
        if clusters:
            previous = clusters[-1][-1][0]
            gap = range(previous.end, entry[0].start)
            forms = _forms(words[n] for n in gap)
            between = set(forms)
            apart = any(n in occupied for n in gap)
            alternatives = previous.role == entry[0].role == ALT and not between & GROUP_BREAK_WORDS
            if previous == entry[0] or (not apart and (
                    between & ALTERNATIVE_WORDS or alternatives
                    or _hedged(_forms(words[max(0, previous.start - 4):previous.start]), forms))):
                clusters[-1].append(entry)
                continue
        clusters.append([entry])
    return _lone_alternatives_joined(clusters, occupied)


def _lone_alternatives_joined(clusters: list[list], occupied: set[int]) -> list[list]:
    """Alternatives offered one at a time side by side are one group even across "and" or "but" ("torn between a
    comedy and a drama, either would do", "leaning horror but honestly drama would do"): those words part groups
    of alternatives ("a comedy or a drama, and a western or a war film"), never two lone ``ALT`` spans."""
    out: list[list] = []
    joinable = False  # the last group is lone alternatives only
    for cluster in clusters:
        alone = len({span for span, _ in cluster}) == 1 and cluster[0][0].role == ALT
        if alone and joinable and not any(n in occupied for n in range(out[-1][-1][0].end, cluster[0][0].start)):
            out[-1] = out[-1] + cluster
            continue
        out.append(list(cluster))
        joinable = alone
    return out


def _forms(words: Iterable) -> list[str]:
    return [normalise(w.text) or w.text for w in words]


def _hedged(before: Sequence[str], between: Sequence[str]) -> bool:
    """Whether the words between two wanted values offer the second instead of the first without an "or" ("a
    western, failing that sci-fi", "a comedy, otherwise a drama"), or repeat the hedge that stands before the
    first ("could be suspense, could be a war film"; not "a comedy, maybe a romance", which wants both)."""
    rest = tuple(w for w in between if w not in _HEDGE_FILLERS)
    if rest in PARALLEL_HEDGES:
        lead = tuple(w for w in before if w not in _HEDGE_FILLERS)
        return lead[-len(rest):] == rest
    n = 0
    while n < len(rest):
        size = next((k for k in (3, 2, 1) if tuple(rest[n:n + k]) in ALTERNATIVE_PHRASES), 0)
        if not size:
            return False
        n += size
    return bool(rest)
