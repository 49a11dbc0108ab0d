import random

from services.core.catalog import Item
from tools.core.teacher import VAGUE_BANK, explicit_preference, specific_intention, vague_intention

COMEDY_90S = Item("1", "A", 1994, ("Comedy", "Romance"))
COMEDY_80S = Item("2", "B", 1987, ("Comedy",))
HORROR = Item("3", "C", 1995, ("Horror",))


def test_explicit_preference_names_likes_eras_and_dislikes():
    text = explicit_preference([(COMEDY_90S, 5.0), (COMEDY_80S, 4.0), (HORROR, 1.0)])
    assert text == "Enjoys comedy and romance films, mostly from the 1990s and 1980s. Tends to rate horror low."


def test_a_genre_both_liked_and_disliked_is_not_called_disliked():
    text = explicit_preference([(COMEDY_90S, 5.0), (COMEDY_80S, 1.0)])
    assert "low" not in text and text.startswith("Enjoys comedy")


def test_no_signal_says_so():
    assert explicit_preference([(HORROR, 3.0)]) == "Has no clear preferences yet."


def test_intentions_come_from_the_target_item():
    rng = random.Random(1)
    assert vague_intention(HORROR, rng) in VAGUE_BANK["Horror"]
    assert specific_intention(COMEDY_90S) == "a comedy and romance movie from the 1990s"
    assert specific_intention(Item("9", "X")) == "a movie"
