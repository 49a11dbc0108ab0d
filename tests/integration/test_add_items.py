"""Items added to a served catalog are served without a restart: `instructrec add-items` appends them to the
catalog and their tiny text encoder vectors to the text index; the running stack (real Triton, real gRPC) then
records interactions with them, filters find them and retrieval returns them, all within a few polls."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
from instructrec.v1 import common_pb2, recommend_service_pb2, recommend_service_pb2_grpc

from services.core.catalog import Catalog, DataFormatError, Item
from services.core.index import ItemIndex
from tests.integration.stack_helpers import running_stack, sequence_index_of
from tools.catalog_add import add_items

POLL = {"catalog_poll_s": 0.2}
NEW = [Item("new-1", "A Brand New Film", 2031, ("Comedy",)), Item("new-2", "Another New Film", 2032, ("Drama",))]


def _recent(stub, user: str):
    return stub.Recommend(recommend_service_pb2.RecommendRequest(user_id=user, num_items=10, filters=[
        common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(min=2030))]), timeout=60)


async def test_added_items_are_recorded_filtered_and_retrieved_without_a_restart(
        triton_server, dataset: Path, index_dir: Path, tmp_path: Path) -> None:
    data, index = tmp_path / "data", tmp_path / "index"
    shutil.copytree(dataset, data)
    shutil.copytree(index_dir, index)
    shutil.copytree(sequence_index_of(index_dir), sequence_index_of(index))
    new_items = tmp_path / "new.jsonl"
    Catalog({i.item_id: i for i in NEW}).save(new_items)
    overrides = {"retrieval": {**POLL, "index_poll_s": 0.2}, "instruction": POLL, "gateway": POLL}
    async with running_stack(triton_server.grpc_addr, data, index, overrides) as stack, \
            grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
        record = recommend_service_pb2.RecordInteractionsRequest(interactions=[
            recommend_service_pb2.Interaction(user_id="3", item_id="new-1", event_id="add-items:3:new-1")])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RecordInteractions(record, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "new-1" in refused.value.details()
        before = await _recent(stub, "4")
        assert list(before.items) == [] and before.fewer_items

        added = await asyncio.to_thread(add_items, data, new_items, index, triton_server.grpc_addr, progress=False)
        assert added.item_ids == ("new-1", "new-2") and added.index_items == len(ItemIndex.load(index_dir)) + 2

        for _ in range(100):  # a few polls of every service
            found = await _recent(stub, "4")
            if {i.item_id for i in found.items} == {"new-1", "new-2"}:
                break
            await asyncio.sleep(0.2)
        assert [i.title for i in found.items if i.item_id == "new-1"] == ["A Brand New Film (2031)"]
        assert (await stub.RecordInteractions(record, timeout=30)).recorded == 1
        after = await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="3", num_items=10), timeout=60)
        assert "new-1" not in {i.item_id for i in after.items}  # recorded: history now, not recommended again

    assert [i.item_id for i in Catalog.load(data / "items.jsonl")][-2:] == ["new-1", "new-2"]
    with pytest.raises(DataFormatError, match="already in the catalog"):
        await asyncio.to_thread(add_items, data, new_items, index, triton_server.grpc_addr, progress=False)
