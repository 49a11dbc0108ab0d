"""Which catalog titles a reference span names, and whether it names them beyond doubt.

A reference acts strongly (its neighbours are retrieved, the title itself is left out), so a loose match is no
reference: its words stay in the request's text ("a true story" is not "Toy Story").
"""

from __future__ import annotations

import re

from services.core.lexicon import TitleMatch, TitleMatcher, without_article

# A title match (0-100) a reference needs; looser ones are reported as unread, their words kept in the text.
REFERENCE_MATCH_MIN = 88.0


def titles_in(mention: str, titles: TitleMatcher) -> list[list[TitleMatch]]:
    """The titles a reference span names: the whole span as one title, unless the titles found inside it match
    better (a span that ran on past its title, "Scream x", or lists several). In a lowercase mention, a common noun
    does not name a title by chance: one word does not stand for a longer title ("little" -> "Little Women"), and
    a word built on a one-word title is not that title ("dusty outlaws on horseback" -> "The Outlaw"). A caller
    who writes a title in lower case writes it whole, if misspelt ("star wars", "the godfater", "outbrak")."""
    lower = mention.islower()
    one_word = len(mention.split()) == 1
    matches = [m for m in titles.match(mention) if not lower or not (
        _inflected(mention, m.title) or one_word and len(without_article(m.title).split()) > 1)]
    whole = [matches] if matches and matches[0].score >= REFERENCE_MATCH_MIN else []
    if whole and whole[0][0].score >= 100.0:
        return whole
    inside = [m for m in titles.within(mention, REFERENCE_MATCH_MIN)
              if not lower or not _inflected(mention, m[0].title)]
    if inside and (not whole or min(m[0].score for m in inside) > whole[0][0].score):
        return inside
    return whole


_INFLECTIONS = ("s", "es", "ed", "ing", "er", "ers")


def _inflected(mention: str, title: str) -> bool:
    """Whether a one-word ``title`` stands in ``mention`` only inflected ("outlaws" for "The Outlaw", "outlaw" for
    "Outlaws"): a common noun, where a typo changes letters ("outbrak", "fargoo" stay the title)."""
    words = without_article(title).lower().split()
    if len(words) != 1:
        return False
    word = words[0]
    said = re.findall(r"\w+", mention.lower())
    return word not in said and any(f"{a}{ending}" == b for w in said for a, b in ((word, w), (w, word))
                                    for ending in _INFLECTIONS)


def names_a_title(mention: str, match: TitleMatch) -> bool:
    """Whether a mention names a title beyond doubt: matched exactly, and either a title of several words or
    written with a capital ("Aliens"; "robots, aliens or time travel" is no reference to it, nor "a quest" to
    "Quest")."""
    return match.score >= 100.0 and (len(without_article(match.title).split()) > 1 or mention[:1].isupper())
