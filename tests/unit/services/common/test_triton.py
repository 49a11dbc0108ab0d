"""``TritonModel`` against a fake async Triton client: request shape, timeouts, error mapping, stub repair."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from services.common import triton as triton_module
from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.settings import TritonSettings
from services.common.triton import TritonModel

CRASHED = ("Failed to process the request(s) for model instance 'ranker_0_0', "
           "message: Stub process 'ranker_0_0' is not healthy.")


class _Response:
    def __init__(self, version: str) -> None:
        self.model_version = version


class _Result:
    def __init__(self, outputs: dict[str, np.ndarray], version: str) -> None:
        self._outputs, self._version = outputs, version

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)

    def get_response(self) -> _Response:
        return _Response(self._version)


class FakeClient:
    """Stands in for ``tritonclient.grpc.aio.InferenceServerClient``; ``fail`` makes ``infer`` raise."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.fail: InferenceServerException | None = None
        self.outputs: Callable[[list[str]], dict[str, np.ndarray]] = lambda texts: {
            "scores": np.array([[float(len(t)) for t in texts]], dtype=np.float32)}
        self.ready: bool | Exception = True
        self.ready_asked: list[str] = []
        self.unloaded: list[str] = []
        self.loaded: list[str] = []
        self.unload_attempts = 0
        self.fail_repair = False
        self.hold_repair: asyncio.Event | None = None
        self.closed = False

    async def infer(self, model_name, inputs, model_version="", outputs=None, client_timeout=None, timeout=None,
                    headers=None):
        (tensor,) = inputs
        texts = [v.decode() for v in deserialize_bytes_tensor(tensor._get_content())]
        self.calls.append({"model": model_name, "version": model_version, "input": tensor.name(),
                           "shape": tensor.shape(), "datatype": tensor.datatype(), "texts": texts,
                           "outputs": [o.name() for o in outputs], "client_timeout": client_timeout,
                           "timeout": timeout})
        if self.fail is not None:
            raise self.fail
        return _Result(self.outputs(texts), "3")

    async def is_model_ready(self, model_name, model_version="", client_timeout=None):
        self.ready_asked.append(model_version)
        if isinstance(self.ready, Exception):
            raise self.ready
        return self.ready

    async def unload_model(self, model_name, client_timeout=None):
        self.unload_attempts += 1
        if self.hold_repair is not None:
            await self.hold_repair.wait()
        if self.fail_repair:
            raise InferenceServerException("unload failed", "StatusCode.INTERNAL")
        self.unloaded.append(model_name)

    async def load_model(self, model_name, client_timeout=None):
        self.loaded.append(model_name)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(triton_module, "triton_client", lambda settings: fake)
    return fake


def _model(**settings) -> TritonModel:
    return TritonModel(TritonSettings(**settings), "ranker", "instruction", "scores")


async def _settle(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the repair did not run")


# ---------------------------------------------------------------- requests


async def test_infer_text_sends_one_1x1_string_and_returns_the_unbatched_output(client: FakeClient) -> None:
    out = await _model(timeout_s=30.0).infer_text("Pick one. é", 2.0, model_version="7")
    np.testing.assert_array_equal(out.array, [len("Pick one. é")])
    assert out.model_version == "3"
    (call,) = client.calls
    assert (call["model"], call["version"], call["input"], call["shape"], call["datatype"]) == (
        "ranker", "7", "instruction", [1, 1], "BYTES")
    assert call["texts"] == ["Pick one. é"] and call["outputs"] == ["scores"]
    # The caller's remaining time goes both to gRPC (seconds) and to Triton's queue (microseconds).
    assert 1.9 < call["client_timeout"] <= 2.0
    assert call["timeout"] == int(call["client_timeout"] * 1_000_000)


async def test_infer_strings_sends_one_sequence_and_the_configured_timeout_caps_the_call(client: FakeClient) -> None:
    out = await _model(timeout_s=0.5).infer_strings(["a", "bb", "ccc"], 10.0)
    np.testing.assert_array_equal(out.array, [1, 2, 3])
    (call,) = client.calls
    assert call["shape"] == [1, 3] and call["texts"] == ["a", "bb", "ccc"]
    assert call["client_timeout"] == 0.5 and call["timeout"] == 500_000
    await _model(timeout_s=4.0).infer_text("x")  # no caller deadline: the configured limit
    assert client.calls[-1]["client_timeout"] == 4.0


async def test_no_time_left_fails_before_calling_triton(client: FakeClient) -> None:
    with pytest.raises(DeadlineExceeded, match="model ranker"):
        await _model().infer_text("x", 0.0)
    assert client.calls == []


async def test_a_missing_output_is_unavailable(client: FakeClient) -> None:
    client.outputs = lambda texts: {}
    with pytest.raises(Unavailable, match="no 'scores' output"):
        await _model().infer_text("x", 1.0)
    client.outputs = lambda texts: {"scores": np.zeros((2, 1), np.float32)}  # not one row per request
    with pytest.raises(Unavailable, match="no 'scores' output"):
        await _model().infer_text("x", 1.0)


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("exc", "error", "message"),
    [
        (InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), DeadlineExceeded,
         "model ranker: deadline exceeded"),
        (InferenceServerException("Request timeout expired", "StatusCode.UNAVAILABLE"), DeadlineExceeded,
         "model ranker: deadline exceeded"),
        (InferenceServerException("unexpected shape for input 'instruction'", "StatusCode.INVALID_ARGUMENT"),
         InvalidArgument, "rejected the input: unexpected shape for input 'instruction'"),
        (InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), Unavailable,
         "model ranker unavailable: failed to connect to all addresses"),
        (InferenceServerException("Request for unknown model: 'ranker' version 9 is not found",
                                  "StatusCode.NOT_FOUND"), Unavailable, "unknown model"),
        (InferenceServerException("something broke", None), Unavailable, "model ranker unavailable: something broke"),
    ],
)
async def test_triton_errors_map_to_domain_errors(client: FakeClient, exc, error, message) -> None:
    client.fail = exc
    model = _model()
    with pytest.raises(error, match=message) as raised:
        await model.infer_text("x", 1.0)
    assert type(raised.value) is error
    assert await model.is_ready()  # an ordinary failure does not mark the model broken
    assert client.unloaded == []


async def test_is_ready_asks_triton_for_the_version_and_treats_failures_as_not_ready(client: FakeClient) -> None:
    model = _model()
    assert await model.is_ready("4") and client.ready_asked == ["4"]
    client.ready = False
    assert not await model.is_ready()
    client.ready = InferenceServerException("connection refused", "StatusCode.UNAVAILABLE")
    assert not await model.is_ready()


# ---------------------------------------------------------------- crashed stub


async def test_a_crashed_stub_marks_the_model_not_ready_and_triggers_one_repair(client: FakeClient) -> None:
    model = _model(repair_interval_s=60.0)
    client.fail = InferenceServerException(CRASHED, "StatusCode.INTERNAL")
    with pytest.raises(Unavailable, match="Stub process"):
        await model.infer_text("x", 1.0)
    assert not await model.is_ready()  # Triton still says READY; the model is not
    await _settle(lambda: client.loaded == ["ranker"])
    assert client.unloaded == ["ranker"]
    assert await model.is_ready()
    # Crashing again within the repair interval: unavailable and not ready, but no second unload + load.
    with pytest.raises(Unavailable):
        await model.infer_text("x", 1.0)
    await asyncio.sleep(0.02)
    assert (client.unloaded, client.loaded) == (["ranker"], ["ranker"])
    assert not await model.is_ready()
    client.fail = None
    await model.infer_text("x", 1.0)  # a call that succeeds proves the model serves again
    assert await model.is_ready()


async def test_without_repair_a_crashed_stub_stays_not_ready_until_a_call_succeeds(client: FakeClient) -> None:
    model = _model(repair_crashed_stub=False)
    client.fail = InferenceServerException(CRASHED, "StatusCode.INTERNAL")
    with pytest.raises(Unavailable):
        await model.infer_text("x", 1.0)
    await asyncio.sleep(0.02)
    assert client.unloaded == [] and not await model.is_ready()
    client.fail = None
    await model.infer_text("x", 1.0)
    assert await model.is_ready()


async def test_a_failed_repair_leaves_the_model_not_ready(client: FakeClient) -> None:
    model = _model()
    client.fail_repair = True
    client.fail = InferenceServerException(CRASHED, "StatusCode.INTERNAL")
    with pytest.raises(Unavailable):
        await model.infer_text("x", 1.0)
    await _settle(lambda: client.unload_attempts == 1)
    await asyncio.sleep(0.01)
    assert client.loaded == [] and not await model.is_ready()


async def test_close_cancels_a_repair_in_progress_and_closes_the_client(client: FakeClient) -> None:
    model = _model()
    client.hold_repair = asyncio.Event()
    client.fail = InferenceServerException(CRASHED, "StatusCode.INTERNAL")
    with pytest.raises(Unavailable):
        await model.infer_text("x", 1.0)
    await _settle(lambda: client.unload_attempts == 1)
    await model.close()
    client.hold_repair.set()
    await asyncio.sleep(0.02)
    assert client.closed and client.loaded == []
