"""Wording that turns a value down makes the tagger's wish an exclusion; other wording leaves it alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.core.reading import split_words
from services.core.rejections import rejected_roles, unsupported_exclusions
from services.core.roles import ALT, GE, IN, LT, NOT, NOTIN, WANT


@dataclass(frozen=True)
class _Span:
    role: str
    start: int
    end: int


def _roles(request: str, *marked: tuple[str, str], directed: tuple[int, ...] = ()) -> list[str]:
    """The roles after the rule of the spans ``marked`` ((words, role), in order of the request)."""
    words = [w.text for w in split_words(request)]
    spans, n = [], 0
    for text, role in marked:
        quantity = [w.text for w in split_words(text)]
        n = next(k for k in range(n, len(words)) if words[k:k + len(quantity)] == quantity)
        spans.append(_Span(role, n, n + len(quantity)))
        n += len(quantity)
    out, _ = rejected_roles(words, spans, directed)
    return [s.role for s in out]


@pytest.mark.parametrize(("request_text", "value"), [
    ("horror is a no-go", "horror"), ("the musicals: not interested", "musicals"),
    ("cartoons - not tonight", "cartoons"),
    ("westerns? I'll pass", "westerns"), ("horror is off the table for me", "horror"), ("horror, hard pass", "horror"),
    ("horror is really not my thing", "horror"),
    # Wording of the fifth blind bank (added after it was measured blind).
    ("war films leave me cold", "war"), ("slasher i can do without ty", "slasher"),
    ("kids i could never sit through", "kids"), ("whodunnit really doesn't do it for me", "whodunnit"),
    ("musicals bores me to tears", "musicals"),
    ("animation - nope if you can", "animation"), ("cowboy - nope thanks!", "cowboy"),
])
def test_a_dismissal_after_a_value_excludes_it(request_text: str, value: str) -> None:
    assert _roles(request_text, (value, WANT)) == [NOT]


@pytest.mark.parametrize("request_text", [
    "not in the mood for horror", "I'm over musicals", "zero romance please", "steer clear of the westerns",
    "sick of all the musicals",
])
def test_a_turn_down_before_a_value_excludes_it(request_text: str) -> None:
    value = next(v for v in ("horror", "musicals", "romance", "westerns") if v in request_text)
    assert _roles(request_text, (value, WANT)) == [NOT]


@pytest.mark.parametrize(("request_text", "value"), [
    ("I wouldn't say no to a western", "western"),     # a double negation
    ("a comedy is out of this world", "comedy"),        # "out" runs on
    ("a comedy, not sure which", "comedy"),
    ("horror, comedy or anything", "horror"),
    ("a western, though please no more detectives", "western"),   # "please no" opens the next clause
    ("a drama doc - none of that war stuff", "drama"),
    ("a comedy i can watch without crying", "comedy"),
    ("a thriller that never leaves me cold", "thriller"),
    ("horror no matter what, thanks", "horror"),
])
def test_other_wording_leaves_the_wish(request_text: str, value: str) -> None:
    assert _roles(request_text, (value, WANT)) == [WANT]


def test_the_values_listed_with_it_are_excluded_too() -> None:
    assert _roles("a comedy, but horror and musicals are out", ("comedy", WANT), ("horror", ALT),
                  ("musicals", WANT)) == [WANT, NOT, NOT]
    # Whoever read the refused value: the tagger's exclusion of the last one spreads back over the list ...
    assert _roles("fantasy and scare are both off the table", ("fantasy", WANT), ("scare", NOT)) == [NOT, NOT]
    # ... and a turn-down before the first covers the values "and" / "or" list after it.
    assert _roles("steer clear of fantasies and thrillers", ("fantasies", NOT), ("thrillers", WANT)) == [NOT, NOT]
    assert _roles("not in the mood for horror or musicals", ("horror", WANT), ("musicals", WANT)) == [NOT, NOT]
    # A longer list, commas and all, in either direction.
    assert _roles("steer clear of horror, musicals and westerns", ("horror", WANT), ("musicals", WANT),
                  ("westerns", WANT)) == [NOT, NOT, NOT]
    assert _roles("horror, musicals and westerns are out", ("horror", WANT), ("musicals", WANT),
                  ("westerns", WANT)) == [NOT, NOT, NOT]


def test_a_list_ends_where_its_clause_does() -> None:
    assert _roles("no horror, comedy please", ("horror", NOT), ("comedy", WANT)) == [NOT, WANT]
    assert _roles("looking for crime, and film-noir? I'll pass", ("crime", WANT), ("film-noir", WANT)) == [WANT, NOT]
    assert _roles("I hate horror and love comedy", ("horror", WANT), ("comedy", WANT)) == [NOT, WANT]
    # Without a cue of its own before it, the tagger's exclusion covers no list ("drama" may be wanted).
    assert _roles("horror and drama", ("horror", NOT), ("drama", WANT)) == [NOT, WANT]


def test_a_dismissal_may_end_with_who_dismisses() -> None:
    assert _roles("scifi gets a big fat no from me, cheers", ("scifi", WANT)) == [NOT]


def test_a_quantity_is_excluded_or_complemented_when_directions_set_its_bound() -> None:
    assert _roles("1960: not interested", ("1960", GE)) == [NOTIN]          # the tagger's direction was a guess
    assert _roles("the 80s are a no-go", ("80s", IN)) == [NOTIN]
    assert _roles("before 1960 is a no-go", ("1960", LT), directed=(1,)) == [GE]


@pytest.mark.parametrize(("request_text", "value"), [
    ("a mystery with a bit of romance", "romance"), ("craving space opera tonight", "space opera"),
])
def test_an_exclusion_with_no_word_of_refusal_near_it_is_a_wish(request_text: str, value: str) -> None:
    words = [w.text for w in split_words(request_text)]
    start = words.index(value.split()[0])
    assert [s.role for s in unsupported_exclusions(words, [_Span(NOT, start, start + len(value.split()))])] == [WANT]


@pytest.mark.parametrize("request_text", [
    "no horror, comedy or drama", "keep the romance out of it", "musicals make me cringe", "anything but romance",
])
def test_an_exclusion_with_a_refusal_near_it_or_in_a_list_stays(request_text: str) -> None:
    words = [w.text for w in split_words(request_text)]
    values = [n for n, w in enumerate(words) if w in ("horror", "comedy", "drama", "romance", "musicals")]
    spans = [_Span(NOT, n, n + 1) for n in values]
    assert [s.role for s in unsupported_exclusions(words, spans)] == [NOT] * len(spans)


def test_a_no_at_the_end_of_a_clause_dismisses() -> None:
    assert _roles("romance yes, action no. a drama", ("romance", WANT), ("action", WANT), ("drama", WANT)) == [
        WANT, NOT, WANT]
    assert _roles("horror no matter what", ("horror", WANT)) == [WANT]
