import pytest

from services.common import prompts
from services.common.catalog import Item

HISTORY = [Item(str(i), f"Movie {i}", 1990 + i, ("Drama",)) for i in range(15)]
CANDIDATES = [Item("c1", "Toy Story", 1995, ("Animation",)), Item("c2", "Fargo", 1996, ())]


@pytest.mark.parametrize(
    ("history", "preference", "query", "template_id"),
    [
        (False, False, False, "P0-I0-T3-0"),
        (False, False, True, "P0-I1-T3-0"),
        (True, False, False, "P1-I0-T3-0"),
        (True, False, True, "P1-I1-T3-0"),
        (True, True, False, "P2-I0-T3-0"),
        (True, True, True, "P2-I1-T3-0"),
    ],
)
def test_template_follows_what_is_known(history, preference, query, template_id):
    assert prompts.select_template(history, preference, query).template_id == template_id


def test_instruction_lists_recent_history_query_preference_and_lettered_candidates():
    template = prompts.select_template(True, True, True)
    text = prompts.render_instruction(
        template, history=HISTORY, candidates=CANDIDATES, query="  something funny ", preference="Likes dramas.",
        max_history_items=3,
    )
    assert "Movie 12 (2002); Movie 13 (2003); Movie 14 (2004)" in text
    assert "Movie 11" not in text
    assert '"something funny"' in text
    assert "Likes dramas." in text
    assert "A. Toy Story (1995)\nB. Fargo (1996)" in text


def test_more_candidates_than_labels_is_refused():
    with pytest.raises(ValueError, match="at most 20"):
        prompts.format_candidates(HISTORY + HISTORY)


def test_labels_are_distinct_single_letters():
    assert len(set(prompts.LABELS)) == prompts.MAX_CANDIDATES == 20
    assert prompts.label_token_text("A") == " A"


def test_retrieval_text_puts_the_intention_first():
    assert prompts.retrieval_text("a comedy", HISTORY[:1]) == "a comedy. Recently watched: Movie 0 (1990)"
    assert prompts.retrieval_text("", []) == ""
