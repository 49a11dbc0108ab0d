"""Triton's model-repository API restricted to a key: refused without it, accepted with it, over gRPC and HTTP;
the push tool and the services' stub repair carry it.

These tests run their own Triton, started with a key over the tiny models (they unload models and kill a
backend process), and the four services in this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from services.common.settings import TritonSettings
from services.common.triton import TritonModel
from tests.integration.conftest import TRITON_MODELS, StartTriton
from tests.integration.stack_helpers import running_stack, stub_pid
from tools.export import push
from tools.index import build_index_async
from tools.runtime.triton_server import TritonServer

pytestmark = pytest.mark.triton

KEY = "test-model-control-key-0123456789"
REPAIRING = ("ranking", "retrieval", "instruction")


@pytest.fixture(scope="module")
def keyed_triton(tiny_model_repository: Path, start_triton: StartTriton):
    with start_triton(tiny_model_repository, TRITON_MODELS, name="keyed_triton", model_control_key=KEY) as server:
        yield server


@pytest.fixture
def client(keyed_triton: TritonServer):
    c = triton_grpc.InferenceServerClient(keyed_triton.grpc_addr)
    yield c
    c.close()


WITH_KEY = TritonSettings(model_control_key=KEY).model_control_headers()


def _http_unload(server: TritonServer, model: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/{model}/unload", data=b"{}",
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait_ready(client, model: str, ready: bool = True, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.is_model_ready(model) != ready:
        assert time.monotonic() < deadline, f"{model} ready={ready} not reached"
        time.sleep(0.1)


def test_an_unload_without_the_key_is_refused_and_with_it_accepted(keyed_triton: TritonServer, client) -> None:
    for headers in (None, {"triton-grpc-protocol-instructrec-model-control-key": "wrong-key-000000000000"}):
        with pytest.raises(InferenceServerException, match="restricted") as err:
            client.unload_model("ranker", headers=headers)
        assert "UNAVAILABLE" in str(err.value.status())
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    assert _http_unload(keyed_triton, "ranker", {}) == 403
    assert client.is_model_ready("ranker"), "a refused unload must leave the model serving"

    # Health, metadata and inference need no key.
    assert client.is_server_ready() and client.get_model_metadata("text_encoder").name == "text_encoder"
    tensor = triton_grpc.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"a comedy"]], dtype=np.object_))
    assert client.infer("text_encoder", [tensor]).as_numpy("embedding").shape[0] == 1

    client.unload_model("ranker", headers=WITH_KEY)
    _wait_ready(client, "ranker", ready=False)
    client.load_model("ranker", headers=WITH_KEY)
    _wait_ready(client, "ranker")
    assert _http_unload(keyed_triton, "ranker", {"instructrec-model-control-key": KEY}) == 200
    _wait_ready(client, "ranker", ready=False)
    client.load_model("ranker", headers=WITH_KEY)
    _wait_ready(client, "ranker")


def test_the_push_tool_carries_the_key_from_its_environment(keyed_triton: TritonServer, monkeypatch) -> None:
    monkeypatch.delenv("INSTRUCTREC_TRITON__MODEL_CONTROL_KEY", raising=False)
    target = push.TritonTarget(keyed_triton.grpc_addr)
    try:
        with pytest.raises(push.ModelControlRefused, match="restricted.*INSTRUCTREC_TRITON__MODEL_CONTROL_KEY"):
            target.repository_index()
        with pytest.raises(push.ModelControlRefused, match="model-control key"):
            target.load("ranker", timeout_s=30)
    finally:
        target.close()
    monkeypatch.setenv("INSTRUCTREC_TRITON__MODEL_CONTROL_KEY", KEY)
    target = push.TritonTarget(keyed_triton.grpc_addr)
    try:
        assert {row["name"] for row in target.repository_index()} >= set(TRITON_MODELS)
        target.load("ranker", timeout_s=120)
        assert target.is_ready("ranker", "1")
    finally:
        target.close()


async def test_a_repair_without_the_key_is_refused_and_leaves_the_model_serving(keyed_triton, client, caplog):
    caplog.set_level(logging.ERROR, logger="services.common.triton")
    model = TritonModel(TritonSettings(grpc_addr=keyed_triton.grpc_addr), "ranker", "prompt", "candidate_scores")
    try:
        await model._repair()
    finally:
        await model.close()
    (failed,) = [r for r in caplog.records if r.getMessage() == "model repair failed"]
    assert "restricted" in failed.error
    assert client.is_model_ready("ranker")


async def test_the_stub_crash_repair_works_with_the_key(keyed_triton: TritonServer, dataset: Path, tmp_path) -> None:
    index_dir = await build_index_async(dataset / "items.jsonl", dataset / "train.csv", tmp_path / "index",
                                        keyed_triton.grpc_addr, progress=False)
    overrides = {name: {"triton": {"repair_interval_s": 2.0, "model_control_key": KEY}} for name in REPAIRING}
    overrides["ranking"]["lm_weight"] = 0.5  # the ranker is called (weight 0 skips it)
    async with running_stack(keyed_triton.grpc_addr, dataset, index_dir, service_overrides=overrides) as s, \
            grpc.aio.insecure_channel(s.addr("gateway")) as channel:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
        request = recommend_service_pb2.RecommendRequest(user_id="2", query="a comedy")
        # The stack answers in full before the stub is killed. The first reading can miss its 2 s hop while the
        # request reader's first inference is cold on a loaded machine (seen once in CI): wait for a full answer.
        start = time.monotonic()
        while (await stub.Recommend(request, timeout=30)).degraded:
            assert time.monotonic() - start < 60, "the stack never answered in full before the stub was killed"
            await asyncio.sleep(0.5)
        old_pid = stub_pid(keyed_triton, "ranker")
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        first = await stub.Recommend(request, timeout=30)
        assert first.degraded and "ranker" in first.degraded_reasons[0]
        start = time.monotonic()
        while (await stub.Recommend(request, timeout=30)).degraded:
            assert time.monotonic() - start < 60, "the ranker was not repaired with the key"
            await asyncio.sleep(0.2)
        print(f"\nranker stub killed on a keyed Triton -> repaired, ranking again after "
              f"{time.monotonic() - start + 1.0:.1f} s")
    assert stub_pid(keyed_triton, "ranker") != old_pid
