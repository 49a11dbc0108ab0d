"""The request reader's grounding follows a grown catalog: a title added after start is named, and readings cached
before the catalog grew are not served again."""

from __future__ import annotations

import numpy as np

from services.core.catalog import Catalog, Item
from services.core.lexicon import Lexicon, TitleMatcher
from services.core.reading import WORD_LABELS, split_words
from services.core.validation import Limits
from services.instruction.reader import RequestReader


async def test_a_title_added_to_the_catalog_is_read_after_regrounding() -> None:
    catalog = Catalog({"1": Item("1", "Fargo", 1996, ("Crime",))})

    async def tag(text: str, timeout_s: float | None):
        rows = np.zeros((len(split_words(text)), len(WORD_LABELS)), dtype=np.float32)
        rows[:, WORD_LABELS.index("O")] = 1.0
        rows[1:, :] = 0.0
        rows[1:, WORD_LABELS.index("I-REF")] = 1.0
        rows[1, :] = 0.0
        rows[1, WORD_LABELS.index("B-REF")] = 1.0  # "like <title words>"
        return rows, "1"

    reader = RequestReader(tag, Lexicon(catalog), TitleMatcher(catalog), Limits())
    before, _ = await reader.read("like Casablanca", None)
    assert before.references == () and before.unread == ("Casablanca",)
    catalog.extend([Item("2", "Casablanca", 1942, ("Drama",))])
    reader.reground(Lexicon(catalog), TitleMatcher(catalog))
    after, cached = await reader.read("like Casablanca", None)
    assert not cached and [r.item_id for r in after.references] == ["2"]
