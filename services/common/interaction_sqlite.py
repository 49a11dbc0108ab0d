"""The interaction store in one SQLite file (WAL): the default of ``instructrec run``.

Every gateway process on the machine opens the same file; WAL lets them read while one writes, and
``synchronous=FULL`` makes a committed batch survive a crash of the process or the machine. Calls run on one
worker thread per process (sqlite3 connections are not shared across threads), so the event loop never blocks
on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.common.interaction_store import Event, Recorded, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    event_type TEXT NOT NULL,
    value REAL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions (user_id, event_time, seq);
"""
_BUSY_TIMEOUT_S = 10.0


class SqliteInteractionStore:
    """:class:`services.common.interaction_store.InteractionStore` on a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"sqlite:{self.path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interactions")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn, *args: Any) -> Any:
        if self._conn is None and fn != self._connect:
            raise StoreError(f"{self.description}: not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.description}: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        await self._run(self._connect)

    def _record(self, events: Sequence[Event]) -> Recorded:
        conn = self._conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO interactions (event_id, user_id, item_id, event_time, event_type, value, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                [(e.event_id, e.user_id, e.item_id, e.event_time, e.event_type, e.value, now) for e in events],
            )
            recorded = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Recorded(recorded, len(events) - recorded)

    async def record(self, events: Sequence[Event]) -> Recorded:
        return await self._run(self._record, list(events))

    def _history(self, user_id: str, limit: int) -> list[str] | None:
        rows = self._conn.execute(
            "SELECT item_id FROM interactions WHERE user_id = ? ORDER BY event_time DESC, seq DESC LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return [r[0] for r in reversed(rows)] or None

    async def history(self, user_id: str, limit: int) -> list[str] | None:
        return await self._run(self._history, user_id, limit)

    def _histories(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for user, item in self._conn.execute(
                "SELECT user_id, item_id FROM interactions ORDER BY user_id, event_time, seq"):
            out.setdefault(user, []).append(item)
        return out

    async def histories(self) -> dict[str, list[str]]:
        return await self._run(self._histories)

    async def check(self) -> None:
        await self._run(lambda: self._conn.execute("SELECT 1").fetchone())


    async def seeded(self, key: str) -> bool:
        return await self._run(lambda: self._conn.execute(
            "SELECT 1 FROM meta WHERE key = ?", (f"seed:{key}",)).fetchone() is not None)

    async def mark_seeded(self, key: str) -> None:
        await self._run(lambda: self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"seed:{key}", str(time.time()))))

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
