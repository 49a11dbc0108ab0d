"""`instructrec run`: prepare everything once, then run Triton and the four services in the foreground.

Start order: Triton (and its four models) -> the item indexes (text and sequence, built once from the served
versions) -> ranking, retrieval, instruction -> gateway. Ctrl-C or SIGTERM stops the services first (each drains its
in-flight RPCs) and Triton last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.grpc_client import is_serving
from services.common.settings import ROOT
from services.core.contracts import SEQUENCE_ENCODER, SERVED_MODELS, TEXT_ENCODER
from services.core.index import IndexFormatError, ItemIndex
from services.gateway.settings import GatewaySettings
from services.instruction.settings import InstructionSettings
from services.ranking.settings import RankingSettings
from services.retrieval.settings import RetrievalSettings
from tools.base_models import smollm2_dir
from tools.data import prepare_movielens
from tools.export import METADATA_FILE, ensure_default_repository, export_model, has_weights, version_dirs
from tools.index import build_index, build_sequence_index_async
from tools.train.fusion import read_fusion, stale_fusion
from tools.triton_server import TritonServer

log = logging.getLogger("instructrec.run")

MODELS = SERVED_MODELS
SERVICES = ("ranking", "retrieval", "instruction", "gateway")
SETTINGS = {
    "gateway": GatewaySettings,
    "instruction": InstructionSettings,
    "retrieval": RetrievalSettings,
    "ranking": RankingSettings,
}
# Four processes on one machine cannot share one metrics port; in Kubernetes each pod uses its own.
DEFAULT_METRICS_PORTS = {"gateway": 9091, "instruction": 9092, "retrieval": 9093, "ranking": 9094}


def _ports_from_settings() -> dict[str, int]:
    """gRPC ports as each service's settings say (their defaults, or the environment's overrides)."""
    return {name: cls().port for name, cls in SETTINGS.items()}


def _metrics_ports_from_settings() -> dict[str, int]:
    return {name: cls().metrics_port or DEFAULT_METRICS_PORTS[name] for name, cls in SETTINGS.items()}


@dataclass
class StackConfig:
    """Where things live and which ports the local stack uses."""

    workspace: Path = ROOT / "var"
    model_repository: Path = ROOT / "model_repository"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    ports: dict[str, int] = field(default_factory=_ports_from_settings)
    metrics_ports: dict[str, int] = field(default_factory=_metrics_ports_from_settings)
    log_format: str = "text"
    custom_data_dir: Path | None = None
    """A data set prepared with `instructrec prepare-data`; None serves MovieLens-100K."""
    models: str = "tuned"
    """``tuned``: export the committed instruction-tuned adapters (tools/train/adapters) and serve the latest
    version of each model; ``base``: serve the versions exported from the base models."""

    @property
    def data_dir(self) -> Path:
        return self.custom_data_dir or self.workspace / "data" / "movielens-100k"

    @property
    def index_dir(self) -> Path:
        return self.workspace / "index" / self.data_dir.name

    @property
    def sequence_index_dir(self) -> Path:
        return self.workspace / "index-sequence" / self.data_dir.name


def prepare(config: StackConfig) -> None:
    """Everything `make run` needs before a server starts; each step is skipped when already done."""
    t0 = time.perf_counter()
    if config.custom_data_dir is None:
        prepare_movielens(config.data_dir, config.workspace / "cache")
    elif not (config.data_dir / "train.csv").is_file():
        raise FileNotFoundError(f"{config.data_dir} has no train.csv: run `instructrec prepare-data` first")
    smollm2_dir(config.workspace)
    ensure_default_repository(config.model_repository, config.workspace)
    if config.models == TUNED:
        ensure_tuned_versions(config.model_repository, config.workspace)
    versions = served_versions(config.model_repository, config.models)
    log.info("prepared data and models in %.1f s (%s model versions %s)", time.perf_counter() - t0, config.models,
             versions)


TUNED, BASE = "tuned", "base"


def _version_metadata(repository: Path, name: str) -> dict[int, dict]:
    """metadata.json of each finished version of ``name``."""
    return {v: json.loads((d / METADATA_FILE).read_text())
            for v, d in version_dirs(Path(repository) / name).items() if has_weights(d)}


def ensure_tuned_versions(repository: Path, workspace: Path) -> dict[str, int]:
    """Export each committed adapter (merged), and the committed sequence model, unless a version exported from
    exactly it exists.

    Returns:
        The version holding each committed adapter, by model name (models without an adapter are absent).
    """
    from tools.train.run import adapter_sha256, published_adapter
    from tools.train.sequential import PUBLISHED_DIR, is_sequence_checkpoint

    out = {}
    for name in MODELS:
        # The LMs' committed LoRA adapters; the sequence model's committed weights (retrained: a new version).
        adapter = published_adapter(name) if name != SEQUENCE_ENCODER else (
            PUBLISHED_DIR if is_sequence_checkpoint(PUBLISHED_DIR) else None)
        if adapter is None:
            continue
        digest = adapter_sha256(adapter)
        matching = [v for v, meta in _version_metadata(repository, name).items() if meta.get("source_sha256") == digest]
        if matching:
            out[name] = max(matching)
            continue
        log.info("exporting the instruction-tuned %s from %s", name, adapter)
        out[name] = int(export_model(name, adapter, repository, workspace=workspace).name)
    return out


READY_MARKER = ".instructrec-models-ready"


def mark_repository_ready(repository: Path) -> Path:
    """Write the marker the Kubernetes Triton pod waits for: every export of the set-up Job has finished
    (base versions and the tuned ones), so Triton's explicit load at start picks the versions to serve.
    It records the versions Triton will serve."""
    path = Path(repository) / READY_MARKER
    tmp = path.with_suffix(".tmp")
    versions = served_versions(repository)
    tmp.write_text(json.dumps({"versions": versions, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    tmp.replace(path)
    return path


def served_versions(repository: Path, models: str = TUNED) -> dict[str, int]:
    """The version of each model the stack serves: the latest (``tuned``), or the latest one exported
    from a base model rather than an adapter (``base``)."""
    out = {}
    for name in MODELS:
        metadata = _version_metadata(repository, name)
        if not metadata:
            raise FileNotFoundError(f"{repository}/{name} has no exported version: run `instructrec prepare`")
        if models == BASE:
            base = [v for v, meta in metadata.items() if not meta.get("adapter")]
            if not base:
                raise FileNotFoundError(f"{repository}/{name} has no base-model version (pruned?): "
                                        "`instructrec export` the base model again")
            out[name] = max(base)
        else:
            out[name] = max(metadata)
    return out


def pin_versions(grpc_addr: str, versions: dict[str, int]) -> None:
    """Reload each model with a version policy that serves exactly ``versions[name]`` (a load-time config
    override; config.pbtxt is not changed)."""
    from services.common.settings import TritonSettings
    from services.common.triton_clients import triton_sync_client

    # The stack's own Triton, started here without TLS.
    client = triton_sync_client(TritonSettings(grpc_addr=grpc_addr))
    try:
        for name, version in versions.items():
            model_config = client.get_model_config(name, as_json=True)["config"]
            model_config["version_policy"] = {"specific": {"versions": [str(version)]}}
            client.load_model(name, config=json.dumps(model_config))
            deadline = time.monotonic() + 300
            while not client.is_model_ready(name, str(version)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} version {version} did not become ready")
                time.sleep(0.5)
    finally:
        client.close()


def index_is_current(index_dir: Path, encoder_version: str) -> bool:
    """Whether the index exists, is readable and was built with the model version Triton serves."""
    try:
        return ItemIndex.load(index_dir).model_version == encoder_version
    except IndexFormatError:
        return False


def service_env(config: StackConfig, service: str) -> dict[str, str]:
    """Environment for one service process: the settings' own env var names."""
    prefix = service.upper() + "_"
    env = dict(os.environ)
    env[prefix + "PORT"] = str(config.ports[service])
    env[prefix + "METRICS_PORT"] = str(config.metrics_ports[service])
    env.setdefault(prefix + "LOG_FORMAT", config.log_format)
    if service == "gateway":
        env.update({
            "GATEWAY_CATALOG_PATH": str(config.data_dir / "items.jsonl"),
            "GATEWAY_INTERACTIONS_PATH": str(config.data_dir / "train.csv"),
            **{f"GATEWAY_{s.upper()}_ADDR": f"localhost:{config.ports[s]}" for s in SERVICES if s != "gateway"},
        })
    else:
        env[prefix + "TRITON__GRPC_ADDR"] = f"localhost:{config.triton_grpc_port}"
    if service in ("instruction", "retrieval"):
        env[prefix + "CATALOG_PATH"] = str(config.data_dir / "items.jsonl")
    if service == "retrieval":
        env["RETRIEVAL_INDEX_DIR"] = str(config.index_dir)
        env.setdefault("RETRIEVAL_SEQUENCE_INDEX_DIR", str(config.sequence_index_dir))  # a missing one: text only
    if service == "ranking":
        # The fusion weight fitted for the served model set (the settings default is the tuned one's).
        weight = read_fusion(config.models)
        if weight is not None and "RANKING_LM_WEIGHT" not in env:
            env["RANKING_LM_WEIGHT"] = str(weight)
            stale = stale_fusion(config.models)
            if stale:
                log.warning("the fusion weight of the %s models was fitted on other weights of %s: rerun "
                            "`instructrec fit-fusion --models %s --write`", config.models, ", ".join(stale),
                            config.models)
    return env


def ensure_indexes(config: StackConfig, grpc_addr: str, versions: dict[str, int]) -> None:
    """(Re)build the text index and the sequence index unless they hold the served versions' vectors."""
    data = config.data_dir
    if not index_is_current(config.index_dir, str(versions[TEXT_ENCODER])):
        build_index(data / "items.jsonl", data / "train.csv", config.index_dir, grpc_addr)
    if config.custom_data_dir is not None:
        # The committed sequence model knows MovieLens ids; train one on your data (`instructrec train
        # sequential --data-dir ...`) and export it to retrieve by it.
        log.info("custom data: retrieval by text (no sequence index)")
        return
    if not index_is_current(config.sequence_index_dir, str(versions[SEQUENCE_ENCODER])):
        asyncio.run(build_sequence_index_async(data / "items.jsonl", data / "train.csv", config.sequence_index_dir,
                                               grpc_addr, config.model_repository,
                                               model_version=str(versions[SEQUENCE_ENCODER])))


async def _wait_serving(addr: str, timeout_s: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(addr) as channel:
        while time.monotonic() < deadline:
            if await is_serving(channel):
                return
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a service exited during start-up: {dead[0].args}")
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{addr} did not report SERVING within {timeout_s:.0f} s")


def run(config: StackConfig, ready_timeout_s: float = 300.0) -> int:
    """Prepare, start everything, block until a signal or a process dies, stop everything. Returns exit code."""
    t0 = time.perf_counter()
    prepare(config)
    stop_requested = False

    def _request_stop(signum, _frame):
        nonlocal stop_requested
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested = True

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    procs: list[subprocess.Popen] = []
    triton = TritonServer(
        config.model_repository,
        models=MODELS,
        http_port=config.triton_http_port,
        grpc_port=config.triton_grpc_port,
        metrics_port=config.triton_metrics_port,
        backend_dir=config.workspace / "triton" / "backends",
    )
    try:
        triton.start()
        triton.wait_ready(timeout_s=ready_timeout_s)
        log.info("Triton ready (pid %s, gRPC %s)", triton.pid, triton.grpc_addr)
        versions = served_versions(config.model_repository, config.models)
        # The encoders' policy keeps two versions loaded (for pushes); here exactly the served one is.
        pin_versions(triton.grpc_addr, versions if config.models == BASE else
                     {name: versions[name] for name in (TEXT_ENCODER, SEQUENCE_ENCODER)})
        log.info("serving %s models: versions %s", config.models, versions)
        ensure_indexes(config, triton.grpc_addr, versions)
        for service in SERVICES:
            procs.append(subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT,
                                          env=service_env(config, service)))
        asyncio.run(_wait_serving(f"localhost:{config.ports['gateway']}", ready_timeout_s, procs))
        log.info(
            "ready in %.1f s: Recommend on localhost:%d (try `instructrec recommend --user 196 --query "
            "\"a funny movie for tonight\"`); Ctrl-C stops", time.perf_counter() - t0, config.ports["gateway"],
        )
        while not stop_requested:
            if any(p.poll() is not None for p in procs) or not triton.is_running():
                log.error("a process exited unexpectedly; stopping the stack")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        triton.stop()
        log.info("stopped")
