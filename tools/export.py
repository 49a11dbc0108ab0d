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

from services.common import prompts
from services.common.catalog import Item, item_text

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


class ParityError(RuntimeError):
    """The exported model's outputs differ from the source checkpoint's beyond the tolerance."""


@dataclass(frozen=True)
class ServingDefaults:
    """Per-model defaults for ``config.pbtxt``."""

    max_batch_size: int
    max_queue_delay_us: int
    num_threads: int


# The ranker dominates latency (hundreds of tokens per prompt), so it gets both cores of the reference
# 2-core node; the encoder's inputs are short, and generation is latency-bound per token.
DEFAULTS: dict[str, ServingDefaults] = {
    TEXT_ENCODER: ServingDefaults(max_batch_size=64, max_queue_delay_us=2_000, num_threads=1),
    RANKER: ServingDefaults(max_batch_size=8, max_queue_delay_us=5_000, num_threads=2),
    PREFERENCE_GENERATOR: ServingDefaults(max_batch_size=8, max_queue_delay_us=10_000, num_threads=1),
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
)


# --------------------------------------------------------------------------------------------------------
# config.pbtxt
# --------------------------------------------------------------------------------------------------------


def build_config(
    name: str,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    instance_count: int = 1,
    num_threads: int | None = None,
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
        instance_count: Model instances (stub processes) on CPU.
        num_threads: Intra-op threads of ONNX Runtime / torch in each instance; ``None`` for the default.
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
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instance_count)
    config.version_policy.latest.num_versions = 1
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


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A hidden sibling folder of ``target`` to build in; moved into place on success, removed on error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leading dot and a non-numeric name: Triton never takes it for a version folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{target.name}-", dir=target.parent))
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


def _metadata(name: str, version: int, model_dir: Path, started: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": name,
        "version": version,
        "source_checkpoint": str(Path(model_dir).resolve()),
        "source_weights_sha256": weights_sha256(model_dir),
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


def ranker_model_text(tokenizer: Any, prompt: str, answer_prefix: str = prompts.RANKER_ANSWER_PREFIX) -> str:
    """The text the ranker scores: the chat template's user turn, the opened assistant turn, the prefix.

    It is tokenised with ``add_special_tokens=False`` (the template already holds the special tokens).
    ``model_repository/ranker/1/model.py`` applies the same rule.
    """
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return chat + answer_prefix


def label_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of the ranker's labels (``prompts.label_token_text``), which must be single tokens.

    Raises:
        ValueError: If a label is not exactly one token in this tokenizer.
    """
    ids = []
    for label in prompts.LABELS:
        text = prompts.label_token_text(label)
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"label {text!r} is {len(tokens)} tokens {tokens} in this tokenizer; need exactly 1")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"label tokens are not distinct: {ids}")
    return ids


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import numpy as np

    length = max(len(r) for r in rows)
    input_ids = np.full((len(rows), length), pad_id, dtype=np.int64)  # [B, L]
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)  # [B, L]
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


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


def _parity(reference: Any, exported: Any, tolerance: float, what: str) -> dict[str, Any]:
    import numpy as np

    reference = np.asarray(reference, dtype=np.float32)
    exported = np.asarray(exported, dtype=np.float32)
    if reference.shape != exported.shape:
        raise ParityError(f"{what}: output shape {exported.shape} differs from torch {reference.shape}")
    max_abs_diff = float(np.max(np.abs(reference - exported))) if reference.size else 0.0
    figures = {
        "samples": int(reference.shape[0]),
        "max_abs_diff": max_abs_diff,
        "argmax_agreement": float(np.mean(reference.argmax(-1) == exported.argmax(-1))),
        "tolerance": tolerance,
    }
    if not np.isfinite(max_abs_diff) or max_abs_diff > tolerance:
        raise ParityError(f"{what}: ONNX Runtime differs from torch by {max_abs_diff:.3g} > {tolerance:g}")
    return figures


def _encoder_wrapper(encoder: Any) -> Any:
    import torch

    class MeanPooledEncoder(torch.nn.Module):
        """Encoder -> mean over unmasked tokens -> L2 normalisation (sentence-transformers style)."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # [B, L, D]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [B, D]
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)  # [B, D]

    return MeanPooledEncoder(encoder).eval()


def _ranker_wrapper(lm: Any, label_ids: list[int]) -> Any:
    import torch

    class LabelScorer(torch.nn.Module):
        """Causal LM -> hidden state at each row's last real token -> logits of the label tokens only.

        The backbone's ``last_hidden_state`` already has the final norm applied; only the label rows of the
        LM head are kept, so the ONNX graph never computes the full-vocabulary logits.
        """

        def __init__(self, lm: Any, label_ids: list[int]) -> None:
            super().__init__()
            self.backbone = lm.get_decoder() if hasattr(lm, "get_decoder") else getattr(lm, lm.base_model_prefix)
            head = lm.get_output_embeddings()
            index = torch.tensor(label_ids, dtype=torch.long)
            self.register_buffer("label_weight", head.weight.detach()[index].clone())  # [C, H]
            bias = getattr(head, "bias", None)
            label_bias = bias.detach()[index].clone() if bias is not None else torch.zeros(len(label_ids))
            self.register_buffer("label_bias", label_bias)  # [C]

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state  # [B, L, H]
            last = attention_mask.sum(dim=1) - 1  # [B], right padding
            index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # [B, 1, H]
            picked = hidden.gather(1, index).squeeze(1)  # [B, H]
            return picked @ self.label_weight.t() + self.label_bias  # [B, C]

    return LabelScorer(lm, label_ids).eval()


# --------------------------------------------------------------------------------------------------------
# Public export functions
# --------------------------------------------------------------------------------------------------------


def _finish(
    name: str,
    repository: Path,
    target: Path,
    staging: Path,
    metadata: dict[str, Any],
    write_model_config: bool,
    config_options: dict[str, Any],
) -> Path:
    _copy_adapter(name, staging, target)
    _write_json(staging / METADATA_FILE, metadata)
    if write_model_config:
        write_config(repository, name, **config_options)
    return target


def export_text_encoder(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    instance_count: int = 1,
    num_threads: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    tolerance: float = ENCODER_PARITY_TOLERANCE,
    write_model_config: bool = True,
) -> Path:
    """Export a BERT-style encoder as ``text_encoder``: ONNX graph of mean pooling + L2 normalisation.

    Args:
        model_dir: Hugging Face encoder folder (e.g. all-MiniLM-L6-v2 or a fine-tuned copy).
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        max_batch_size: ``config.pbtxt`` setting; ``None`` for the default.
        max_queue_delay_us: ``config.pbtxt`` setting; ``None`` for the default.
        instance_count: ``config.pbtxt`` setting.
        num_threads: ``config.pbtxt`` setting (ONNX Runtime intra-op threads); ``None`` for the default.
        max_tokens: ``config.pbtxt`` setting: texts are truncated to this many tokens.
        tolerance: Largest max-abs difference allowed between torch and ONNX Runtime embeddings.
        write_model_config: Also (re)write ``<repository>/text_encoder/config.pbtxt``.

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
    target = _resolve_target(repository, TEXT_ENCODER, version)
    logger.info("exporting text encoder %s -> %s", model_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoder = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    wrapper = _encoder_wrapper(encoder)
    texts = sample_texts()
    with _staging(target) as staging:
        # Trace on a padded pair; check on the longer, differently shaped sample batch.
        trace = tokenizer(texts[:2], padding=True, return_tensors="pt", return_token_type_ids=True)
        _export_onnx(
            wrapper,
            (trace["input_ids"], trace["attention_mask"], trace["token_type_ids"]),
            staging / "model.onnx",
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "token_type_ids": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
        )
        batch = tokenizer(texts, padding=True, return_tensors="np", return_token_type_ids=True)
        feeds = {k: batch[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")}
        (exported,) = _ort_session(staging / "model.onnx").run(["embedding"], feeds)
        reference = []
        with torch.no_grad():
            for text in texts:  # unpadded, one at a time: also checks that padding changes nothing
                one = tokenizer(text, return_tensors="pt", return_token_type_ids=True)
                reference.append(wrapper(one["input_ids"], one["attention_mask"], one["token_type_ids"])[0].numpy())
        parity = _parity(reference, exported, tolerance, "text_encoder")
        embedding_dim = int(exported.shape[1])
        tokenizer.save_pretrained(str(staging))
        metadata = _metadata(
            TEXT_ENCODER,
            int(target.name),
            model_dir,
            started,
            format="onnx",
            opset=ONNX_OPSET,
            embedding_dim=embedding_dim,
            pooling="mean, l2-normalised",
            parity=parity,
        )
        _finish(
            TEXT_ENCODER, repository, target, staging, metadata, write_model_config,
            dict(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                 instance_count=instance_count, num_threads=num_threads,
                 embedding_dim=embedding_dim, max_tokens=max_tokens),
        )
    logger.info("text encoder exported in %.1f s (max abs diff %.2g)", time.perf_counter() - started,
                parity["max_abs_diff"])
    return target


def export_ranker(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    instance_count: int = 1,
    num_threads: int | None = None,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    answer_prefix: str = prompts.RANKER_ANSWER_PREFIX,
    tolerance: float = RANKER_PARITY_TOLERANCE,
    write_model_config: bool = True,
) -> Path:
    """Export a causal LM as ``ranker``: ONNX graph returning the label logits at the answer position.

    Works for any Hugging Face causal-LM folder (the base model, a LoRA-merged or fully fine-tuned one).

    Args:
        model_dir: Hugging Face causal-LM folder with a chat template.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        max_batch_size: ``config.pbtxt`` setting; ``None`` for the default.
        max_queue_delay_us: ``config.pbtxt`` setting; ``None`` for the default.
        instance_count: ``config.pbtxt`` setting.
        num_threads: ``config.pbtxt`` setting (ONNX Runtime intra-op threads); ``None`` for the default.
        max_prompt_tokens: ``config.pbtxt`` setting: longer prompts are rejected.
        answer_prefix: Text after the assistant tag, before the label; must equal the training one.
        tolerance: Largest max-abs difference allowed between torch and ONNX Runtime label logits.
        write_model_config: Also (re)write ``<repository>/ranker/config.pbtxt``.

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
    target = _resolve_target(repository, RANKER, version)
    logger.info("exporting ranker %s -> %s", model_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_dir} has no chat template")
    label_ids = label_token_ids(tokenizer)
    # Eager attention traces to plain matmuls + an explicit mask, which exports with dynamic shapes.
    lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    lm.eval()
    wrapper = _ranker_wrapper(lm, label_ids)
    rows = [
        tokenizer(ranker_model_text(tokenizer, p, answer_prefix), add_special_tokens=False)["input_ids"]
        for p in sample_prompts()
    ]
    with _staging(target) as staging:
        trace_ids, trace_mask = _right_pad(rows[:2], tokenizer.pad_token_id)
        _export_onnx(
            wrapper,
            (torch.from_numpy(trace_ids), torch.from_numpy(trace_mask)),
            staging / "model.onnx",
            input_names=["input_ids", "attention_mask"],
            output_names=["label_logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "label_logits": {0: "batch"},
            },
        )
        input_ids, attention_mask = _right_pad(rows, tokenizer.pad_token_id)
        (exported,) = _ort_session(staging / "model.onnx").run(
            ["label_logits"], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        reference = []
        with torch.no_grad():
            for row in rows:  # the full LM, unpadded: checks the wrapper, the padding and the export at once
                logits = lm(input_ids=torch.tensor([row]), use_cache=False).logits  # [1, L, V]
                reference.append(logits[0, -1, label_ids].numpy())
        parity = _parity(reference, exported, tolerance, "ranker")
        tokenizer.save_pretrained(str(staging))
        metadata = _metadata(
            RANKER,
            int(target.name),
            model_dir,
            started,
            format="onnx",
            opset=ONNX_OPSET,
            labels=[prompts.label_token_text(label) for label in prompts.LABELS],
            label_token_ids=label_ids,
            answer_prefix=answer_prefix,
            parity=parity,
        )
        _finish(
            RANKER, repository, target, staging, metadata, write_model_config,
            dict(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                 instance_count=instance_count, num_threads=num_threads,
                 max_prompt_tokens=max_prompt_tokens, answer_prefix=answer_prefix),
        )
    logger.info("ranker exported in %.1f s (max abs diff %.2g)", time.perf_counter() - started,
                parity["max_abs_diff"])
    return target


def export_preference_generator(
    model_dir: Path,
    repository: Path,
    version: int | None = None,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    instance_count: int = 1,
    num_threads: int | None = None,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    write_model_config: bool = True,
) -> Path:
    """Export a causal LM as ``preference_generator``: a safetensors folder served by torch ``generate()``.

    The checkpoint is loaded and saved again (normalising it to safetensors), then reloaded from the
    export and checked to produce the same logits and greedy tokens as the source.

    Args:
        model_dir: Hugging Face causal-LM folder with a chat template.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one. An existing finished version is refused.
        max_batch_size: ``config.pbtxt`` setting; ``None`` for the default.
        max_queue_delay_us: ``config.pbtxt`` setting; ``None`` for the default.
        instance_count: ``config.pbtxt`` setting.
        num_threads: ``config.pbtxt`` setting (torch intra-op threads); ``None`` for the default.
        max_prompt_tokens: ``config.pbtxt`` setting: longer prompts are rejected.
        max_new_tokens: ``config.pbtxt`` setting: generation budget.
        write_model_config: Also (re)write ``<repository>/preference_generator/config.pbtxt``.

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
        if max_abs_diff > 0 or not same_tokens:
            raise ParityError(f"preference_generator: saved copy differs (max abs diff {max_abs_diff:.3g})")
        metadata = _metadata(
            PREFERENCE_GENERATOR,
            int(target.name),
            model_dir,
            started,
            format="huggingface-safetensors",
            parity={"samples": 1, "max_abs_diff": max_abs_diff, "greedy_tokens_equal": same_tokens},
        )
        _finish(
            PREFERENCE_GENERATOR, repository, target, staging, metadata, write_model_config,
            dict(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                 instance_count=instance_count, num_threads=num_threads,
                 max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens),
        )
    logger.info("preference generator exported in %.1f s", time.perf_counter() - started)
    return target


def ensure_default_repository(
    repository: Path = Path("model_repository"), workspace: Path = Path("var")
) -> dict[str, int]:
    """Export the embedded base models into version 1 of each model where it has no weights yet.

    Idempotent and quick when done. The first run converts SmolLM2 from its GGUF (about 45 s) and exports
    the three models. A missing ``config.pbtxt`` is written with the defaults; an existing one is kept.

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
        if not has_weights(repository / name / "1"):
            export(source(), repository, 1, write_model_config=False)
        if not (repository / name / "config.pbtxt").is_file():
            write_config(repository, name)
    return {name: latest_version(repository, name) for name in MODEL_NAMES}  # type: ignore[misc]
