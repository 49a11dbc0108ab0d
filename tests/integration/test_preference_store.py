"""Precomputed preference statements: the batch job fills the store through the real Triton, the real
instruction service serves them without generating, and a miss is answered at once and written behind."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.core.catalog import InteractionStore
from services.instruction.precompute import main as precompute_main
from services.instruction.precompute import precompute_preferences
from services.instruction.settings import InstructionSettings
from services.instruction.store import PreferenceStore
from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


async def test_precomputed_statements_are_served_and_misses_are_written_behind(triton_server, dataset, index_dir,
                                                                                tmp_path):
    store_path = tmp_path / "statements.sqlite"
    settings = InstructionSettings(catalog_path=dataset / "items.jsonl", preference_store_path=store_path)
    users = len(InteractionStore.load(dataset / "train.csv"))
    overrides = {"instruction": {"preference_store_path": store_path, "preference_wait_s": 0.0}}
    async with running_stack(triton_server.grpc_addr, dataset, index_dir, overrides) as stack, \
            grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
        gateway = recommend_service_pb2_grpc.RecommendServiceStub(channel)

        async def recommend(user: str):
            return await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id=user), timeout=60)

        # Nothing written yet: implicit preference at once; the history is queued and written behind.
        first = await recommend("1")
        assert first.template_id.startswith("P1-") and not first.degraded
        app = stack.runners["instruction"].service
        await app.preferences.drain()
        assert (await recommend("1")).template_id.startswith("P2-")

        report = await precompute_preferences(triton_addr=triton_server.grpc_addr,
                                              interactions_path=dataset / "train.csv", settings=settings,
                                              concurrency=4, progress=False)
        assert report.users == users and report.failed == 0
        assert report.already_stored == 1 and report.written == report.histories - 1  # user 1's was written
        generations_before = app.preferences.generations
        answers = await asyncio.gather(*(recommend(str(u)) for u in range(2, users + 1)))
        explicit = [a for a in answers if a.template_id.startswith("P2-")]
        # Every known user is answered from the store (a history whose statement came out empty gets P1).
        assert len(explicit) == users - 1 - report.unservable and app.preferences.generations == generations_before
        assert all("preference_generator" in {v.model_name for v in a.model_versions} for a in explicit)

    # Resumable: a second run finds everything stored and writes nothing.
    code = await asyncio.to_thread(precompute_main, ["--triton", triton_server.grpc_addr,
                                                     "--interactions", str(dataset / "train.csv"),
                                                     "--catalog", str(dataset / "items.jsonl"),
                                                     "--store", str(store_path),
                                                     "--report", str(tmp_path / "again.json")])
    assert code == 0
    assert '"written": 0' in (tmp_path / "again.json").read_text()
    store = PreferenceStore(store_path, readonly=True)
    assert sum(store.counts().values()) == report.histories
