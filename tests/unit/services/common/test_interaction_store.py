"""The interaction store's contract, on both real databases: SQLite (WAL file) and PostgreSQL (a real server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common.interaction_store import Event, StoreError, open_store, seed_once


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path: Path):
    target = str(tmp_path / "interactions.sqlite3") if request.param == "sqlite" else request.getfixturevalue(
        "postgres_url")
    s = open_store(target)
    await s.open()
    yield s
    await s.close()


def _events(user: str, items: list[str], start: float = 100.0, prefix: str = "e") -> list[Event]:
    return [Event(user, item, f"{prefix}:{user}:{n}", start + n) for n, item in enumerate(items)]


async def test_a_batch_is_recorded_once_and_read_oldest_first(store) -> None:
    done = await store.record(_events("u1", ["1", "2", "3"]))
    assert (done.recorded, done.duplicates) == (3, 0)
    again = await store.record(_events("u1", ["1", "2", "3"]))
    assert (again.recorded, again.duplicates) == (0, 3)
    assert await store.history("u1", 10) == ["1", "2", "3"]
    assert await store.history("nobody", 10) is None


async def test_an_event_id_is_the_key_whatever_else_the_event_says(store) -> None:
    await store.record([Event("u1", "1", "same", 1.0)])
    done = await store.record([Event("u1", "2", "same", 2.0), Event("u2", "3", "new", 3.0),
                               Event("u2", "4", "new", 4.0)])  # repeated inside the batch, too
    assert (done.recorded, done.duplicates) == (1, 2)
    assert await store.history("u1", 10) == ["1"] and await store.history("u2", 10) == ["3"]


async def test_history_is_ordered_by_event_time_then_arrival_and_bounded_to_the_newest(store) -> None:
    await store.record([Event("u", "late", "a", 50.0), Event("u", "early", "b", 10.0)])
    await store.record([Event("u", "tie-first", "c", 30.0)])
    await store.record([Event("u", "tie-second", "d", 30.0)])
    assert await store.history("u", 10) == ["early", "tie-first", "tie-second", "late"]
    assert await store.history("u", 2) == ["tie-second", "late"]


async def test_every_history_is_read_at_once_for_the_retrain_job(store) -> None:
    await store.record([Event("b", "2", "1", 5.0), Event("a", "9", "2", 1.0), Event("b", "1", "3", 2.0)])
    assert await store.histories() == {"a": ["9"], "b": ["1", "2"]}


async def test_type_and_value_are_optional(store) -> None:
    done = await store.record([Event("u", "1", "x", 1.0, "purchase", 19.5), Event("u", "2", "y", 2.0)])
    assert done.recorded == 2 and await store.history("u", 5) == ["1", "2"]


async def test_concurrent_batches_with_shared_event_ids_record_each_event_once(store) -> None:
    batches = [_events("u", [str(i) for i in range(20)], prefix="shared") for _ in range(6)]
    results = await asyncio.gather(*(store.record(b) for b in batches))
    assert sum(r.recorded for r in results) == 20 and sum(r.duplicates for r in results) == 100
    assert len(await store.history("u", 100)) == 20


async def test_a_seed_file_is_loaded_once(store, tmp_path: Path) -> None:
    seed = tmp_path / "train.csv"
    seed.write_text("user_id,item_id,timestamp,rating\n1,10,5,4\n1,11,6,3\n2,10,7,5\n")
    assert await seed_once(store, seed) == 3
    assert await seed_once(store, seed) == 0
    assert await store.history("1", 10) == ["10", "11"]
    seed.write_text(seed.read_text() + "2,12,8,1\n")  # a changed file is loaded again: only the new row is new
    assert await seed_once(store, seed) == 1


async def test_what_was_acknowledged_survives_reopening(store, tmp_path: Path) -> None:
    await store.record(_events("u", ["1", "2"]))
    target = getattr(store, "url", None) or str(store.path)
    await store.close()
    reopened = open_store(target)
    await reopened.open()
    try:
        assert await reopened.history("u", 10) == ["1", "2"]
    finally:
        await reopened.close()


async def test_an_unreachable_postgres_is_a_store_error(tmp_path: Path) -> None:
    s = open_store(f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=1")
    with pytest.raises(StoreError):
        await s.open()
    await s.close()
