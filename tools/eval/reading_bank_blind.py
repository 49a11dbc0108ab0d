"""A third, held-out evaluation bank of request templates, written blind.

Its clauses were written from everyday English (by a helper that did not read the training families, the other
evaluation banks or the reading rules), so that it measures rules written afterwards fairly; the clauses and
fillers it happened to share with the training bank or the other two banks were then removed (48 clauses, e.g.
"before {t}", "no {x}"), so what remains is wording no training family uses. It renders through the shared machinery
(``tools/core/reading_examples.py``): ``{w}``/``{w2}`` wanted values, ``{x}`` excluded values, ``{t}``/``{t2}``
quantities whose role is the clause's, ``{r}``/``{r2}`` titles.

Notes on the slots as the machinery fills them:

* IN and NOTIN clauses with a single ``{t}`` may receive an era word ("recent", "old", "classic", "oldies", ...)
  as well as a year or decade with or without "the" ("1985", "the 80s", "'80s", "the eighties"), so those
  templates put ``{t}`` where all of these read naturally ("ideally the 80s", "ideally recent").
* The comparison roles (LT, LE, GT, GE) only ever receive years and decades, so they carry the prepositions and
  verbs ("came out before", "released in ... or after").
* Two-sided clauses are all GE/LE (inclusive spans, "between 1970 and 1980"). Not GT/LT: the machinery only asks
  that the two quantities increase, so adjacent ones ("after the 70s but before the 80s", "after 1968 but before
  1969") would give an empty range. Not IN/IN: two single years joined by "or" are not the span it computes.
* Value slots get nouns, plurals and adjectives alike ("comedy", "comedies", "funny"), so the value templates
  favour contexts that take any of them.
"""

from __future__ import annotations

from services.core.reading import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_BOUNDS = (
    # strictly before
    Clause("bounds", "from before {t}", LT),
    Clause("bounds", "anything that came out before {t}", LT),
    Clause("bounds", "released prior to {t}", LT),
    Clause("bounds", "nothing from {t} or later", LT),
    Clause("bounds", "it has to predate {t}", LT),
    Clause("bounds", "filmed before {t}", LT),
    # up to and including
    Clause("bounds", "nothing newer than {t}", LE),
    Clause("bounds", "released in {t} at the latest", LE),
    Clause("bounds", "made up to and including {t}", LE),
    Clause("bounds", "{t} and older", LE),
    # strictly after
    Clause("bounds", "came out sometime after {t}", GT),
    Clause("bounds", "nothing from {t} or earlier", GT),
    Clause("bounds", "anything shot after {t}", GT),
    # from it on
    Clause("bounds", "nothing older than {t}", GE),
    Clause("bounds", "released in {t} or after", GE),
    Clause("bounds", "anything made from {t} forward", GE),
    # within it (era-safe positions)
    Clause("bounds", "ideally {t}", IN),
    Clause("bounds", "make it {t}", IN),
    Clause("bounds", "{t} would be great", IN),
    Clause("bounds", "I'm thinking {t}", IN),
    Clause("bounds", "time period: {t}", IN),
    Clause("bounds", "{t} if possible", IN),
    # not in it (era-safe positions)
    Clause("bounds", "just not {t}", NOTIN),
    Clause("bounds", "{t} is a no-go", NOTIN),
    Clause("bounds", "anything except {t}", NOTIN),
    Clause("bounds", "{t}: not interested", NOTIN),
    Clause("bounds", "{t} is off the table", NOTIN),
    # two-sided
    Clause("bounds", "released sometime between {t} and {t2}", f"{GE}/{LE}"),
    Clause("bounds", "anything from {t} through {t2}", f"{GE}/{LE}"),
    Clause("bounds", "made no earlier than {t} and no later than {t2}", f"{GE}/{LE}"),
)

_NEGATION = (
    Clause("negation", "I don't want anything {x}"),
    Clause("negation", "{x} is a hard pass"),
    Clause("negation", "{x} - not tonight"),
    Clause("negation", "please, no {x}"),
    Clause("negation", "{x}? I'll pass"),
    Clause("negation", "exclude {x}"),
    Clause("negation", "{w}, just not {x}"),
    Clause("negation", "{w} minus the {x}"),
    Clause("negation", "{w} but nothing {x}"),
)

_PLAIN = (
    Clause("plain", "looking for {w}"),
    Clause("plain", "got any {w}"),
    Clause("plain", "any good {w}"),
    Clause("plain", "I could go for {w}"),
)

_CONJUNCTION = (
    Clause("conjunction", "{w} with a bit of {w2}"),
    Clause("conjunction", "both {w} and {w2} at once"),
    Clause("conjunction", "{w} and {w2} in the same movie"),
    Clause("conjunction", "{w} crossed with {w2}"),
    Clause("conjunction", "something {w} that's also {w2}"),
)

_DISJUNCTION = (
    Clause("disjunction", "{w} or {w2}, whichever"),
    Clause("disjunction", "{w} or {w2} - either works"),
    Clause("disjunction", "{w} or {w2}, I don't mind which"),
)

_REFERENCES = (
    Clause("references", "more movies like {r}"),
    Clause("references", "I loved {r}, anything like it"),
    Clause("references", "{r} meets {r2}"),
    Clause("references", "along the lines of {r} or {r2}"),
    Clause("references", "for someone who liked {r} and {r2}"),
)

THIRD_EVALUATION_BANK = Bank(
    clauses=(*_PLAIN, *_CONJUNCTION, *_DISJUNCTION, *_NEGATION, *_BOUNDS, *_REFERENCES),
    prefixes=("", "hey there, ", "okay so ", "movie night! ", "need a rec: ", "help me out - ", "hiya "),
    suffixes=("", " - any thoughts?", " if you can", ", thanks!", ". any ideas?", " thx"),
    joiners=(", and ", " - also ", ", plus ", ". ", ". oh and "),
    moods=("something to unwind with after a long day", "what should I watch tonight",
           "cheer me up, rough week", "something cozy for a rainy sunday"),
    breaks=(". ", " ... also ", ". also, ", "! "),
)
