"""`instructrec export` and `models`: model versions in the repository and on Triton (``tools/export``)."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tools.cli.common import (
    TRITON_TLS_HELP,
    RepositoryOption,
    WorkspaceOption,
    console,
    error_text,
    figures,
    say,
    setup_logging,
)


class ModelName(StrEnum):
    """The models of the Triton repository."""

    text_encoder = "text_encoder"
    ranker = "ranker"
    preference_generator = "preference_generator"
    sequence_encoder = "sequence_encoder"
    request_reader = "request_reader"


class Precision(StrEnum):
    """Precision of the exported ONNX graph."""

    fp32 = "fp32"
    int8 = "int8"



def export_cmd(
    model: Annotated[ModelName, typer.Argument(help="Which model the checkpoint is for.")],
    checkpoint: Annotated[Path, typer.Option(
        help="Hugging Face model folder, or a LoRA adapter folder (has adapter_config.json), merged into its "
             "base model before export.")],
    repository: RepositoryOption = Path("model_repository"),
    push: Annotated[list[str] | None, typer.Option(
        "--push", metavar="HOST:PORT",
        help="Triton gRPC endpoint to load the new version on, with readiness wait, canary inference and "
             "rollback on failure. Repeat for replicas sharing the repository." + TRITON_TLS_HELP)] = None,
    keep: Annotated[int, typer.Option(
        help="After a successful push keep only the last N versions in the repository (0 keeps all).")] = 3,
    base: Annotated[Path | None, typer.Option(
        help="Base model folder of a LoRA adapter. Default: the adapter's base_model_name_or_path if it is a "
             "local folder, else the converted SmolLM2 (ranker, preference_generator) or MiniLM (text_encoder).")
    ] = None,
    quantize: Annotated[Precision, typer.Option(
        help="fp32, or int8: ONNX Runtime dynamic quantisation (text_encoder, ranker) with the parity check "
             "relaxed to ranking agreement / cosine similarity, figures recorded in metadata.json.")
    ] = Precision.fp32,
    tolerance: Annotated[float | None, typer.Option(
        help="Parity bound on the max abs difference from PyTorch, replacing the precision's default.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="config.pbtxt: largest dynamic batch.")] = None,
    max_queue_delay_us: Annotated[int | None, typer.Option(
        help="config.pbtxt: how long the dynamic batcher waits to fill a batch.")] = None,
    instance_count: Annotated[int | None, typer.Option(help="config.pbtxt: model instances on CPU.")] = None,
    response_cache: Annotated[bool | None, typer.Option(
        "--response-cache/--no-response-cache",
        help="config.pbtxt: Triton answers repeated identical requests from its response cache.")] = None,
    num_threads: Annotated[int | None, typer.Option(
        help="config.pbtxt: intra-op threads per instance (ONNX Runtime / torch).")] = None,
    versions_served: Annotated[int | None, typer.Option(
        help="config.pbtxt version policy: Triton serves the latest N versions.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="config.pbtxt (text_encoder): truncation length.")] = None,
    max_prompt_tokens: Annotated[int | None, typer.Option(
        help="config.pbtxt (ranker, preference_generator): longer prompts are rejected.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        help="config.pbtxt (preference_generator): generation budget.")] = None,
    load_timeout: Annotated[float, typer.Option(help="Seconds allowed for each Triton to load the version.")] = 600.0,
    workspace: WorkspaceOption = Path("var"),
) -> None:
    """Export a checkpoint into the next model version (parity-checked), and optionally push it to Triton.

    config.pbtxt settings that are not given keep the repository's current values.

    Exit codes: 0 done; 2 export refused (nothing written); 1 push failed, rolled back; 3 rollback incomplete.
    """
    from tools.export import ParityError
    from tools.export.push import PushError, publish

    setup_logging()
    overrides = dict(
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, instance_count=instance_count,
        response_cache=response_cache, num_threads=num_threads, num_versions=versions_served, max_tokens=max_tokens,
        max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
    )
    try:
        version_dir, report = publish(
            model.value, checkpoint, repository, push or [], keep=keep, base=base, workspace=workspace,
            precision=quantize.value, tolerance=tolerance, load_timeout_s=load_timeout, **overrides,
        )
    except ParityError as exc:
        say(f"[red]export refused, parity check failed:[/red] {escape(str(exc))}. Nothing was written.")
        raise typer.Exit(2) from None
    except PushError as exc:
        say(f"[red]push failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1 if exc.rolled_back else 3) from None
    except (ValueError, OSError, RuntimeError) as exc:
        say(f"[red]export refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - e.g. unreadable weights; the staging folder is already gone
        logging.getLogger("instructrec.export").exception("export failed")
        say(f"[red]export failed:[/red] {type(exc).__name__}: {escape(str(exc))}. Nothing was written.")
        raise typer.Exit(2) from None
    meta = json.loads((version_dir / "metadata.json").read_text())
    say(f"exported {model.value} version {version_dir.name} to {version_dir} ({meta.get('precision')})")
    say(f"parity: {figures(meta.get('parity', {}))}")
    if report is None:
        say("not pushed (no --push): Triton serves it after its next load_model of the model")
        return
    for target in report.targets:
        say(f"{target.addr}: serves version {', '.join(target.serving)} (loaded and ready in "
             f"{target.load_s:.2f} s; canary {target.canary_ms:.0f} ms: {figures(target.canary)})")
    if report.pruned:
        say(f"removed old versions {', '.join(map(str, report.pruned))} (keeping the last {keep})")



def models(
    triton: Annotated[list[str] | None, typer.Option(
        "--triton", metavar="HOST:PORT",
        help="Triton gRPC endpoint to ask (repeat for replicas)." + TRITON_TLS_HELP)] = None,
    repository: RepositoryOption = Path("model_repository"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List what each Triton serves (model, version, state) and what the model repository holds."""
    from tools.export import repository_versions
    from tools.export.push import served_models

    served: dict[str, list[dict] | str] = {}
    for addr in triton or ["localhost:8001"]:
        try:
            served[addr] = served_models(addr)
        except Exception as exc:  # noqa: BLE001 - an unreachable server is reported, not fatal
            served[addr] = f"unreachable: {error_text(exc)}"
    stored = repository_versions(repository)
    if as_json:
        print(json.dumps({"triton": served, "repository": stored}, indent=2))
        return
    for addr, rows in served.items():
        if isinstance(rows, str):
            say(f"[yellow]{addr}[/yellow]: {escape(rows)}")
            continue
        table = Table(title=f"served by {addr}")
        for column in ("model", "version", "state", "reason"):
            table.add_column(column)
        for row in rows:
            reason = (row.get("reason") or "").splitlines()
            table.add_row(row.get("name", ""), row.get("version", "-"), row.get("state", "(not loaded)"),
                          reason[0][:80] if reason else "")
        console.print(table)
    table = Table(title=f"repository {repository}")
    for column in ("model", "version", "state", "precision", "exported at", "size MB", "parity max diff", "source"):
        table.add_column(column)
    for row in stored:
        diff = row.get("max_abs_diff")
        table.add_row(row["model"], str(row["version"]), row["state"], row.get("precision", ""),
                      row.get("exported_at") or "", str(row.get("size_mb", "")),
                      f"{diff:.2g}" if isinstance(diff, float) else "", row.get("source") or "")
    console.print(table)


COMMANDS = {"export": export_cmd, "models": models}
"""The group's commands by their name on the command line."""
