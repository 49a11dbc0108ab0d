"""Training requests composed from parts: a small grammar of frames around a value, so that the request reader reads a
value's polarity from the words around it rather than from memorised phrases.

The hand-written clause families (``tools/train/reader_examples.py``) read the banks they were shown well and new
wording at 0.74-0.90 (banks written blind); two attempts at more hand-written families did not move the held-out
banks (``tools/lab/reader_bank_wide.py``). Here each frame (the cue before the value, after it, around it) is filled
from lists of predicates of one polarity (refusals: "bores me", "i can't stomach", "leave out"; wishes: "works for
me", "i'd enjoy"; double refusals that wish: "i wouldn't say no to"), subjects, intensifiers and punctuation, so
that one verb is seen in many frames and one frame with many verbs.

The served tagger learns from :func:`served_bank`: two thirds of each construct's draws are the hand-written
families and a third composed clauses (bounds: hand-written only). Measured on 2026-12-07 (docs/reading.md): on the
seventh bank, written blind, 0.766 -> 0.834 exact match for a run with half the draws composed (the lab run of
commit f22c62b), 0.824 for this one; the hand-written set unchanged.

No composed clause is an evaluation bank's clause: :func:`served_bank` leaves out the texts an evaluation bank uses
(:data:`HELD_OUT`), and a unit test checks it. The published run drew its clauses in an order that followed
Python's string hashing (fixed since, sorted): retraining gives a tagger of the same recipe and clauses, not the
same bytes.
"""

from __future__ import annotations

import itertools
import math
import random

from tools.core.reading_examples import Bank, Clause
from tools.train.reader_examples import TRAINING_BANK

# Refusals said of the value after it: "{x} <predicate>" ("westerns bore me").
_THIRD_PERSON_REFUSALS = (
    "bore me", "bore me silly", "do nothing for me", "leave me cold", "put me off", "get on my nerves",
    "annoy me", "irritate me", "turn me off", "make me yawn", "drive me up the wall", "never work for me",
    "don't appeal", "don't grab me", "don't do it for me", "aren't for me", "aren't my scene", "are a hard no",
    "are off the menu", "are off limits", "are out of the question", "are a turn-off", "are not happening",
    "are a dealbreaker", "are the worst", "are overrated", "are banned in this house", "wear me out",
    "send me to sleep", "get a hard pass", "can stay on the shelf", "are not welcome", "give me a headache",
)
# First-person refusals before the value: "<predicate> {x}" ("i can't stomach westerns").
_FIRST_PERSON_REFUSALS = (
    "i don't like", "i don't enjoy", "i don't want", "i don't care for", "i don't dig", "i don't fancy",
    "i can't stand", "i can't stomach", "i can't bear", "i can't deal with", "i can't handle", "i won't watch",
    "i won't sit through", "i'd never pick", "i really dislike", "i despise", "i loathe", "i detest",
    "i'm allergic to", "i'm fed up with", "i've had enough of", "i'm not keen on", "i'm not into",
    "i have no time for", "i have zero interest in", "i'd rather avoid", "i'm really not feeling",
    "we don't like", "we can't stand", "my wife hates", "the kids won't watch", "nobody here likes",
)
# Imperatives before the value: "<verb> {x}" ("leave out the westerns").
_IMPERATIVE_REFUSALS = (
    "leave out", "cut out", "drop", "ditch", "lose", "filter out", "rule out", "steer clear of", "stay away from",
    "keep away from", "cross off", "pass over", "do without", "forget about", "hold off on", "nix", "scrap",
    "strike", "omit", "disregard", "don't bother with", "don't give me", "don't suggest", "don't recommend",
    "spare us", "save me from",
)
# Wishes in the same frames, so that the frame alone never decides the polarity.
_THIRD_PERSON_WISHES = (
    "work for me", "work", "are fine", "are great", "sound good", "sound fun", "hit the spot", "are my thing",
    "are my jam", "never get old", "are always welcome", "are what i need", "are a yes", "would be lovely",
    "get my vote", "do it for me", "make me happy", "cheer me up", "are on the menu",
)
_FIRST_PERSON_WISHES = (
    "i like", "i enjoy", "i want", "i love", "i adore", "i dig", "i fancy", "i'm into", "i'm keen on",
    "i'm craving", "i could use", "i'd enjoy", "i'd go for", "i'm up for", "we love", "the kids like",
    "my wife loves", "i never tire of", "i'm all about", "i'd happily watch",
    # a refusal of a refusal is a wish
    "i don't mind", "i wouldn't say no to", "i'm not against", "i have nothing against", "i can't resist",
    "i don't hate",
)
_IMPERATIVE_WISHES = ("give me", "show me", "find me", "bring on", "serve up", "line up", "dig out", "throw in",
                      "suggest", "recommend")
# "{x}, <refusal of it>" ("musicals, i can't stand them").
_PRONOUN_REFUSALS = ("i don't like them", "i can't stand them", "not for me", "no thanks", "hard pass",
                     "not a chance", "never again", "i'll pass", "skip those", "not interested", "nope",
                     "not today", "nah", "please no", "i'm over them", "can't do them", "not my thing")
_PRONOUN_WISHES = ("i like them", "i love those", "yes please", "always a yes", "i'm in", "count me in",
                   "sounds good", "why not", "go for it", "my favourite", "good call", "love them")
_INTENSIFIERS = ("", "really ", "honestly ", "totally ", "just ")
_SEPARATORS = (", ", " - ", ": ", "... ")
# After a question mark only an answer that refuses by itself ("a horror comedy? nothing too long" wants both).
_QUESTION_REFUSALS = ("hard pass", "no thanks", "nope", "nah", "i'll pass", "not a chance")
# Alternatives: each value offered on its own, then a word that lets either do.
_EITHER_TAILS = ("either one", "either is fine", "whichever", "any of those", "take your pick", "both fine",
                 "i'm not fussy", "your choice", "either works", "one or the other", "you pick", "i'm easy")
_ALSO_WISHES = ("{w} is fine, so is {w2}", "{w} would do, so would {w2}", "i'd take {w}, i'd also take {w2}",
                "{w} is an option, so is {w2}", "{w} works, and so does {w2}", "{w} or {w2} would both do",
                "{w} is good, {w2} is good, whichever", "one of {w} or {w2}")
# ("{w}, {w2} too" and "{w}, {w2} as well" want both in the other banks: not written here.)
_WITH_WORDS = ("with", "plus", "and also", "combined with", "mixed with", "crossed with", "with a side of",
               "heavy on", "as well as", "that is also", "that's also", "and at the same time", "laced with",
               "full of", "married to", "rolled into one with")
_LIKE_WORDS = ("like", "similar to", "comparable to", "akin to", "resembling", "in the style of", "on par with",
               "in the mould of", "a la", "that feel like", "that remind me of", "close to", "of the same kind as",
               "on the same wavelength as", "in the same league as", "not unlike", "cut from the same cloth as")
_LIKE_HEADS = ("", "films ", "movies ", "stuff ", "something ", "anything ")


def _negation() -> list[Clause]:
    out = []
    for predicate, intensifier in itertools.product(_THIRD_PERSON_REFUSALS, _INTENSIFIERS[:2]):
        out.append(Clause("negation", f"{{x}} {intensifier}{predicate}"))
    for predicate in _FIRST_PERSON_REFUSALS:
        out += [Clause("negation", f"{predicate} {{x}}"), Clause("negation", f"{{x}}, {predicate} it"),
                Clause("negation", f"{{w}}, but {predicate} {{x}}")]
    for verb in _IMPERATIVE_REFUSALS:
        out += [Clause("negation", f"{verb} the {{x}}"), Clause("negation", f"{verb} any {{x}}"),
                Clause("negation", f"{{w}}, {verb} the {{x}}")]
    for tail, separator in itertools.product(_PRONOUN_REFUSALS, _SEPARATORS):
        out.append(Clause("negation", f"{{x}}{separator}{tail}"))
    out += [Clause("negation", f"{{x}}? {tail}") for tail in _QUESTION_REFUSALS]
    for predicate in _THIRD_PERSON_REFUSALS[::3]:
        out.append(Clause("negation", f"{{x}} and {{x2}} {predicate}"))
    return out


def _plain() -> list[Clause]:
    out = [Clause("plain", f"{{w}} {intensifier}{predicate}")
           for predicate, intensifier in itertools.product(_THIRD_PERSON_WISHES, _INTENSIFIERS[:2])]
    out += [Clause("plain", f"{predicate} {{w}}") for predicate in _FIRST_PERSON_WISHES]
    out += [Clause("plain", f"{verb} some {{w}}") for verb in _IMPERATIVE_WISHES]
    out += [Clause("plain", f"{{w}}{separator}{tail}")
            for tail, separator in itertools.product(_PRONOUN_WISHES, _SEPARATORS)]
    return out


def _disjunction() -> list[Clause]:
    out = [Clause("disjunction", f"{{w}}{a} {{w2}}{a} {tail}") for tail in _EITHER_TAILS for a in ("?", ",", " /")]
    out += [Clause("disjunction", text) for text in _ALSO_WISHES]
    out += [Clause("disjunction", f"{{w}} or {{w2}}, {tail}") for tail in _EITHER_TAILS]
    return out


def _conjunction() -> list[Clause]:
    return [Clause("conjunction", f"{head}{{w}} {word} {{w2}}") for word in _WITH_WORDS
            for head in ("a ", "", "something ")]


def _references() -> list[Clause]:
    out = [Clause("references", f"{head}{word} {{r}}") for word in _LIKE_WORDS for head in _LIKE_HEADS]
    return out + [Clause("references", f"{word} {{r}} {joint} {{r2}}") for word in _LIKE_WORDS
                  for joint in ("or", "and")]


def composed_clauses(taken: set[str] = frozenset()) -> tuple[Clause, ...]:
    """Every composed clause whose text is not in ``taken`` (the served bank's and the evaluation banks')."""
    clauses = (*_plain(), *_conjunction(), *_disjunction(), *_negation(), *_references())
    return tuple(dict.fromkeys(c for c in clauses if c.text not in taken))


# Texts the grammar writes that an evaluation bank uses (``tools/eval/reading_bank*.py``): left out of training. A
# unit test checks that no composed clause is an evaluation bank's (training never imports the evaluation banks).
HELD_OUT = frozenset({
    "close to {r}", "cut from the same cloth as {r}", "films comparable to {r}", "i can't stand {x}",
    "i'd rather avoid {x}", "in the style of {r}", "leave out the {x}", "one of {w} or {w2}",
    "something resembling {r}",
    "something {w} that's also {w2}", "{w} combined with {w2}", "{w} crossed with {w2}", "{w} or {w2}, whichever",
    "{w} that's also {w2}", "{w}, {w2}, whichever", "{w}? {w2}? either one", "{x} - no thanks", "{x} - nope",
    "{x} can stay on the shelf", "{x}? hard pass", "{x}? nah",
})


def served_bank(seed: int = 0, composed_share: float = 1 / 3) -> Bank:
    """The served bank and the composed clauses, the served clauses repeated so that the composed ones are about
    ``composed_share`` of each construct's draws (bounds: served only)."""
    taken = {c.text for c in TRAINING_BANK.clauses} | HELD_OUT
    composed = composed_clauses(taken)
    clauses: list[Clause] = []
    for construct in sorted({c.construct for c in TRAINING_BANK.clauses}):  # one order whatever the string hashing
        served = [c for c in TRAINING_BANK.clauses if c.construct == construct]
        extra = [c for c in composed if c.construct == construct]
        repeats = len(extra) * (1 - composed_share) / composed_share / len(served)
        clauses += served * max(1, math.ceil(repeats)) + extra
    random.Random(seed).shuffle(clauses)
    return Bank(clauses=tuple(clauses), prefixes=TRAINING_BANK.prefixes, suffixes=TRAINING_BANK.suffixes,
                joiners=TRAINING_BANK.joiners, moods=TRAINING_BANK.moods, breaks=TRAINING_BANK.breaks)
