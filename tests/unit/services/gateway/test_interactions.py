"""RecordInteractions in the gateway: validation naming the interaction, a real SQLite store, failures."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.common.interaction_store import open_store
from services.core.catalog import Catalog, Item
from services.gateway.interactions import InteractionLog, Submitted
from services.gateway.recommender import Recommender, RecommendQuery
from services.gateway.settings import GatewaySettings
from tests.unit.services.gateway.histories import Histories
from tests.unit.services.gateway.test_recommender import Stages

CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 2000) for i in range(40)})


@pytest.fixture
async def log(tmp_path: Path):
    store = open_store(str(tmp_path / "interactions.sqlite3"))
    await store.open()
    yield InteractionLog(GatewaySettings(max_interactions_per_batch=5, max_id_chars=16), CATALOG, store)
    await store.close()


@pytest.mark.parametrize(("batch", "message"), [
    ([], "interactions: empty batch"),
    ([Submitted("u", "1", f"e{n}") for n in range(6)], "interactions: 6 interactions, at most 5"),
    ([Submitted("u", "1", "e1"), Submitted("u", "404", "e2")], "interactions[1].item_id: unknown item '404'"),
    ([Submitted("", "1", "e1")], "interactions[0].user_id: required"),
    ([Submitted("u", "1", "")], "interactions[0].event_id: required"),
    ([Submitted("u", "1", "e" * 17)], "interactions[0].event_id: 17 characters, at most 16"),
    ([Submitted("u", "1", "e1", value=math.nan)], "interactions[0].value: must be a finite number"),
    ([Submitted("u", "1", "e1", event_time=time.time() + 3 * 86_400)], "interactions[0].event_time"),
    ([Submitted("u", "1", "e1", event_time=-5.0)], "interactions[0].event_time"),
    ([Submitted("u", "1", "e1", event_type="x" * 65)], "interactions[0].event_type: 65 characters"),
])
async def test_a_bad_interaction_refuses_the_whole_batch_naming_it(log: InteractionLog, batch, message) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        await log.record(batch)
    assert await log.history("u") is None  # nothing of a refused batch was recorded


async def test_recorded_items_are_the_users_history_newest_last(log: InteractionLog) -> None:
    done = await log.record([Submitted("u", "5", "a", event_time=10.0), Submitted("u", "6", "b")])
    assert (done.recorded, done.duplicates) == (2, 0)
    assert await log.history("u") == ["5", "6"]  # no event time: the gateway's clock (now, after 10 s)
    again = await log.record([Submitted("u", "5", "a", event_time=10.0), Submitted("u", "6", "b")])
    assert (again.recorded, again.duplicates) == (0, 2)


async def test_a_failed_store_is_unavailable_and_nothing_is_acknowledged(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "interactions.sqlite3"))
    await store.open()
    await store.close()  # closed: every call fails
    log = InteractionLog(GatewaySettings(), CATALOG, store)
    with pytest.raises(Unavailable, match="send the batch again"):
        await log.record([Submitted("u", "1", "e1")])


async def test_a_failed_history_read_serves_the_user_without_history_degraded() -> None:
    stages = Stages()
    r = await Recommender(GatewaySettings(), CATALOG, Histories({}, failing=True), stages).recommend(
        RecommendQuery(user_id="u1"), None)
    assert stages.calls[0][1] == [] and len(r.items) == 10
    assert r.degraded and r.degraded_reasons[0].startswith("history skipped (the interaction store failed)")
