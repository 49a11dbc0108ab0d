"""Serve items added to the catalog file without a restart.

Every service holds one :class:`services.core.catalog.Catalog` loaded at start. ``instructrec add-items`` appends new
items to the catalog file (and their vectors to the text index); each service's follower polls the file, adds the
new items to its catalog in place (everything holding the catalog sees them) and tells its listeners (attribute
postings, the request reader's titles), so the items are servable within one poll. Only additions are followed: a
file whose existing items changed or vanished is refused (logged, the catalog kept) until a restart, because
indexes, models and histories name those items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from services.common.stamps import file_stamp
from services.core.catalog import Catalog, DataFormatError, Item

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Item]], None]


class CatalogFollower:
    """Polls ``path`` every ``poll_s`` seconds (not at all when 0) and adds new items to ``catalog``."""

    def __init__(self, path: Path, catalog: Catalog, poll_s: float, listeners: Sequence[Listener] = ()) -> None:
        self._path = Path(path)
        self._catalog = catalog
        self._poll_s = poll_s
        self._listeners = list(listeners)
        self._stamp = file_stamp(self._path)
        self._task: asyncio.Task | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def check(self) -> list[Item]:
        """Read the file if it changed; the items added to the catalog (none when unchanged or refused)."""
        stamp = file_stamp(self._path)
        if stamp == self._stamp:
            return []
        try:
            latest = Catalog.load(self._path)
        except (OSError, DataFormatError) as exc:
            log.error("catalog file unreadable; serving the catalog loaded before", extra={"error": str(exc)})
            return []  # the stamp is kept old: the next poll tries again (a writer may not have finished)
        self._stamp = stamp
        changed = [i for i, item in self._catalog.items.items() if latest.items.get(i) != item]
        if changed:
            log.error("catalog items changed or removed in place; only additions are served without a restart",
                      extra={"items": len(changed), "example": changed[0]})
            return []
        added = self._catalog.extend(latest)
        if added:
            for listener in self._listeners:
                listener(added)
            log.info("catalog grew", extra={"added": len(added), "items": len(self._catalog)})
        return added

    def start(self) -> None:
        if self._poll_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a failed check keeps the catalog serving
                log.exception("catalog check failed; the catalog keeps serving")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
