"""Direction words around a quantity span decide its role; anything else leaves the tagger's role."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.core.directions import directed_roles, direction
from services.core.reading import split_words
from services.core.roles import GE, GT, IN, LE, LT, NOTIN


@dataclass(frozen=True)
class _Span:
    role: str
    start: int
    end: int


def _role(request: str, quantity: str) -> str | None:
    words = [w.text for w in split_words(request)]
    quantity_words = [w.text for w in split_words(quantity)]
    start = next(n for n in range(len(words)) if words[n:n + len(quantity_words)] == quantity_words)
    found = direction(words, start, start + len(quantity_words))
    return found.role if found else None


@pytest.mark.parametrize(("request_text", "quantity", "role"), [
    ("a comedy made before 1960", "1960", LT),
    ("something older than the 80s", "80s", LT),
    ("pre-1970 westerns", "1970", LT),
    ("up until 1985 please", "1985", LE),
    ("the 90s or earlier", "90s", LE),
    ("1975 at the latest", "1975", LE),
    ("anything more recent than 1960", "1960", GT),
    ("a thriller after the eighties", "eighties", GT),
    ("from 1985 forward", "1985", GE),
    ("since 1990 onwards", "1990", GE),
    ("2000 or later", "2000", GE),
    ("from the 70s on", "70s", GE),
    ("under $20", "$20", LT),
    ("$15 or more", "$15", GE),
])
def test_a_direction_phrase_sets_the_role(request_text: str, quantity: str, role: str) -> None:
    assert _role(request_text, quantity) == role


@pytest.mark.parametrize(("request_text", "quantity", "role"), [
    ("not before 1980", "1980", GE),
    ("no later than 1995", "1995", LE),
    ("no more recent than 1948", "1948", LE),
    ("nothing made after 1990", "1990", LE),
    ("i don't want anything before 1970", "1970", GE),
    ("no older than the 90s", "90s", GE),
    ("nothing from 1987 or later", "1987", LT),
    ("i don't want anything from the 50s or earlier", "50s", GT),
])
def test_a_negation_turns_the_comparative_round(request_text: str, quantity: str, role: str) -> None:
    assert _role(request_text, quantity) == role


@pytest.mark.parametrize(("request_text", "quantity"), [
    ("a drama from the 90s", "90s"),
    ("not from the 80s", "80s"),
    ("a 1985 on video", "1985"),            # "on" is a direction only after "from" / "since"
    ("after 1990 or earlier", "1990"),      # phrases pointing opposite ways: the tagger's role stands
    ("i'm after the 1930s", "1930s"),       # looking for them
])
def test_no_direction_phrase_leaves_the_role(request_text: str, quantity: str) -> None:
    assert _role(request_text, quantity) is None


def test_spans_set_the_context_and_pairs_are_left_to_the_tagger() -> None:
    words = [w.text for w in split_words("from 1980 through 1990, a comedy made after 1975")]
    spans = [_Span(IN, 1, 2), _Span(IN, 3, 4), _Span("WANT", 6, 7), _Span(LT, 9, 10)]
    out, cues = directed_roles(words, spans)
    assert [s.role for s in out] == [IN, IN, "WANT", GT]
    assert cues == {9: (8,)}


def test_a_span_between_keeps_a_phrase_from_reaching_past_it() -> None:
    words = [w.text for w in split_words("nothing horror from the 80s")]
    out, cues = directed_roles(words, [_Span("NOT", 1, 2), _Span(NOTIN, 4, 5)])
    assert [s.role for s in out] == ["NOT", NOTIN] and not cues
