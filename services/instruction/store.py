"""The preference-statement store: an embedded SQLite database, written ahead of requests, read on them.

A statement is stored under the key of the recent history it was written from (:func:`history_key`) and the
generator version that wrote it, so a grown history (a new key) or a new generator version (another version)
is never answered with a statement written for something else. ``instructrec precompute-preferences``
fills it for every known user; the instruction service reads it on each request and writes the statements
its background queue generates for misses.

Locally the database runs in WAL mode, so the service and the precompute tool read and write it at the same
time. Replicas that only read (Kubernetes, where a CronJob writes the file on a shared volume) open it
read-only and immutable, with no file locking at all (network file systems lock badly): the job writes a copy
and renames it over the old file (``snapshot``), and readers :meth:`PreferenceStore.refresh` onto the new one.
An empty statement is a real entry: the generator ran and nothing servable came out (e.g. it contradicted
itself), so the history gets the implicit instruction without being generated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS statements (
    history_key TEXT NOT NULL,
    generator_version TEXT NOT NULL,
    statement TEXT NOT NULL,
    history_item_ids TEXT NOT NULL,
    written_at REAL NOT NULL,
    PRIMARY KEY (history_key, generator_version)
) WITHOUT ROWID;
"""


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a preference store of this schema."""


def history_key(item_ids: Sequence[str]) -> str:
    """The key of a recent history (ids oldest first, order significant): a SHA-256 of the ids."""
    return hashlib.sha256("\x1f".join(item_ids).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StatementRow:
    """One statement to store."""

    item_ids: tuple[str, ...]  # the recent history it was written from, oldest first
    generator_version: str
    statement: str  # "" when the generator produced nothing servable

    @property
    def key(self) -> str:
        return history_key(self.item_ids)


class PreferenceStore:
    """Statements by (history key, generator version) in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path, *, readonly: bool = False, journal_mode: str = "wal") -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._db = self._connect(journal_mode)
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def refresh(self) -> bool:
        """Read-only stores: reopen when the file was replaced (a new snapshot). Returns whether it reopened.

        Raises:
            StoreError: the new file is not a readable store (the old connection keeps serving).
        """
        identity = self._file_identity()
        if not self.readonly or identity is None or identity == self._identity:
            return False
        db = self._connect("wal")
        with self._lock:
            old, self._db, self._identity = self._db, db, identity
        old.close()
        return True

    def _connect(self, journal_mode: str) -> sqlite3.Connection:
        try:
            if self.readonly:
                # immutable: no locks and no journal reads; the file is only ever replaced whole.
                db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA busy_timeout = 5000")
                db.execute(f"PRAGMA journal_mode = {journal_mode}")
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"preference store {self.path}: {exc}") from exc
        if row is None or row[0] != str(SCHEMA_VERSION):
            db.close()
            raise StoreError(f"preference store {self.path}: schema {row and row[0]!r}, expected {SCHEMA_VERSION}")
        return db

    def get(self, key: str, generator_version: str) -> str | None:
        """The statement of that history by that version; "" if it was written empty; None if not stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT statement FROM statements WHERE history_key = ? AND generator_version = ?",
                (key, generator_version),
            ).fetchone()
        return None if row is None else row[0]

    def put_many(self, rows: Iterable[StatementRow]) -> int:
        """Store statements (replacing the same key and version) in one transaction; returns how many."""
        values = [(r.key, r.generator_version, r.statement, json.dumps(list(r.item_ids)), time.time()) for r in rows]
        if not values:
            return 0
        if self.readonly:
            raise StoreError(f"preference store {self.path} is open read-only")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO statements VALUES (?, ?, ?, ?, ?)", values)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return len(values)

    def keys(self, generator_version: str) -> set[str]:
        """Every history key stored for that version (what a resumed precompute skips)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT history_key FROM statements WHERE generator_version = ?", (generator_version,)
            ).fetchall()
        return {r[0] for r in rows}

    def counts(self) -> dict[str, int]:
        """Statements per generator version."""
        with self._lock:
            rows = self._db.execute(
                "SELECT generator_version, COUNT(*) FROM statements GROUP BY generator_version"
            ).fetchall()
        return {v: n for v, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Snapshot:
    """A writable copy of a store that replaces it whole when :meth:`publish` is called (readers of the old file
    keep it until they refresh): how a job updates a store that read-only replicas share on a network volume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.work_path = self.path.with_name(self.path.name + ".writing")
        self.work_path.unlink(missing_ok=True)
        if self.path.exists():
            shutil.copyfile(self.path, self.work_path)
        self.store = PreferenceStore(self.work_path, journal_mode="delete")

    def publish(self) -> None:
        """Close the copy and rename it over the store (atomic on one file system)."""
        self.store.close()
        os.replace(self.work_path, self.path)

    def discard(self) -> None:
        self.store.close()
        self.work_path.unlink(missing_ok=True)
