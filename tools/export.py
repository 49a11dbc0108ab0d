"""Export checkpoints into the Triton model repository and write the models' ``config.pbtxt``.

Layout written (see docs/architecture.md)::

    <repository>/<name>/config.pbtxt           built from Triton's ModelConfig protobuf
    <repository>/<name>/<version>/model.py     copy of the committed python-backend adapter
    <repository>/<name>/<version>/model.onnx   text_encoder, ranker (preference_generator: HF safetensors)
    <repository>/<name>/<version>/tokenizer*   tokenizer files (with the chat template for the LMs)
    <repository>/<name>/<version>/metadata.json  provenance and parity figures, written last

Every export goes to a new version folder (the highest existing one plus one, unless given), built in a
hidden sibling folder and renamed into place, so Triton never sees a half-written version. Each ONNX export
is checked against torch on sample inputs; an export whose outputs differ by more than the tolerance is
deleted and an error raised.

:func:`export_model` is the entry point of ``instructrec export``: it takes a Hugging Face folder or a LoRA
adapter folder (merged into its base model first), keeps the repository's current ``config.pbtxt`` settings
unless told otherwise, and can quantise the ONNX models to int8 (ONNX Runtime dynamic quantisation) with a
parity check relaxed to match, whose figures are recorded. Each version's ``metadata.json`` also holds the
canary (a fixed input and the output the export produced for it) that ``tools/push.py`` checks on Triton.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.core import prompts
from services.core.catalog import Item, item_text
from services.core.modeltext import label_token_ids, mean_pooled_encoder, ranker_model_text, ranker_scorer, right_pad  # noqa: F401

logger = logging.getLogger(__name__)

TEXT_ENCODER = "text_encoder"
RANKER = "ranker"
PREFERENCE_GENERATOR = "preference_generator"
MODEL_NAMES = (TEXT_ENCODER, RANKER, PREFERENCE_GENERATOR)

ONNX_OPSET = 17
METADATA_FILE = "metadata.json"
ADAPTER_FILE = "model.py"
COMMITTED_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"

# Max abs difference allowed between torch and ONNX Runtime outputs in the parity check.
ENCODER_PARITY_TOLERANCE = 1e-4
RANKER_PARITY_TOLERANCE = 1e-3

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)
# int8 moves SmolLM2-135M's label logits by up to about 9 (fp32: 3e-5), so the int8 ranker is judged by
# what serving uses, the order of the candidates: measured top-1 agreement 1.0 and top-5 overlap 0.77 over
# the seven parity prompts (README). The loose logit bound still catches a broken graph.
RANKER_INT8_TOLERANCE = 15.0
RANKER_INT8_MIN_TOP1_AGREEMENT = 0.7
RANKER_INT8_MIN_TOPK_OVERLAP = 0.6
# int8 embeddings stay unit vectors; what matters for retrieval is their direction.
ENCODER_INT8_TOLERANCE = 0.05
ENCODER_INT8_MIN_COSINE = 0.98
TOP_K = 5


class ParityError(RuntimeError):
    """The exported model's outputs differ from the source checkpoint's beyond the tolerance."""


@dataclass(frozen=True)
class ParityPolicy:
    """What an export must satisfy against torch; the agreement bounds apply where they are set.

    Attributes:
        tolerance: Largest max-abs difference of the outputs.
        min_top1_agreement: ``ranker``: share of parity prompts whose best candidate is the same.
        min_topk_overlap: ``ranker``: mean overlap of the top-``TOP_K`` candidate sets.
        min_cosine: ``text_encoder``: smallest cosine similarity between the two embeddings of a text.
    """

    tolerance: float
    min_top1_agreement: float | None = None
    min_topk_overlap: float | None = None
    min_cosine: float | None = None


def parity_policy(name: str, precision: str = FP32, tolerance: float | None = None) -> ParityPolicy:
    """The parity requirements of ``name`` exported at ``precision`` (``tolerance`` overrides the bound)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if name == RANKER:
        policy = (ParityPolicy(RANKER_PARITY_TOLERANCE) if precision == FP32 else ParityPolicy(
            RANKER_INT8_TOLERANCE, RANKER_INT8_MIN_TOP1_AGREEMENT, RANKER_INT8_MIN_TOPK_OVERLAP))
    elif name == TEXT_ENCODER:
        policy = (ParityPolicy(ENCODER_PARITY_TOLERANCE) if precision == FP32
                  else ParityPolicy(ENCODER_INT8_TOLERANCE, min_cosine=ENCODER_INT8_MIN_COSINE))
    elif precision == FP32:
        policy = ParityPolicy(0.0)
    else:
        raise ValueError(f"{name} is served by torch from safetensors; int8 applies to {TEXT_ENCODER} and {RANKER}")
    if tolerance is not None:
        policy = ParityPolicy(tolerance, policy.min_top1_agreement, policy.min_topk_overlap, policy.min_cosine)
    return policy


@dataclass(frozen=True)
class ServingDefaults:
    """Per-model defaults for ``config.pbtxt``."""

    max_batch_size: int
    max_queue_delay_us: int
    num_threads: int
    max_queue_size: int
    instance_count: int = 1
    response_cache: bool = False


# The ranker dominates latency (hundreds of tokens per prompt), so it gets both cores of the reference
# 2-core node; the encoder's inputs are short, and generation is latency-bound per token.
# max_queue_size bounds each model's queue (past it Triton rejects at once, like the services'
# MAX_CONCURRENT_RPCS): a few executions' worth, so a queued request still finishes within the hop timeouts.
# The encoder runs two instances: with one, Triton 2.51's dynamic batcher sometimes holds a request that arrives
# as the previous execution ends for its 500 ms idle timeout (docs/performance.md). Its answers are a pure
# function of (version, text), so Triton's response cache serves repeat texts (a known user without a query
# sends the same retrieval text each time) without running it; the server needs --cache-config for that.
# The ranker and the generator are not cached: the ranker's prompts repeat rarely and the instruction
# service already caches preference statements.
DEFAULTS: dict[str, ServingDefaults] = {
    TEXT_ENCODER: ServingDefaults(max_batch_size=64, max_queue_delay_us=2_000, num_threads=1, max_queue_size=512,
                                  instance_count=2, response_cache=True),
    RANKER: ServingDefaults(max_batch_size=8, max_queue_delay_us=5_000, num_threads=2, max_queue_size=64),
    PREFERENCE_GENERATOR: ServingDefaults(max_batch_size=8, max_queue_delay_us=10_000, num_threads=1,
                                          max_queue_size=64),
}
# The build_config settings each model's export takes (``instructrec export`` options, config.pbtxt).
_COMMON_SERVING_OPTIONS = ("max_batch_size", "max_queue_delay_us", "max_queue_size", "instance_count",
                           "response_cache", "num_threads", "num_versions")
SERVING_OPTIONS: dict[str, tuple[str, ...]] = {
    TEXT_ENCODER: (*_COMMON_SERVING_OPTIONS, "max_tokens"),
    RANKER: (*_COMMON_SERVING_OPTIONS, "max_prompt_tokens", "answer_prefix"),
    PREFERENCE_GENERATOR: (*_COMMON_SERVING_OPTIONS, "max_prompt_tokens", "max_new_tokens"),
}
DEFAULT_EMBEDDING_DIM = 384
DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_PROMPT_TOKENS = 1024
DEFAULT_MAX_NEW_TOKENS = 48

_SAMPLE_ITEMS = (
    Item("50", "Star Wars", 1977, ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item("100", "Fargo", 1996, ("Crime", "Drama", "Thriller")),
    Item("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
    Item("181", "Return of the Jedi", 1983, ("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item("258", "Contact", 1997, ("Drama", "Sci-Fi")),
    Item("127", "Godfather, The", 1972, ("Action", "Crime", "Drama")),
    Item("286", "English Patient, The", 1996, ("Drama", "Romance", "War")),
    Item("294", "Liar Liar", 1997, ("Comedy",)),
    Item("7", "Twelve Monkeys", 1995, ("Drama", "Sci-Fi")),
    Item("12", "Usual Suspects, The", 1995, ("Crime", "Thriller")),
    Item("56", "Pulp Fiction", 1994, ("Crime", "Drama")),
    Item("64", "Shawshank Redemption, The", 1994, ("Drama",)),
    Item("71", "Lion King, The", 1994, ("Animation", "Children's", "Musical")),
    Item("98", "Silence of the Lambs, The", 1991, ("Drama", "Thriller")),
    Item("121", "Independence Day (ID4)", 1996, ("Action", "Sci-Fi", "War")),
    Item("174", "Raiders of the Lost Ark", 1981, ("Action", "Adventure")),
    Item("204", "Back to the Future", 1985, ("Comedy", "Sci-Fi")),
    Item("313", "Titanic", 1997, ("Action", "Drama", "Romance")),
    Item("288", "Scream", 1996, ("Horror", "Thriller")),
    Item("69", "Forrest Gump", 1994, ("Comedy", "Romance", "War")),
    Item("82", "Jurassic Park", 1993, ("Action", "Adventure", "Sci-Fi")),
    Item("423", "E.T. the Extra-Terrestrial", 1982, ("Children's", "Drama", "Fantasy", "Sci-Fi")),
    Item("22", "Braveheart", 1995, ("Action", "Drama", "War")),
    Item("95", "Aladdin", 1992, ("Animation", "Children's", "Comedy", "Musical")),
)


# --------------------------------------------------------------------------------------------------------
# config.pbtxt
# --------------------------------------------------------------------------------------------------------


def build_config(
    name: str,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    max_queue_size: int | None = None,
    instance_count: int | None = None,
    num_threads: int | None = None,
    num_versions: int = 1,
    response_cache: bool | None = None,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    answer_prefix: str = prompts.RANKER_ANSWER_PREFIX,
) -> Any:
    """Build the Triton ``ModelConfig`` of one of the three models.

    Args:
        name: ``text_encoder``, ``ranker`` or ``preference_generator``.
        max_batch_size: Largest dynamic batch; ``None`` for the model's default.
        max_queue_delay_us: How long the dynamic batcher waits to fill a batch; ``None`` for the default.
        instance_count: Model instances (stub processes) on CPU; ``None`` for the default.
        num_threads: Intra-op threads of ONNX Runtime / torch in each instance; ``None`` for the default.
        num_versions: Version policy: Triton serves the latest this many versions (requests that name no
            version go to the highest).
        max_queue_size: Requests queued per model before Triton rejects new ones at once; ``None`` for the
            default. Requests carrying a ``timeout`` (the services send their remaining deadline) are
            dropped from the queue when it passes.
        response_cache: Let Triton answer repeated identical requests from its response cache (the server
            must run with ``--cache-config``; without it the setting is inert); ``None`` for the default.
        embedding_dim: Output size of ``text_encoder``.
        max_tokens: ``text_encoder`` truncates texts to this many tokens.
        max_prompt_tokens: ``ranker`` / ``preference_generator`` reject longer prompts (after the chat
            template).
        max_new_tokens: ``preference_generator`` generation budget.
        answer_prefix: ``ranker`` text after the assistant tag; must equal the one used in training.

    Returns:
        A ``tritonclient.grpc.model_config_pb2.ModelConfig``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    if name not in DEFAULTS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    if num_versions < 1:
        raise ValueError(f"num_versions must be >= 1, got {num_versions}")
    defaults = DEFAULTS[name]
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=defaults.max_batch_size if max_batch_size is None else max_batch_size,
    )
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = (
        defaults.max_queue_delay_us if max_queue_delay_us is None else max_queue_delay_us
    )
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = defaults.max_queue_size if max_queue_size is None else max_queue_size
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU,
                              count=defaults.instance_count if instance_count is None else instance_count)
    if defaults.response_cache if response_cache is None else response_cache:
        config.response_cache.enable = True
    config.version_policy.latest.num_versions = num_versions
    parameters = {"num_threads": defaults.num_threads if num_threads is None else num_threads}
    if name == TEXT_ENCODER:
        config.input.add(name="text", data_type=mc.TYPE_STRING, dims=[1])
        config.output.add(name="embedding", data_type=mc.TYPE_FP32, dims=[embedding_dim])
        parameters["max_tokens"] = max_tokens
    elif name == RANKER:
        config.input.add(name="prompt", data_type=mc.TYPE_STRING, dims=[1])
        config.output.add(name="candidate_scores", data_type=mc.TYPE_FP32, dims=[len(prompts.LABELS)])
        parameters["answer_prefix"] = answer_prefix
        parameters["max_prompt_tokens"] = max_prompt_tokens
    else:
        config.input.add(name="prompt", data_type=mc.TYPE_STRING, dims=[1])
        config.output.add(name="text", data_type=mc.TYPE_STRING, dims=[1])
        parameters["max_new_tokens"] = max_new_tokens
        parameters["max_prompt_tokens"] = max_prompt_tokens
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = str(value)
    return config


def write_config(repository: Path, name: str, **options: Any) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` for one of the three models.

    Args:
        repository: The model repository folder.
        name: ``text_encoder``, ``ranker`` or ``preference_generator``.
        **options: Keyword arguments of :func:`build_config`.

    Returns:
        Path of the written ``config.pbtxt``.
    """
    from google.protobuf import text_format

    config = build_config(name, **options)
    path = Path(repository) / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def read_config(path: Path) -> Any:
    """Parse a ``config.pbtxt`` into a ``ModelConfig``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def config_options(config: Any) -> dict[str, Any]:
    """The :func:`build_config` keyword arguments that reproduce ``config`` (the inverse of build_config).

    Used to keep a repository's settings (batching, instances, threads, version policy, the models'
    parameters) when a new version is exported without new values for them.
    """
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    options: dict[str, Any] = {
        "max_batch_size": config.max_batch_size,
        "max_queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds,
        "instance_count": sum(group.count for group in config.instance_group) or 1,
        "num_versions": config.version_policy.latest.num_versions or 1,
        "response_cache": config.response_cache.enable,
    }
    if config.dynamic_batching.default_queue_policy.max_queue_size:
        options["max_queue_size"] = config.dynamic_batching.default_queue_policy.max_queue_size
    integers = {"num_threads", "max_tokens", "max_prompt_tokens", "max_new_tokens"}
    for key in integers & parameters.keys():
        options[key] = int(parameters[key])
    if "answer_prefix" in parameters:
        options["answer_prefix"] = parameters["answer_prefix"]
    if config.name == TEXT_ENCODER and config.output:
        options["embedding_dim"] = int(config.output[0].dims[0])
    return options


def write_committed_configs(repository: Path = COMMITTED_REPOSITORY) -> list[Path]:
    """(Re)generate the committed default ``config.pbtxt`` of the three models."""
    return [write_config(repository, name) for name in MODEL_NAMES]


# --------------------------------------------------------------------------------------------------------
# Versions and atomic installation
# --------------------------------------------------------------------------------------------------------


def _version_dirs(model_dir: Path) -> dict[int, Path]:
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def _is_placeholder(version_dir: Path) -> bool:
    """A version folder holding at most the adapter (e.g. the committed ``1/model.py``): free to fill."""
    return all(p.name in (ADAPTER_FILE, "__pycache__") for p in version_dir.iterdir())


def has_weights(version_dir: Path) -> bool:
    """Whether a version folder holds a finished export (``metadata.json`` is written last)."""
    return (version_dir / METADATA_FILE).is_file()


def latest_version(repository: Path, name: str) -> int | None:
    """The highest version of ``name`` holding a finished export, or ``None``."""
    done = [v for v, p in _version_dirs(Path(repository) / name).items() if has_weights(p)]
    return max(done) if done else None


def next_version(repository: Path, name: str) -> int:
    """The version an export without an explicit version writes.

    That is the highest existing version folder plus one, or that folder itself when it is an empty
    placeholder (only ``model.py``).
    """
    dirs = _version_dirs(Path(repository) / name)
    if not dirs:
        return 1
    highest = max(dirs)
    return highest if _is_placeholder(dirs[highest]) else highest + 1


def _resolve_target(repository: Path, name: str, version: int | None) -> Path:
    version = next_version(repository, name) if version is None else version
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    target = Path(repository) / name / str(version)
    if target.exists() and not _is_placeholder(target):
        raise FileExistsError(f"{target} already holds an export; versions are never overwritten")
    return target


STAGING_PREFIX = ".export-"
TRASH_PREFIX = ".removed-"


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A hidden sibling folder of ``target`` to build in; moved into place on success, removed on error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leading dot and a non-numeric name: Triton never takes it for a version folder.
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    # mkdtemp makes it 0700; Triton (another user in a pod sharing the volume) must be able to read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        _install(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    # Filling a placeholder folder (the committed 1/model.py): move file by file, metadata.json last, so
    # that the folder reads as finished only when it is.
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != METADATA_FILE] + [METADATA_FILE]:
        if (tmp / name).exists():
            os.replace(tmp / name, target / name)


def _copy_adapter(name: str, staging: Path, target: Path) -> None:
    source = COMMITTED_REPOSITORY / name / "1" / ADAPTER_FILE
    existing = target / ADAPTER_FILE
    if existing.exists() and existing.resolve() == source.resolve():
        return  # writing into the committed folder itself
    shutil.copy2(source, staging / ADAPTER_FILE)


def _is_adapter_source(version_dir: Path) -> bool:
    """Whether this folder's ``model.py`` is the committed adapter every export copies (never delete it)."""
    adapter = version_dir / ADAPTER_FILE
    source = COMMITTED_REPOSITORY / version_dir.parent.name / "1" / ADAPTER_FILE
    return adapter.is_file() and source.is_file() and adapter.resolve() == source.resolve()


def remove_version(repository: Path, name: str, version: int) -> bool:
    """Remove a version folder so that no reader ever sees it half-deleted.

    The folder is first renamed to a hidden name (which Triton ignores), then deleted. The committed
    ``1/model.py`` adapter is kept (the folder becomes an empty placeholder again).

    Returns:
        Whether there was a folder to remove.
    """
    folder = Path(repository) / name / str(version)
    if not folder.is_dir():
        return False
    if _is_adapter_source(folder):
        for entry in folder.iterdir():
            if entry.name != ADAPTER_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return True
    trash = folder.with_name(f"{TRASH_PREFIX}{version}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def prune_versions(repository: Path, name: str, keep: int) -> list[int]:
    """Remove all but the ``keep`` highest finished versions of ``name``.

    Unfinished folders (no ``metadata.json``) below the newest kept version are removed as well;
    placeholders (only the adapter) are left alone.

    Args:
        repository: The model repository folder.
        name: Model name.
        keep: How many finished versions to keep (>= 1).

    Returns:
        The removed versions, ascending.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    dirs = _version_dirs(Path(repository) / name)
    finished = sorted((v for v, p in dirs.items() if has_weights(p)), reverse=True)
    kept = set(finished[:keep])
    oldest_kept = min(kept) if kept else 0
    removed = []
    for version, folder in sorted(dirs.items()):
        if version in kept or version > oldest_kept or _is_placeholder(folder):
            continue
        if remove_version(repository, name, version):
            removed.append(version)
    return removed


def remove_stale_staging(repository: Path, name: str) -> list[str]:
    """Delete hidden staging / removal folders left by an export or removal that was killed midway.

    Call only while holding :func:`repository_lock`, so no export in progress loses its folder.
    """
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    stale = [p for p in model_dir.iterdir()
             if p.is_dir() and p.name.startswith((STAGING_PREFIX, TRASH_PREFIX))]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return sorted(p.name for p in stale)


@contextlib.contextmanager
def repository_lock(repository: Path) -> Iterator[None]:
    """Hold an exclusive lock on the repository so two exports never pick the same version or prune each other.

    The lock is ``flock`` on the repository folder itself (no lock file in it). On volumes whose file system
    does not support ``flock`` the export goes on unlocked, with a warning.

    Raises:
        RuntimeError: If another export into this repository holds the lock.
    """
    import fcntl

    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    fd = os.open(repository, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another export into {repository} is in progress") from None
        except OSError as exc:
            logger.warning("no lock on %s (%s); make sure only one export runs at a time", repository, exc)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def repository_versions(repository: Path) -> list[dict[str, Any]]:
    """What the repository holds: one row per model version folder, with its ``metadata.json`` summary."""
    rows: list[dict[str, Any]] = []
    repository = Path(repository)
    if not repository.is_dir():
        return rows
    names = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    for name in names:
        for version, folder in sorted(_version_dirs(repository / name).items()):
            row: dict[str, Any] = {"model": name, "version": version}
            if has_weights(folder):
                meta = json.loads((folder / METADATA_FILE).read_text())
                row.update(
                    state="exported",
                    exported_at=meta.get("exported_at"),
                    source=meta.get("source_checkpoint"),
                    precision=meta.get("precision", FP32),
                    max_abs_diff=meta.get("parity", {}).get("max_abs_diff"),
                    size_mb=round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1),
                )
            else:
                row["state"] = "placeholder" if _is_placeholder(folder) else "unfinished"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------------
# Metadata helpers
# --------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight file (``*.safetensors``, ``*.bin``, ``*.pt``) in a checkpoint folder."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    return {p.name: _sha256(p) for p in files}


def combined_sha256(file_hashes: dict[str, str]) -> str:
    """One digest for a checkpoint: sha256 over its files' ``name:sha256`` lines, sorted by name."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _tool_version() -> str:
    try:
        return importlib.metadata.version("instructrec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _library_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def _metadata(
    name: str, version: int, model_dir: Path, started: float, provenance: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    """``metadata.json`` content; ``provenance`` replaces the source fields (e.g. a LoRA adapter's)."""
    hashes = weights_sha256(model_dir)
    source = {
        "source_checkpoint": str(Path(model_dir).resolve()),
        "source_weights_sha256": hashes,
        "source_sha256": combined_sha256(hashes),
        "base_model": None,
        "adapter": None,
    }
    return {
        "model": name,
        "version": version,
        **source,
        **(provenance or {}),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 2),
        "tool": "tools.export",
        "tool_version": _tool_version(),
        "libraries": _library_versions(),
        **extra,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------------------------------------
# Sample inputs for the parity checks
# --------------------------------------------------------------------------------------------------------


def sample_texts() -> list[str]:
    """Item texts of different lengths, as the index build encodes them."""
    return [item_text(i) for i in _SAMPLE_ITEMS[:5]] + ["a quiet film about space exploration"]


def sample_prompts() -> list[str]:
    """Ranker instructions of different lengths, rendered from the served templates."""
    items = list(_SAMPLE_ITEMS)
    return [
        prompts.render_instruction(prompts.TEMPLATES_BY_ID["P0-I0-T3-0"], history=[], candidates=items[:3]),
        prompts.render_instruction(
            prompts.TEMPLATES_BY_ID["P1-I0-T3-0"], history=items[:4], candidates=items[4:]
        ),
        prompts.render_instruction(
            prompts.TEMPLATES_BY_ID["P2-I1-T3-0"],
            history=items[2:],
            candidates=items[:5],
            query="something funny",
            preference="Likes science fiction and crime dramas from the seventies.",
        ),
    ]


def parity_prompts(precision: str = FP32) -> list[tuple[str, int]]:
    """Ranker parity inputs, each with its number of candidates.

    fp32 is held to a tight max-abs bound, which three sample prompts check. int8 is judged by ranking
    agreement (top-1, top-k over each prompt's candidates, the labels serving reads), so it gets four more
    prompts with full 20-candidate lists. Each long prompt costs about 2 s of torch on two cores with
    SmolLM2-135M, which is why fp32 does without them.
    """
    items = list(_SAMPLE_ITEMS)
    rows = list(zip(sample_prompts(), [3, 4, 5]))
    if precision == FP32:
        return rows
    queries = ("a funny movie for tonight", "something to watch with the kids", "", "")
    for i, query in enumerate(queries):
        shift = 5 * i + 1
        rotated = items[shift:] + items[:shift]
        history, candidates = rotated[20:], rotated[:20]
        template = prompts.select_template(has_history=True, has_preference=i % 2 == 0, has_query=bool(query))
        rows.append((
            prompts.render_instruction(
                template, history=history, candidates=candidates, query=query,
                preference="Enjoys adventurous blockbusters and clever crime stories.",
            ),
            len(candidates),
        ))
    return rows


def canary_inputs() -> dict[str, str]:
    """The fixed input of each model's canary inference after a push."""
    return {
        TEXT_ENCODER: sample_texts()[0],
        RANKER: sample_prompts()[2],
        PREFERENCE_GENERATOR: prompts.render_preference_prompt(list(_SAMPLE_ITEMS[:6])),
    }


# --------------------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------------------


def _export_onnx(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """``torch.onnx.export`` with the TorchScript exporter (the dynamo one needs onnxscript)."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated but is the one that needs no onnxscript; the tracer warnings
        # concern shape arithmetic that the parity check on other shapes verifies.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _ort_session(path: Path, num_threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _quantize_int8(source: Path, dest: Path) -> None:
    """ONNX Runtime dynamic quantisation: 8-bit weights per output channel, activations quantised at run time.

    Weights are unsigned (U8U8): with signed weights (U8S8) CPUs with AVX2 but no VNNI saturate the integer
    products, which took the ranker's top-1 agreement with torch to 0 on such a machine.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a line per tensor through the root logger at INFO; keep the export's log readable.
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(source, dest, weight_type=QuantType.QUInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def _export_onnx_at(precision: str, staging: Path, export: Callable[[Path], None]) -> Path:
    """Run ``export(path)`` and leave ``staging/model.onnx`` at ``precision`` (the fp32 graph is not kept)."""
    final = staging / "model.onnx"
    if precision == FP32:
        export(final)
        return final
    fp32 = staging / "model.fp32.onnx"
    export(fp32)
    _quantize_int8(fp32, final)
    fp32.unlink()
    return final


def _parity(reference: Any, exported: Any, policy: ParityPolicy, what: str) -> dict[str, Any]:
    import numpy as np

    reference = np.asarray(reference, dtype=np.float32)
    exported = np.asarray(exported, dtype=np.float32)
    if reference.shape != exported.shape:
        raise ParityError(f"{what}: output shape {exported.shape} differs from torch {reference.shape}")
    max_abs_diff = float(np.max(np.abs(reference - exported))) if reference.size else 0.0
    figures: dict[str, Any] = {
        "samples": int(reference.shape[0]),
        "max_abs_diff": max_abs_diff,
        "argmax_agreement": float(np.mean(reference.argmax(-1) == exported.argmax(-1))),
        "tolerance": policy.tolerance,
    }
    if not np.isfinite(max_abs_diff) or max_abs_diff > policy.tolerance:
        raise ParityError(f"{what}: ONNX Runtime differs from torch by {max_abs_diff:.3g} > {policy.tolerance:g}")
    return figures


def ranking_agreement(reference: Any, exported: Any, num_candidates: list[int], k: int = TOP_K) -> dict[str, float]:
    """How far two sets of label logits agree on the order of each row's first ``num_candidates`` labels.

    Returns:
        ``top1_agreement``: share of rows with the same best candidate; ``topk_overlap``: mean share of
        the reference's top-k candidates that are also in the other's top-k (k capped by the row's count).
    """
    import numpy as np

    top1, overlap = [], []
    for ref, exp, n in zip(np.asarray(reference), np.asarray(exported), num_candidates):
        kk = min(k, n)
        top1.append(float(np.argmax(ref[:n]) == np.argmax(exp[:n])))
        ref_top = set(np.argsort(-ref[:n], kind="stable")[:kk].tolist())
        exp_top = set(np.argsort(-exp[:n], kind="stable")[:kk].tolist())
        overlap.append(len(ref_top & exp_top) / kk)
    return {"top1_agreement": float(np.mean(top1)), "topk_overlap": float(np.mean(overlap)), "k": k}


def _ranker_parity(
    reference: Any, exported: Any, num_candidates: list[int], policy: ParityPolicy
) -> dict[str, Any]:
    figures = _parity(reference, exported, policy, "ranker")
    figures.update(ranking_agreement(reference, exported, num_candidates))
    figures["min_top1_agreement"] = policy.min_top1_agreement
    figures["min_topk_overlap"] = policy.min_topk_overlap
    if policy.min_top1_agreement is not None and figures["top1_agreement"] < policy.min_top1_agreement:
        raise ParityError(f"ranker: top-1 agreement with torch {figures['top1_agreement']:.2f} "
                          f"< {policy.min_top1_agreement:.2f}")
    if policy.min_topk_overlap is not None and figures["topk_overlap"] < policy.min_topk_overlap:
        raise ParityError(f"ranker: top-{TOP_K} overlap with torch {figures['topk_overlap']:.2f} "
                          f"< {policy.min_topk_overlap:.2f}")
    return figures


def _encoder_parity(reference: Any, exported: Any, policy: ParityPolicy) -> dict[str, Any]:
    import numpy as np

    figures = _parity(reference, exported, policy, "text_encoder")
    ref, exp = np.asarray(reference, dtype=np.float64), np.asarray(exported, dtype=np.float64)
    cosine = (ref * exp).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(exp, axis=-1))
    figures["min_cosine"] = float(cosine.min())
    figures["min_cosine_required"] = policy.min_cosine
    if policy.min_cosine is not None and not figures["min_cosine"] >= policy.min_cosine:
        raise ParityError(f"text_encoder: cosine similarity with torch {figures['min_cosine']:.4f} "
                          f"< {policy.min_cosine:.4f}")
    return figures


# --------------------------------------------------------------------------------------------------------
# Public export functions
# --------------------------------------------------------------------------------------------------------


def _serving(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the unset (None) ones; ValueError naming any that ``name`` does not take."""
    unknown = sorted(k for k, v in options.items() if v is not None and k not in SERVING_OPTIONS[name])
    if unknown:
        raise ValueError(f"{name} has no setting {', '.join(unknown)}")
    return {k: v for k, v in options.items() if v is not None}


def _finish(
    name: str,
    repository: Path,
    target: Path,
    staging: Path,
    metadata: dict[str, Any],
    write_model_config: bool,
    options: dict[str, Any],
) -> Path:
    _copy_adapter(name, staging, target)
    _write_json(staging / METADATA_FILE, metadata)
    if write_model_config:
        write_config(repository, name, **options)
    return target


def _canary(input_name: str, text: str, output_name: str, expected: Any, tolerance: float | None) -> dict[str, Any]:
    """The canary spec stored in ``metadata.json``: a fixed input and what this export answered for it."""
    return {
        "input_name": input_name,
        "input": text,
        "output_name": output_name,
        "expected": None if expected is None else [float(x) for x in expected],
        "tolerance": tolerance,
    }


def export_text_encoder(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    precision: str = FP32,
    tolerance: float | None = None,
    write_model_config: bool = True,
    provenance: dict[str, Any] | None = None,
    **serving: Any,
) -> Path:
    """Export a BERT-style encoder as ``text_encoder``: ONNX graph of mean pooling + L2 normalisation.

    Args:
        model_dir: Hugging Face encoder folder (e.g. all-MiniLM-L6-v2 or a fine-tuned copy).
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        precision: ``fp32``, or ``int8`` (dynamic quantisation; parity judged by cosine similarity).
        tolerance: Largest max-abs difference allowed between torch and ONNX Runtime embeddings;
            ``None`` for the precision's default.
        write_model_config: Also (re)write ``<repository>/text_encoder/config.pbtxt``.
        provenance: Source fields for ``metadata.json`` when ``model_dir`` is an intermediate (a merged
            LoRA adapter); ``None`` describes ``model_dir`` itself.
        **serving: ``config.pbtxt`` settings, those named in ``SERVING_OPTIONS`` for this model (see
            :func:`build_config`); absent or ``None`` for the defaults.

    Returns:
        The written version folder.

    Raises:
        ParityError: If ONNX Runtime disagrees with torch (nothing is left behind).
        FileExistsError: If ``version`` already holds an export.
    """
    _offline()
    import torch
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    model_dir, repository = Path(model_dir), Path(repository)
    policy = parity_policy(TEXT_ENCODER, precision, tolerance)
    serving = _serving(TEXT_ENCODER, serving)
    target = _resolve_target(repository, TEXT_ENCODER, version)
    logger.info("exporting text encoder %s -> %s (%s)", model_dir, target, precision)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoder = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    wrapper = mean_pooled_encoder(encoder)
    texts = sample_texts()
    names = ("input_ids", "attention_mask", "token_type_ids")
    with _staging(target) as staging:
        # Trace on a padded pair; check on the longer, differently shaped sample batch.
        trace = tokenizer(texts[:2], padding=True, return_tensors="pt", return_token_type_ids=True)
        onnx_path = _export_onnx_at(precision, staging, lambda path: _export_onnx(
            wrapper,
            tuple(trace[k] for k in names),
            path,
            input_names=list(names),
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "token_type_ids": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
        ))
        session = _ort_session(onnx_path)
        batch = tokenizer(texts, padding=True, return_tensors="np", return_token_type_ids=True)
        (exported,) = session.run(["embedding"], {k: batch[k].astype("int64") for k in names})
        reference = []
        with torch.no_grad():
            for text in texts:  # unpadded, one at a time: also checks that padding changes nothing
                one = tokenizer(text, return_tensors="pt", return_token_type_ids=True)
                reference.append(wrapper(*(one[k] for k in names))[0].numpy())
        parity = _encoder_parity(reference, exported, policy)
        parity["precision"] = precision
        embedding_dim = int(exported.shape[1])
        canary_text = canary_inputs()[TEXT_ENCODER]
        one = tokenizer([canary_text], return_tensors="np", return_token_type_ids=True)
        (canary_out,) = session.run(["embedding"], {k: one[k].astype("int64") for k in names})
        del session
        tokenizer.save_pretrained(str(staging))
        metadata = _metadata(
            TEXT_ENCODER,
            int(target.name),
            model_dir,
            started,
            provenance,
            format="onnx",
            opset=ONNX_OPSET,
            precision=precision,
            embedding_dim=embedding_dim,
            pooling="mean, l2-normalised",
            parity=parity,
            canary=_canary("text", canary_text, "embedding", canary_out[0], policy.tolerance),
        )
        _finish(
            TEXT_ENCODER, repository, target, staging, metadata, write_model_config,
            {**serving, "embedding_dim": embedding_dim},
        )
    logger.info("text encoder exported in %.1f s (max abs diff %.2g)", time.perf_counter() - started,
                parity["max_abs_diff"])
    return target


def export_ranker(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    answer_prefix: str = prompts.RANKER_ANSWER_PREFIX,
    precision: str = FP32,
    tolerance: float | None = None,
    write_model_config: bool = True,
    provenance: dict[str, Any] | None = None,
    **serving: Any,
) -> Path:
    """Export a causal LM as ``ranker``: ONNX graph returning the label logits at the answer position.

    Works for any Hugging Face causal-LM folder (the base model, a LoRA-merged or fully fine-tuned one).

    Args:
        model_dir: Hugging Face causal-LM folder with a chat template.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        answer_prefix: Text after the assistant tag, before the label; must equal the training one.
        precision: ``fp32``, or ``int8`` (dynamic quantisation; parity also judged by ranking agreement).
        tolerance: Largest max-abs difference allowed between torch and ONNX Runtime label logits;
            ``None`` for the precision's default.
        write_model_config: Also (re)write ``<repository>/ranker/config.pbtxt``.
        provenance: Source fields for ``metadata.json`` when ``model_dir`` is an intermediate (a merged
            LoRA adapter); ``None`` describes ``model_dir`` itself.
        **serving: ``config.pbtxt`` settings, those named in ``SERVING_OPTIONS`` for this model (see
            :func:`build_config`); absent or ``None`` for the defaults.

    Returns:
        The written version folder.

    Raises:
        ValueError: If a label is not a single token in the model's tokenizer.
        ParityError: If ONNX Runtime disagrees with torch (nothing is left behind).
        FileExistsError: If ``version`` already holds an export.
    """
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model_dir, repository = Path(model_dir), Path(repository)
    policy = parity_policy(RANKER, precision, tolerance)
    serving = _serving(RANKER, serving)
    target = _resolve_target(repository, RANKER, version)
    logger.info("exporting ranker %s -> %s (%s)", model_dir, target, precision)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_dir} has no chat template")
    label_ids = label_token_ids(tokenizer)
    # Eager attention traces to plain matmuls + an explicit mask, which exports with dynamic shapes.
    lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    lm.eval()
    wrapper = ranker_scorer(lm, label_ids)

    def encode(prompt: str) -> list[int]:
        return tokenizer(ranker_model_text(tokenizer, prompt, answer_prefix), add_special_tokens=False)["input_ids"]

    samples = parity_prompts(precision)
    rows = [encode(prompt) for prompt, _ in samples]
    with _staging(target) as staging:
        trace_ids, trace_mask = right_pad(rows[:2], tokenizer.pad_token_id)
        onnx_path = _export_onnx_at(precision, staging, lambda path: _export_onnx(
            wrapper,
            (torch.from_numpy(trace_ids), torch.from_numpy(trace_mask)),
            path,
            input_names=["input_ids", "attention_mask"],
            output_names=["label_logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "label_logits": {0: "batch"},
            },
        ))
        session = _ort_session(onnx_path)
        input_ids, attention_mask = right_pad(rows, tokenizer.pad_token_id)
        (exported,) = session.run(["label_logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        reference = []
        with torch.no_grad():
            for row in rows:  # the full LM, unpadded: checks the wrapper, the padding and the export at once
                logits = lm(input_ids=torch.tensor([row]), use_cache=False).logits  # [1, L, V]
                reference.append(logits[0, -1, label_ids].numpy())
        parity = _ranker_parity(reference, exported, [n for _, n in samples], policy)
        parity["precision"] = precision
        canary_prompt = canary_inputs()[RANKER]
        canary_ids, canary_mask = right_pad([encode(canary_prompt)], tokenizer.pad_token_id)
        (canary_out,) = session.run(["label_logits"], {"input_ids": canary_ids, "attention_mask": canary_mask})
        del session
        tokenizer.save_pretrained(str(staging))
        metadata = _metadata(
            RANKER,
            int(target.name),
            model_dir,
            started,
            provenance,
            format="onnx",
            opset=ONNX_OPSET,
            precision=precision,
            labels=[prompts.label_token_text(label) for label in prompts.LABELS],
            label_token_ids=label_ids,
            answer_prefix=answer_prefix,
            parity=parity,
            canary=_canary("prompt", canary_prompt, "candidate_scores", canary_out[0], policy.tolerance),
        )
        _finish(
            RANKER, repository, target, staging, metadata, write_model_config,
            {**serving, "answer_prefix": answer_prefix},
        )
    logger.info("ranker exported in %.1f s (max abs diff %.2g, top-1 agreement %.2f)",
                time.perf_counter() - started, parity["max_abs_diff"], parity["top1_agreement"])
    return target


def export_preference_generator(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    precision: str = FP32,
    tolerance: float | None = None,
    write_model_config: bool = True,
    provenance: dict[str, Any] | None = None,
    **serving: Any,
) -> Path:
    """Export a causal LM as ``preference_generator``: a safetensors folder served by torch ``generate()``.

    The checkpoint is loaded and saved again (normalising it to safetensors), then reloaded from the
    export and checked to produce the same logits and greedy tokens as the source.

    Args:
        model_dir: Hugging Face causal-LM folder with a chat template.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        precision: Only ``fp32`` (the model runs in torch, not ONNX Runtime).
        tolerance: Largest logit difference allowed between the source and the saved copy (default 0).
        write_model_config: Also (re)write ``<repository>/preference_generator/config.pbtxt``.
        provenance: Source fields for ``metadata.json`` when ``model_dir`` is an intermediate (a merged
            LoRA adapter); ``None`` describes ``model_dir`` itself.
        **serving: ``config.pbtxt`` settings, those named in ``SERVING_OPTIONS`` for this model (see
            :func:`build_config`); absent or ``None`` for the defaults.

    Returns:
        The written version folder.

    Raises:
        ParityError: If the saved copy does not reproduce the source.
        FileExistsError: If ``version`` already holds an export.
    """
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model_dir, repository = Path(model_dir), Path(repository)
    policy = parity_policy(PREFERENCE_GENERATOR, precision, tolerance)
    serving = _serving(PREFERENCE_GENERATOR, serving)
    target = _resolve_target(repository, PREFERENCE_GENERATOR, version)
    logger.info("exporting preference generator %s -> %s", model_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_dir} has no chat template")
    source = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt = ranker_model_text(tokenizer, sample_prompts()[0], answer_prefix="")
    input_ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with _staging(target) as staging:
        source.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        copy = AutoModelForCausalLM.from_pretrained(str(staging), dtype=torch.float32).eval()
        with torch.no_grad():
            ref_logits = source(input_ids=input_ids).logits[0, -1]
            new_logits = copy(input_ids=input_ids).logits[0, -1]
            settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            same_tokens = bool(
                torch.equal(source.generate(input_ids, **settings), copy.generate(input_ids, **settings))
            )
        del copy
        max_abs_diff = float((ref_logits - new_logits).abs().max())
        if not max_abs_diff <= policy.tolerance or not same_tokens:
            raise ParityError(f"preference_generator: saved copy differs (max abs diff {max_abs_diff:.3g}, "
                              f"greedy tokens equal: {same_tokens})")
        metadata = _metadata(
            PREFERENCE_GENERATOR,
            int(target.name),
            model_dir,
            started,
            provenance,
            format="huggingface-safetensors",
            precision=precision,
            parity={"samples": 1, "max_abs_diff": max_abs_diff, "greedy_tokens_equal": same_tokens,
                    "tolerance": policy.tolerance, "precision": precision},
            canary=_canary("prompt", canary_inputs()[PREFERENCE_GENERATOR], "text", None, None),
        )
        _finish(
            PREFERENCE_GENERATOR, repository, target, staging, metadata, write_model_config,
            serving,
        )
    logger.info("preference generator exported in %.1f s", time.perf_counter() - started)
    return target


# --------------------------------------------------------------------------------------------------------
# LoRA adapters and the `instructrec export` entry point
# --------------------------------------------------------------------------------------------------------


EXPORTERS: dict[str, Callable[..., Path]] = {
    TEXT_ENCODER: export_text_encoder,
    RANKER: export_ranker,
    PREFERENCE_GENERATOR: export_preference_generator,
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def is_lora_adapter(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is a PEFT adapter folder (it has ``adapter_config.json``)."""
    return (Path(checkpoint) / "adapter_config.json").is_file()


def default_base_model(name: str, workspace: Path = Path("var")) -> Path:
    """The base model a LoRA adapter of ``name`` is trained on, unless the adapter or ``--base`` says otherwise."""
    from tools.base_models import minilm_dir, smollm2_dir

    return minilm_dir() if name == TEXT_ENCODER else smollm2_dir(workspace)


def resolve_adapter_base(adapter_dir: Path, name: str, base: Path | None, workspace: Path = Path("var")) -> Path:
    """The base model folder of a LoRA adapter.

    Order: ``base`` when given; else the adapter's ``base_model_name_or_path`` when that is a local folder
    (a hub id cannot be fetched here); else :func:`default_base_model`.
    """
    if base is not None:
        if not Path(base).is_dir():
            raise FileNotFoundError(f"base model folder {base} does not exist")
        return Path(base)
    recorded = json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    fallback = default_base_model(name, workspace)
    if recorded:
        logger.info("adapter base %r is not a local folder; using %s", recorded, fallback)
    return fallback


def merge_lora_adapter(adapter_dir: Path, base_dir: Path, dest: Path, name: str) -> Path:
    """Merge a LoRA adapter into its base model (``merge_and_unload``) and save a plain Hugging Face folder.

    The tokenizer comes from the adapter folder when it holds one (a trainer may save it there), else from
    the base.

    Returns:
        ``dest``, with safetensors weights and the tokenizer.
    """
    _offline()
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto = AutoModel if name == TEXT_ENCODER else AutoModelForCausalLM
    base = auto.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.eval()
    dest.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(dest))
    has_tokenizer = any((Path(adapter_dir) / f).is_file() for f in _TOKENIZER_FILES)
    AutoTokenizer.from_pretrained(str(adapter_dir if has_tokenizer else base_dir)).save_pretrained(str(dest))
    return dest


def adapter_provenance(adapter_dir: Path, base_dir: Path) -> dict[str, Any]:
    """``metadata.json`` source fields of an export made from a merged LoRA adapter."""
    adapter_hashes = weights_sha256(adapter_dir)
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return {
        "source_checkpoint": str(Path(adapter_dir).resolve()),
        "source_weights_sha256": adapter_hashes,
        "source_sha256": combined_sha256(adapter_hashes),
        "base_model": {"path": str(Path(base_dir).resolve()), "sha256": combined_sha256(weights_sha256(base_dir))},
        "adapter": {
            "type": config.get("peft_type", "LORA").lower(),
            "merged": True,
            "r": config.get("r"),
            "lora_alpha": config.get("lora_alpha"),
            "target_modules": sorted(config["target_modules"]) if isinstance(config.get("target_modules"), list)
            else config.get("target_modules"),
        },
    }


def serving_options(repository: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """The ``config.pbtxt`` settings a new export of ``name`` writes: the current ones, then ``overrides``.

    Overrides that are ``None`` keep the current value (or the default where the model has no config yet).
    """
    path = Path(repository) / name / "config.pbtxt"
    options = config_options(read_config(path)) if path.is_file() else {}
    options.update({key: value for key, value in overrides.items() if value is not None})
    return options


def export_model(
    name: str,
    checkpoint: Path,
    repository: Path,
    *,
    version: int | None = None,
    base: Path | None = None,
    workspace: Path = Path("var"),
    precision: str = FP32,
    tolerance: float | None = None,
    **config_overrides: Any,
) -> Path:
    """Export a checkpoint of ``name`` into the next version of the repository (``instructrec export``).

    Args:
        name: ``text_encoder``, ``ranker`` or ``preference_generator``.
        checkpoint: A Hugging Face model folder, or a LoRA adapter folder (``adapter_config.json``), which
            is merged into its base model first.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one.
        base: Base model folder of a LoRA adapter (see :func:`resolve_adapter_base`).
        workspace: Where the default SmolLM2 base is converted.
        precision: ``fp32`` or ``int8`` (``text_encoder`` and ``ranker`` only).
        tolerance: Parity bound overriding the precision's default.
        **config_overrides: ``config.pbtxt`` settings (``SERVING_OPTIONS[name]``); ``None`` or absent keeps
            the repository's current value.

    Returns:
        The written version folder.

    Raises:
        ParityError: The export disagrees with the checkpoint (nothing is written).
        FileNotFoundError: The checkpoint (or the adapter's base) is missing.
        ValueError: Unknown model, or an option that does not apply to it.
    """
    if name not in EXPORTERS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    parity_policy(name, precision, tolerance)  # fail on a precision the model cannot take before any work
    export = EXPORTERS[name]
    _serving(name, config_overrides)  # refuse a setting the model does not take before any work
    options = serving_options(repository, name, **config_overrides)
    options.pop("embedding_dim", None)  # the encoder's output size comes from the checkpoint, not the old config
    if not is_lora_adapter(checkpoint):
        return export(checkpoint, repository, version, precision=precision, tolerance=tolerance, **options)
    base_dir = resolve_adapter_base(checkpoint, name, base, workspace)
    logger.info("merging LoRA adapter %s into %s", checkpoint, base_dir)
    with tempfile.TemporaryDirectory(prefix="instructrec-merged-") as tmp:
        merged = merge_lora_adapter(checkpoint, base_dir, Path(tmp) / "merged", name)
        return export(merged, repository, version, precision=precision, tolerance=tolerance,
                      provenance=adapter_provenance(checkpoint, base_dir), **options)


def ensure_default_repository(
    repository: Path = Path("model_repository"), workspace: Path = Path("var")
) -> dict[str, int]:
    """Export the embedded base models into version 1 of each model that has no finished version yet.

    Idempotent and quick when done. The first run converts SmolLM2 from its GGUF (about 45 s) and exports
    the three models. A model with later versions is left alone even when pruning (``instructrec export
    --keep``) removed its version 1. A missing ``config.pbtxt`` is written with the defaults; an existing
    one is kept.

    Args:
        repository: The model repository folder.
        workspace: The git-ignored working folder (converted base models).

    Returns:
        The latest finished version of each model, by name.
    """
    from tools.base_models import minilm_dir, smollm2_dir

    repository = Path(repository)
    exporters: dict[str, tuple[Callable[..., Path], Callable[[], Path]]] = {
        TEXT_ENCODER: (export_text_encoder, minilm_dir),
        RANKER: (export_ranker, lambda: smollm2_dir(workspace)),
        PREFERENCE_GENERATOR: (export_preference_generator, lambda: smollm2_dir(workspace)),
    }
    for name, (export, source) in exporters.items():
        if latest_version(repository, name) is None:
            export(source(), repository, 1, write_model_config=False)
        if not (repository / name / "config.pbtxt").is_file():
            write_config(repository, name)
    return {name: latest_version(repository, name) for name in MODEL_NAMES}  # type: ignore[misc]
