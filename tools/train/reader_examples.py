"""The request reader's training bank: clause families per construct, fillers and mood phrases.

None of these clauses, and none of the value combinations :func:`tools.core.reading_examples.combination_split`
holds out, appear in the evaluation bank (``tools/eval/reading_bank.py``); a unit test checks both.
"""

from __future__ import annotations

from services.core.reading import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause

_PLAIN = ("a {w} movie", "some {w}", "a {w}", "{w} films", "something {w}", "i feel like a {w}",
          "in the mood for {w}", "{w} please", "a good {w}", "show me {w}", "any {w}", "a {w} for tonight",
          "give me a {w} film", "recommend a {w}", "{w}", "a great {w} flick", "we want {w}", "{w} only",
          "only {w}", "just {w}, please", "a {w}, nothing else")
_CONJUNCTION = ("{w}, {w2} and {w3}", "a {w} {w2} {w3}", "something {w}, {w2} and {w3}",
                "a {w} {w2}", "a {w} {w2} movie", "{w} and {w2}", "both {w} and {w2}", "a {w} that is also {w2}",
                "something {w} and {w2}", "a {w} with {w2} in it", "{w} plus {w2}", "{w} mixed with {w2}",
                "a mix of {w} and {w2}", "a {w} {w2} film", "{w} but also {w2}")
_DISJUNCTION = ("{w}, {w2} or {w3}", "{w}, {w2}, or {w3}", "any of {w}, {w2} or {w3}", "{w} or {w2} or {w3}",
                "{w} or {w2}, i don't mind which", "{w} or {w2}, doesn't matter",
                "{w} or {w2}", "either {w} or {w2}", "a {w} or a {w2}", "{w} or maybe {w2}", "{w}/{w2}",
                "{w} or else {w2}", "a {w} or {w2} movie", "some {w} or {w2}", "{w} or {w2}, either works",
                "either a {w} or a {w2} film")
_NEGATION = ("but not {x}", "no {x}", "nothing {x}", "without {x}", "except {x}", "anything but {x}",
             "other than {x}", "skip the {x}", "not a fan of {x}", "i hate {x}", "avoid {x}",
             "none of that {x} stuff", "minus the {x}", "but no {x} please", "just not {x}", "no {x} or {x2}",
             "neither {x} nor {x2}", "not {x}", "excluding {x}", "but nothing {x} or {x2}", "spare me the {x}",
             "keep {x} out of it", "i don't want {x}", "not into {x}", "nothing for {x}", "that aren't {x}",
             "that isn't {x}", "but not for {x}", "{x} excluded", "{x} is out", "no {x} at all", "nothing that's {x}",
             "but nothing that is {x}", "not really feeling {x}", "no more {x}", "not any {x}", "sick of {x}",
             "tired of {x}", "without {x} or {x2}", "anything except {x} and {x2}", "everything but {x}",
             "rather not {x}", "no {x}, please", "definitely no {x}", "not {x} though", "but please no {x}",
             "i'd skip {x}", "not the {x} kind", "excluding {x} and {x2}", "nothing with {x} in it")
_BOUNDS = (
    ("from {t}", IN), ("made in {t}", IN), ("released in {t}", IN), ("a {t} film", IN), ("{t} stuff", IN),
    ("out of {t}", IN), ("something {t}", IN), ("from around {t}", IN),
    ("not from {t}", NOTIN), ("nothing from {t}", NOTIN), ("nothing {t}", NOTIN), ("but not {t}", NOTIN),
    ("no {t} stuff", NOTIN), ("anything but {t}", NOTIN), ("not made in {t}", NOTIN),
    ("before {t}", LT), ("older than {t}", LT), ("earlier than {t}", LT), ("prior to {t}", LT),
    ("made before {t}", LT), ("less than {t}", LT), ("under {t}", LT), ("below {t}", LT),
    ("up to {t}", LE), ("until {t}", LE), ("{t} or earlier", LE), ("no later than {t}", LE), ("at most {t}", LE),
    ("{t} or less", LE), ("through {t}", LE),
    ("after {t}", GT), ("newer than {t}", GT), ("later than {t}", GT), ("made after {t}", GT), ("over {t}", GT),
    ("more than {t}", GT), ("above {t}", GT),
    ("{t} or later", GE), ("since {t}", GE), ("from {t} on", GE), ("{t} onwards", GE), ("at least {t}", GE),
    ("no earlier than {t}", GE), ("{t} or newer", GE), ("{t} or more", GE),
    ("pre-{t}", LT), ("post-{t}", GT), ("not before {t}", GE), ("not after {t}", LE), ("not later than {t}", LE),
    ("not older than {t}", GE), ("not newer than {t}", LE), ("no older than {t}", GE), ("{t} or before", LE),
    ("{t} and earlier", LE), ("{t} and up", GE), ("{t} at the earliest", GE), ("by {t} at the latest", LE),
    ("from {t} onward", GE), ("{t} and beyond", GE), ("starting {t}", GE), ("ending {t}", LE),
    ("between {t} and {t2}", "IN/IN"), ("from {t} to {t2}", "IN/IN"), ("{t}-{t2}", "IN/IN"),
    ("{t} through {t2}", "IN/IN"), ("somewhere between {t} and {t2}", "IN/IN"), ("from {t} until {t2}", "IN/IN"),
    ("{t} to {t2}", "IN/IN"), ("made between {t} and {t2}", "IN/IN"),
    ("after {t} and before {t2}", "GT/LT"), ("from {t} or {t2}", "IN/IN"), ("{t} or {t2}", "IN/IN"),
    ("the {t} or the {t2}", "IN/IN"), ("not from {t}, please", NOTIN), ("nothing made in {t}", NOTIN),
    ("released before {t}", LT), ("made since {t}", GE), ("in {t}", IN), ("during {t}", IN),
)
_REFERENCES = ("like {r}", "similar to {r}", "something like {r}", "in the vein of {r}", "if i liked {r}",
               "along the lines of {r}", "reminds me of {r}", "same vibe as {r}", "like {r} and {r2}",
               "similar to {r} or {r2}", "movies like {r}", "i loved {r}, more like that",
               "something that feels like {r}", "in the spirit of {r} and {r2}", "films similar to {r} and {r2}",
               "i just watched {r}", "more like {r}", "{r}-type movies", "{r} kind of thing", "anything like {r}",
               "if you liked {r} and {r2}", "we enjoyed {r}", "like {r}, {r2}", "{r} vibes",
               "my favourite is {r}", "in the same spirit as {r}")

TRAINING_BANK = Bank(
    clauses=(
        *(Clause("plain", t) for t in _PLAIN),
        *(Clause("conjunction", t) for t in _CONJUNCTION),
        *(Clause("disjunction", t) for t in _DISJUNCTION),
        *(Clause("negation", t) for t in _NEGATION),
        *(Clause("bounds", t, role) for t, role in _BOUNDS),
        *(Clause("references", t) for t in _REFERENCES),
    ),
    prefixes=("", "", "", "hey, ", "hi! ", "could you find me ", "can you recommend ", "i'd like ", "please show me ",
              "looking for ", "i want ", "got any ", "find me ", "what about ", "i'm after ", "suggest "),
    suffixes=("", "", "", " please", " for tonight", " thanks", "?", "!", " for the weekend", ".",
              " for a date night", " to watch with friends", " :)"),
    joiners=(", ", " ", ", but ", " and ", "; ", " - ", ", ideally ", ", maybe "),
    moods=("something cozy for a rainy night", "surprise me", "something to cheer me up", "a feel-good pick",
           "whatever is good", "something light", "a movie to fall asleep to", "something uplifting",
           "dealer's choice", "i'm bored, anything", "Something Dark And Moody", "What should I watch tonight?",
           "A long weekend, any ideas", "Nothing too long, please", "I need a good cry", "Dark and gritty",
           "Recommend me something", "Something with a great soundtrack", "Best of all time", "What's good?"),
)
