"""Catalog and interaction files: the one loader used by data preparation, training, indexing and serving.

File formats (documented in docs/training.md, "Data", so teams can bring their own data):

* Catalog, JSON Lines, one item per line::

    {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Comedy"]}

  ``item_id`` and ``title`` are required; ``year`` (int or null) and ``genres`` (list of strings) are optional.
  Every other key is an **attribute** of the item, which request filters and business rules can name
  (``services/core/filters.py``): a string (``"category": "shoes"``), a number (``"price": 49.9``), a boolean
  (read as the string ``"true"``/``"false"``) or a list of strings (``"tags": ["sale", "new"]``); null means the
  item has no value. ``genres`` and ``year`` are attributes too, so a catalog defines its own vocabulary.
* Interactions, CSV with a header ``user_id,item_id,timestamp[,rating]``; ids are strings, ``timestamp`` is a
  number (seconds), ``rating`` is optional side information. Every row is an implicit positive.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")
# Keys of a catalog line that are not attributes.
RESERVED_KEYS = ("item_id", "title")
GENRES, YEAR = "genres", "year"

# One attribute value: a string, a number, or several strings (a multi-valued attribute).
AttributeValue = str | int | float | tuple[str, ...]


class DataFormatError(ValueError):
    """A catalog or interactions file does not follow the documented format."""


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog item (slotted: a catalog of millions is held by several services)."""

    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    # The catalog line's other keys (see the module docstring); hash=False keeps the item hashable.
    extra_attributes: Mapping[str, AttributeValue] = field(default_factory=dict, hash=False)

    def display_title(self) -> str:
        """Title with the year, as shown to the language models and to callers: ``Fargo (1996)``."""
        return f"{self.title} ({self.year})" if self.year else self.title

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        """Every attribute the item has a value for: ``genres`` and ``year`` when known, then the others."""
        out: dict[str, AttributeValue] = {}
        if self.genres:
            out[GENRES] = self.genres
        if self.year is not None:
            out[YEAR] = self.year
        out.update(self.extra_attributes)
        return out

    def to_json(self) -> dict:
        extra = {k: list(v) if isinstance(v, tuple) else v for k, v in self.extra_attributes.items()}
        return {"item_id": self.item_id, "title": self.title, "year": self.year, "genres": list(self.genres),
                **extra}


def parse_attribute(key: str, value: object) -> AttributeValue | None:
    """One catalog attribute value in its served form (None: the item has no value).

    Raises:
        ValueError: the value is an object, or a list with something other than strings.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"attribute {key!r}: {value} is not a finite number")
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"attribute {key!r}: expected a string, a number, a boolean or a list of strings, "
                     f"got {json.dumps(value)[:80]}")


def item_text(item: Item) -> str:
    """The text that represents an item to the text encoder (index build, retriever training).

    Args:
        item: The catalog item.

    Returns:
        ``"Fargo (1996). Genres: Crime, Drama, Thriller."`` (the genres part only when known).
    """
    text = item.display_title()
    if item.genres:
        text += ". Genres: " + ", ".join(item.genres) + "."
    return text


@dataclass
class Catalog:
    """All items by id, in file order."""

    items: dict[str, Item] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a catalog JSON Lines file.

        Raises:
            DataFormatError: a line is not JSON, misses ``item_id``/``title``, or repeats an id.
        """
        items: dict[str, Item] = {}
        shared = _Shared()
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    extra = {}
                    for key, value in raw.items():
                        if key in (*RESERVED_KEYS, GENRES, YEAR):
                            continue
                        parsed = parse_attribute(key, value)
                        if parsed is not None:
                            extra[sys.intern(key)] = shared.value(parsed)
                    for key in RESERVED_KEYS:  # a null or blank id or title is no item ("None")
                        if raw.get(key) is None or not str(raw[key]).strip():
                            raise ValueError(f"{key!r} must be a non-empty string, got {raw.get(key)!r}")
                    item = Item(
                        item_id=str(raw["item_id"]),
                        title=str(raw["title"]),
                        year=int(raw["year"]) if raw.get("year") is not None else None,
                        genres=shared.value(tuple(str(g) for g in raw.get("genres") or ())),
                        extra_attributes=extra or _NO_ATTRIBUTES,
                    )
                except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise DataFormatError(f"{path}:{line_no}: {exc!r}") from exc
                if item.item_id in items:
                    raise DataFormatError(f"{path}:{line_no}: duplicate item_id {item.item_id!r}")
                items[item.item_id] = item
        return cls(items)

    def extend(self, items: Iterable[Item]) -> list[Item]:
        """Add items the catalog lacks, after the others, in place (everything holding this catalog sees them);
        the items that were new. Items are only ever added while serving: an id already here is skipped.
        """
        added = [item for item in items if item.item_id not in self.items]
        for item in added:
            self.items[item.item_id] = item
        return added

    def save(self, path: str | Path) -> None:
        """Write the catalog as JSON Lines."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for item in self.items.values():
                f.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> Item:
        return self.items[item_id]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items.values())


_NO_ATTRIBUTES: Mapping[str, AttributeValue] = MappingProxyType({})


class _Shared:
    """One copy of each attribute value a catalog repeats ("running shoes", ("black", "white")) across its items:
    a million items would otherwise hold a million copies of a few thousand values, in every service."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], tuple[str, ...]] = {}

    def value(self, value: AttributeValue) -> AttributeValue:
        if isinstance(value, str):
            return sys.intern(value)
        if isinstance(value, tuple):
            value = tuple(sys.intern(v) for v in value)
            return self._values.setdefault(value, value)
        return value


@dataclass(frozen=True)
class Interaction:
    """One user-item event."""

    user_id: str
    item_id: str
    timestamp: float
    rating: float | None = None


def read_interactions(path: str | Path) -> list[Interaction]:
    """Read an interactions CSV in file order.

    Raises:
        DataFormatError: a required column is missing or a value does not parse.
    """
    return list(iter_interactions(path))


def item_counts(path: str | Path) -> Counter[str]:
    """How many interactions each item has in an interactions CSV (popularity), read as a stream."""
    return Counter(r.item_id for r in iter_interactions(path))


def iter_interactions(path: str | Path) -> Iterator[Interaction]:
    """The rows of an interactions CSV in file order, one at a time (a log of millions is never held whole).

    Raises:
        DataFormatError: a required column is missing or a value does not parse.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"user_id", "item_id", "timestamp"} - set(reader.fieldnames or ())
        if missing:
            raise DataFormatError(f"{path}: missing columns {sorted(missing)}")
        for line_no, raw in enumerate(reader, 2):
            try:
                rating = raw.get("rating")
                row = Interaction(
                    user_id=raw["user_id"],
                    item_id=raw["item_id"],
                    timestamp=float(raw["timestamp"]),
                    rating=float(rating) if rating not in (None, "") else None,
                )
            except ValueError as exc:
                raise DataFormatError(f"{path}:{line_no}: {exc}") from exc
            yield row


def write_interactions(path: str | Path, rows: Iterable[Interaction]) -> None:
    """Write interactions as CSV with the documented header."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(INTERACTION_COLUMNS)
        for r in rows:
            writer.writerow((r.user_id, r.item_id, repr(r.timestamp) if r.timestamp % 1 else int(r.timestamp),
                             "" if r.rating is None else r.rating))


def user_sequences(rows: Sequence[Interaction]) -> dict[str, list[Interaction]]:
    """Group interactions per user, oldest first; ties on timestamp keep file order (stable sort)."""
    per_user: dict[str, list[Interaction]] = {}
    for r in rows:
        per_user.setdefault(r.user_id, []).append(r)
    for seq in per_user.values():
        seq.sort(key=lambda r: r.timestamp)
    return per_user


@dataclass
class InteractionStore:
    """Serving-side histories: item ids per user, oldest first."""

    histories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> InteractionStore:
        """Build histories from an interactions CSV (the training split in serving)."""
        return cls({u: [r.item_id for r in seq] for u, seq in user_sequences(read_interactions(path)).items()})

    def history(self, user_id: str) -> list[str] | None:
        """A user's history, or None for an unknown user."""
        seq = self.histories.get(user_id)
        return list(seq) if seq is not None else None

    def __len__(self) -> int:
        return len(self.histories)
