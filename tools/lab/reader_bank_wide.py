"""Does a wider training bank lift the request reader on wording it never saw? (issue #29's held-out banks)

The served tagger learns from ``tools/train/reader_examples.py``. This experiment adds everyday clause families per
construct (111 written from general usage on 2026-12-05, 47 more on 2026-12-06: wanted values beside words that
elsewhere negate, "not only A but also B", bounds with a negation inside, references joined by "or"), fillers, and
a clause break after an exclusion (``Bank.breaks``); none is shared with an evaluation bank (unit test:
``tests/unit/tools/lab/test_reader_bank_wide.py``). Measured twice, lost twice (docs/lab/README.md,
docs/reading.md): full length (4,000 steps, 80,000 examples, 53 min on 2 cores) it read both held-out banks no
better (-0.016 / -0.007, intervals across 0) and, served, read "i dont want anything romantic" as wanting romance.

    python -m tools.lab.reader_bank_wide --out var/lab --max-minutes 0
    python -m tools.eval.reading --reader var/lab/request_reader/adapter --out docs/lab/reader-wide --generated 1000
"""

from __future__ import annotations

from pathlib import Path

from services.core.reading import GE, GT, IN, LE, LT, NOTIN
from tools.core.reading_examples import Bank, Clause
from tools.train.reader_examples import TRAINING_BANK

_PLAIN = ("got a {w}?", "a fun {w}", "recommendations for {w}", "{w} is what i want", "a {w} tonight",
          "any good {w} out there", "i'm into {w}", "best {w} you have", "a {w} would be nice",
          "nothing but {w}", "can't get enough of {w}", "i never get tired of {w}", "wouldn't say no to a {w}",
          "i don't mind a {w}", "no problem with {w}", "not against a {w}", "it has to be {w}", "must be {w}",
          "i'd love a {w}", "hoping for a {w}", "up for some {w}", "in need of a {w}", "a {w} to watch",
          "a well-made {w}", "an underrated {w}", "the best {w} ever made", "which {w} should i watch",
          "do you have any {w}", "is there a good {w}", "mostly {w}", "preferably {w}", "keen on {w}")
_CONJUNCTION = ("a {w} crossed with {w2}", "{w} blended with {w2}", "{w} that's {w2} too", "{w} & {w2}",
                "{w}, also {w2}", "a {w} and {w2} movie", "{w} with some {w2}", "{w}, {w2}, {w3} all in one",
                "{w} yet {w2}", "something both {w} and {w2}",
                "not only {w} but also {w2}", "not just {w}, {w2} too", "{w} with a touch of {w2}",
                "a {w} with elements of {w2}", "{w} and a bit of {w2}", "a {w} that doubles as a {w2}")
_DISJUNCTION = ("{w} or {w2}, your call", "either {w} or {w2} is fine", "{w} / {w2} / {w3}", "{w}, else {w2}",
                "{w} or {w2} works for me", "{w}? {w2}? either", "happy with {w} or {w2}", "{w} or {w2} or both",
                "{w} or {w2}, no preference", "{w}, or otherwise {w2}", "either {w} or else {w2}",
                "not fussy: {w} or {w2}")
_NEGATION = ("hold the {x}", "pass on {x}", "no {x} whatsoever", "absolutely no {x}", "nothing remotely {x}",
             "i'm done with {x}", "enough {x} already", "not big on {x}", "{x}? no thanks", "don't show me {x}",
             "keep the {x} away", "count me out of {x}", "no {x} this time", "something other than {x}",
             "anything besides {x}", "not a {x} person", "i dislike {x}", "don't want any {x} or {x2}",
             "never {x}", "nothing like {x}", "no {x} and no {x2}", "forget {x}", "bar {x}", "sans {x}",
             "{x} not welcome", "not feeling {x} tonight", "i won't watch {x}", "anything, just not {x}")
_BOUNDS = (
    ("circa {t}", IN), ("around {t}", IN), ("anything from {t}", IN), ("{t} era", IN), ("from {t} only", IN),
    ("{t} please", IN), ("something made in {t}", IN),
    ("outside {t}", NOTIN), ("nothing in {t}", NOTIN), ("avoid {t}", NOTIN), ("no films from {t}", NOTIN),
    ("anything except {t}", NOTIN),
    ("pre {t}", LT), ("way before {t}", LT), ("anything before {t}", LT), ("older still than {t}", LT),
    ("sooner than {t}", LT), ("ahead of {t}", LT),
    ("up until {t}", LE), ("{t} tops", LE), ("{t} max", LE), ("as late as {t}", LE), ("{t} and before", LE),
    ("by {t}", LE), ("not past {t}", LE),
    ("beyond {t}", GT), ("past {t}", GT), ("younger than {t}", GT), ("anything after {t}", GT),
    ("newer still than {t}", GT),
    ("{t}+", GE), ("{t} and newer", GE), ("at or after {t}", GE), ("no sooner than {t}", GE),
    ("{t} or younger", GE), ("{t} onward", GE), ("not earlier than {t}", GE), ("not prior to {t}", GE),
    ("{t} up to {t2}", "IN/IN"), ("anywhere from {t} to {t2}", "IN/IN"),
    ("not before {t} and not after {t2}", "GE/LE"), ("since {t} but before {t2}", "GE/LT"),
    ("nothing older than {t}", GE), ("nothing newer than {t}", LE), ("nothing after {t}", LE),
    ("nothing before {t}", GE), ("more modern than {t}", GT), ("{t} or more modern", GE),
)
_REFERENCES = ("similar vibe to {r}", "in line with {r}", "after {r}, what next", "same energy as {r}",
               "akin to {r}", "comparable to {r}", "loved {r}", "{r} fans would like", "the kind of movie {r} is",
               "if you enjoyed {r} or {r2}", "more in the direction of {r}", "my kids loved {r}",
               "just saw {r} and {r2}", "a {r} sort of film",
               "like {r} or {r2}", "{r} or {r2}, that kind of thing", "not unlike {r}", "reminiscent of {r}",
               "in the mould of {r}", "because i liked {r}", "with the feel of {r}", "as good as {r}")

EXTRA_CLAUSES = (
    *(Clause("plain", t) for t in _PLAIN),
    *(Clause("conjunction", t) for t in _CONJUNCTION),
    *(Clause("disjunction", t) for t in _DISJUNCTION),
    *(Clause("negation", t) for t in _NEGATION),
    *(Clause("bounds", t, role) for t, role in _BOUNDS),
    *(Clause("references", t) for t in _REFERENCES),
)
WIDE_TRAINING_BANK = Bank(
    clauses=(*TRAINING_BANK.clauses, *EXTRA_CLAUSES),
    prefixes=(*TRAINING_BANK.prefixes, "hello, ", "so ", "what's a good ", "need ", "show me ", "hmm, ", "okay ",
              "we'd love "),
    suffixes=(*TRAINING_BANK.suffixes, " asap", " for the kids", " ty", " if you have one", " for family night",
              "!!"),
    joiners=(*TRAINING_BANK.joiners, ", plus ", ". ", ", and ", " but ", ", preferably ", " -- ", ", also "),
    moods=TRAINING_BANK.moods,
    breaks=(", but ", "; ", " - ", ". ", " -- ", ", but i'd like ", ", ideally ", ", preferably "),
)


def main(out: Path = Path("var/lab"), data_dir: Path = Path("var/data/movielens-100k"), steps: int = 4000,
         examples: int = 80_000, max_minutes: float | None = None) -> None:
    """Train the served tagger's recipe on the wide bank (the 2026-12-06 run: 4,000 steps of 32, 80,000 examples);
    the adapter goes to ``OUT/request_reader/adapter``."""
    from dataclasses import replace

    from tools.core.base_models import minilm_dir
    from tools.export import REQUEST_READER
    from tools.train.run import make_config, train_one

    config = make_config(REQUEST_READER, "default", data_dir, out, minilm_dir(), "cpu", 0, steps, max_minutes, None)
    print(train_one(REQUEST_READER, replace(config, bank=WIDE_TRAINING_BANK, examples=examples)).best)


if __name__ == "__main__":
    import typer

    typer.run(main)
