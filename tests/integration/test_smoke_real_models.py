"""Smoke test: the whole suite with the real (instruction-tuned) models and MovieLens-100K, as `make run` serves it."""

from __future__ import annotations

import grpc
import pytest
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.common.settings import DEFAULT_DATA_DIR, ROOT
from services.core.catalog import Catalog, InteractionStore
from services.core.contracts import SERVED_MODELS
from tests.integration.conftest import StartTriton
from tests.integration.stack_helpers import running_stack, sequence_index_of
from tools.export import has_weights
from tools.index import build_index_async, build_sequence_index_async
from tools.runtime.assets import TUNED, served_versions

pytestmark = [pytest.mark.smoke, pytest.mark.triton]

REPOSITORY = ROOT / "model_repository"
MODELS = SERVED_MODELS


@pytest.fixture(scope="module")
def prepared():
    missing = [m for m in MODELS if not has_weights(REPOSITORY / m / "1")]
    if missing or not (DEFAULT_DATA_DIR / "train.csv").exists():
        pytest.fail(f"run `make prepare` first (missing models {missing} or data in {DEFAULT_DATA_DIR})")


@pytest.fixture(scope="module")
def real_triton(prepared, start_triton: StartTriton):
    with start_triton(REPOSITORY, MODELS, name="real_triton", ready_timeout_s=300) as server:
        yield server


async def test_user_196_gets_ten_catalog_movies_outside_their_history(real_triton, tmp_path):
    index_dir = await build_index_async(
        DEFAULT_DATA_DIR / "items.jsonl", DEFAULT_DATA_DIR / "train.csv", tmp_path / "index",
        real_triton.grpc_addr, progress=False,
    )
    await build_sequence_index_async(DEFAULT_DATA_DIR / "items.jsonl", DEFAULT_DATA_DIR / "train.csv",
                                     sequence_index_of(index_dir), real_triton.grpc_addr, REPOSITORY)
    catalog = Catalog.load(DEFAULT_DATA_DIR / "items.jsonl")
    history = set(InteractionStore.load(DEFAULT_DATA_DIR / "train.csv").history("196"))
    async with running_stack(real_triton.grpc_addr, DEFAULT_DATA_DIR, index_dir) as stack, \
            grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
        r = await recommend_service_pb2_grpc.RecommendServiceStub(channel).Recommend(
            recommend_service_pb2.RecommendRequest(user_id="196", query="a funny movie for tonight"), timeout=300
        )
    ids = [i.item_id for i in r.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert all(i in catalog for i in ids) and not history & set(ids)
    assert [i.title for i in r.items] == [catalog[i].display_title() for i in ids]
    assert not r.degraded, r.degraded_reasons
    assert '"a funny movie for tonight"' in r.instruction and "\nT. " in r.instruction
    assert r.template_id == "P2-I1-T3-0"
    assert {v.model_name for v in r.model_versions} == set(MODELS)
    # `make prepare` exported the committed tuned adapters: the latest versions answer
    assert {v.model_name: int(v.version) for v in r.model_versions} == served_versions(REPOSITORY, TUNED)
