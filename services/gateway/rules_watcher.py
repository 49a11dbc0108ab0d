"""The served business rules: read at start-up, re-read when the file changes (polled), never left broken."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import Counter, Gauge

from services.common.stamps import file_stamp
from services.core.filters import CatalogAttributes, FilterLimits
from services.core.rules import Rules, RulesFormatError, load_rules

log = logging.getLogger(__name__)

RULES_INFO = Gauge("instructrec_rules_info", "The served rules file version (1 on its series).",
                   ["service", "version"])
RULES_LOADS = Counter("instructrec_rules_loads_total", "Rules file reads, by result (loaded, refused).",
                      ["service", "result"])


class RulesWatcher:
    """Holds the rules one request reads (call it); a changed file replaces them only when it is valid."""

    def __init__(self, path: Path | None, attributes: CatalogAttributes, limits: FilterLimits,
                 poll_s: float) -> None:
        self._path = path
        self._attributes = attributes
        self._limits = limits
        self._poll_s = poll_s
        self._rules = Rules()
        self._stamp: tuple | None = None
        self._task: asyncio.Task | None = None

    def __call__(self) -> Rules:
        return self._rules

    @property
    def current(self) -> Rules:
        return self._rules

    def load(self) -> None:
        """Read the file at start-up.

        Raises:
            RulesFormatError: the file is missing or malformed (the gateway does not start with broken rules).
        """
        if self._path is None:
            return
        self._stamp = file_stamp(self._path)
        self._install(load_rules(self._path, self._attributes, self._limits))

    def _install(self, rules: Rules) -> None:
        old = self._rules
        self._rules = rules
        RULES_LOADS.labels("gateway", "loaded").inc()
        if old.version != rules.version and old.version:
            try:
                RULES_INFO.remove("gateway", old.version)
            except KeyError:
                pass
        RULES_INFO.labels("gateway", rules.version).set(1)
        log.info("serving rules", extra={"rules_version": rules.version, "path": str(self._path),
                                         "blocked_items": len(rules.blocked_item_ids), "pins": len(rules.pins),
                                         "boosts": len(rules.boosts), "callers": len(rules.callers)})

    def reload_if_changed(self) -> bool:
        """Serve the file's rules if it changed and is valid; True when they were replaced. A missing or
        malformed file is logged once per change, and the current rules keep serving."""
        if self._path is None:
            return False
        stamp = file_stamp(self._path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rules = load_rules(self._path, self._attributes, self._limits)
        except RulesFormatError as exc:
            RULES_LOADS.labels("gateway", "refused").inc()
            log.error("rules file refused, version %s keeps serving: %s", self._rules.version or "(none)", exc,
                      extra={"path": str(self._path), "rules_version": self._rules.version})
            return False
        self._install(rules)
        return True

    def start(self) -> None:
        """Poll the file every ``poll_s`` seconds from the running loop (no polling when 0 or no file)."""
        if self._path is not None and self._poll_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self.reload_if_changed()
            except Exception:  # noqa: BLE001 - a failed check keeps the current rules serving
                log.exception("rules reload failed; the current rules keep serving")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
