"""The reader's training and evaluation banks: labels match the words, the expected reading is what grounding
the right labels gives, and the two banks share no clause, filler or value combination."""

from __future__ import annotations

import random

from services.core.catalog import Catalog, Item
from services.core.lexicon import TitleMatcher
from services.core.reading import WORD_LABELS, decode_spans, read, split_words
from tools.core.reading_examples import Renderer, Vocabulary, combination_split, generate
from tools.eval.reading import canonical, reading_dict
from tools.eval.reading_bank import EVALUATION_BANK, SECOND_EVALUATION_BANK
from tools.eval.reading_bank_blind import THIRD_EVALUATION_BANK
from tools.eval.reading_bank_fifth import FIFTH_EVALUATION_BANK
from tools.eval.reading_bank_fourth import FOURTH_EVALUATION_BANK
from tools.eval.reading_bank_seventh import SEVENTH_EVALUATION_BANK
from tools.eval.reading_bank_sixth import SIXTH_EVALUATION_BANK
from tools.train.reader_examples import TRAINING_BANK

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Western", "Children's")
CATALOG = Catalog({str(n): Item(str(n), title, 1930 + (n * 7) % 68, (GENRES[n % 8], GENRES[(n * 3) % 8]))
                   for n, title in enumerate(["Star Wars", "Fargo", "Heat", "Casablanca", "Toy Story", "Alien",
                                              "Godfather, The", "Scream", "Clueless", "Unforgiven", "Babe",
                                              "Vertigo", "Jaws", "Rocky", "Psycho", "Annie Hall"])})
SYNONYMS = {"sci-fi": ["genres=Sci-Fi"], "rom-com": ["genres=Comedy", "genres=Romance"], "kids": ["genres=Children's"]}
VOCABULARY = Vocabulary(CATALOG, SYNONYMS)


def test_banks_share_no_clause_filler_or_mood() -> None:
    def texts(bank):
        return ({c.text for c in bank.clauses}, {*bank.prefixes, *bank.suffixes, *bank.joiners, *bank.breaks} - {""},
                set(bank.moods))

    for bank in (EVALUATION_BANK, SECOND_EVALUATION_BANK, THIRD_EVALUATION_BANK, FOURTH_EVALUATION_BANK,
                 FIFTH_EVALUATION_BANK, SIXTH_EVALUATION_BANK,
                 SEVENTH_EVALUATION_BANK):
        for train, held_out in zip(texts(TRAINING_BANK), texts(bank)):
            assert not train & held_out, train & held_out
        assert {c.construct for c in bank.clauses} == {c.construct for c in TRAINING_BANK.clauses} == {
            "plain", "conjunction", "disjunction", "negation", "bounds", "references"}


def _combinations(examples) -> set[frozenset]:
    out = set()
    for e in examples:
        parts = canonical(e.reading)
        values = {p for p in parts if p[0] in ("want", "exclude")}
        if len({v for p in values for v in (p[2] if p[0] == "want" else (p[2],))}) >= 2:
            out.add(frozenset(values))
    return out


def test_the_held_out_value_combinations_never_reach_training() -> None:
    train = generate(Renderer(VOCABULARY, TRAINING_BANK, "train"), 600, 0)
    held_out = generate(Renderer(VOCABULARY, EVALUATION_BANK, "eval"), 300, 0)
    assert not _combinations(train) & _combinations(held_out)
    assert combination_split(["+genres=Comedy"]) == "any"
    assert {combination_split([f"+genres={a}", f"-genres={b}"]) for a in GENRES for b in GENRES if a != b} == {
        "train", "eval"}


def grounding_agreement(bank, count: int = 400) -> float:
    """The share of ``count`` requests of ``bank`` whose right word labels ground to their expected reading (every
    word labelled, with a valid B/I/O label)."""
    titles = TitleMatcher(CATALOG)
    examples = generate(Renderer(VOCABULARY, bank, "train", typo_rate=0.0), count, 1)
    agree = 0
    for e in examples:
        words = split_words(e.text)
        assert [w.text for w in words] == list(e.words) and len(e.labels) == len(words)
        assert all(WORD_LABELS[label] == "O" or WORD_LABELS[label][:2] in ("B-", "I-") for label in e.labels)
        reading = read(e.text, words, decode_spans(words, e.labels, [1.0] * len(words)), VOCABULARY.lexicon, titles)
        agree += canonical(reading_dict(reading)) == canonical(e.reading)
    return agree / len(examples)


def test_every_word_is_labelled_and_the_right_labels_ground_to_the_expected_reading() -> None:
    for bank in (TRAINING_BANK, EVALUATION_BANK, SECOND_EVALUATION_BANK, THIRD_EVALUATION_BANK,
                 FOURTH_EVALUATION_BANK, FIFTH_EVALUATION_BANK, SIXTH_EVALUATION_BANK, SEVENTH_EVALUATION_BANK):
        assert grounding_agreement(bank) >= 0.98


def test_after_an_exclusion_the_next_clause_starts_after_a_break() -> None:
    """A list word after an excluded value carries the exclusion on ("no horror, comedy or drama"), so a bank with
    breaks never joins an excluding clause to the next one with a plain joiner; other clauses use the joiners."""
    from dataclasses import replace

    bank = replace(TRAINING_BANK, joiners=(" and ",), breaks=("; ",), prefixes=("",), suffixes=("",))
    renderer = Renderer(VOCABULARY, bank, "train", typo_rate=0.0)
    rng = random.Random(5)
    negation = next(c for c in bank.clauses if c.text == "no {x}")
    plain = next(c for c in bank.clauses if c.text == "a {w} movie")
    rendered = [renderer._render(rng, clauses) for clauses in [[negation, plain], [plain, negation]] * 10]
    assert all("; " in e.text for e in rendered[0::2] if e) and any(rendered[0::2])
    assert all(" and " in e.text and ";" not in e.text for e in rendered[1::2] if e) and any(rendered[1::2])


def test_generation_is_seeded_and_has_no_repeats() -> None:
    renderer = Renderer(VOCABULARY, TRAINING_BANK, "train")
    first, again = generate(renderer, 200, 3), generate(renderer, 200, 3)
    assert [e.text for e in first] == [e.text for e in again]
    assert len({e.text.lower() for e in first}) == 200
    assert renderer.sample(random.Random(0)).words


def test_the_same_seed_renders_the_same_requests_whatever_the_string_hashing() -> None:
    """Two readers compared in two processes are measured on the same requests (the lexicon's forms come from sets,
    whose order follows the process's string hashing)."""
    import os
    import subprocess
    import sys

    script = ("from tests.unit.tools.core.test_reading_examples import VOCABULARY, EVALUATION_BANK, Renderer, generate;"
              "print([e.text for e in generate(Renderer(VOCABULARY, EVALUATION_BANK, 'eval'), 60, 0)])")
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1


def test_titles_come_from_further_down_when_the_popular_ones_repeat() -> None:
    catalog = Catalog({n: Item(n, title, 2000, ("Drama",))
                       for n, title in (("1", "Tent 4"), ("2", "Tent 4"), ("3", "Lamp 7"), ("4", "Boot 2"))})
    vocabulary = Vocabulary(catalog, {}, popularity={"1": 9, "2": 8, "3": 1}, titles=2)
    assert vocabulary.titles == [("3", "Lamp 7"), ("4", "Boot 2")]
