"""A seventh held-out evaluation bank for the request reader, written blind.

Written by a helper on 2026-12-07 (tenth session) from general knowledge of how people phrase movie requests,
without reading the reading rules, the other banks or the training families. It leans on chatty and idiomatic
registers (British "fancy a bit of", "ta", "the missus"; American "rn", "thru", "gotta"), polite indirect asks,
grumpy refusals, non-native word order, and constructions that avoid the textbook cue words: refusals before the
value ("spare me the", "steer well clear of", "neither ... nor") and after it ("is a dealbreaker", "need not
apply", "? nah, pass"), alternatives by "whichever", "failing that", "could be ... could be", wanted-together
values by "meets", "half ... half", "with a healthy dose of", bounds by "prior to", "at the very latest",
"pre-"/"post-", "onwards", "to the present day", and references by "in the vein of", "vibes but make it".

Rendered by :mod:`tools.core.reading_examples` (slots and roles are documented there).
"""

from __future__ import annotations

from services.core.roles import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_SPAN = f"{GE}/{LE}"
_BOTH_IN = f"{IN}/{IN}"
_OPEN_SPAN = f"{GT}/{LT}"

_PLAIN = (
    Clause("plain", "fancy a bit of {w} tonight"),
    Clause("plain", "craving {w} rn"),
    Clause("plain", "got any decent {w} going?"),
    Clause("plain", "would you be so kind as to point me towards some {w}"),
    Clause("plain", "recommend me please some good {w} for watching"),
    Clause("plain", "{w} pls, i'm begging"),
    Clause("plain", "what's your top {w} pick at the moment"),
    Clause("plain", "me and the missus are after {w}"),
)

_CONJUNCTION = (
    Clause("conjunction", "half {w}, half {w2}"),
    Clause("conjunction", "{w} with a healthy dose of {w2}"),
    Clause("conjunction", "it's gotta be both {w} and {w2}, not one or the other"),
    Clause("conjunction", "something {w} with some {w2} thrown in"),
    Clause("conjunction", "a mix of {w}, {w2} and {w3} if such a thing exists"),
    Clause("conjunction", "{w} + {w2} + {w3} all rolled into one"),
    Clause("conjunction", "ideally it ticks the {w} box and the {w2} box"),
)

_DISJUNCTION = (
    Clause("disjunction", "{w}, {w2}, whichever"),
    Clause("disjunction", "either {w} or {w2} works for me"),
    Clause("disjunction", "torn between {w} and {w2}, either would do"),
    Clause("disjunction", "{w} maybe? or {w2}"),
    Clause("disjunction", "{w} / {w2} / {w3}, not fussy"),
    Clause("disjunction", "one of {w}, {w2} or {w3}, don't mind which"),
    Clause("disjunction", "whether it's {w} or {w2} doesn't really matter"),
    Clause("disjunction", "{w} if you've got any, else {w2}"),
    Clause("disjunction", "leaning {w} but honestly {w2} would do just as well"),
    Clause("disjunction", "any one of the following: {w}, {w2}, {w3}"),
    Clause("disjunction", "i'd take {w} just as happily as {w2}, only need the one"),
)

_NEGATION = (
    # the refusal cue before the value
    Clause("negation", "please, nothing that even smells like {x}"),
    Clause("negation", "i'm so over {x} right now"),
    Clause("negation", "keep anything {x} well away from me"),
    Clause("negation", "steer well clear of {x}"),
    Clause("negation", "zero {x} whatsoever"),
    Clause("negation", "not in the mood for {x} at all"),
    Clause("negation", "can we skip the {x} this time"),
    Clause("negation", "i refuse to sit through any more {x}"),
    Clause("negation", "rule out {x} entirely"),
    Clause("negation", "neither {x} nor {x2}, ta"),
    Clause("negation", "without any {x} or {x2} in it"),
    Clause("negation", "some {w} but hold the {x}"),
    Clause("negation", "{w} is great, just leave out the {x}"),
    # the refusal cue after the value
    Clause("negation", "{x}? nah, pass"),
    Clause("negation", "{x} is a dealbreaker for me"),
    Clause("negation", "{x} is off the table tonight"),
    Clause("negation", "{x} really isn't my cup of tea"),
    Clause("negation", "{x} i can happily live without"),
    Clause("negation", "{x} is banned in this house lol"),
    Clause("negation", "anything {x} is an automatic no"),
    Clause("negation", "{x} bores me to tears so skip that"),
    Clause("negation", "{x} and {x2} are both out"),
    Clause("negation", "{x} or {x2}? not a chance"),
    Clause("negation", "{w} yes, {x} absolutely not"),
)

_BOUNDS = (
    # made in that time
    Clause("bounds", "{t} {w} if possible", IN),
    Clause("bounds", "something that just screams {t}", IN),
    Clause("bounds", "{w} straight out of {t}", IN),
    # not from that time
    Clause("bounds", "nothing from {t} thanks", NOTIN),
    Clause("bounds", "{t} stuff doesn't do it for me", NOTIN),
    Clause("bounds", "any {w} as long as it isn't from {t}", NOTIN),
    # before, strictly
    Clause("bounds", "pre-{t} {w}", LT),
    Clause("bounds", "made prior to {t}", LT),
    Clause("bounds", "something that predates {t}", LT),
    # up to and including
    Clause("bounds", "no later than {t} please", LE),
    Clause("bounds", "{w} from {t} at the very latest", LE),
    # after, strictly
    Clause("bounds", "anything that came out later than {t}", GT),
    # from then on, inclusive
    Clause("bounds", "{w}, {t} onwards", GE),
    Clause("bounds", "from {t} to the present day", GE),
    Clause("bounds", "nothing made earlier than {t}", GE),
    # two quantities
    Clause("bounds", "{w}, {t} thru {t2}", _SPAN),
    Clause("bounds", "{w} from {t} or maybe {t2}, either's good", _BOTH_IN),
    Clause("bounds", "later than {t} yet earlier than {t2}", _OPEN_SPAN),
)

_REFERENCES = (
    Clause("references", "something in the vein of {r}"),
    Clause("references", "along the same lines as {r}"),
    Clause("references", "just finished {r} and want more of that"),
    Clause("references", "{r} vibes but make it {w}"),
    Clause("references", "a cross between {r} and {r2}"),
    Clause("references", "if you loved {r}, what would you watch next"),
    Clause("references", "same energy as {r} please"),
    Clause("references", "whatever's closest to {r}, {w} ideally"),
)

SEVENTH_EVALUATION_BANK = Bank(
    clauses=(*_PLAIN, *_CONJUNCTION, *_DISJUNCTION, *_NEGATION, *_BOUNDS, *_REFERENCES),
    prefixes=("", "hey!", "quick question -", "right,"),
    suffixes=("", ". ta very much", " thx in advance", ". whatcha got?", "!!"),
    joiners=(", on top of that", " - and", ". and while you're at it,", " &"),
    moods=(
        "need something to switch my brain off after a brutal week",
        "whats good for a rainy sunday afternoon",
        "something i can have on while i fold laundry",
        "got a few hours to kill, surprise me",
        "put something on that won't make me reach for my phone",
    ),
    breaks=(". that aside,", "! anyway,", ". beyond that,", ". otherwise,"),
)
"""Held-out requests written blind: chatty, idiomatic and indirect phrasings with uncommon cue words."""
