"""Attribute filters and the diversity cap: which catalog items a request may get (no gRPC here).

The catalog file defines the attributes (``services/core/catalog.py``): nothing here knows about movies. An
attribute whose every value is a number is **numeric** (a range can filter it); every attribute, numeric or
not, can be filtered by a set of values, compared as text (a number as its decimal text, ``1995``; a
multi-valued attribute by each of its values).

A filter is a condition on one attribute (a value set, any or all of its values; or a closed numeric range,
either end open) and a mode: keep only the items that meet it (include) or drop them (exclude). An item
without a value for the attribute never meets the condition: an include filter drops it, an exclude filter
keeps it. Filters combine with AND.

:class:`CatalogAttributes` precomputes, per attribute, the items of each value and the numeric values in
order, so the items a filter allows are found without scanning the catalog; the retrieval service searches
only those (``services/retrieval/retriever.py``) and the gateway checks every item again before answering.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from services.core.catalog import Catalog, Item
from services.core.errors import InvalidArgument
from services.core.validation import require_max_chars

ANY, ALL = "any", "all"
VALUES, RANGE = "values", "range"
NUMERIC, TEXT = "numeric", "text"

# Filters whose condition sets are kept (per process); a bound, so callers cannot grow memory without limit.
_CACHE_ENTRIES = 4096
# ... and at most this many catalogs' worth of item positions in them (a condition on a large catalog holds many).
_CACHE_CATALOGS = 4
_NONE = np.zeros(0, dtype=np.int32)
# Attribute names listed in an "unknown attribute" message.
_KNOWN_SHOWN = 30


@dataclass(frozen=True)
class FilterLimits:
    """Bounds on one request's filters (from the service settings)."""

    max_filters: int = 16
    max_values: int = 100
    max_value_chars: int = 256


@dataclass(frozen=True)
class AttributeFilter:
    """One condition on one attribute, as the caller sent it; :func:`validate_filters` checks it.

    ``kind`` says which condition is set: ``"values"`` (``values`` with ``match`` ``"any"``/``"all"``),
    ``"range"`` (``min``/``max`` inclusive, None for an open end), or ``""`` (none, an invalid filter).
    """

    attribute: str
    kind: str = VALUES
    values: tuple[str, ...] = ()
    match: str = ANY
    min: float | None = None
    max: float | None = None
    exclude: bool = False

    @classmethod
    def any_of(cls, attribute: str, values: Iterable[str], *, exclude: bool = False) -> AttributeFilter:
        return cls(attribute, VALUES, tuple(values), ANY, exclude=exclude)

    @classmethod
    def all_of(cls, attribute: str, values: Iterable[str], *, exclude: bool = False) -> AttributeFilter:
        return cls(attribute, VALUES, tuple(values), ALL, exclude=exclude)

    @classmethod
    def between(cls, attribute: str, lo: float | None = None, hi: float | None = None, *,
                exclude: bool = False) -> AttributeFilter:
        return cls(attribute, RANGE, min=lo, max=hi, exclude=exclude)

    def condition(self) -> AttributeFilter:
        """The same condition in include mode (the cache key of the items that meet it)."""
        return AttributeFilter(self.attribute, self.kind, self.values, self.match, self.min, self.max, False)

    def meets(self, item: Item) -> bool:
        """Whether ``item`` meets the condition (before the mode is applied)."""
        if self.kind == RANGE:
            value = item_number(item, self.attribute)
            return value is not None and (self.min is None or value >= self.min) and (
                self.max is None or value <= self.max)
        have = item_values(item, self.attribute)
        return bool(have) and (set(self.values) <= have if self.match == ALL else not have.isdisjoint(self.values))

    def allows(self, item: Item) -> bool:
        """Whether ``item`` may be returned under this filter."""
        return self.meets(item) != self.exclude

    def describe(self) -> str:
        """One line for people: ``genres any of [Comedy, Drama]``, ``exclude year in 1990..1999``."""
        if self.kind == RANGE:
            lo = "" if self.min is None else _number_text(self.min)
            hi = "" if self.max is None else _number_text(self.max)
            text = f"{self.attribute} in {lo}..{hi}"
        else:
            text = f"{self.attribute} {self.match} of [{', '.join(self.values)}]"
        return f"exclude {text}" if self.exclude else text


@dataclass(frozen=True)
class DiversityRule:
    """At most ``max_items_per_value`` returned items share a value of ``attribute`` (each value of a
    multi-valued attribute counts; items without a value are not limited)."""

    attribute: str
    max_items_per_value: int

    def describe(self) -> str:
        return f"at most {self.max_items_per_value} items per {self.attribute} value"


def _number_text(value: float) -> str:
    """A number as attribute text: ``1995`` for 1995 and 1995.0, ``49.9`` for 49.9."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))


def item_values(item: Item, attribute: str) -> frozenset[str]:
    """The item's values of ``attribute`` as text (empty: no value)."""
    value = item.attributes.get(attribute)
    if value is None:
        return frozenset()
    if isinstance(value, tuple):
        return frozenset(value)
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset((_number_text(value),))


def item_number(item: Item, attribute: str) -> float | None:
    """The item's value of ``attribute`` if it is a number."""
    value = item.attributes.get(attribute)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _quoted(text: str) -> str:
    """A caller's string in a message: JSON-quoted (control characters escaped), cut to 64 characters."""
    return json.dumps(text[:64], ensure_ascii=False)


class CatalogAttributes:
    """The attributes of one catalog and, per attribute, which items have which value.

    Read-only after construction except for a bounded cache of condition results and :meth:`refresh` after
    the catalog grew, so one instance serves every request of a process.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self.refresh()

    def refresh(self) -> None:
        """Rebuild from the catalog (after :meth:`Catalog.extend`); requests in flight keep the sets they got.

        Postings are arrays of catalog positions (4 bytes an entry, not a set of id strings: a million items hold
        several million entries), turned into id sets per condition when a request asks, and cached."""
        catalog = self._catalog
        ids = list(catalog.items)
        order = {item_id: n for n, item_id in enumerate(ids)}
        postings: dict[str, dict[str, list[int]]] = {}
        numbers: dict[str, tuple[list[float], list[int]]] = {}
        numeric: dict[str, bool] = {}
        for n, item in enumerate(catalog):
            for name, value in item.attributes.items():
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                numeric[name] = numeric.get(name, True) and is_number
                by_value = postings.setdefault(name, {})
                for text in item_values(item, name):
                    by_value.setdefault(text, []).append(n)
                if is_number:
                    values, positions = numbers.setdefault(name, ([], []))
                    values.append(float(value))
                    positions.append(n)
        sorted_numbers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, (values, positions) in numbers.items():
            by_value = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")
            sorted_numbers[name] = (np.asarray(values, dtype=np.float64)[by_value],
                                    np.asarray(positions, dtype=np.int32)[by_value])
        # Assigned together at the end: a request never sees half of a refresh.
        self._ids, self._all, self._order = ids, frozenset(order), order
        self._kinds = {name: NUMERIC if numeric[name] else TEXT for name in sorted(numeric)}
        self._postings = {name: {v: np.asarray(positions, dtype=np.int32) for v, positions in by_value.items()}
                          for name, by_value in postings.items()}
        self._numbers = sorted_numbers
        self._cache: dict[AttributeFilter, np.ndarray] = {}
        self._cached_positions = 0

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def all_items(self) -> frozenset[str]:
        """Every catalog item id."""
        return self._all

    @property
    def kinds(self) -> dict[str, str]:
        """Attribute name -> ``"numeric"`` or ``"text"``, by name."""
        return dict(self._kinds)

    def is_numeric(self, attribute: str) -> bool:
        return self._kinds.get(attribute) == NUMERIC

    def order(self, item_id: str) -> int:
        """The item's position in the catalog file (a deterministic order for sets of ids)."""
        return self._order.get(item_id, len(self._order))

    def values_of(self, attribute: str) -> list[str]:
        """The distinct values of ``attribute`` in the catalog, sorted."""
        return sorted(self._postings.get(attribute, {}))

    def _positions(self, f: AttributeFilter) -> np.ndarray:
        """Catalog positions of the items that meet ``f``'s condition; cached per condition (a bounded cache:
        :data:`_CACHE_ENTRIES` conditions and :data:`_CACHE_CATALOGS` catalogs' worth of positions in all)."""
        key = f.condition()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if key.kind == RANGE:
            values, positions = self._numbers.get(key.attribute, (np.zeros(0), _NONE))
            lo = 0 if key.min is None else int(np.searchsorted(values, key.min, side="left"))
            hi = len(values) if key.max is None else int(np.searchsorted(values, key.max, side="right"))
            found = positions[lo:hi]
        else:
            by_value = self._postings.get(key.attribute, {})
            arrays = [by_value.get(v, _NONE) for v in dict.fromkeys(key.values)]
            if not arrays:
                found = _NONE
            elif key.match == ALL:
                found = functools.reduce(np.intersect1d, sorted(arrays, key=len))
            else:
                found = arrays[0] if len(arrays) == 1 else np.unique(np.concatenate(arrays))
        if len(self._cache) >= _CACHE_ENTRIES or self._cached_positions + len(found) > _CACHE_CATALOGS * len(self._ids):
            self._cache.clear()
            self._cached_positions = 0
        self._cache[key] = found
        self._cached_positions += len(found)
        return found

    def eligible(self, filters: Sequence[AttributeFilter]) -> Eligible | None:
        """The catalog items every filter allows; None when there are no filters (every item).

        A mask over catalog positions, not a set of ids: a filter that excludes half of a million items costs
        one array assignment instead of set arithmetic on 500,000 ids."""
        if not filters:
            return None
        mask = np.ones(len(self._ids), dtype=bool)
        for f in filters:
            if f.exclude:
                mask[self._positions(f)] = False
            else:
                meets = np.zeros_like(mask)
                meets[self._positions(f)] = True
                mask &= meets
        return Eligible(mask, self._ids, self._order)

    def validate_filters(self, filters: Sequence[AttributeFilter], limits: FilterLimits,
                         field: str = "filters") -> None:
        """Raises InvalidArgument naming the field, e.g. ``filters[1].attribute: unknown attribute "colour";
        known: genres, year``. Values the catalog does not hold are valid (they match nothing)."""
        if len(filters) > limits.max_filters:
            raise InvalidArgument(f"{field}: {len(filters)} filters, at most {limits.max_filters}")
        for n, f in enumerate(filters):
            self._validate_one(f, limits, f"{field}[{n}]")

    def _check_attribute(self, attribute: str, limits: FilterLimits, field: str) -> None:
        if not attribute:
            raise InvalidArgument(f"{field}: must not be empty")
        require_max_chars(field, attribute, limits.max_value_chars)
        if attribute not in self._kinds:
            names = list(self._kinds)
            known = ", ".join(names[:_KNOWN_SHOWN]) + (", ..." if len(names) > _KNOWN_SHOWN else "")
            raise InvalidArgument(f"{field}: unknown attribute {_quoted(attribute)}; known: {known or '(none)'}")

    def _validate_one(self, f: AttributeFilter, limits: FilterLimits, at: str) -> None:
        self._check_attribute(f.attribute, limits, f"{at}.attribute")
        if f.kind == VALUES:
            if f.match not in (ANY, ALL):
                raise InvalidArgument(f"{at}.value_set.match: unknown value {f.match}")
            if not f.values:
                raise InvalidArgument(f"{at}.value_set.values: must not be empty (a value set needs a value)")
            if len(f.values) > limits.max_values:
                raise InvalidArgument(f"{at}.value_set.values: {len(f.values)} values, at most {limits.max_values}")
            for j, value in enumerate(f.values):
                if not value:
                    raise InvalidArgument(f"{at}.value_set.values[{j}]: must not be empty")
                require_max_chars(f"{at}.value_set.values[{j}]", value, limits.max_value_chars)
        elif f.kind == RANGE:
            if not self.is_numeric(f.attribute):
                example = self.values_of(f.attribute)[:1]
                like = f" (it has values like {_quoted(example[0])})" if example else ""
                raise InvalidArgument(f"{at}.range: attribute {_quoted(f.attribute)} is not numeric{like}; "
                                      f"filter it with value_set")
            if f.min is None and f.max is None:
                raise InvalidArgument(f"{at}.range: set min, max or both (an empty range)")
            for name, bound in (("min", f.min), ("max", f.max)):
                if bound is not None and not math.isfinite(bound):
                    raise InvalidArgument(f"{at}.range.{name}: must be a finite number, got {bound}")
            if f.min is not None and f.max is not None and f.min > f.max:
                raise InvalidArgument(f"{at}.range: min {_number_text(f.min)} is greater than max "
                                      f"{_number_text(f.max)} (an empty range)")
        else:
            raise InvalidArgument(f"{at}: set value_set or range")

    def validate_diversity(self, rule: DiversityRule, limits: FilterLimits, field: str = "diversity") -> None:
        """Raises InvalidArgument naming the field."""
        self._check_attribute(rule.attribute, limits, f"{field}.attribute")
        if rule.max_items_per_value < 1:
            raise InvalidArgument(f"{field}.max_items_per_value: must be >= 1, got {rule.max_items_per_value}")


class Eligible(AbstractSet[str]):
    """The items a request's filters allow: a boolean mask over catalog positions, read as a set of ids (``in``,
    ``len``, iteration in catalog order). Holds the catalog's id list and positions as they were when it was
    made, so a catalog refresh never changes it under a request."""

    def __init__(self, mask: np.ndarray, ids: Sequence[str], order: dict[str, int]) -> None:
        self._mask, self._ids, self._order = mask, ids, order
        self._count = int(np.count_nonzero(mask))

    def __contains__(self, item_id: object) -> bool:
        n = self._order.get(item_id)  # type: ignore[call-overload]
        return n is not None and bool(self._mask[n])

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        ids = self._ids
        return (ids[n] for n in np.flatnonzero(self._mask).tolist())

    @classmethod
    def _from_iterable(cls, it: Iterable[str]) -> frozenset[str]:
        return frozenset(it)

    def __repr__(self) -> str:
        return f"Eligible({self._count} of {len(self._ids)} items)"


def first_violation(item: Item, filters: Sequence[AttributeFilter]) -> int | None:
    """The index of the first filter that does not allow ``item``; None when all do."""
    for n, f in enumerate(filters):
        if not f.allows(item):
            return n
    return None


def diversify(item_ids: Sequence[str], catalog: Catalog, rule: DiversityRule, *, limit: int | None = None,
              counts: dict[str, int] | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep items in order while no value of ``rule.attribute`` goes over the cap.

    Args:
        item_ids: Catalog ids, best first.
        catalog: Where their attributes are.
        rule: The cap.
        limit: Stop once this many are kept (the rest is neither kept nor reported).
        counts: Items already placed per value (updated in place), e.g. pinned items.

    Returns:
        The kept ids in order, and ``(item_id, value)`` for each item dropped (the value that was full).
    """
    counts = {} if counts is None else counts
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    for item_id in item_ids:
        if limit is not None and len(kept) >= limit:
            break
        values = sorted(item_values(catalog[item_id], rule.attribute))
        full = next((v for v in values if counts.get(v, 0) >= rule.max_items_per_value), None)
        if full is not None:
            dropped.append((item_id, full))
            continue
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        kept.append(item_id)
    return kept, dropped


def over_cap(item_ids: Collection[str], catalog: Catalog, rule: DiversityRule) -> dict[str, int]:
    """Values of ``rule.attribute`` held by more than the cap among ``item_ids`` (empty: the cap holds)."""
    counts: dict[str, int] = {}
    for item_id in item_ids:
        for v in item_values(catalog[item_id], rule.attribute):
            counts[v] = counts.get(v, 0) + 1
    return {v: c for v, c in counts.items() if c > rule.max_items_per_value}
