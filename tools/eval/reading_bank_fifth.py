"""A fifth held-out evaluation bank for the request reader, written blind.

Its templates were written from general knowledge of how people phrase movie requests in English, without reading
the reading rules, the other banks or the training families (by a helper, 2026-12-06, seventh session), so that it
measures the served reader on wording nobody tuned it to; the 20 clauses and 5 fillers it happened to share with the
training bank or the other banks were then removed, before the reader was run on it. It leans on everyday registers
(chatty, terse search-box, texting shorthand, polite, grumpy, British, non-native) and on exclusion cues that avoid
the stock phrasings, with time bounds spread over every role in both common and less common wordings.

Rendered by :mod:`tools.core.reading_examples` (slots and roles are documented there).
"""

from __future__ import annotations

from services.core.roles import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_SPAN = f"{GE}/{LE}"

_PLAIN = (
    Clause("plain", "got any good {w}?"),
    Clause("plain", "{w} recs pls"),
    Clause("plain", "looking for a decent {w}"),
    Clause("plain", "could you suggest some {w}"),
    Clause("plain", "fancy a {w} tonight"),
    Clause("plain", "please recommend me {w}, i want to watch"),
    Clause("plain", "{w}, whatever's good"),
)
_CONJUNCTION = (
    Clause("conjunction", "something that's {w} and {w2} at the same time"),
    Clause("conjunction", "{w} plus a bit of {w2}"),
)
_DISJUNCTION = (
    Clause("disjunction", "either {w} or {w2}, don't mind which"),
    Clause("disjunction", "{w}/{w2}, whichever"),
    Clause("disjunction", "i'd happily take {w} or {w2}"),
)
_NEGATION_BEFORE = (
    Clause("negation", "please spare me the {x}"),
    Clause("negation", "i'm done with {x} for now"),
    Clause("negation", "nothing in the {x} department, ta"),
    Clause("negation", "hold the {x}"),
    Clause("negation", "not in the mood for {x} tonight"),
    Clause("negation", "{w}, minus the {x}"),
    Clause("negation", "pls nothing w/ {x} in it"),
    Clause("negation", "i'd rather avoid {x}"),
    Clause("negation", "dont want any {x} or {x2}"),
    Clause("negation", "kindly exclude {x}"),
    Clause("negation", "{w} is fine as long as it isn't {x}"),
    Clause("negation", "allergic to {x} lol"),
    Clause("negation", "exclude: {x}"),
    Clause("negation", "{w} that isn't remotely {x}"),
    Clause("negation", "i beg you, zero {x}"),
)
_NEGATION_AFTER = (
    Clause("negation", "{x} bores me to tears"),
    Clause("negation", "{x}? hard pass"),
    Clause("negation", "{x} and {x2} are off the table"),
    Clause("negation", "{x} is a no-go"),
    Clause("negation", "{x} i can do without"),
    Clause("negation", "{x} stuff, not interested"),
    Clause("negation", "{x} - nope"),
    Clause("negation", "{w} please, {x} not so much"),
    Clause("negation", "{x} really doesn't do it for me"),
    Clause("negation", "{x} films leave me cold"),
    Clause("negation", "{x} and {x2}, neither appeals"),
    Clause("negation", "{x} i could never sit through"),
    Clause("negation", "{x} is banned in this house"),
    Clause("negation", "{x} gets a hard no from me"),
)
_BOUNDS = (
    Clause("bounds", "{w} that predates {t}", LT),
    Clause("bounds", "anything pre-{t}", LT),
    Clause("bounds", "{w} released earlier than {t}", LT),
    Clause("bounds", "{w} from {t} or earlier", LE),
    Clause("bounds", "up to and including {t}", LE),
    Clause("bounds", "out by {t} at the latest", LE),
    Clause("bounds", "{w} released after {t}", GT),
    Clause("bounds", "post-{t} {w}", GT),
    Clause("bounds", "{w} made later than {t}", GT),
    Clause("bounds", "anything since {t}", GE),
    Clause("bounds", "{w} from {t} onwards", GE),
    Clause("bounds", "{w}, {t} and newer", GE),
    Clause("bounds", "{w} released in {t}", IN),
    Clause("bounds", "something made in {t}", IN),
    Clause("bounds", "{w} that came out during {t}", IN),
    Clause("bounds", "anything not made in {t}", NOTIN),
    Clause("bounds", "{w}, just not {t}", NOTIN),
    Clause("bounds", "{t} is off limits", NOTIN),
    Clause("bounds", "{w} from {t} up to {t2}", _SPAN),
    Clause("bounds", "{w} in the range {t} to {t2}", _SPAN),
)
_REFERENCES = (
    Clause("references", "loved {r}, more like that please"),
    Clause("references", "similar vibe to {r}"),
    Clause("references", "anything that scratches the same itch as {r}"),
)

FIFTH_EVALUATION_BANK = Bank(
    clauses=(*_PLAIN, *_CONJUNCTION, *_DISJUNCTION, *_NEGATION_BEFORE, *_NEGATION_AFTER, *_BOUNDS, *_REFERENCES),
    prefixes=("", "hi there,", "evening all,", "yo", "hello,"),
    suffixes=("", "thanks!", "cheers", "ty", "if you can", "much appreciated.", "lol"),
    joiners=(", and", ". also,", ". and", " and also", " +"),
    moods=(
        "something cosy for a rainy sunday",
        "need a pick-me-up after a long week",
        "a film for a lazy night in with snacks",
        "something that'll make me think",
    ),
    breaks=(". anyway,", ". apart from that,", ". oh, and", " -- also"),
)
"""Held-out requests written blind: everyday registers and fresh exclusion cues, time bounds over every role."""
