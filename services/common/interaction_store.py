"""The interaction store: what users did, recorded by the gateway's RecordInteractions, read on every Recommend.

One store serves every gateway replica, so a write through one replica is read by the next request through any
other (read your writes: nothing is cached in a replica). Two implementations of one contract:

* SQLite in WAL mode (``services/common/interaction_sqlite.py``): the default of ``instructrec run``, one file
  beside the data set; several gateway processes on one machine share it.
* PostgreSQL (``services/common/interaction_postgres.py``): Kubernetes, where gateways on many nodes share it
  (k8s/base/interactions-db.yaml; why PostgreSQL: docs/deployment.md).

Both record a batch in one transaction that is durable when it commits (SQLite ``synchronous=FULL``, PostgreSQL
``synchronous_commit=on``), skip an ``event_id`` seen before (the idempotency key), and read a user's newest
``limit`` items, oldest first, ordered by event time and then by arrival. An empty store is seeded from the data
set's training split (``train.csv``) once; the seed's rows get event ids ``seed:<user>:<item>:<timestamp>``, so
seeding again records nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.core.catalog import iter_interactions

SEED_BATCH = 5_000
"""Rows per transaction when seeding."""


@dataclass(frozen=True)
class Event:
    """One recorded interaction (``event_time`` in seconds since the epoch; ``value`` None when not given)."""

    user_id: str
    item_id: str
    event_id: str
    event_time: float
    event_type: str = ""
    value: float | None = None


@dataclass(frozen=True)
class Recorded:
    """What one batch changed."""

    recorded: int
    duplicates: int


class StoreError(Exception):
    """The store cannot be reached or refused the operation (the gateway answers UNAVAILABLE)."""


class InteractionStore(Protocol):
    """What the gateway needs of a store (both implementations are safe to call from one event loop)."""

    description: str
    """Where it lives, for logs (no credentials)."""

    async def open(self) -> None:
        """Connect and create the schema when missing."""

    async def record(self, events: Sequence[Event]) -> Recorded:
        """Record ``events`` in one durable transaction; an event id already stored (or earlier in ``events``)
        is a duplicate and changes nothing."""

    async def history(self, user_id: str, limit: int) -> list[str] | None:
        """The user's newest ``limit`` item ids, oldest first; None for a user with no interaction."""

    async def histories(self) -> dict[str, list[str]]:
        """Every user's items, oldest first (the retrain job's training data)."""

    async def check(self) -> None:
        """Raises :class:`StoreError` when the store cannot answer (readiness)."""


    async def seeded(self, key: str) -> bool:
        """Whether a seed with this key (:func:`seed_key`) was loaded."""

    async def mark_seeded(self, key: str) -> None:
        """Remember that the seed with this key was loaded."""

    async def close(self) -> None:
        """Release connections."""


def seed_key(path: Path) -> str:
    """The key a seed file is remembered by: its name and a digest of its contents."""
    with open(path, "rb") as f:  # read in blocks: a seed file of millions of rows is never held whole
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return f"{Path(path).name}:{digest}"


def seed_events(path: Path) -> Iterator[list[Event]]:
    """The rows of an interactions CSV as events, in batches of :data:`SEED_BATCH`."""
    batch: list[Event] = []
    for r in iter_interactions(path):
        batch.append(Event(r.user_id, r.item_id, f"seed:{r.user_id}:{r.item_id}:{r.timestamp:g}", r.timestamp,
                           "seed", r.rating))
        if len(batch) == SEED_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def seed_once(store: InteractionStore, path: Path | None) -> int:
    """Load ``path`` into ``store`` unless this file was loaded before; returns the rows newly recorded.

    Safe when several gateways start at once: the rows' event ids make a second load record nothing.
    """
    if path is None or not Path(path).is_file():
        return 0
    key = seed_key(path)
    if await store.seeded(key):
        return 0
    recorded = 0
    for batch in seed_events(path):
        recorded += (await store.record(batch)).recorded
    await store.mark_seeded(key)
    return recorded


def open_store(target: str) -> InteractionStore:
    """The store a setting names: a ``postgresql://`` URL (credentials may come from libpq's ``PG*`` variables),
    else a SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        from services.common.interaction_postgres import PostgresInteractionStore

        return PostgresInteractionStore(target)
    from services.common.interaction_sqlite import SqliteInteractionStore

    return SqliteInteractionStore(Path(target.removeprefix("sqlite://")))
