"""Where a request's explicit preference statement comes from: memory, the store, or the background queue.

A request never waits for the generator by default: it reads the statement of its recent history written by
the served generator version from an LRU in memory, then from the :class:`~services.instruction.store.
PreferenceStore`; on a miss it gets the implicit-preference instruction at once and the history is queued
(bounded, deduplicated) for the background workers, which write the statement into the store for the next
request. ``preference_wait_s`` > 0 lets a request wait that long for its statement (evaluation runs).

The generator version a request reads is the newest version Triton serves, refreshed by the instruction
service (:meth:`Preferences.set_version`) and by every generation (which reports the version that ran).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common.errors import ServiceError
from services.common.metrics import PREFERENCE_EVENTS, PREFERENCE_QUEUE
from services.core import prompts
from services.core.catalog import Item
from services.core.deadlines import Budget
from services.core.statements import complete_sentences
from services.instruction.store import PreferenceStore, StatementRow, history_key

log = logging.getLogger(__name__)

# Writes a statement for a preference prompt; returns (statement, model version).
GenerateFn = Callable[[str, float], Awaitable[tuple[str, str]]]
# Turns the generator's raw text into the statement served ("" when nothing servable is left).
FinishFn = Callable[[str], str]


@dataclass(frozen=True)
class PreferenceRequest:
    """What the generator is asked for one history: the recent items, their key and the prompt."""

    item_ids: tuple[str, ...]
    key: str
    prompt: str


def preference_request(history: Sequence[Item], *, max_items: int, noun: str) -> PreferenceRequest:
    """The generator request of a history (oldest first); the service and the precompute tool both use it, so
    they key statements identically."""
    recent = list(history)[-max_items:]
    ids = tuple(i.item_id for i in recent)
    return PreferenceRequest(ids, history_key(ids), prompts.render_preference_prompt(recent, noun, max_items))


def newer_version(a: str, b: str) -> str:
    """The newer of two Triton version strings ("" is older than any)."""
    return max(a, b, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


class _Lru:
    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._data: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, key: tuple[str, str]) -> str | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: str) -> None:
        if self._max_size == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max_size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class Found:
    """The statement a request gets: "" for none (implicit preference)."""

    statement: str
    cached: bool  # read from memory or the store, not generated for this request
    generator_version: str
    pending: bool = False  # none written yet for this history and version: queued for the background workers


_NONE = Found("", False, "")
_PENDING = Found("", False, "", pending=True)


class Preferences:
    """Memory -> store -> background generation, for the statements of the instruction service."""

    def __init__(
        self,
        generate: GenerateFn,
        store: PreferenceStore | None,
        *,
        finish: FinishFn = complete_sentences,
        cache_size: int,
        queue_size: int,
        workers: int,
        wait_s: float,
        generation_timeout_s: float,
    ) -> None:
        self._generate = generate
        self._store = store
        self._finish = finish
        self._cache = _Lru(cache_size)
        self._queue: asyncio.Queue[PreferenceRequest] = asyncio.Queue(maxsize=queue_size)
        self._pending: dict[str, asyncio.Future[Found]] = {}
        self._num_workers = workers
        self._workers: list[asyncio.Task] = []
        self._wait_s = wait_s
        self._generation_timeout_s = generation_timeout_s
        self.version = ""
        self.generations = 0  # generator calls made (a precomputed statement costs none)

    def use_store(self, store: PreferenceStore | None) -> None:
        """Read (and write) this store from now on (one that could not be opened at start)."""
        if store is not None:
            self._store = store

    def set_version(self, version: str) -> None:
        """The generator version Triton serves now (the newest ready one)."""
        if version and version != self.version:
            log.info("preference generator version", extra={"version": version, "previous": self.version})
            self.version = version

    @property
    def queued(self) -> int:
        """Histories waiting for a statement (queued or being generated)."""
        return len(self._pending)

    def lookup(self, request: PreferenceRequest) -> str | None:
        """The stored statement of the served version, from memory or the store; None when there is none."""
        version = self.version
        if not version:
            return None
        found = self._cache.get((request.key, version))
        if found is not None:
            PREFERENCE_EVENTS.labels("memory_hit").inc()
            return found
        if self._store is not None:
            try:
                found = self._store.get(request.key, version)
            except Exception as exc:  # noqa: BLE001 - a broken store serves implicit preference
                log.warning("preference store read failed", extra={"error": str(exc)})
                found = None
            if found is not None:
                self._cache.put((request.key, version), found)
                PREFERENCE_EVENTS.labels("store_hit").inc()
                return found
        PREFERENCE_EVENTS.labels("miss").inc()
        return None

    async def statement(self, request: PreferenceRequest, timeout_s: float | None) -> Found:
        """The statement for this history now, or none (and the history queued) when it is not written yet."""
        stored = self.lookup(request)
        if stored is not None:
            return Found(stored, True, self.version) if stored else _NONE
        pending = self.enqueue(request)
        if pending is None:
            return _NONE
        if self._wait_s <= 0:
            return _PENDING
        try:
            # shield: a request that stops waiting does not cancel the generation the store needs.
            return await asyncio.wait_for(asyncio.shield(pending), Budget(timeout_s).wait_s(self._wait_s))
        except TimeoutError:
            log.info("preference statement not ready in time; serving implicit preference")
            return _PENDING

    def enqueue(self, request: PreferenceRequest) -> asyncio.Future[Found] | None:
        """Queue the history for the workers (once per key); None when the queue is full."""
        pending = self._pending.get(request.key)
        if pending is not None:
            PREFERENCE_EVENTS.labels("deduplicated").inc()
            return pending
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            PREFERENCE_EVENTS.labels("dropped_queue_full").inc()
            return None
        self._ensure_workers()
        pending = asyncio.get_running_loop().create_future()
        self._pending[request.key] = pending
        PREFERENCE_EVENTS.labels("enqueued").inc()
        PREFERENCE_QUEUE.set(len(self._pending))
        return pending

    def _ensure_workers(self) -> None:
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < self._num_workers:
            self._workers.append(asyncio.get_running_loop().create_task(self._work()))

    async def _work(self) -> None:
        while True:
            request = await self._queue.get()
            found = _NONE
            try:
                found = await self._write(request)
            finally:
                pending = self._pending.pop(request.key, None)
                PREFERENCE_QUEUE.set(len(self._pending))
                if pending is not None and not pending.done():
                    pending.set_result(found)
                self._queue.task_done()

    async def _write(self, request: PreferenceRequest) -> Found:
        self.generations += 1
        try:
            raw, version = await self._generate(request.prompt, self._generation_timeout_s)
        except ServiceError as exc:
            PREFERENCE_EVENTS.labels("generation_failed").inc()
            log.warning("preference generation failed", extra={"error": str(exc)})
            return _NONE
        statement = self._finish(raw)
        if not statement:
            PREFERENCE_EVENTS.labels("unservable").inc()
        self.set_version(newer_version(self.version, version))
        self._cache.put((request.key, version), statement)
        if self._store is not None and not self._store.readonly:
            try:
                await asyncio.to_thread(self._store.put_many, [StatementRow(request.item_ids, version, statement)])
            except Exception as exc:  # noqa: BLE001 - memory still has it
                log.warning("preference store write failed", extra={"error": str(exc)})
        PREFERENCE_EVENTS.labels("written").inc()
        return Found(statement, False, version) if statement else _NONE

    async def drain(self) -> None:
        """Wait until every queued history is written (tests, shutdown)."""
        await self._queue.join()

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
