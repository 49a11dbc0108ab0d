"""`instructrec export --push` against a real Triton while the four services serve Recommend.

The tests share one Triton over a copy of the tiny repository (they add and remove versions, so the
session's `tiny_model_repository` is left alone) and run in file order; each reads the version serving
when it starts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc
from typer.testing import CliRunner

from tests.integration.conftest import ROOT, StartTriton
from tests.integration.stack_helpers import BackgroundCallers, running_stack, write_synthetic_dataset
from tools import export
from tools.cli import app
from tools.export import push
from tools.index import build_index
from tools.runtime.triton_server import TritonServer

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def repository(tiny_model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("push") / "model_repository"
    shutil.copytree(tiny_model_repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def tiny_lm(repository: Path) -> Path:
    """The tiny LM the repository's ranker version 1 was exported from (recorded in its metadata)."""
    return Path(json.loads((repository / "ranker" / "1" / "metadata.json").read_text())["source_checkpoint"])


@pytest.fixture(scope="module")
def triton(repository: Path, start_triton: StartTriton) -> Iterator[TritonServer]:
    with start_triton(repository, export.MODEL_NAMES, name="push_triton") as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory):
    data = write_synthetic_dataset(tmp_path_factory.mktemp("push_data"))
    index = await asyncio.to_thread(build_index, data / "items.jsonl", data / "train.csv",
                                    tmp_path_factory.mktemp("push_index"), triton.grpc_addr)
    async with running_stack(triton.grpc_addr, data, index) as stack:
        async with grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
            yield recommend_service_pb2_grpc.RecommendServiceStub(channel)


def _ranker_version(response: recommend_service_pb2.RecommendResponse) -> str:
    return {v.model_name: v.version for v in response.model_versions}.get("ranker", "")


def _served(triton: TritonServer) -> list[str]:
    client = triton_grpc.InferenceServerClient(triton.grpc_addr)
    try:
        return client.get_model_metadata("ranker", as_json=True)["versions"]
    finally:
        client.close()


def _snapshot(repository: Path) -> dict[str, str | int]:
    """Every file under ranker/ (size; config.pbtxt by content), ignoring the stub's __pycache__."""
    root = repository / "ranker"
    return {
        str(p.relative_to(root)): p.read_text() if p.name == "config.pbtxt" else p.stat().st_size
        for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts and p.is_file()
    }


def _hidden(repository: Path) -> list[str]:
    return [p.name for p in (repository / "ranker").iterdir() if p.name.startswith(".")]


async def _assert_unchanged(gateway, triton: TritonServer, repository: Path, before: dict[str, str | int],
                            serving: list[str], user_id: str) -> None:
    """The ranker's files are as ``before`` (no hidden leftovers), Triton serves ``serving`` and Recommend answers
    from it, not degraded."""
    assert _snapshot(repository) == before and _hidden(repository) == []
    assert _served(triton) == serving
    response = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id=user_id), timeout=60)
    assert not response.degraded and [_ranker_version(response)] == serving


async def _cli(*args: str) -> tuple[int, str]:
    """Run `instructrec` in its own process, as an engineer would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode(errors="replace")


class Traffic(BackgroundCallers):
    """Concurrent Recommend callers; every outcome recorded with its start and end time."""

    def __init__(self, gateway, callers: int = 4) -> None:  # noqa: ANN001
        super().__init__(callers)
        self.gateway = gateway
        self.results: list[tuple[float, float, object]] = []

    async def _caller(self, caller: int) -> None:
        n = 0
        while self.running():
            request = recommend_service_pb2.RecommendRequest(
                user_id=str(1 + (caller * 3 + n) % 12), query=("a funny film", "", "an old drama")[n % 3]
            )
            started = time.monotonic()
            try:
                outcome: object = await self.gateway.Recommend(request, timeout=60)
            except grpc.aio.AioRpcError as err:
                outcome = err
            self.results.append((started, time.monotonic(), outcome))
            n += 1

    def failures(self) -> list[str]:
        """Failed calls and degraded answers (a ranker failure degrades instead of failing)."""
        out = []
        for _, _, r in self.results:
            if isinstance(r, grpc.aio.AioRpcError):
                out.append(f"{r.code().name}: {r.details()}")
            elif r.degraded:
                out.append("degraded: " + "; ".join(r.degraded_reasons))
        return out


def _lora_adapter(lm: Path, dest: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(lm))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(dest))
    return dest


async def test_pushing_a_ranker_under_load_fails_no_request_and_switches_version(
    gateway, triton: TritonServer, repository: Path, tiny_lm: Path, tmp_path: Path
) -> None:
    adapter = await asyncio.to_thread(_lora_adapter, tiny_lm, tmp_path / "ranker-lora")
    old = str(export.latest_version(repository, "ranker"))
    new = str(int(old) + 1)

    async with Traffic(gateway) as traffic:
        await asyncio.sleep(1.0)
        push_started = time.monotonic()
        code, output = await _cli("export", "ranker", "--checkpoint", str(adapter), "--base", str(tiny_lm),
                                  "--repository", str(repository), "--push", triton.grpc_addr, "--keep", "1")
        push_done = time.monotonic()
        await asyncio.sleep(1.5)

    assert code == 0, output
    assert f"{triton.grpc_addr}: serves version {new}" in output and f"removed old versions {old}" in output
    assert traffic.failures() == []
    versions = [(start, end, _ranker_version(r)) for start, end, r in traffic.results]
    assert {v for _, _, v in versions} <= {old, new}
    assert [v for start, end, v in versions if end < push_started] and all(
        v == old for start, end, v in versions if end < push_started)
    after = [v for start, _, v in versions if start > push_done]
    assert after and set(after) == {new}
    # Traffic ran across the swap: calls made while the command ran were answered by both versions.
    assert {v for start, _, v in versions if push_started < start < push_done} == {old, new}
    assert _served(triton) == [new]
    meta = json.loads((repository / "ranker" / new / "metadata.json").read_text())
    assert meta["adapter"]["type"] == "lora" and meta["base_model"]["path"] == str(tiny_lm.resolve())
    assert sorted(p.name for p in (repository / "ranker").iterdir()) == [new, "config.pbtxt"]


async def test_a_diverged_checkpoint_is_refused_before_triton_sees_it(
    gateway, triton: TritonServer, repository: Path, tiny_lm: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    diverged = shutil.copytree(tiny_lm, tmp_path / "diverged")
    weights = load_file(str(diverged / "model.safetensors"))
    weights = {k: torch.full_like(v, float("nan")) if "layers.1." in k else v for k, v in weights.items()}
    save_file(weights, str(diverged / "model.safetensors"), metadata={"format": "pt"})
    before, serving = _snapshot(repository), _served(triton)

    with pytest.raises(export.ParityError, match="ranker: ONNX Runtime differs from torch by nan"):
        await asyncio.to_thread(push.publish, "ranker", diverged, repository, [triton.grpc_addr])

    await _assert_unchanged(gateway, triton, repository, before, serving, user_id="3")


async def test_a_version_failing_its_canary_is_rolled_back_with_its_config(
    gateway, triton: TritonServer, repository: Path, tiny_lm: Path
) -> None:
    before, serving = _snapshot(repository), _served(triton)

    # Exports fine, but Triton then rejects the canary prompt: the new config caps prompts at 16 tokens.
    result = CliRunner().invoke(app, ["export", "ranker", "--checkpoint", str(tiny_lm), "--repository",
                                      str(repository), "--push", triton.grpc_addr, "--max-prompt-tokens", "16"])
    code, output = result.exit_code, result.output

    assert code == 1, output
    assert "push failed" in output and f"canary inference on {triton.grpc_addr}" in output
    assert "more than max_prompt_tokens=16" in output and "rolled back" in output and "restored config.pbtxt" in output
    await _assert_unchanged(gateway, triton, repository, before, serving, user_id="5")


async def test_a_version_failing_to_load_is_rolled_back_without_failing_a_request(
    gateway, triton: TritonServer, repository: Path, tiny_lm: Path
) -> None:
    serving = _served(triton)
    before = _snapshot(repository)
    version_dir = await asyncio.to_thread(export.export_model, "ranker", tiny_lm, repository)
    (version_dir / "model.onnx").write_bytes(b"truncated on the shared volume")

    async with Traffic(gateway, callers=2) as traffic:
        with pytest.raises(push.PushError) as err:
            await asyncio.to_thread(push.push_version, repository, "ranker", int(version_dir.name),
                                    [triton.grpc_addr])
        await asyncio.sleep(0.5)

    assert f"load_model on {triton.grpc_addr}" in str(err.value) and "INVALID_PROTOBUF" in str(err.value)
    assert f"{triton.grpc_addr} serves version {serving[0]}" in str(err.value) and err.value.rolled_back
    assert not version_dir.exists() and _hidden(repository) == [] and _snapshot(repository) == before
    assert traffic.results and traffic.failures() == []
    assert {_ranker_version(r) for _, _, r in traffic.results} == set(serving)


async def test_models_lists_what_triton_serves_and_what_the_repository_holds(
    triton: TritonServer, repository: Path
) -> None:
    code, output = await _cli("models", "--triton", triton.grpc_addr, "--repository", str(repository), "--json")

    assert code == 0, output
    listing = json.loads(output)
    served = {(r["name"], r.get("version"), r.get("state")) for r in listing["triton"][triton.grpc_addr]}
    latest = str(export.latest_version(repository, "ranker"))
    assert ("ranker", latest, "READY") in served and ("text_encoder", "1", "READY") in served
    stored = {(r["model"], r["version"], r["state"]) for r in listing["repository"]}
    assert ("ranker", int(latest), "exported") in stored and ("preference_generator", 1, "exported") in stored
