"""Reading requests through the real stack: the request_reader on Triton, ReadQuery on the instruction service,
and the gateway acting on the reading (filters with source "query", references, the residual text)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from instructrec.v1 import instruction_service_pb2, recommend_service_pb2

from services.common.filters_proto import filter_from_proto
from services.core.catalog import Catalog
from services.core.reading import WORD_LABELS, split_words

pytestmark = pytest.mark.triton


def _describe(reading) -> set[str]:
    return {filter_from_proto(c.filter).describe() for c in reading.constraints if c.hard}


async def test_the_reader_on_triton_answers_one_row_per_word_and_batches(triton_server) -> None:
    client = triton_grpc.InferenceServerClient(triton_server.grpc_addr)
    # Distinct texts: the reader's response cache would answer a repeated one without an inference.
    texts = [f"{t}, take {n}" for n in range(4) for t in
             ("anything except dramas", "a comedy from the 80s, but nothing romantic", "like Film number 7")]

    def infer(text):
        data = triton_grpc.InferInput("text", [1, 1], "BYTES")
        data.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        return client.infer("request_reader", [data]).as_numpy("word_label_probs")[0]

    before = client.get_inference_statistics("request_reader").model_stats[0]
    outputs = await asyncio.gather(*(asyncio.to_thread(infer, t) for t in texts))
    for text, probs in zip(texts, outputs):
        rows = probs[: len(split_words(text))]
        assert rows.shape[1] == len(WORD_LABELS)
        assert abs(float(rows.sum(axis=1).mean()) - 1.0) < 1e-4  # a distribution per word
    after = client.get_inference_statistics("request_reader").model_stats[0]
    assert after.inference_count - before.inference_count == 12
    assert after.execution_count - before.execution_count < 12  # Triton put several requests in one execution


async def test_read_query_names_exclusions_bounds_and_references(stack) -> None:
    async with stack.stub("instruction") as instruction:
        r = await instruction.ReadQuery(instruction_service_pb2.ReadQueryRequest(
            query="a comedy from the 80s, but nothing romantic"), timeout=30)
        assert _describe(r.reading) == {"genres any of [Comedy]", "exclude genres any of [Romance]",
                                        "year in 1980..1989"}
        assert "romantic" not in r.reading.residual_text and r.model_versions[0].model_name == "request_reader"
        again = await instruction.ReadQuery(instruction_service_pb2.ReadQueryRequest(
            query="A comedy from the 80s,  but nothing romantic"), timeout=30)
        assert again.reading.cached and not again.model_versions  # same words: from the cache
        ref = await instruction.ReadQuery(instruction_service_pb2.ReadQueryRequest(
            query="something like Film number 7"), timeout=30)
        assert [x.item_id for x in ref.reading.references] == ["7"]


async def test_recommend_follows_the_request(stack, gateway, dataset) -> None:
    catalog = Catalog.load(dataset / "items.jsonl")
    r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(
        user_id="3", query="anything except dramas", num_items=10), timeout=60)
    assert r.items and not r.degraded
    assert all("Drama" not in catalog[i.item_id].genres for i in r.items)
    assert {(f.source, f.description) for f in r.applied_filters} >= {("query", "exclude genres any of [Drama]")}
    assert [t.stage for t in r.stage_timings][:2] == ["history", "reading"]
    assert "(read as: exclude genres" in r.instruction

    liked = await gateway.Recommend(recommend_service_pb2.RecommendRequest(
        query="something like Film number 7", num_items=5), timeout=60)
    assert liked.items and "7" not in {i.item_id for i in liked.items}
    assert [x.item_id for x in liked.reading.references] == ["7"]
