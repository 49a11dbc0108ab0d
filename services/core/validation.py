"""Request checks shared by the services; each raises InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.core.catalog import Catalog, Item
from services.core.errors import InvalidArgument


def require_known_items(catalog: Catalog, field: str, ids: Sequence[str]) -> list[Item]:
    """The catalog items for ``ids``.

    Raises:
        InvalidArgument: some ids are not in the catalog (the first five are named).
    """
    unknown = [i for i in ids if i not in catalog]
    if unknown:
        shown = ", ".join(repr(i[:64]) for i in unknown[:5])
        raise InvalidArgument(f"{field}: {len(unknown)} id(s) not in the catalog: {shown}")
    return [catalog[i] for i in ids]


def require_max_chars(field: str, value: str, limit: int) -> None:
    """Raises InvalidArgument when ``value`` is longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(f"{field}: {len(value)} characters, at most {limit}")


@dataclass(frozen=True)
class Limits:
    """Input limits every service enforces (from its settings), so no request can grow work without bound."""

    max_id_chars: int = 256
    max_ids_per_field: int = 10_000
    max_query_chars: int = 1_000

    @classmethod
    def of(cls, settings) -> Limits:
        """The limits of a ``ServiceSettings``."""
        return cls(settings.max_id_chars, settings.max_ids_per_field, settings.max_query_chars)

    def check_query(self, query: str, field: str = "query") -> None:
        require_max_chars(field, query, self.max_query_chars)

    def check_id(self, field: str, value: str) -> None:
        require_max_chars(field, value, self.max_id_chars)

    def check_ids(self, field: str, ids: Sequence[str], max_count: int | None = None) -> None:
        """At most ``max_count`` (default ``max_ids_per_field``) non-empty ids, none too long."""
        limit = self.max_ids_per_field if max_count is None else max_count
        if len(ids) > limit:
            raise InvalidArgument(f"{field}: {len(ids)} ids, at most {limit}")
        for pos, item_id in enumerate(ids):
            if not item_id:
                raise InvalidArgument(f"{field}[{pos}]: must not be empty")
            require_max_chars(f"{field}[{pos}]", item_id, self.max_id_chars)

    def check_distinct(self, field: str, ids: Sequence[str]) -> None:
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"{field}: ids must be distinct")
