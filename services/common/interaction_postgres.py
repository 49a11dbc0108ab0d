"""The interaction store in PostgreSQL: what every gateway replica in Kubernetes reads and writes.

A pool of async connections (psycopg 3). A batch is one ``INSERT ... ON CONFLICT (event_id) DO NOTHING`` in one
transaction; with the server's ``synchronous_commit=on`` (the default, set explicitly in the manifests) the
commit returns once the WAL is flushed, so acknowledged means durable. The connection URL may leave user,
password and database to libpq's ``PGUSER``, ``PGPASSWORD`` and ``PGDATABASE`` (the manifests take them from a
Secret), so no credential sits in a setting or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from services.common.interaction_store import Event, Recorded, StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interaction_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_time DOUBLE PRECISION NOT NULL,
    event_type TEXT NOT NULL,
    value DOUBLE PRECISION,
    recorded_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions (user_id, event_time, seq);
"""
_SCHEMA_LOCK = 7_311_985_221  # advisory lock id: replicas starting at once create the schema one at a time
_INSERT = """
INSERT INTO interactions (event_id, user_id, item_id, event_time, event_type, value, recorded_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::text[], %s::float8[], %s::float8[])
ON CONFLICT (event_id) DO NOTHING
"""


class PostgresInteractionStore:
    """:class:`services.common.interaction_store.InteractionStore` on a PostgreSQL server."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 5.0) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.url = url
        info = conninfo_to_dict(url)
        self.description = f"postgresql:{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
        self._sizes = (min_size, max_size)
        self._timeout_s = timeout_s
        self._pool = None

    async def open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        try:
            connect = {"autocommit": True, "connect_timeout": max(1, int(self._timeout_s))}
            self._pool = AsyncConnectionPool(self.url, min_size=self._sizes[0], max_size=self._sizes[1],
                                             timeout=self._timeout_s, open=False, kwargs=connect)
            await self._pool.open(wait=True, timeout=self._timeout_s)
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    await conn.execute(statement)
        except (psycopg.Error, TimeoutError, OSError) as exc:
            raise StoreError(f"{self.description}: {exc}") from exc

    async def _call(self, fn):
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise StoreError(f"{self.description}: not open")
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self.description}: {exc}") from exc

    async def record(self, events: Sequence[Event]) -> Recorded:
        events = list(events)
        now = time.time()
        columns = ([e.event_id for e in events], [e.user_id for e in events], [e.item_id for e in events],
                   [e.event_time for e in events], [e.event_type for e in events], [e.value for e in events],
                   [now] * len(events))

        async def insert(conn) -> int:
            async with conn.transaction():
                cursor = await conn.execute(_INSERT, columns)
                return cursor.rowcount

        recorded = await self._call(insert)
        return Recorded(recorded, len(events) - recorded)

    async def history(self, user_id: str, limit: int) -> list[str] | None:
        async def select(conn) -> list[str]:
            cursor = await conn.execute(
                "SELECT item_id FROM interactions WHERE user_id = %s ORDER BY event_time DESC, seq DESC LIMIT %s",
                (user_id, limit))
            return [r[0] for r in await cursor.fetchall()]

        rows = await self._call(select)
        return list(reversed(rows)) or None

    async def histories(self) -> dict[str, list[str]]:
        async def select(conn) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT user_id, item_id FROM interactions ORDER BY user_id, event_time, seq")
                async for user, item in cursor:
                    out.setdefault(user, []).append(item)
            return out

        return await self._call(select)

    async def check(self) -> None:
        async def ping(conn) -> None:
            await conn.execute("SELECT 1")

        await self._call(ping)


    async def seeded(self, key: str) -> bool:
        async def find(conn) -> bool:
            cursor = await conn.execute("SELECT 1 FROM interaction_meta WHERE key = %s", (f"seed:{key}",))
            return await cursor.fetchone() is not None

        return await self._call(find)

    async def mark_seeded(self, key: str) -> None:
        async def mark(conn) -> None:
            await conn.execute("INSERT INTO interaction_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO "
                               "UPDATE SET value = EXCLUDED.value", (f"seed:{key}", str(time.time())))

        await self._call(mark)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
