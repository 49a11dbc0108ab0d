"""Acting on a request's reading in the gateway: which read constraints are filters, what retrieval searches
with, what the references add, and the order in which read constraints are relaxed when too few items meet them.

* Exclusions and numeric bounds the request states are hard: filters (source ``query``) that are never relaxed.
* Wanted values are filters too (sending the exact reading as filters is worth +35 % NDCG@10 on compositional
  requests, issue #29), relaxed in this order when fewer than the asked number of items meet them: an "all of"
  becomes "any of", then wanted values are dropped. What was relaxed is said in the response.
* A part read with low confidence is no filter; a wanted value then stays a soft preference in the text query.
* References ("like Star Wars") join the history as its most recent items, so the sequence model and the text
  side retrieve their neighbours; the referenced items themselves are excluded.
* Retrieval searches with the residual text (the request without exclusions, bounds and titles), so a negated
  value no longer pulls its own items in through the text encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from services.core.filters import ALL, ANY, RANGE, AttributeFilter
from services.core.reading import Reading


@dataclass(frozen=True)
class Step:
    """One attempt: the read filters in force and what was given up to get here (empty at the first step)."""

    filters: tuple[AttributeFilter, ...]
    relaxed: tuple[str, ...]


class ReadingPlan:
    """What the gateway does with one reading (None: the query is used as written)."""

    def __init__(self, reading: Reading | None, query: str) -> None:
        self.reading = reading
        self._query = query

    @property
    def retrieval_query(self) -> str:
        if self.reading is None:
            return self._query
        return self.reading.residual_text

    def history(self, history: Sequence[str]) -> list[str]:
        """The history retrieval scores with: the referenced items last (most recent), once each."""
        refs = self.reference_ids
        return [*[i for i in history if i not in refs], *refs]

    @property
    def reference_ids(self) -> list[str]:
        return [] if self.reading is None else list(dict.fromkeys(r.item_id for r in self.reading.references))

    def steps(self) -> Iterator[Step]:
        """The read filters to try, strictest first; the last step keeps only what is never relaxed."""
        hard = [] if self.reading is None else self.reading.hard_filters()
        fixed = tuple(f for f in hard if f.exclude or f.kind == RANGE)
        wanted = [f for f in hard if not f.exclude and f.kind != RANGE]
        yield Step((*fixed, *wanted), ())
        if not wanted:
            return
        loosened = [replace(f, match=ANY) if f.match == ALL and len(f.values) > 1 else f for f in wanted]
        relaxed = tuple(f"{f.describe()} -> any of" for f, g in zip(wanted, loosened) if f != g)
        if relaxed:
            yield Step((*fixed, *loosened), relaxed)
        yield Step(fixed, (*relaxed, *(f"dropped {f.describe()}" for f in loosened)))
