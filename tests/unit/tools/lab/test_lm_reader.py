"""The lab's LM reader: what it is taught to write round-trips to the tagger's spans, and the per-request grammar
accepts exactly the spans of the request's own words (with the real SmolLM2 tokenizer and llguidance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.reading import WORD_LABELS, split_words
from tools.lab.lm_reader import NONE, parse_spans, reading_regex, spans_text

ROOT = Path(__file__).resolve().parents[4]


def labels(*names: str) -> tuple[int, ...]:
    return tuple(WORD_LABELS.index(n) for n in names)


def test_written_spans_round_trip_to_the_tagger_spans():
    text = "a comedy from the 80s, but nothing romantic"
    words = [w.text for w in split_words(text)]
    assert words == ["a", "comedy", "from", "the", "80s", ",", "but", "nothing", "romantic"]
    written = spans_text(words, labels("O", "B-WANT", "O", "B-IN", "I-IN", "O", "O", "O", "B-NOT"))
    assert written == "want: comedy ; in: the 80s ; not: romantic"
    spans = parse_spans(written, split_words(text), [0.9, 0.8, 0.7])
    assert [(s.role, s.start, s.end, s.confidence) for s in spans] == [
        ("WANT", 1, 2, 0.9), ("IN", 3, 5, 0.8), ("NOT", 8, 9, 0.7)]
    assert spans_text(words, labels(*["O"] * len(words))) == NONE


def test_a_repeated_phrase_is_placed_left_to_right_and_unknown_words_are_dropped():
    words = split_words("no drama, drama only")
    spans = parse_spans("not: drama ; want: drama ; want: western ; bogus: drama", words, [1.0] * 4)
    assert [(s.role, s.start) for s in spans] == [("NOT", 1), ("WANT", 3)]


def test_the_grammar_admits_only_spans_of_the_request():
    pytest.importorskip("llguidance")
    import llguidance
    import llguidance.hf
    from transformers import AutoTokenizer

    from tools.core.base_models import smollm2_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir(ROOT / "var")))
    ll = llguidance.hf.from_tokenizer(tokenizer)
    words = [w.text for w in split_words("a western, not from the 60s")]

    def accepts(written: str) -> bool:
        matcher = llguidance.LLMatcher(ll, llguidance.LLMatcher.grammar_from_regex(reading_regex(words)))
        ids = tokenizer(written)["input_ids"]
        return all(matcher.consume_token(t) for t in ids) and matcher.is_accepting()

    assert accepts(" want: western ; notin: the 60s\n")
    assert accepts(" none\n")
    assert not accepts(" want: comedy\n")  # not a word of the request
    assert not accepts(" like: western\n")  # not a role
    assert not accepts(" want: western the\n")  # not consecutive words
