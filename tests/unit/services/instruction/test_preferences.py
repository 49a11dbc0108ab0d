"""The preference store and the background queue: precomputed statements served, misses never waited for."""

import asyncio
import os
import sqlite3

import pytest

from services.common.errors import Unavailable
from services.core.catalog import Catalog, Item
from services.instruction.preferences import Preferences, newer_version, preference_request
from services.instruction.store import PreferenceStore, StatementRow, StoreError, history_key

CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 2000, ("Comedy",)) for i in range(30)})


class Generator:
    def __init__(self, version: str = "2", delay_s: float = 0.0, text: str = "Likes comedies.", fail: bool = False):
        self.version, self.delay_s, self.text, self.fail = version, delay_s, text, fail
        self.prompts: list[str] = []

    async def __call__(self, prompt: str, timeout_s: float) -> tuple[str, str]:
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise Unavailable("model preference_generator unavailable")
        return self.text, self.version


def request(*ids: str):
    return preference_request([CATALOG[i] for i in ids], max_items=5, noun="movie")


def prefs(gen, store=None, *, wait_s=0.0, queue_size=10, version="2", finish=None) -> Preferences:
    p = Preferences(gen, store, cache_size=100, queue_size=queue_size, workers=2, wait_s=wait_s,
                    generation_timeout_s=5.0, **({"finish": finish} if finish else {}))
    p.set_version(version)
    return p


def test_store_round_trip_keys_by_history_and_version(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    store.put_many([StatementRow(("1", "2"), "2", "Likes comedies."), StatementRow(("1",), "2", "")])
    assert store.get(history_key(["1", "2"]), "2") == "Likes comedies."
    assert store.get(history_key(["1", "2"]), "3") is None  # another generator version: not served
    assert store.get(history_key(["2", "1"]), "2") is None  # order matters
    assert store.get(history_key(["1"]), "2") == ""  # written, nothing servable
    assert store.counts() == {"2": 2} and store.keys("2") == {history_key(["1", "2"]), history_key(["1"])}
    store.close()
    ro = PreferenceStore(tmp_path / "s.sqlite", readonly=True)
    assert ro.get(history_key(["1", "2"]), "2") == "Likes comedies."
    with pytest.raises(StoreError, match="read-only"):
        ro.put_many([StatementRow(("3",), "2", "x")])


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)").connection.commit()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.commit()
    with pytest.raises(StoreError, match="schema"):
        PreferenceStore(path)
    with pytest.raises(StoreError):
        PreferenceStore(tmp_path / "missing.sqlite", readonly=True)


async def test_a_precomputed_statement_is_served_without_generation(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    req = request("1", "2")
    store.put_many([StatementRow(req.item_ids, "2", "Enjoys comedy.")])
    gen = Generator()
    found = await prefs(gen, store).statement(req, 1.0)
    assert found.statement == "Enjoys comedy." and found.cached and found.generator_version == "2"
    assert not gen.prompts


async def test_a_miss_answers_at_once_and_the_queue_writes_the_store(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    gen = Generator(delay_s=0.05)
    p = prefs(gen, store)
    req = request("3", "4")
    found = await p.statement(req, 10.0)
    assert found.statement == "" and found.pending  # not waited for
    again = await p.statement(req, 10.0)  # queued once: deduplicated
    assert again.pending
    await p.drain()
    assert len(gen.prompts) == 1 and store.get(req.key, "2") == "Likes comedies."
    # Another process (a restarted service) reads it from the store.
    later = await prefs(Generator(), PreferenceStore(tmp_path / "s.sqlite")).statement(req, 1.0)
    assert later.statement == "Likes comedies." and later.cached
    await p.close()


async def test_a_new_generator_version_or_a_grown_history_is_never_answered_stale(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    old = request("1", "2")
    store.put_many([StatementRow(old.item_ids, "1", "Written by version 1.")])
    p = prefs(Generator(version="2"), store, version="2")
    assert (await p.statement(old, 1.0)).pending  # version 2 serves: version 1's statement is a miss
    assert (await p.statement(request("1", "2", "5"), 1.0)).pending  # grown history: another key
    await p.drain()
    assert store.get(old.key, "2") == "Likes comedies." and store.get(old.key, "1") == "Written by version 1."
    await p.close()


async def test_a_full_queue_drops_the_miss_and_serves_implicit():
    gen = Generator(delay_s=0.2)
    p = Preferences(gen, None, cache_size=10, queue_size=1, workers=1, wait_s=0.0, generation_timeout_s=5.0)
    p.set_version("2")
    results = [await p.statement(request(str(i)), 1.0) for i in range(1, 5)]
    # The first fills the one place (its worker has not run yet); the rest find the queue full: not pending.
    assert [r.pending for r in results] == [True, False, False, False]
    assert all(r.statement == "" for r in results)
    await p.close()


async def test_unservable_and_failed_generations_give_implicit_preference(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    p = prefs(Generator(), store, wait_s=5.0, finish=lambda raw: "")
    req = request("7")
    assert (await p.statement(req, 5.0)).statement == ""
    assert store.get(req.key, "2") == ""  # recorded: not generated again
    assert (await p.statement(req, 5.0)) == (await p.statement(req, 5.0))
    failing = prefs(Generator(fail=True), store, wait_s=5.0)
    other = request("8")
    assert (await failing.statement(other, 5.0)).statement == "" and store.get(other.key, "2") is None
    await p.close()
    await failing.close()


async def test_the_version_is_learnt_from_the_generation_when_triton_could_not_say():
    p = prefs(Generator(version="4"), None, wait_s=5.0, version="")
    found = await p.statement(request("1"), 5.0)
    assert found.statement == "Likes comedies." and found.generator_version == "4" and p.version == "4"
    assert (await p.statement(request("1"), 5.0)).cached
    await p.close()


@pytest.mark.parametrize(("a", "b", "newer"), [("", "1", "1"), ("2", "10", "10"), ("3", "", "3")])
def test_versions_compare_as_numbers(a, b, newer):
    assert newer_version(a, b) == newer


def test_the_request_keys_only_the_recent_history():
    many = preference_request([CATALOG[str(i)] for i in range(10)], max_items=5, noun="movie")
    assert many.item_ids == ("5", "6", "7", "8", "9") and many.key == history_key(["5", "6", "7", "8", "9"])
    assert "Movie 9 (2000)" in many.prompt and "Movie 4 (2000)" not in many.prompt


def test_a_snapshot_replaces_the_store_whole_and_read_only_readers_reopen_onto_it(tmp_path):
    from services.instruction.store import Snapshot

    path = tmp_path / "s.sqlite"
    first = Snapshot(path)
    first.store.put_many([StatementRow(("1",), "2", "First.")])
    first.publish()
    reader = PreferenceStore(path, readonly=True)
    assert reader.get(history_key(["1"]), "2") == "First." and not reader.refresh()
    second = Snapshot(path)  # starts from a copy of the published store
    second.store.put_many([StatementRow(("2",), "2", "Second.")])
    assert reader.get(history_key(["2"]), "2") is None  # not published yet
    second.publish()
    assert reader.refresh()
    assert reader.get(history_key(["1"]), "2") == "First." and reader.get(history_key(["2"]), "2") == "Second."
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a database")
    os.replace(broken, path)  # a broken snapshot: refused, the open one keeps serving
    with pytest.raises(StoreError):
        reader.refresh()
    assert reader.get(history_key(["2"]), "2") == "Second."
