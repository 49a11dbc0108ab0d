"""`instructrec bench` for a few seconds against the tiny-model stack: the report's shape and what Triton did.

The bench reloads models with config overrides (batching off) and restores them, so it gets a Triton of its
own rather than the session's shared one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import TritonSettings
from services.common.triton_clients import triton_sync_client
from tests.integration.conftest import TRITON_MODELS, StartTriton
from tests.integration.stack_helpers import running_stack
from tools.bench.config import MODELS, BenchConfig
from tools.bench.run import run_bench
from tools.runtime.triton_server import TritonServer

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def bench_triton(tiny_model_repository: Path, start_triton: StartTriton) -> Iterator[TritonServer]:
    with start_triton(tiny_model_repository, TRITON_MODELS, name="bench_triton") as server:
        yield server


async def test_bench_measures_the_stack_with_batching_on_and_off_and_restores_the_configs(
    bench_triton: TritonServer, tiny_model_repository: Path, dataset: Path, index_dir: Path, tmp_path: Path
) -> None:
    async with running_stack(bench_triton.grpc_addr, dataset, index_dir) as stack:
        config = BenchConfig(
            gateway_addr=stack.addr("gateway"), instruction_addr=stack.addr("instruction"),
            retrieval_addr=stack.addr("retrieval"), ranking_addr=stack.addr("ranking"),
            triton_addr=bench_triton.grpc_addr, data_dir=dataset, repository=tiny_model_repository,
            concurrency=[1, 8], duration_s=3.0, batching="both", warmup_users=6, warmup_requests=4,
            overhead_requests=4, no_ranker_requests=5, request_timeout_s=30.0, out=tmp_path / "bench",
            progress=False,
        )
        report = await run_bench(config)

    assert json.loads((tmp_path / "bench.json").read_text())["meta"]["versions"] == dict.fromkeys(MODELS, "1")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert report["warmup"]["statements_cached"] == 6

    for mode in ("on", "off"):
        points = report["sweeps"][mode]
        assert [p["concurrency"] for p in points] == [1, 8]
        for p in points:
            assert p["ok"] > 0 and p["errors_by_code"] == {} and p["throughput_rps"] > 0
            assert p["latency"]["p50_ms"] <= p["latency"]["p99_ms"] <= p["latency"]["max_ms"]
            assert {"retrieval", "instruction", "ranking"} <= set(p["stages"])
            assert p["triton"]["ranker"]["requests"] > 0 and p["triton"]["ranker"]["queue_ms_mean"] >= 0
    on8 = report["sweeps"]["on"][1]["triton"]
    # Eight callers with dynamic batching: Triton formed batches of more than one request.
    assert max(on8[m]["max_batch_size"] for m in ("text_encoder", "ranker")) > 1
    assert on8["text_encoder"]["mean_batch_size"] > 1 or on8["ranker"]["mean_batch_size"] > 1
    # Batching off: every execution held one request.
    for model, delta in report["sweeps"]["off"][1]["triton"].items():
        assert delta["max_batch_size"] <= 1, model

    overhead = report["overhead"]["requests"]
    assert overhead and all(r["model_only"]["total_ms"] > 0 and r["latency_ms"] > 0 for r in overhead)
    assert report["no_ranker_path"]["latency"]["count"] == 5 and report["no_ranker_path"]["preference_cached"] == 5
    # The same five requests again: Triton's response cache answers every retrieval text, the encoder never runs.
    repeat = report["no_ranker_path"]["repeat"]
    assert repeat["latency"]["count"] == 5 and repeat["errors_by_code"] == {}
    # Requests without a query call no text encoder at all (sequence model only); one with a query embeds two
    # texts (the request text, and the query alone for the intent heads).
    with_query = repeat["requests_with_query"]
    assert repeat["text_encoder"]["cache_hits"] == 2 * with_query and repeat["text_encoder"]["executions"] == 0
    assert repeat["without_query"]["latency"]["count"] + repeat["with_query"]["latency"]["count"] == 5
    assert report["results"]["no_ranker_repeat_p50_ms"] == repeat["latency"]["p50_ms"]
    results = report["results"]
    assert results["overhead_ratio"]["mean"] > 0 and results["throughput_ratio"] > 0
    assert set(results["batching_ratio"]) == {"1", "8"}
    assert set(results["acceptance"]) == {"served_c1_within_10pct_of_model_only", "no_ranker_path_p50_under_15ms"}

    # The overrides are gone: Triton serves the repository's configs again.
    with triton_sync_client(TritonSettings(grpc_addr=bench_triton.grpc_addr)) as client:
        for model in MODELS:
            assert "dynamic_batching" in client.get_model_config(model, as_json=True)["config"], model
            assert client.is_model_ready(model)

