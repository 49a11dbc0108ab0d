"""A query too long for the ranker's prompt is cut at a word boundary, said so, and ranked (tiny models on a real
Triton).

The ranking service here gives the LM a weight (``RANKING_LM_WEIGHT=1``), so the ranker model reads every
instruction: with the whole 1,000-character junk query the prompt is over the ranker's ``max_prompt_tokens``
and the answer would be degraded (shown by the same stack with an unbounded query budget).
"""

from __future__ import annotations

import random

import grpc
import pytest
from instructrec.v1 import (
    instruction_service_pb2,
    instruction_service_pb2_grpc,
    recommend_service_pb2,
    recommend_service_pb2_grpc,
)

from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton

HISTORY = [str(i) for i in range(1, 11)]  # 10 history titles
CANDIDATES = [str(i) for i in range(21, 41)]  # 20 candidates


def _junk(seed: str) -> dict[str, str]:
    rng = random.Random(seed)
    words = " ".join("".join(rng.choice("qxzjkvwbfgh") for _ in range(rng.randint(2, 9))) for _ in range(200))
    return {
        "junk words": words[:1_000].strip(),
        "ascii junk": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*()") for _ in range(1_000)),
        "emoji": "".join(chr(rng.randint(0x1F300, 0x1F5FF)) for _ in range(1_000)),
    }


async def _recommend(stub, query: str, **kwargs) -> recommend_service_pb2.RecommendResponse:
    request = recommend_service_pb2.RecommendRequest(history_item_ids=HISTORY, query=query, **kwargs)
    return await stub.Recommend(request, timeout=60)


async def test_a_long_query_is_cut_to_fit_and_ranked_not_degraded(triton_server, dataset, index_dir):
    overrides = {"ranking": {"lm_weight": 1.0}}
    async with running_stack(triton_server.grpc_addr, dataset, index_dir, service_overrides=overrides) as s, \
            grpc.aio.insecure_channel(s.addr("gateway")) as gateway_channel, \
            grpc.aio.insecure_channel(s.addr("instruction")) as instruction_channel:
        gateway = recommend_service_pb2_grpc.RecommendServiceStub(gateway_channel)
        instruction = instruction_service_pb2_grpc.InstructionServiceStub(instruction_channel)
        budget = s.runners["instruction"].settings.prompt_query_max_bytes
        for name, query in _junk("long-queries").items():
            for kwargs in ({}, {"candidate_item_ids": CANDIDATES}):  # retrieved candidates, and the caller's 20
                r = await _recommend(gateway, query, **kwargs)
                assert not r.degraded, (name, list(r.degraded_reasons))
                assert r.query_truncated and r.items and ("ranker", "1") in {(v.model_name, v.version)
                                                                             for v in r.model_versions}
                carried = r.instruction.split('looking for: "', 1)[1].split('".\n', 1)[0]
                assert query.startswith(carried) and 0 < len(carried.encode()) <= budget, name
                if " " in query[: len(carried) + 1]:
                    assert query[len(carried)] == " ", name  # whole words only
            direct = await instruction.GenerateInstruction(
                instruction_service_pb2.GenerateInstructionRequest(history_item_ids=HISTORY, query=query,
                                                                   candidate_item_ids=CANDIDATES), timeout=60)
            assert direct.query_truncated
        short = await _recommend(gateway, "a funny film", candidate_item_ids=CANDIDATES)
        assert not short.query_truncated and not short.degraded and 'looking for: "a funny film"' in short.instruction
        print(f"\nquery budget {budget} bytes: junk words, ascii junk and emoji queries of 1,000 characters "
              "cut, ranked by the LM, not degraded")


async def test_without_the_cut_the_same_query_would_switch_the_ranker_off(triton_server, dataset, index_dir):
    # The finding of issue 18, reproduced by lifting the budget: the whole query goes into the instruction.
    overrides = {"ranking": {"lm_weight": 1.0}, "instruction": {"prompt_query_max_bytes": 10_000}}
    async with running_stack(triton_server.grpc_addr, dataset, index_dir, service_overrides=overrides) as s, \
            grpc.aio.insecure_channel(s.addr("gateway")) as channel:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
        r = await _recommend(stub, _junk("long-queries")["ascii junk"], candidate_item_ids=CANDIDATES)
    assert r.degraded and not r.query_truncated
    assert any("max_prompt_tokens" in reason for reason in r.degraded_reasons), list(r.degraded_reasons)
