import pytest

from services.core import prompts
from services.core.catalog import Item

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
    assert "A. Toy Story (1995) [Animation]\nB. Fargo (1996)\n" in text


def test_more_candidates_than_labels_is_refused():
    with pytest.raises(ValueError, match="at most 20"):
        prompts.format_candidates(HISTORY + HISTORY)


def test_labels_are_distinct_single_letters():
    assert len(set(prompts.LABELS)) == prompts.MAX_CANDIDATES == 20
    assert prompts.label_token_text("A") == " A"


def test_retrieval_text_puts_the_intention_first():
    assert prompts.retrieval_text("a comedy", HISTORY[:1]) == "a comedy. Recently watched: Movie 0 (1990)"
    assert prompts.retrieval_text("", []) == ""


def test_training_templates_cover_the_paper_combinations_with_varied_wording():
    templates = prompts.TRAINING_TEMPLATES
    assert len(templates) >= 39
    assert len({t.text for t in templates}) == len(templates)
    combos = {(t.preference, t.intention, t.task) for t in templates}
    for preference, intention in [("P0", "I1"), ("P0", "I2"), ("P1", "I0"), ("P1", "I1"), ("P1", "I2"),
                                  ("P2", "I0"), ("P2", "I1"), ("P2", "I2")]:
        for task in ("T0", "T2", "T3"):
            assert (preference, intention, task) in combos
    assert prompts.TRAINING_TEMPLATES[: len(prompts.SERVING_TEMPLATES)] == prompts.SERVING_TEMPLATES


@pytest.mark.parametrize("template", prompts.TRAINING_TEMPLATES, ids=lambda t: t.template_id)
def test_every_template_renders_what_its_parts_promise(template):
    text = prompts.render_instruction(
        template, history=HISTORY, candidates=CANDIDATES if template.task == "T3" else [],
        candidate=CANDIDATES[0] if template.task == "T0" else None, query="a comedy", preference="Likes dramas.",
    )
    assert "{" not in text and "}" not in text
    assert ("Movie 14 (2004)" in text) == (template.preference != "P0")
    assert ("Likes dramas." in text) == (template.preference == "P2")
    assert ("a comedy" in text) == (template.intention != "I0")
    assert ("B. Fargo (1996)" in text) == (template.task == "T3")
    if template.task == "T0":
        assert "Toy Story (1995)" in text and "yes or no" in text
