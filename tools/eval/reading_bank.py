"""The request reader's evaluation bank: clause families, fillers and mood phrases that training never sees.

Rendered by the same machinery as the training bank (``tools/core/reading_examples.py``) on the held-out side of
the value-combination split, so a reader is measured on new wording and new combinations at once. A unit test
checks that no clause, filler or mood phrase is shared with ``tools/train/reader_examples.py``.
"""

from __future__ import annotations

from services.core.reading import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_PLAIN = ("maybe a {w}", "i could go for a {w}", "what {w} do you have", "a solid {w} pick", "craving {w}",
          "a {w}, the good kind", "pick me a {w}")
_CONJUNCTION = ("something that's {w} as well as {w2}", "part {w}, part {w2}", "a {w}-meets-{w2} kind of film",
                "{w} combined with {w2}", "one that is {w} and also {w2}", "equal parts {w} and {w2}")
_DISJUNCTION = ("a {w}, or if not, a {w2}", "{w} would do, or {w2}", "one of {w} or {w2}",
                "whichever: {w} or {w2}", "could be {w} could be {w2}", "{w} or perhaps a {w2}")
_NEGATION = ("as long as it isn't {x}", "please no more {x}", "steer clear of {x}", "i can't stand {x}",
             "leave out the {x}", "definitely not {x}", "zero {x}", "without any {x} or {x2}",
             "no {x}, no {x2}", "not in the mood for {x}", "anything that's not {x}")
_BOUNDS = (
    ("dating from {t}", IN), ("straight out of {t}", IN), ("shot in {t}", IN), ("a classic from {t}", IN),
    ("but nothing dating from {t}", NOTIN), ("as long as it's not from {t}", NOTIN), ("skip {t} ones", NOTIN),
    ("made earlier than {t}", LT), ("predating {t}", LT), ("cheaper than {t}", LT),
    ("no newer than {t}", LE), ("{t} at the latest", LE), ("not more than {t}", LE),
    ("released after {t}", GT), ("more recent than {t}", GT), ("pricier than {t}", GT),
    ("{t} and later", GE), ("{t} or after", GE), ("from {t} forward", GE), ("not less than {t}", GE),
)
_REFERENCES = ("a bit like {r}", "in the style of {r}", "for fans of {r}", "close to {r}",
               "think {r} or {r2}", "something resembling {r}", "what would i like if i enjoyed {r} and {r2}")

EVALUATION_BANK = Bank(
    clauses=(
        *(Clause("plain", t) for t in _PLAIN),
        *(Clause("conjunction", t) for t in _CONJUNCTION),
        *(Clause("disjunction", t) for t in _DISJUNCTION),
        *(Clause("negation", t) for t in _NEGATION),
        *(Clause("bounds", t, role) for t, role in _BOUNDS),
        *(Clause("references", t) for t in _REFERENCES),
    ),
    prefixes=("", "", "yo, ", "ok so ", "help me pick ", "tonight i want ", "is there ", "any chance of ",
              "we're looking for "),
    suffixes=("", "", " pls", " ?", " - thanks in advance", " for movie night", " x"),
    joiners=(", though ", " and also ", ", yet ", "... ", " + "),
    moods=("anything to make a long flight go faster", "something for a lazy sunday", "your best pick",
           "a hidden gem", "something my parents would enjoy"),
)

# A second held-out bank, written on 2026-12-06 before the reader trained on the widened training bank was measured
# (the first bank's misses had been read by then, so it is no longer blind to the training bank's authors). Same
# machinery, held-out value combinations; no clause, filler or mood shared with training (a unit test checks).
_PLAIN_2 = ("is a {w} too much to ask", "after a decent {w}", "{w} would hit the spot", "put on a {w}",
            "bring on the {w}", "something in the {w} department", "a nice {w}", "my pick would be {w}")
_CONJUNCTION_2 = ("{w} with {w2} thrown in", "{w}, {w2} as well", "a {w} plus some {w2}",
                  "{w} that also counts as {w2}", "a blend of {w} and {w2}", "{w} and {w2} at the same time")
_DISJUNCTION_2 = ("{w} or {w2} are both fine", "{w}, or {w2} at a push", "a {w}, failing that a {w2}",
                  "{w} - or {w2}", "open to {w} or {w2}", "either one: {w} or {w2}")
_NEGATION_2 = ("anything apart from {x}", "no {x} for me", "not keen on {x}", "{x} is a no", "let's avoid {x}",
               "i'm over {x}", "nothing of the {x} sort", "no {x} this evening", "not {x} again",
               "{x} and {x2} are out")
_BOUNDS_2 = (
    ("made around {t}", IN), ("belonging to {t}", IN), ("not from around {t}", NOTIN),
    ("that came out before {t}", LT), ("preceding {t}", LT), ("{t} or older", LE),
    ("no more recent than {t}", LE), ("that came out after {t}", GT), ("anything newer than {t}", GT),
    ("following {t}", GT), ("{t} or thereafter", GE), ("ever since {t}", GE),
)
_REFERENCES_2 = ("cut from the same cloth as {r}", "{r} was great, more please", "along the same lines as {r} or {r2}",
                 "matching {r}", "the closest thing to {r}", "in a similar mood to {r}", "my all-time favourite: {r}",
                 "watched {r} last night")

SECOND_EVALUATION_BANK = Bank(
    clauses=(
        *(Clause("plain", t) for t in _PLAIN_2),
        *(Clause("conjunction", t) for t in _CONJUNCTION_2),
        *(Clause("disjunction", t) for t in _DISJUNCTION_2),
        *(Clause("negation", t) for t in _NEGATION_2),
        *(Clause("bounds", t, role) for t, role in _BOUNDS_2),
        *(Clause("references", t) for t in _REFERENCES_2),
    ),
    prefixes=("", "", "quick question: ", "for tonight, ", "my partner wants ", "right, ", "any ideas for "),
    suffixes=("", "", " cheers", " ok?", " thank you!", " now"),
    joiners=(", however ", " & also ", "; and ", ", oh and "),
    moods=("something for a quiet evening", "a crowd pleaser", "what's everyone watching"),
)
