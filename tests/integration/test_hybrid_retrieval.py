"""The sequence model on Triton beside the text encoder: fused retrieval, and a new version swapped in under load.

Real Triton (tiny models), the real retrieval service on a free port, real gRPC.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
from instructrec.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc

from services.core.catalog import Catalog
from services.core.contracts import SEQUENCE_ENCODER
from services.core.index import ItemIndex
from tests.integration.stack_helpers import running_stack, sequence_index_of
from tools.export import push
from tools.index import build_sequence_index_async
from tools.runtime.triton_server import TritonServer
from tools.tiny_models import build_tiny_sequence_model


def _versions(response) -> dict[str, str]:
    return {v.model_name: v.version for v in response.model_versions}


async def test_retrieval_fuses_the_sequence_model_and_skips_the_text_encoder_without_a_query(stack) -> None:
    async with grpc.aio.insecure_channel(stack.addr("retrieval")) as channel:
        stub = retrieval_service_pb2_grpc.RetrievalServiceStub(channel)
        no_query = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(history_item_ids=["1", "2", "3"], num_candidates=10),
            timeout=30)
        with_query = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(history_item_ids=["1", "2", "3"], query="a comedy",
                                                            num_candidates=10), timeout=30)
        anonymous = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(query="a comedy", num_candidates=10), timeout=30)
    assert with_query.strategy == "hybrid" and set(_versions(with_query)) == {SEQUENCE_ENCODER, "text_encoder"}
    assert len(no_query.candidates) == len(with_query.candidates) == 10
    assert not {"1", "2", "3"} & {c.item_id for c in no_query.candidates}
    # The served no-query text weight is 0: the sequence model alone, no text-encoder call.
    assert no_query.strategy == "sequence" and set(_versions(no_query)) == {SEQUENCE_ENCODER}
    assert anonymous.strategy == "text" and set(_versions(anonymous)) == {"text_encoder"}


async def test_a_new_sequence_encoder_version_is_served_with_its_own_index_and_no_failed_request(
    triton_server: TritonServer, dataset: Path, index_dir: Path, tmp_path: Path
) -> None:
    repository = triton_server.model_repository
    text_index = tmp_path / "index"
    shutil.copytree(index_dir, text_index)
    shutil.copytree(sequence_index_of(index_dir), sequence_index_of(text_index))
    old = ItemIndex.load(sequence_index_of(text_index)).model_version
    overrides = {"retrieval": {"index_poll_s": 0.2}}
    async with running_stack(triton_server.grpc_addr, dataset, text_index, overrides) as stack, \
            grpc.aio.insecure_channel(stack.addr("retrieval")) as channel:
        stub = retrieval_service_pb2_grpc.RetrievalServiceStub(channel)
        seen: list[str] = []
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    r = await stub.RetrieveCandidates(retrieval_service_pb2.RetrieveCandidatesRequest(
                        history_item_ids=["4", "5", "6"], num_candidates=5), timeout=30)
                    seen.append(_versions(r)[SEQUENCE_ENCODER])
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

        callers = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(1.0)
        items = list(Catalog.load(dataset / "items.jsonl").items)
        retrained = build_tiny_sequence_model(tmp_path / "retrained", items[::-1])  # another vocabulary order
        version_dir, _ = await asyncio.to_thread(push.publish, SEQUENCE_ENCODER, retrained, repository,
                                                      [triton_server.grpc_addr])
        new = version_dir.name
        pushed = len(seen)
        await asyncio.sleep(1.0)  # pushed, index not rebuilt: the old pair keeps answering
        assert set(seen[pushed:]) == {old}
        await build_sequence_index_async(dataset / "items.jsonl", dataset / "train.csv",
                                         sequence_index_of(text_index), triton_server.grpc_addr, repository,
                                         model_version=new)
        for _ in range(100):
            if seen and seen[-1] == new:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*callers)
    assert not failures
    # Every answer came from one consistent pair (a vector from another version than its index is refused,
    # which would have been a failure); the old pair until the new index was loaded, then the new one.
    assert seen[0] == old and set(seen) == {old, new} and set(seen[-10:]) == {new}
