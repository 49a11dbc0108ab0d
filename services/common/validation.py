"""Request checks shared by the services; each raises InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.catalog import Catalog, Item
from services.common.errors import InvalidArgument


def require_known_items(catalog: Catalog, field: str, ids: Sequence[str]) -> list[Item]:
    """The catalog items for ``ids``.

    Raises:
        InvalidArgument: some ids are not in the catalog (the first five are named).
    """
    unknown = [i for i in ids if i not in catalog]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:5])
        raise InvalidArgument(f"{field}: {len(unknown)} id(s) not in the catalog: {shown}")
    return [catalog[i] for i in ids]


def require_max_chars(field: str, value: str, limit: int) -> None:
    """Raises InvalidArgument when ``value`` is longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(f"{field}: {len(value)} characters, at most {limit}")
