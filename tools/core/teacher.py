"""Our substitute for InstructRec's teacher LLM: preferences and intentions derived from what users did.

The paper asked a teacher LLM to write explicit preferences and vague intentions. We have none, so:

* explicit preference (P2 targets and P2 training text): genres the user rated highly (likes), genres they
  rated low and never liked (dislikes), and the decades they watch most;
* vague intention (I1): a paraphrase from a bank keyed by one of the target item's genres
  ("something funny for tonight");
* specific intention (I2): the target item's genres and decade ("a crime thriller from the 1990s").

Everything is deterministic given a seeded ``random.Random``, so training data can be regenerated exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from services.core.catalog import Item

LIKE_RATING = 4.0
DISLIKE_RATING = 2.0

# Vague ways people ask for a genre. Several per genre so that the tuned model sees varied wording.
VAGUE_BANK: dict[str, tuple[str, ...]] = {
    "Action": ("something with a lot of action", "an adrenaline rush", "a fast, explosive movie"),
    "Adventure": ("an adventure to get lost in", "a journey somewhere exciting", "something adventurous"),
    "Animation": ("an animated film", "a cartoon for tonight", "something animated and colourful"),
    "Children's": ("something the kids can watch too", "a family film", "a movie for children"),
    "Comedy": ("something light and funny for tonight", "a good laugh", "a comedy to cheer me up"),
    "Crime": ("a gritty crime story", "something about criminals and cops", "a heist or a mob story"),
    "Documentary": ("something real, a documentary", "a film about true events", "something educational"),
    "Drama": ("a moving drama", "something serious and emotional", "a film with strong characters"),
    "Fantasy": ("something magical", "a fantasy world to escape to", "a fairy tale for grown-ups"),
    "Film-Noir": ("a dark, stylish old crime film", "something noir", "a shadowy detective story"),
    "Horror": ("something scary", "a film that will keep me up at night", "a good fright"),
    "Musical": ("a movie with great songs", "a musical", "something with singing and dancing"),
    "Mystery": ("a puzzle to solve", "a whodunit", "a mystery that keeps me guessing"),
    "Romance": ("a love story", "something romantic for date night", "a sweet romantic film"),
    "Sci-Fi": ("science fiction", "something set in the future or in space", "a mind-bending sci-fi"),
    "Thriller": ("something suspenseful", "an edge-of-the-seat thriller", "a tense movie"),
    "War": ("a war film", "something about soldiers and battles", "a movie set during a war"),
    "Western": ("a western", "cowboys and the frontier", "a classic shoot-out in the desert"),
}
GENERIC_VAGUE = ("something good to watch tonight", "a movie I will like", "anything worth my evening")
# Ways people ask for one genre from one decade; varied syntax so that whatever learns to read a request (the
# intent heads, ``tools/train/intent.py``) does not learn one sentence shape. {genre} is lower case.
SPECIFIC_TEMPLATES: tuple[str, ...] = (
    "a {genre} movie from the {decade}s",
    "{genre} films made in the {decade}s",
    "I'd like to watch a {genre} picture from the {decade}s",
    "{decade}s {genre} movies",
    "in the mood for a {decade}s {genre}",
    "a good {genre} flick, {decade}s please",
    "what {genre} came out in the {decade}s?",
    "{genre} from around {decade}",
    "something {genre} shot in the {decade}s",
)


def _decade(year: int | None) -> int | None:
    return year // 10 * 10 if year else None


def _join(words: Sequence[str]) -> str:
    words = [w.lower() for w in words]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def explicit_preference(history: Sequence[tuple[Item, float | None]], max_genres: int = 3) -> str:
    """A one- or two-sentence preference statement from the history's genres, decades and ratings.

    Args:
        history: (item, rating) pairs, oldest first; a missing rating counts as a like.
        max_genres: Most genres named per clause.
    """
    likes: Counter[str] = Counter()
    dislikes: Counter[str] = Counter()
    decades: Counter[int] = Counter()
    for item, rating in history:
        liked = rating is None or rating >= LIKE_RATING
        for genre in item.genres:
            if liked:
                likes[genre] += 1
            elif rating is not None and rating <= DISLIKE_RATING:
                dislikes[genre] += 1
        if (decade := _decade(item.year)) is not None:
            decades[decade] += 1
    liked = [g for g, _ in likes.most_common(max_genres)]
    disliked = [g for g, _ in dislikes.most_common() if g not in likes][:max_genres]
    parts = []
    if liked:
        era = ""
        if decades:
            top = [d for d, _ in decades.most_common(2)]
            era = f", mostly from the {top[0]}s" if len(top) == 1 else f", mostly from the {top[0]}s and {top[1]}s"
        parts.append(f"Enjoys {_join(liked)} films{era}.")
    if disliked:
        parts.append(f"Tends to rate {_join(disliked)} low.")
    return " ".join(parts) or "Has no clear preferences yet."


def vague_intention(item: Item, rng: random.Random) -> str:
    """A vague request the target item satisfies, from the paraphrase bank of one of its genres."""
    genres = [g for g in item.genres if g in VAGUE_BANK]
    if not genres:
        return rng.choice(GENERIC_VAGUE)
    return rng.choice(VAGUE_BANK[rng.choice(genres)])


def specific_request(item: Item, rng: random.Random) -> str:
    """A specific request in the shape of InstructRec's I2: one of the item's genres and its decade, in one of
    :data:`SPECIFIC_TEMPLATES`' wordings (the genre alone when the year is unknown)."""
    return specific_request_and_template(item, rng)[0]


def specific_request_and_template(item: Item, rng: random.Random) -> tuple[str, str]:
    """:func:`specific_request` and the template it used ("" for the genre-alone fallback)."""
    genres = [g for g in item.genres if g in VAGUE_BANK] or list(item.genres)
    genre = rng.choice(genres).lower() if genres else "movie"
    decade = _decade(item.year)
    if decade is None:
        return (f"a {genre} movie" if genres else "a movie"), ""
    template = rng.choice(SPECIFIC_TEMPLATES)
    return template.format(genre=genre, decade=decade), template


def specific_intention(item: Item, noun: str = "movie") -> str:
    """A specific request naming the target item's genres and decade: "a crime and thriller movie from the 1990s"."""
    genres = _join(item.genres[:2]) + " " if item.genres else ""
    decade = _decade(item.year)
    return f"a {genres}{noun}" + (f" from the {decade}s" if decade else "")
