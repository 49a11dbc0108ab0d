"""Intentions for evaluation, from a phrase bank that training never sees, and the string-filter baseline.

InstructRec's intentions come in two kinds: specific (I2: one of the target's genres and its decade, named in
words a string filter can match) and vague (I1: paraphrases of a genre that no filter can match, "something
that will make me laugh"). Training draws its wording from ``tools/core/teacher.py``; evaluation draws it from
the banks here, and ``tests/unit/tools/eval/test_intentions.py`` checks the two share no phrase, so a tuned
model cannot have memorised the evaluation's wording.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from services.core.catalog import Catalog, Item

VAGUE = "I1"
SPECIFIC = "I2"

# Evaluation-only paraphrases per genre (none of them in tools/core/teacher.py's banks).
EVAL_VAGUE_BANK: dict[str, tuple[str, ...]] = {
    "Action": ("non-stop chases and fights", "something that gets my pulse racing"),
    "Adventure": ("a quest across far-off lands", "explorers and treasure"),
    "Animation": ("hand-drawn characters", "a film made of drawings come to life"),
    "Children's": ("a pick for a kids' sleepover", "safe for my little nephew"),
    "Comedy": ("something that will make me laugh", "I want to giggle all evening"),
    "Crime": ("gangsters and detectives", "an underworld tale"),
    "Documentary": ("a true story told with real footage", "learn something about the real world"),
    "Drama": ("a tearjerker", "a heavy, character-driven story"),
    "Fantasy": ("wizards, dragons and spells", "an enchanted otherworld"),
    "Film-Noir": ("fedoras, femmes fatales and rain-soaked streets", "black-and-white cynicism"),
    "Horror": ("monsters in the dark", "I want to be terrified"),
    "Musical": ("people bursting into song", "a show-tune spectacle"),
    "Mystery": ("clues and a hidden culprit", "keep me guessing who did it"),
    "Romance": ("two people falling for each other", "butterflies in the stomach"),
    "Sci-Fi": ("robots, aliens or time travel", "a spaceship story"),
    "Thriller": ("nail-biting tension", "a cat-and-mouse chase that grips me"),
    "War": ("the front line and its soldiers", "a battlefield epic"),
    "Western": ("gunslingers and saloons", "dusty outlaws on horseback"),
}
EVAL_SPECIFIC_TEMPLATES: tuple[str, ...] = (
    "looking for {genre} from the {decade}s",
    "any {decade}s {genre} title?",
    "show me {genre} released in the {decade}s",
)

_DECADE = re.compile(r"\b(1[89]\d0|20\d0)s\b")


def decade(year: int | None) -> int | None:
    return year // 10 * 10 if year else None


def intention(item: Item, kind: str, rng: random.Random, literal: bool = False) -> str:
    """An evaluation intention of ``kind`` (I1 vague, I2 specific) that ``item`` satisfies.

    ``literal``: a vague intention names its genre outright ("looking for comedy"), the same genre the paraphrase
    would stand for (same draw from ``rng``). What a perfect reader of the paraphrase would know, so the served
    stack on literal wording is the ceiling any better intention reader (an LM or another) could reach.
    Specific intentions are literal already and do not change."""
    genres = [g for g in item.genres if g in EVAL_VAGUE_BANK] or list(item.genres)
    genre = rng.choice(genres) if genres else ""
    if kind == VAGUE:
        if literal:
            return f"looking for {genre.lower() or 'a film'}"
        return rng.choice(EVAL_VAGUE_BANK.get(genre, ("a film worth my evening",)))
    era = decade(item.year)
    if era is None:
        return f"looking for {genre.lower() or 'a film'}"
    return rng.choice(EVAL_SPECIFIC_TEMPLATES).format(genre=genre.lower() or "a film", decade=era)


def phrases() -> set[str]:
    """Every fixed phrase of the evaluation banks (for the disjointness test)."""
    out = {p for bank in EVAL_VAGUE_BANK.values() for p in bank}
    return out | set(EVAL_SPECIFIC_TEMPLATES)


class StringFilter:
    """The baseline that reads an intention literally: genre names and a decade ("1990s") found in the text.

    An item passes when it has every named genre and was released in the named decade (an unnamed part does
    not filter). What passes is ordered first; each side by the given score.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._genres = sorted({g for item in catalog for g in item.genres}, key=len, reverse=True)

    def parse(self, text: str) -> tuple[set[str], int | None]:
        lowered = text.lower()
        genres = {g for g in self._genres if re.search(rf"(?<![\w-]){re.escape(g.lower())}(?![\w-])", lowered)}
        match = _DECADE.search(lowered)
        return genres, int(match.group(1)) if match else None

    def passes(self, item_id: str, genres: set[str], era: int | None) -> bool:
        item = self._catalog[item_id]
        return genres <= set(item.genres) and (era is None or decade(item.year) == era)

    def order(self, text: str, item_ids: Sequence[str], scores: Sequence[float]) -> list[str]:
        genres, era = self.parse(text)
        keyed = [(not self.passes(i, genres, era), -s, n, i) for n, (i, s) in enumerate(zip(item_ids, scores))]
        return [i for *_, i in sorted(keyed)]

    def singles_out(self, text: str, target: str, item_ids: Sequence[str]) -> bool:
        """Whether the filter alone leaves exactly the target among ``item_ids``."""
        genres, era = self.parse(text)
        if not genres and era is None:
            return False
        return [i for i in item_ids if self.passes(i, genres, era)] == [target]
