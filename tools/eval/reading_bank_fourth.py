"""A fourth held-out evaluation bank for the request reader, written blind.

Its templates were written from general knowledge of how people phrase movie requests in English, without
reading the reading rules, the other banks or the training families (by a helper, while the rejection rule of
``services/core/rejections.py`` was being written), so that it tests those rules fairly; the 24 clauses and 2
fillers it happened to share with the training bank or the other banks were then removed. Its
weight is on how people exclude things (the rejection before the value as well as after it) and how they bound
years (negated comparatives, phrases after the quantity, inclusive spans), in several registers: chat,
search-box fragments, texting, polite, blunt, British and American.

Rendered by :mod:`tools.core.reading_examples` (slots and roles are documented there).
"""

from __future__ import annotations

from services.core.roles import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_SPAN = f"{GE}/{LE}"

_PLAIN = (
    Clause("plain", "craving {w} tonight"),
    Clause("plain", "got a hankering for {w}"),
    Clause("plain", "{w} would be ace"),
    Clause("plain", "any {w} recs"),
    Clause("plain", "put me onto some {w} stuff"),
)

_CONJUNCTION = (
    Clause("conjunction", "{w} with a bit of {w2} thrown in"),
    Clause("conjunction", "{w} that's also {w2}"),
)

_DISJUNCTION = (
    Clause("disjunction", "either {w} or {w2}, I'm easy"),
    Clause("disjunction", "{w}, failing that {w2}"),
    Clause("disjunction", "could be {w}, could be {w2}"),
    Clause("disjunction", "{w} or {w2}, whichever's better"),
)

# The rejection before the value.
_NEGATION_BEFORE = (
    Clause("negation", "anything except {x}"),
    Clause("negation", "hard pass on {x}"),
    Clause("negation", "I can't stand {x}"),
    Clause("negation", "steer me away from {x}"),
    Clause("negation", "absolutely zero {x}"),
    Clause("negation", "I'm so over {x}"),
    Clause("negation", "don't you dare suggest {x}"),
    Clause("negation", "I'd rather not have any {x}, if that's alright"),
    Clause("negation", "ugh, not {x} again"),
    Clause("negation", "steer clear of {x} and {x2}"),
    Clause("negation", "anything that isn't {x} or {x2}"),
    Clause("negation", "{w} but hold the {x}"),
    Clause("negation", "{w}, as long as it isn't {x}"),
)

# The value first, then its dismissal.
_NEGATION_AFTER = (
    Clause("negation", "{x} is a hard no"),
    Clause("negation", "{x}? nah"),
    Clause("negation", "{x} not so much"),
    Clause("negation", "{x} can stay on the shelf"),
    Clause("negation", "{x}, I'll pass"),
    Clause("negation", "{x} just isn't my thing"),
    Clause("negation", "{x} is a dealbreaker"),
    Clause("negation", "anything {x} is off limits"),
    Clause("negation", "{x} bores me, so none of that"),
    Clause("negation", "{x}? not tonight"),
    Clause("negation", "{x} - no thanks"),
    Clause("negation", "{x} gets a big fat no from me"),
    Clause("negation", "{x} and {x2} are both off the table"),
    Clause("negation", "{x}, {x2}: don't bother"),
    Clause("negation", "{w} yes, {x} no"),
    Clause("negation", "{w} is fine, {x} isn't"),
    Clause("negation", "{w} for sure, though {x} is a no-go"),
)

_BOUNDS = (
    # Strictly before.
    Clause("bounds", "something older than {t}", LT),
    Clause("bounds", "made before {t} rolled around", LT),
    Clause("bounds", "strictly pre-{t}", LT),
    Clause("bounds", "anything predating {t}", LT),
    # Up to and including.
    Clause("bounds", "anything up to {t} inclusive", LE),
    Clause("bounds", "nothing released after {t}", LE),
    Clause("bounds", "in or before {t}", LE),
    Clause("bounds", "up until the end of {t}", LE),
    # Strictly after.
    Clause("bounds", "something later than {t}", GT),
    Clause("bounds", "any {w} newer than {t}", GT),
    Clause("bounds", "post-{t} only", GT),
    Clause("bounds", "not from {t} or earlier", GT),
    Clause("bounds", "nothing from {t} or before", GT),
    Clause("bounds", "only stuff from after {t} ended", GT),
    # From it on.
    Clause("bounds", "{t} onward only", GE),
    Clause("bounds", "in or after {t}", GE),
    Clause("bounds", "nothing b4 {t}", GE),
    # Outside it.
    Clause("bounds", "{t} stuff is a no", NOTIN),
    Clause("bounds", "anything but {t} is fine", NOTIN),
    Clause("bounds", "give {t} stuff a miss", NOTIN),
    Clause("bounds", "{t}? pass", NOTIN),
    Clause("bounds", "{t} releases are off the table", NOTIN),
    Clause("bounds", "{w} is fine but {t} ones aren't", NOTIN),
    # Within it.
    Clause("bounds", "{t} releases only", IN),
    Clause("bounds", "strictly {t} stuff", IN),
    Clause("bounds", "keep it to {t} stuff", IN),
    Clause("bounds", "nothing that isn't {t}", IN),
    Clause("bounds", "{t} titles, nothing else", IN),
    # Inclusive spans.
    Clause("bounds", "anywhere from {t} to {t2}", _SPAN),
    Clause("bounds", "no earlier than {t} and no later than {t2}", _SPAN),
    Clause("bounds", "{t} to {t2} inclusive", _SPAN),
)

_REFERENCES = (
    Clause("references", "same energy as {r}"),
    Clause("references", "something that scratches the same itch as {r}"),
    Clause("references", "{r} was brilliant, what's next"),
)

FOURTH_EVALUATION_BANK = Bank(
    clauses=(*_PLAIN, *_CONJUNCTION, *_DISJUNCTION, *_NEGATION_BEFORE, *_NEGATION_AFTER, *_BOUNDS,
             *_REFERENCES),
    prefixes=("", "hey,", "ok so", "quick one:", "movie night tonight.", "help me pick something.", "right, so"),
    suffixes=("", ", cheers", "please", "- ty", ". ideas?", ". thanks in advance"),
    joiners=(", plus", "; also", ". oh and", ". also", "— plus"),
    moods=("something to switch my brain off after a long shift", "a cosy one for a rainy sunday afternoon",
           "need something to watch with a cup of tea", "whatever will keep me awake on the night bus"),
    breaks=("... separately,", ";", ", but", ". that said,"),
)
"""Held-out requests written blind: exclusions before and after the value, and year bounds in many phrasings."""
