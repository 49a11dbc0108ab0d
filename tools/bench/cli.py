"""The `instructrec bench` command (also ``python -m tools.bench``); the run itself is ``tools.bench.run``.

Heavy imports (gRPC, Triton's client, ONNX Runtime) happen inside the command, so ``instructrec --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from services.core.contracts import FUSE_RETRIEVAL_SCORES
from tools.bench.config import BenchConfig
from tools.bench.report import summary_lines
from tools.bench.stats import parse_int_list, parse_mix


def bench_command(
    concurrency: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent callers, one point each.")]
    = "1,4,16",
    duration: Annotated[float, typer.Option(help="Seconds each point runs (calls in flight then complete).")] = 30.0,
    requests: Annotated[int, typer.Option(help="Requests per point instead of --duration (0: use --duration).")] = 0,
    batching: Annotated[str, typer.Option(
        help="on: the served configs; off: dynamic batching removed through Triton's model control; "
             "both: the sweep with it on, then off (the originals are restored at the end).")] = "both",
    mix: Annotated[str, typer.Option(
        help="Request kinds and weights: known (stored history, statement cached by the warm-up), anonymous "
             "(own history, statement generated on the path), candidates (known user, caller's candidate list).")]
    = "known=0.6,anonymous=0.15,candidates=0.25",
    query_share: Annotated[float, typer.Option(help="Share of requests with a free-text query.")] = 0.5,
    warmup_users: Annotated[int, typer.Option(help="Known users whose statements the warm-up caches.")] = 32,
    warmup_requests: Annotated[int, typer.Option(help="Recommend calls of the mix that warm the models.")] = 8,
    overhead_requests: Annotated[int, typer.Option(
        help="Cached requests at concurrency 1 compared with the model-only baseline.")] = 12,
    no_ranker_requests: Annotated[int, typer.Option(
        help="Requests of the path without the ranker (retrieval + cached instruction).")] = 50,
    baseline: Annotated[bool, typer.Option(help="Run the model-only ONNX Runtime baseline.")] = True,
    fuse_retrieval_scores: Annotated[bool, typer.Option(
        help="Whether the gateway under test fuses retrieval scores (its GATEWAY_FUSE_RETRIEVAL_SCORES): then "
             "retrieval encodes a text for requests with candidates too, and the model-only replay does.")]
    = FUSE_RETRIEVAL_SCORES,
    plot: Annotated[bool, typer.Option(help="Write the PNG next to the JSON.")] = True,
    device: Annotated[str, typer.Option(
        help="cpu, or cuda: models on KIND_GPU instances (CUDA provider / torch on cuda) and a CUDA baseline.")]
    = "cpu",
    gateway: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    instruction: Annotated[str, typer.Option(help="Instruction service host:port.")] = "localhost:50052",
    retrieval: Annotated[str, typer.Option(help="Retrieval service host:port.")] = "localhost:50053",
    ranking: Annotated[str, typer.Option(help="Ranking service host:port.")] = "localhost:50054",
    triton: Annotated[str, typer.Option(
        help="Triton gRPC host:port (statistics, model control). TLS to Triton: INSTRUCTREC_TRITON__TLS__ENABLED="
             "true, with INSTRUCTREC_TRITON__TLS__CA_PATH, __CERT_PATH and __KEY_PATH (mutual TLS), __SERVER_NAME.")]
    = "localhost:8001",
    data_dir: Annotated[Path, typer.Option(help="Data set the stack serves (items.jsonl, train.csv).")] = Path(
        "var/data/movielens-100k"),
    repository: Annotated[Path, typer.Option(help="Model repository Triton serves (for the baseline).")] = Path(
        "model_repository"),
    timeout: Annotated[float, typer.Option(help="Deadline of each Recommend call, seconds.")] = 120.0,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="MODEL:KEY=VALUE",
        help="Config override for this run (restored afterwards); KEY is a model parameter (num_threads, "
             "allow_spinning, rows_per_run, ...) or one of max_queue_delay_us, preferred_batch_size (e.g. 4/8), "
             "max_batch_size, instance_count. Repeatable.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed of the request mix (default: from the clock, so anonymous histories are new).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output path without suffix (.json and .png are written). Default var/bench/bench-<UTC time>.")]
    = None,
) -> None:
    """Benchmark the running stack: throughput and latency against concurrency, Triton batching, overhead.

    Needs the stack up (`instructrec run`). See docs/performance.md for the figures and how to read them.
    """
    from rich.console import Console

    from tools.bench.control import parse_settings
    from tools.bench.run import run_bench

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if batching not in ("on", "off", "both"):
        raise typer.BadParameter("must be on, off or both", param_hint="--batching")
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter("must be cpu or cuda", param_hint="--device")
    try:
        config = BenchConfig(
            gateway_addr=gateway, instruction_addr=instruction, retrieval_addr=retrieval, ranking_addr=ranking,
            triton_addr=triton, data_dir=data_dir, repository=repository,
            concurrency=parse_int_list(concurrency), duration_s=duration, requests_per_point=requests,
            batching=batching, settings=parse_settings(settings or []), mix=parse_mix(mix),
            query_share=query_share, warmup_users=warmup_users, warmup_requests=warmup_requests,
            overhead_requests=overhead_requests, no_ranker_requests=no_ranker_requests, baseline=baseline,
            fuse_retrieval_scores=fuse_retrieval_scores,
            device=device, request_timeout_s=timeout, seed=seed, plot=plot,
            out=out or Path("var/bench") / f"bench-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}",
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = asyncio.run(run_bench(config))
    console = Console()
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)


def serving_command(
    c1_requests: Annotated[int, typer.Option(help="Requests of the concurrency-1 phases.")] = 60,
    anonymous_requests: Annotated[int, typer.Option(help="Requests with new anonymous histories.")] = 30,
    c8_seconds: Annotated[float, typer.Option(help="Seconds of the 8-caller phase.")] = 60.0,
    overload_callers: Annotated[int, typer.Option(help="Callers of the overload phase.")] = 64,
    overload_seconds: Annotated[float, typer.Option(help="Seconds of the overload phase.")] = 30.0,
    overload_deadline: Annotated[float, typer.Option(help="Deadline of each overload call, seconds.")] = 30.0,
    recovery_wait: Annotated[float, typer.Option(help="Quiet seconds before the recovery phase.")] = 60.0,
    sweep: Annotated[str, typer.Option(help="Concurrencies of the knee sweep ('' skips it).")] = "1,2,4,8,16,32",
    sweep_seconds: Annotated[float, typer.Option(help="Seconds per sweep point.")] = 15.0,
    shed_backoff: Annotated[float, typer.Option(
        help="Seconds a caller refused with RESOURCE_EXHAUSTED waits before its next call.")] = 0.1,
    gateway: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    instruction: Annotated[str, typer.Option(help="Instruction service host:port (precomputed share).")]
    = "localhost:50052",
    data_dir: Annotated[Path, typer.Option(help="Data set the stack serves.")] = Path("var/data/movielens-100k"),
    repository: Annotated[Path, typer.Option(help="Model repository (the ranker ONNX v1 for REF).")]
    = Path("model_repository"),
    seed: Annotated[int, typer.Option(help="Random seed of the request sequence.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output path without suffix (.json, .md).")] = None,
) -> None:
    """Serving cost against REF (one ranker-v1 forward over 480 tokens, ONNX Runtime alone, measured in the same
    run): concurrency 1, new anonymous histories, 8 callers, overload (64 callers), recovery, and a knee sweep.

    Needs the stack up (`instructrec run`) with the statements precomputed. See docs/performance.md.
    """
    from rich.console import Console

    from tools.bench.serving import ServingConfig, markdown, run_serving

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    config = ServingConfig(
        gateway_addr=gateway, instruction_addr=instruction, data_dir=data_dir, repository=repository,
        c1_requests=c1_requests, anonymous_requests=anonymous_requests, c8_seconds=c8_seconds,
        overload_callers=overload_callers, overload_seconds=overload_seconds, overload_deadline_s=overload_deadline,
        recovery_wait_s=recovery_wait, sweep=parse_int_list(sweep) if sweep else [], sweep_seconds=sweep_seconds,
        shed_backoff_s=shed_backoff, seed=seed,
        out=out or Path("var/bench") / f"serving-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}",
    )
    report = asyncio.run(run_serving(config))
    Console().print(markdown(report), soft_wrap=True)


app = typer.Typer(add_completion=False)
app.command()(bench_command)


def scale_command(
    sizes: Annotated[str, typer.Option(
        help="Catalog sizes as items:users, comma-separated (synthetic shops).")] = "10000:100000,100000:300000,"
                                                                                  "1000000:1000000",
    requests: Annotated[int, typer.Option(min=10, help="Measured requests per kind and concurrency.")] = 100,
    train_minutes: Annotated[float, typer.Option(
        help="The sequence model's training budget per size (cost, not quality, is measured).")] = 5.0,
    work_dir: Annotated[Path, typer.Option(help="Synthetic data and workspaces (kept; a rerun resumes).")] = Path(
        "var/scale"),
    out: Annotated[Path, typer.Option(help="Report path without suffix: .json, .md, .png.")] = Path(
        "docs/performance/scale"),
    reuse: Annotated[bool, typer.Option(help="Measure existing workspaces without running bootstrap again.")]
    = False,
    baseline: Annotated[bool, typer.Option(help="Measure MovieLens-100K (`instructrec run`) in the same run.")]
    = True,
) -> None:
    """How the served stack's cost grows with the catalog: for each size a synthetic shop through `bootstrap`,
    served by `run --data-dir`; p50 / p99 per stage at concurrency 1 and 8 without a query, with one, with a
    filter and with a request excluding half the catalog; resident memory of every process; time to SERVING;
    index build time, size and recall; the interaction store's lookup latency. MovieLens-100K is the baseline."""
    from tools.bench.scale import ScaleConfig, parse_sizes, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = ScaleConfig(sizes=parse_sizes(sizes), work_dir=work_dir.resolve(), out=out.resolve(),
                         requests=requests, train_minutes=train_minutes, reuse=reuse, baseline=baseline)
    report = run(config)
    for entry in report["sizes"]:
        print(json.dumps({k: entry.get(k) for k in ("items", "users", "no_query_p50_ms", "query_p50_ms",
                                                    "exclude_half_p50_ms", "max_rss_mib", "ready_s",
                                                    "index_build_s", "recall_at_20_vs_exact",
                                                    "ratio_to_baseline")}))
