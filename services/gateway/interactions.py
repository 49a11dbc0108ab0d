"""RecordInteractions: validate a batch, record it in the interaction store, count what happened.

A batch is all or nothing: the first invalid interaction refuses it with INVALID_ARGUMENT naming its index, so a
caller never has to work out which part was acknowledged. A store that fails or is too slow answers UNAVAILABLE
and nothing is acknowledged; sending the batch again is safe (event ids make it idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from services.common.errors import InvalidArgument, Unavailable
from services.common.interaction_store import Event, InteractionStore, Recorded, StoreError
from services.core.catalog import Catalog
from services.core.validation import Limits
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

INTERACTIONS = Counter(
    "instructrec_interactions_total",
    "Interactions sent to RecordInteractions, by outcome: recorded, duplicate (event id seen before), refused "
    "(in a batch refused as invalid), unavailable (the store failed; nothing acknowledged).",
    ["outcome"],
)
STORE_LATENCY = Histogram(
    "instructrec_interaction_store_latency_seconds",
    "Interaction store calls, by operation (record, history).",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
MAX_EVENT_TYPE_CHARS = 64


@dataclass(frozen=True)
class Submitted:
    """One interaction as the caller sent it (``event_time`` None: not given)."""

    user_id: str
    item_id: str
    event_id: str
    event_time: float | None = None
    event_type: str = ""
    value: float | None = None


class InteractionLog:
    """The gateway's side of the store: histories for Recommend, batches for RecordInteractions."""

    def __init__(self, settings: GatewaySettings, catalog: Catalog, store: InteractionStore) -> None:
        self._s = settings
        self._catalog = catalog
        self._store = store
        self._limits = Limits.of(settings)

    def validate(self, batch: Sequence[Submitted]) -> None:
        """Raises InvalidArgument naming the first offending interaction and field."""
        s = self._s
        if not batch:
            raise InvalidArgument("interactions: empty batch, nothing to record")
        if len(batch) > s.max_interactions_per_batch:
            raise InvalidArgument(f"interactions: {len(batch)} interactions, at most {s.max_interactions_per_batch}")
        latest = time.time() + s.max_event_time_ahead_s
        for n, i in enumerate(batch):
            where = f"interactions[{n}]"
            for name in ("user_id", "item_id", "event_id"):
                value = getattr(i, name)
                if not value:
                    raise InvalidArgument(f"{where}.{name}: required")
                self._limits.check_id(f"{where}.{name}", value)
            if i.item_id not in self._catalog:
                raise InvalidArgument(f"{where}.item_id: unknown item {i.item_id!r}")
            if len(i.event_type) > MAX_EVENT_TYPE_CHARS:
                raise InvalidArgument(f"{where}.event_type: {len(i.event_type)} characters, at most "
                                      f"{MAX_EVENT_TYPE_CHARS}")
            if i.value is not None and not math.isfinite(i.value):
                raise InvalidArgument(f"{where}.value: must be a finite number, got {i.value}")
            if i.event_time is not None and not 0 <= i.event_time <= latest:
                raise InvalidArgument(f"{where}.event_time: {i.event_time:.0f} s since the epoch is before 1970 "
                                      f"or more than {s.max_event_time_ahead_s:.0f} s ahead of the gateway's clock")

    async def record(self, batch: Sequence[Submitted]) -> Recorded:
        """Validate and record ``batch`` (durable when this returns)."""
        try:
            self.validate(batch)
        except InvalidArgument:
            INTERACTIONS.labels("refused").inc(len(batch))
            raise
        now = time.time()
        events = [Event(i.user_id, i.item_id, i.event_id, now if i.event_time is None else i.event_time,
                        i.event_type, i.value) for i in batch]
        try:
            with STORE_LATENCY.labels("record").time():
                done = await asyncio.wait_for(self._store.record(events), self._s.store_timeout_s)
        except (StoreError, TimeoutError) as exc:
            INTERACTIONS.labels("unavailable").inc(len(batch))
            log.warning("recording interactions failed", extra={"error": str(exc) or "timeout"})
            raise Unavailable(f"interaction store: {str(exc) or 'no answer in time'}; nothing was recorded, "
                              "send the batch again") from exc
        INTERACTIONS.labels("recorded").inc(done.recorded)
        INTERACTIONS.labels("duplicate").inc(done.duplicates)
        return done

    async def history(self, user_id: str) -> list[str] | None:
        """The user's newest ``history_max_items`` items, oldest first; None for a user with none.

        Raises:
            StoreError: the store failed or did not answer in ``store_timeout_s``.
        """
        try:
            with STORE_LATENCY.labels("history").time():
                return await asyncio.wait_for(self._store.history(user_id, self._s.history_max_items),
                                              self._s.store_timeout_s)
        except TimeoutError as exc:
            raise StoreError(f"{self._store.description}: no answer in {self._s.store_timeout_s} s") from exc
