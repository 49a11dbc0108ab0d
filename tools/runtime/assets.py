"""What the local stack needs before a server starts: data, exported model versions, version pins, the
indexes, and the preference statements written ahead. Each step is skipped when it is already done."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from services.common.settings import TritonSettings
from services.core.catalog import Catalog
from services.core.contracts import REQUEST_READER, SEQUENCE_ENCODER, SEQUENCE_ITEM_IDS_FILE, TEXT_ENCODER
from services.core.index import IndexFormatError, ItemIndex
from services.core.intent import IntentFormatError, IntentModel
from services.instruction.settings import InstructionSettings
from tools.core.base_models import smollm2_dir
from tools.core.workspace import WORKSPACE_STEPS, DatasetWorkspace, file_digest
from tools.data import prepare_movielens
from tools.export import METADATA_FILE, ensure_default_repository, export_model, has_weights, version_dirs
from tools.index import build_index, build_sequence_index_async
from tools.runtime.config import MODELS, StackConfig
from tools.train.intent import examples_digest, intent_examples

log = logging.getLogger("instructrec.run")


def prepare(config: StackConfig) -> None:
    """Everything `make run` needs before a server starts; each step is skipped when already done."""
    t0 = time.perf_counter()
    if config.dataset is not None:
        check_workspace(config.dataset)  # everything the bootstrap made, for this catalog; else refuse
        log.info("serving the data set workspace %s", config.dataset.root)
        return
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
# Models trained in this project rather than fine-tuned from a base: "base" serves their latest version too.
TRAINED_HERE = (SEQUENCE_ENCODER, REQUEST_READER)


def check_workspace(ws: DatasetWorkspace) -> None:
    """Refuse to serve a workspace whose parts were not all made for its catalog.

    Raises:
        WorkspaceMismatch: a step is missing, or the catalog, the sequence model or the fitted weights belong
            to another catalog than the one in ``data/``.
    """
    manifest = ws.manifest()
    missing = [step for step in WORKSPACE_STEPS if step not in manifest.get("steps", {})]
    if missing:
        raise WorkspaceMismatch(f"{ws.root}: not bootstrapped to the end (missing {', '.join(missing)}): rerun "
                                "`instructrec bootstrap` with the same arguments (finished steps are skipped)")
    catalog = ws.data_dir / "items.jsonl"
    if file_digest(catalog) != manifest["catalog_digest"]:
        raise WorkspaceMismatch(f"{catalog} changed since the bootstrap: rerun `instructrec bootstrap`")
    latest = max(version_dirs(ws.model_repository / SEQUENCE_ENCODER), default=None)
    if latest is None:
        raise WorkspaceMismatch(f"{ws.model_repository} has no {SEQUENCE_ENCODER} version")
    folder = ws.model_repository / SEQUENCE_ENCODER / str(latest)
    vocab = json.loads((folder / SEQUENCE_ITEM_IDS_FILE).read_text())
    items = Catalog.load(catalog).items
    known = sum(i in items for i in vocab)
    if known < 0.5 * len(items) or known < 0.95 * len(vocab):  # retrained models may differ, not by much
        raise WorkspaceMismatch(f"{folder}: the sequence model knows {known} of the catalog's {len(items)} items "
                                f"and {len(vocab) - known} it lacks: it was not trained on this catalog")
    if not ws.fusion_path.is_file():
        raise WorkspaceMismatch(f"{ws.fusion_path} is missing: rerun `instructrec bootstrap`")


class WorkspaceMismatch(RuntimeError):
    """A workspace's parts do not belong together (serving it would degrade silently)."""


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
    from tools.core.sequence_model import PUBLISHED_DIR, is_sequence_checkpoint
    from tools.train.run import adapter_sha256, published_adapter

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
        if models == BASE and name not in TRAINED_HERE:
            base = [v for v, meta in metadata.items() if not meta.get("adapter")]
            if not base:
                raise FileNotFoundError(f"{repository}/{name} has no base-model version (pruned?): "
                                        "`instructrec export` the base model again")
            out[name] = max(base)
        else:
            out[name] = max(metadata)
    return out


def pin_versions(grpc_addr: str, versions: dict[str, int], model_control_key: str | None = None) -> None:
    """Reload each model with a version policy that serves exactly ``versions[name]`` (a load-time config
    override; config.pbtxt is not changed). ``model_control_key``: the key of a Triton that restricts loads."""
    from services.common.triton_clients import triton_sync_client

    # The stack's own Triton, started here without TLS.
    settings = TritonSettings(grpc_addr=grpc_addr, model_control_key=model_control_key)
    client = triton_sync_client(settings)
    try:
        for name, version in versions.items():
            model_config = client.get_model_config(name, as_json=True)["config"]
            model_config["version_policy"] = {"specific": {"versions": [str(version)]}}
            client.load_model(name, config=json.dumps(model_config), headers=settings.model_control_headers())
            deadline = time.monotonic() + 300
            while not client.is_model_ready(name, str(version)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} version {version} did not become ready")
                time.sleep(0.5)
    finally:
        client.close()


def index_is_current(index_dir: Path, encoder_version: str, *, intent_digest: str | None = None) -> bool:
    """Whether the index exists, is readable and was built with the model version Triton serves (and, with
    ``intent_digest``, holds intent heads fitted on the examples of that digest, the ones today's build fits)."""
    try:
        current = ItemIndex.load(index_dir).model_version == encoder_version
    except IndexFormatError:
        return False
    if not current or intent_digest is None:
        return current
    try:
        intent = IntentModel.load(index_dir)
    except IntentFormatError:
        return False
    return intent is not None and intent.examples_digest == intent_digest


# The services that repair a crashed model (unload + load on Triton), so need the model-control key.
def precompute_preferences(triton_addr: str, data_dir: Path, *, store: Path | None = None, concurrency: int = 8,
                           max_users: int | None = None, progress: bool = True):
    """The instruction service's batch job (``services.instruction.precompute``) for the data set in ``data_dir``,
    with the instruction service's settings from the environment (catalog from ``data_dir``).

    Raises:
        RuntimeError: the generator is not served or the store cannot be written.
    """
    from services.instruction.precompute import precompute_preferences as run_job

    settings = InstructionSettings(catalog_path=data_dir / "items.jsonl")
    return asyncio.run(run_job(triton_addr=triton_addr, interactions_path=data_dir / "train.csv", settings=settings,
                               store_path=store, concurrency=concurrency, max_users=max_users, progress=progress))


def precompute_summary(report) -> str:
    from services.instruction.precompute import summary

    return summary(report)


def ensure_indexes(config: StackConfig, grpc_addr: str, versions: dict[str, int]) -> None:
    """(Re)build the text index and the sequence index unless they hold the served versions' vectors."""
    data = config.data_dir
    digest = examples_digest(intent_examples(Catalog.load(data / "items.jsonl"))[0])
    if not index_is_current(config.index_dir, str(versions[TEXT_ENCODER]), intent_digest=digest):
        build_index(data / "items.jsonl", data / "train.csv", config.index_dir, grpc_addr)
    if config.custom_data_dir is not None and config.dataset is None:
        # The committed sequence model knows MovieLens ids: `instructrec bootstrap` trains one for your data.
        log.info("custom data without a workspace: retrieval by text (no sequence index); `instructrec "
                 "bootstrap` makes a workspace with a sequence model for this catalog")
        return
    if not index_is_current(config.sequence_index_dir, str(versions[SEQUENCE_ENCODER])):
        asyncio.run(build_sequence_index_async(data / "items.jsonl", data / "train.csv", config.sequence_index_dir,
                                               grpc_addr, config.model_repository,
                                               model_version=str(versions[SEQUENCE_ENCODER])))
