"""A sixth held-out evaluation bank for the request reader, written blind.

Its templates were written from general knowledge of how people phrase movie requests in English, without reading
the reading rules, the other banks or the training families (by a helper, 2026-12-07, eighth session), so that it
measures the served reader on wording nobody tuned it to; the 11 clauses and 5 fillers it happened to share with the
training bank or the other banks were then removed (a few fresh clauses were added to keep every construct and role
covered, and checked the same way), before the reader was run on it. It leans on spoken and typed registers (British
understatement, teen slang, forum shorthand, non-native word order, polite indirect requests), on alternatives offered
in many ways besides a bare "or" ("X would do, Y would too", "X, or failing that Y"), on exclusions whose cue comes
before, after or around the value (two excluded values, a wanted value beside an excluded one), and on time bounds
over every role, including a two-quantity span.

Rendered by :mod:`tools.core.reading_examples` (slots and roles are documented there).
"""

from __future__ import annotations

from services.core.roles import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_SPAN = f"{GE}/{LE}"

_PLAIN = (
    Clause("plain", "any {w} worth watching?"),
    Clause("plain", "in the mood for some {w}"),
    Clause("plain", "point me at a good {w}"),
    Clause("plain", "what {w} should i put on"),
    Clause("plain", "i could go for a {w} right now"),
    Clause("plain", "sort me out with a {w}, mate"),
    Clause("plain", "i search a film of {w}"),
    Clause("plain", "top {w} picks?"),
)
_CONJUNCTION = (
    Clause("conjunction", "a {w} with plenty of {w2} thrown in"),
    Clause("conjunction", "has to be {w} and {w2} both"),
    Clause("conjunction", "a {w} that doubles as {w2}"),
    Clause("conjunction", "{w} & {w2} combo"),
    Clause("conjunction", "{w} meets {w2}"),
)
_DISJUNCTION = (
    Clause("disjunction", "{w} would do, {w2} would too"),
    Clause("disjunction", "happy with {w}, equally happy with {w2}"),
    Clause("disjunction", "{w}, or failing that {w2}"),
    Clause("disjunction", "maybe {w}, maybe {w2}"),
    Clause("disjunction", "whether it's {w} or {w2}, i'm game"),
    Clause("disjunction", "{w} if you've got it, otherwise {w2}"),
    Clause("disjunction", "{w} works, so does {w2}"),
    Clause("disjunction", "{w}? {w2}? either one"),
)
_NEGATION_BEFORE = (
    Clause("negation", "no {x} whatsoever please"),
    Clause("negation", "skip anything {x}"),
    Clause("negation", "i really can't stand {x}"),
    Clause("negation", "please, no {x} and no {x2}"),
    Clause("negation", "not a fan of {x} or {x2}"),
    Clause("negation", "don't show me {x}"),
    Clause("negation", "i ain't watching no {x}"),
    Clause("negation", "{w} but leave out the {x}"),
    Clause("negation", "{w}, though nothing {x}"),
    Clause("negation", "{w} with no {x} in it"),
    Clause("negation", "please to avoid the {x}"),
    Clause("negation", "no way am i watching {x}"),
    Clause("negation", "rule out {x}"),
    Clause("negation", "give {x} a miss"),
    Clause("negation", "not feeling {x} at all"),
)
_NEGATION_AFTER = (
    Clause("negation", "{x} is not my thing"),
    Clause("negation", "{x}, yuck"),
    Clause("negation", "{x} makes me cringe"),
    Clause("negation", "{x} and {x2} are a no for me"),
    Clause("negation", "{x} - not today, thanks"),
    Clause("negation", "{x} need not apply"),
    Clause("negation", "{x} is dead to me"),
    Clause("negation", "{x} i'm sick of"),
    Clause("negation", "{x}: avoid"),
    Clause("negation", "{x} and {x2}, i'll pass on both"),
    Clause("negation", "{x} is so not my vibe"),
    Clause("negation", "{x} isn't my cup of tea"),
    Clause("negation", "{x} i don't like it"),
    Clause("negation", "{w} please, but {x} never"),
)
_BOUNDS = (
    Clause("bounds", "{w} dating from before {t}", LT),
    Clause("bounds", "strictly prior to {t}", LT),
    Clause("bounds", "earlier than {t}, please", LT),
    Clause("bounds", "{w} no later than {t}", LE),
    Clause("bounds", "nothing after {t}", LE),
    Clause("bounds", "{w} not made after {t}", LE),
    Clause("bounds", "{w} that came out after {t}", GT),
    Clause("bounds", "{w} from after {t}", GT),
    Clause("bounds", "{w}, but only stuff after {t}", GT),
    Clause("bounds", "{w} from {t} on", GE),
    Clause("bounds", "nothing before {t}", GE),
    Clause("bounds", "starting from {t}", GE),
    Clause("bounds", "{t} {w}", IN),
    Clause("bounds", "{w} that's from {t}", IN),
    Clause("bounds", "{w} out of {t}", IN),
    Clause("bounds", "{w}, anything but {t}", NOTIN),
    Clause("bounds", "not from {t} please", NOTIN),
    Clause("bounds", "{w} outside of {t}", NOTIN),
    Clause("bounds", "{w} dated {t} through {t2}", _SPAN),
    Clause("bounds", "between {t} and {t2} inclusive", _SPAN),
    Clause("bounds", "{w} made somewhere between {t} and {t2}", _SPAN),
)
_REFERENCES = (
    Clause("references", "more in the vein of {r}"),
    Clause("references", "anything along the lines of {r}"),
    Clause("references", "{r} was great, what else is like it"),
    Clause("references", "if i liked {r}, what should i watch next"),
    Clause("references", "films comparable to {r}"),
)

SIXTH_EVALUATION_BANK = Bank(
    clauses=(*_PLAIN, *_CONJUNCTION, *_DISJUNCTION, *_NEGATION_BEFORE, *_NEGATION_AFTER, *_BOUNDS, *_REFERENCES),
    prefixes=("", "hey folks,", "hiya,", "help me out here,"),
    suffixes=("", "ta very much", "any ideas?", "pls and ty", "no rush"),
    joiners=(" and ideally", ". on top of that", " - oh and", " and while you're at it"),
    moods=(
        "something to switch my brain off to",
        "need cheering up after a rubbish day",
        "a film to fall asleep in front of",
        "something to watch with my gran",
    ),
    breaks=(". other than that,", "! also,", ". besides that,", ". separately,"),
)
"""Held-out requests written blind: fresh registers, varied alternatives and exclusions, bounds over every role."""
