"""The three python-backend models in a real Triton, served from tiny exported models.

Each version folder holds the model's thin ``model.py`` and a copy of ``model_repository/triton_adapter.py``,
which Triton's python backend finds beside it; the adapters take their tensor names from ``config.pbtxt``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from services.core.contracts import MODEL_NAMES, RANKER_ANSWER_PREFIX, TRITON_CONTRACTS
from services.core.modeltext import ranker_model_text
from tools import export
from tools.runtime.triton_server import TritonServer

pytestmark = pytest.mark.triton

_TEXTS = [
    "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War.",
    "Fargo (1996)",
    "a quiet film about space exploration with a long and winding plot that goes on for a while",
]


def _strings(name: str, values: list[str | bytes]) -> grpcclient.InferInput:
    """A ``[n, 1]`` BYTES input."""
    data = np.array([[v.encode() if isinstance(v, str) else v] for v in values], dtype=np.object_)
    tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


@pytest.fixture(scope="module")
def client(triton_server: TritonServer) -> grpcclient.InferenceServerClient:
    with grpcclient.InferenceServerClient(triton_server.grpc_addr) as c:
        yield c


async def _infer_many(server: TritonServer, model: str, input_name: str, texts: list[str | bytes]) -> list:
    """One batch-1 request per text, all in flight at once; each result is an InferResult or the exception."""
    async with aioclient.InferenceServerClient(server.grpc_addr) as c:
        calls = [c.infer(model, [_strings(input_name, [t])], client_timeout=60) for t in texts]
        return await asyncio.gather(*calls, return_exceptions=True)


def _batch_counts(client: grpcclient.InferenceServerClient, model: str) -> dict[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])}


def test_models_answer_with_contract_shapes_and_types(client: grpcclient.InferenceServerClient) -> None:
    embedding = client.infer("text_encoder", [_strings("text", [_TEXTS[0]])]).as_numpy("embedding")
    assert embedding.shape == (1, 32) and embedding.dtype == np.float32

    scores = client.infer("ranker", [_strings("prompt", [export.sample_prompts()[1]])]).as_numpy("candidate_scores")
    assert scores.shape == (1, 20) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores))

    text = client.infer("preference_generator", [_strings("prompt", ["Describe this user."])]).as_numpy("text")
    assert text.shape == (1, 1) and text.dtype == np.object_
    assert isinstance(text[0, 0], bytes) and text[0, 0].decode().strip()

    ranker_config = client.get_model_config("ranker", as_json=True)["config"]
    assert ranker_config["parameters"]["answer_prefix"]["string_value"] == RANKER_ANSWER_PREFIX


def test_served_versions_use_the_shared_helper_and_the_contract_tensor_names(
    client: grpcclient.InferenceServerClient, tiny_model_repository: Path
) -> None:
    helper = (Path(__file__).resolve().parents[2] / "model_repository" / "triton_adapter.py").read_text()
    for name in MODEL_NAMES:
        version_dir = tiny_model_repository / name / "1"
        assert (version_dir / "triton_adapter.py").read_text() == helper
        assert "from triton_adapter import" in (version_dir / "model.py").read_text()
        config = client.get_model_config(name, as_json=True)["config"]
        contract = TRITON_CONTRACTS[name]
        assert ([i["name"] for i in config["input"]], [o["name"] for o in config["output"]]) == (
            [contract.input_name], [contract.output_name])
        assert client.is_model_ready(name, "1")


def test_ranker_scores_equal_onnx_runtime(
    triton_server: TritonServer, tiny_model_repository: Path
) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    prompts = export.sample_prompts()
    # Mixed lengths in flight together: right padding inside the model must not change any row.
    results = asyncio.run(_infer_many(triton_server, "ranker", "prompt", prompts))

    version_dir = tiny_model_repository / "ranker" / "1"
    tokenizer = AutoTokenizer.from_pretrained(str(version_dir))
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for prompt, result in zip(prompts, results):
        ids = tokenizer(ranker_model_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        (expected,) = session.run(
            ["label_logits"],
            {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)},
        )
        np.testing.assert_allclose(result.as_numpy("candidate_scores"), expected, atol=1e-5, rtol=0)


def test_encoder_embeddings_are_unit_norm_and_batch_invariant(
    client: grpcclient.InferenceServerClient, triton_server: TritonServer
) -> None:
    alone = client.infer("text_encoder", [_strings("text", [_TEXTS[0]])]).as_numpy("embedding")[0]
    # One request carrying three rows of different lengths.
    together = client.infer("text_encoder", [_strings("text", list(reversed(_TEXTS)))]).as_numpy("embedding")
    # Concurrent batch-1 requests, batched by Triton with other texts.
    concurrent = asyncio.run(_infer_many(triton_server, "text_encoder", "text", _TEXTS * 4))

    assert together.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(alone), 1.0, atol=1e-5)
    np.testing.assert_allclose(together[2], alone, atol=1e-5)
    for i in range(0, len(concurrent), len(_TEXTS)):
        np.testing.assert_allclose(concurrent[i].as_numpy("embedding")[0], alone, atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3)


@pytest.mark.parametrize(
    ("model", "input_name", "bad", "message"),
    [
        ("text_encoder", "text", b"   ", "empty"),
        ("text_encoder", "text", b"\xff\xfe bad utf-8", "utf-8"),
        ("ranker", "prompt", b"", "empty"),
        ("ranker", "prompt", ("word " * 1500).encode(), "max_prompt_tokens"),
        ("preference_generator", "prompt", b"\xc3\x28", "utf-8"),
    ],
)
def test_bad_request_fails_alone(
    triton_server: TritonServer, model: str, input_name: str, bad: bytes, message: str
) -> None:
    good = export.sample_prompts()[0] if model != "text_encoder" else _TEXTS[1]
    texts: list[str | bytes] = [good, good, bad, good, good]
    results = asyncio.run(_infer_many(triton_server, model, input_name, texts))

    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(results[2], InferenceServerException)
    assert message in str(results[2]).lower()
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 2)
    assert triton_server.is_ready()


def test_concurrent_requests_are_batched_by_triton(
    client: grpcclient.InferenceServerClient, triton_server: TritonServer
) -> None:
    before = _batch_counts(client, "text_encoder")
    texts = [f"movie number {i} " + "with words " * (i % 7) for i in range(32)]
    results = asyncio.run(_infer_many(triton_server, "text_encoder", "text", texts))
    assert not [r for r in results if isinstance(r, Exception)]

    # Triton records an execution's statistics after sending its responses: wait for all 32 to show.
    deadline = time.monotonic() + 10
    while True:
        after = _batch_counts(client, "text_encoder")
        new = {size: after.get(size, 0) - before.get(size, 0) for size in after}
        if sum(size * count for size, count in new.items()) >= 32 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(size * count for size, count in new.items()) == 32, new
    assert any(size > 1 and count > 0 for size, count in new.items()), new
    # Each response still carries its own text's embedding.
    single = client.infer("text_encoder", [_strings("text", [texts[5]])]).as_numpy("embedding")
    np.testing.assert_allclose(results[5].as_numpy("embedding"), single, atol=1e-5)


def _cache_hits(client: grpcclient.InferenceServerClient, model: str) -> int:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"].get("cache_hit", {}).get("count", 0))


def test_repeated_encoder_texts_come_from_the_response_cache_and_ranker_prompts_do_not(
    client: grpcclient.InferenceServerClient,
) -> None:
    text = "a text sent twice to the encoder"
    hits = _cache_hits(client, "text_encoder")
    first = client.infer("text_encoder", [_strings("text", [text])]).as_numpy("embedding")
    second = client.infer("text_encoder", [_strings("text", [text])]).as_numpy("embedding")
    other = client.infer("text_encoder", [_strings("text", [text + "!"])]).as_numpy("embedding")
    assert _cache_hits(client, "text_encoder") == hits + 1
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other, atol=1e-4)
    # The version is part of the cache key; the config names the cache (the server enables it).
    assert client.get_model_config("text_encoder", as_json=True)["config"]["response_cache"]["enable"]

    prompt = export.sample_prompts()[0]
    ranker_hits = _cache_hits(client, "ranker")
    for _ in range(2):
        client.infer("ranker", [_strings("prompt", [prompt])])
    assert _cache_hits(client, "ranker") == ranker_hits == 0


def test_preference_generator_is_deterministic_per_prompt(triton_server: TritonServer) -> None:
    prompts = ["Describe a user who likes westerns.", "Describe a user who likes cartoons and musicals.", ""]
    results = asyncio.run(_infer_many(triton_server, "preference_generator", "prompt", prompts + prompts[:1]))

    assert isinstance(results[2], InferenceServerException)
    first, again = results[0].as_numpy("text")[0, 0].decode(), results[3].as_numpy("text")[0, 0].decode()
    assert first and first == again
    assert isinstance(results[1].as_numpy("text")[0, 0].decode(), str)
