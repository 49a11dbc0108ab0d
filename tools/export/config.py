"""Each model's ``config.pbtxt``, built from Triton's ``ModelConfig`` protobuf, and the settings an export takes.

Tensor names come from ``services/core/contracts.py``; the python-backend adapters read them back from the
config, so the contract is written in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.contracts import (
    LABELS,
    PREFERENCE_GENERATOR,
    RANKER,
    RANKER_ANSWER_PREFIX,
    REQUEST_READER,
    SEQUENCE_ENCODER,
    SERVED_MODELS,
    TEXT_ENCODER,
    TRITON_CONTRACTS,
)
from services.core.reading import READER_MAX_TOKENS, WORD_LABELS
from tools.core.text_encoder import DEFAULT_MAX_TOKENS
from tools.export.versions import COMMITTED_REPOSITORY


@dataclass(frozen=True)
class ServingDefaults:
    """Per-model defaults for ``config.pbtxt``."""

    max_batch_size: int
    max_queue_delay_us: int
    num_threads: int
    max_queue_size: int
    instance_count: int = 1
    response_cache: bool = False
    num_versions: int = 1


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
                                  instance_count=2, response_cache=True, num_versions=2),
    RANKER: ServingDefaults(max_batch_size=8, max_queue_delay_us=5_000, num_threads=2, max_queue_size=64),
    PREFERENCE_GENERATOR: ServingDefaults(max_batch_size=8, max_queue_delay_us=10_000, num_threads=1,
                                          max_queue_size=64),
    # A history is at most 50 ids and the graph is small: large batches, a short wait. Two versions stay
    # loaded, so that after a push the retrieval service keeps asking for the version its index was built
    # with until the index of the new one is loaded (services/retrieval).
    SEQUENCE_ENCODER: ServingDefaults(max_batch_size=64, max_queue_delay_us=1_000, num_threads=1,
                                      max_queue_size=512, num_versions=2),
    # A request is a few dozen tokens through six small layers; repeated requests are answered from the cache.
    REQUEST_READER: ServingDefaults(max_batch_size=64, max_queue_delay_us=1_000, num_threads=1, max_queue_size=512,
                                    response_cache=True),
}
# The adapter parameters each model's config carries besides num_threads (model.py reads them).
MODEL_PARAMETERS: dict[str, tuple[str, ...]] = {
    TEXT_ENCODER: ("max_tokens",),
    RANKER: ("max_prompt_tokens", "answer_prefix"),
    PREFERENCE_GENERATOR: ("max_prompt_tokens", "max_new_tokens"),
    SEQUENCE_ENCODER: ("max_history_items",),
    REQUEST_READER: ("max_tokens",),
}
# Data types of each model's input and output tensor (names: TRITON_CONTRACTS); one value per batch row in.
TENSOR_TYPES: dict[str, tuple[str, str]] = {
    TEXT_ENCODER: ("TYPE_STRING", "TYPE_FP32"),
    RANKER: ("TYPE_STRING", "TYPE_FP32"),
    PREFERENCE_GENERATOR: ("TYPE_STRING", "TYPE_STRING"),
    SEQUENCE_ENCODER: ("TYPE_STRING", "TYPE_FP32"),
    REQUEST_READER: ("TYPE_STRING", "TYPE_FP32"),
}
# The build_config settings each model's export takes (``instructrec export`` options, config.pbtxt).
_COMMON_SERVING_OPTIONS = ("max_batch_size", "max_queue_delay_us", "max_queue_size", "instance_count",
                           "response_cache", "num_threads", "num_versions")
SERVING_OPTIONS: dict[str, tuple[str, ...]] = {
    name: (*_COMMON_SERVING_OPTIONS, *parameters) for name, parameters in MODEL_PARAMETERS.items()
}
DEFAULT_EMBEDDING_DIM = 384
DEFAULT_MAX_PROMPT_TOKENS = 1024
DEFAULT_MAX_NEW_TOKENS = 48
DEFAULT_MAX_HISTORY_ITEMS = 50
_INTEGER_PARAMETERS = {"num_threads", "max_tokens", "max_prompt_tokens", "max_new_tokens", "max_history_items"}
# Models whose output size comes from the checkpoint (``embedding_dim``).
_VECTOR_OUTPUTS = (TEXT_ENCODER, SEQUENCE_ENCODER)
# A request Triton sends to each instance of these models while it loads them (``model_warmup``), so that the
# first caller does not pay for ONNX Runtime's first run (a cold first reading took over 2 s on a loaded 2-core
# machine, past the instruction service's hop timeout). The model is READY only after it, and a load whose warmup
# fails fails. The text is a typical request; the bytes live in ``<model>/warmup/`` (Triton's layout).
WARMUP_MODELS = (REQUEST_READER, TEXT_ENCODER)
WARMUP_TEXT = "a comedy from the 90s, but nothing romantic"
WARMUP_DIR = "warmup"
WARMUP_FILE = "request"


def warmup_bytes(text: str) -> bytes:
    """One ``TYPE_STRING`` element as Triton reads a warmup data file: a 4-byte little-endian length, then the
    UTF-8 bytes."""
    data = text.encode("utf-8")
    return len(data).to_bytes(4, "little") + data


def _warmup(config: Any, mc: Any, name: str) -> None:
    if name not in WARMUP_MODELS:
        return
    sample = config.model_warmup.add(name="a first request", batch_size=1, count=1)
    tensor = sample.inputs[TRITON_CONTRACTS[name].input_name]
    tensor.data_type = mc.TYPE_STRING
    tensor.dims.append(1)
    tensor.input_data_file = WARMUP_FILE


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _batching(config: Any, mc: Any, defaults: ServingDefaults, settings: dict[str, Any]) -> None:
    """Dynamic batching, the bounded queue, instances, response cache and version policy."""
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = _pick(settings["max_queue_delay_us"],
                                                                 defaults.max_queue_delay_us)
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = _pick(settings["max_queue_size"], defaults.max_queue_size)
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU,
                              count=_pick(settings["instance_count"], defaults.instance_count))
    if _pick(settings["response_cache"], defaults.response_cache):
        config.response_cache.enable = True
    config.version_policy.latest.num_versions = _pick(settings["num_versions"], defaults.num_versions)


def _tensors(config: Any, mc: Any, name: str, embedding_dim: int) -> None:
    contract = TRITON_CONTRACTS[name]
    input_type, output_type = TENSOR_TYPES[name]
    output_dim = {TEXT_ENCODER: embedding_dim, SEQUENCE_ENCODER: embedding_dim, RANKER: len(LABELS)}.get(name, 1)
    if name == SEQUENCE_ENCODER:
        # One history per request, any length; ragged batching lets histories of different lengths share
        # an execution (the adapter pads them).
        config.input.add(name=contract.input_name, data_type=getattr(mc, input_type), dims=[-1],
                         allow_ragged_batch=True)
    else:
        config.input.add(name=contract.input_name, data_type=getattr(mc, input_type), dims=[1])
    # The reader answers one row of role probabilities per word: any number of words.
    dims = [-1, len(WORD_LABELS)] if name == REQUEST_READER else [output_dim]
    config.output.add(name=contract.output_name, data_type=getattr(mc, output_type), dims=dims)


def build_config(
    name: str,
    *,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    max_queue_size: int | None = None,
    instance_count: int | None = None,
    num_threads: int | None = None,
    num_versions: int | None = None,
    response_cache: bool | None = None,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    max_tokens: int | None = None,
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    answer_prefix: str = RANKER_ANSWER_PREFIX,
    max_history_items: int = DEFAULT_MAX_HISTORY_ITEMS,
) -> Any:
    """Build the Triton ``ModelConfig`` of one of the models.

    Args:
        name: ``text_encoder``, ``ranker`` or ``preference_generator``.
        max_batch_size: Largest dynamic batch; ``None`` for the model's default.
        max_queue_delay_us: How long the dynamic batcher waits to fill a batch; ``None`` for the default.
        max_queue_size: Requests queued per model before Triton rejects new ones at once; ``None`` for the
            default. Requests carrying a ``timeout`` (the services send their remaining deadline) are
            dropped from the queue when it passes.
        instance_count: Model instances (stub processes) on CPU; ``None`` for the default.
        num_threads: Intra-op threads of ONNX Runtime / torch in each instance; ``None`` for the default.
        num_versions: Version policy: Triton serves the latest this many versions (requests that name no
            version go to the highest); ``None`` for the model's default.
        response_cache: Let Triton answer repeated identical requests from its response cache (the server
            must run with ``--cache-config``; without it the setting is inert); ``None`` for the default.
        embedding_dim: Output size of ``text_encoder``.
        max_tokens: ``text_encoder`` / ``request_reader`` truncate texts to this many tokens; ``None`` for the
            model's default (256 / 64).
        max_prompt_tokens: ``ranker`` / ``preference_generator`` reject longer prompts (after the chat
            template).
        max_new_tokens: ``preference_generator`` generation budget.
        answer_prefix: ``ranker`` text after the assistant tag; must equal the one used in training.
        max_history_items: ``sequence_encoder`` reads the most recent this many items of a history.

    Returns:
        A ``tritonclient.grpc.model_config_pb2.ModelConfig``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    if name not in DEFAULTS:
        raise ValueError(f"unknown model {name!r}; expected one of {SERVED_MODELS}")
    if num_versions is not None and num_versions < 1:
        raise ValueError(f"num_versions must be >= 1, got {num_versions}")
    defaults = DEFAULTS[name]
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=_pick(max_batch_size, defaults.max_batch_size))
    _batching(config, mc, defaults, {"max_queue_delay_us": max_queue_delay_us, "max_queue_size": max_queue_size,
                                     "instance_count": instance_count, "response_cache": response_cache,
                                     "num_versions": num_versions})
    _tensors(config, mc, name, embedding_dim)
    _warmup(config, mc, name)
    default_tokens = READER_MAX_TOKENS if name == REQUEST_READER else DEFAULT_MAX_TOKENS
    values = {"max_tokens": _pick(max_tokens, default_tokens), "max_prompt_tokens": max_prompt_tokens,
              "max_new_tokens": max_new_tokens,
              "answer_prefix": answer_prefix, "max_history_items": max_history_items}
    parameters = {"num_threads": _pick(num_threads, defaults.num_threads),
                  **{key: values[key] for key in MODEL_PARAMETERS[name]}}
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = str(value)
    return config


def write_config(repository: Path, name: str, **options: Any) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` (atomically) for one of the models, and its warmup request
    (``<repository>/<name>/warmup/request``) for the models Triton warms up (:data:`WARMUP_MODELS`).

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
    if name in WARMUP_MODELS:  # before the config that names it
        warmup = path.parent / WARMUP_DIR / WARMUP_FILE
        warmup.parent.mkdir(exist_ok=True)
        warmup.write_bytes(warmup_bytes(WARMUP_TEXT))
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
    for key, value in parameters.items():
        if key in _INTEGER_PARAMETERS:
            options[key] = int(value)
        elif key == "answer_prefix":
            options[key] = value
    if config.name in _VECTOR_OUTPUTS and config.output:
        options["embedding_dim"] = int(config.output[0].dims[0])
    return options


def write_committed_configs(repository: Path = COMMITTED_REPOSITORY) -> list[Path]:
    """(Re)generate the committed default ``config.pbtxt`` of the models."""
    return [write_config(repository, name) for name in SERVED_MODELS]


def check_serving(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the unset (None) ones; ValueError naming any that ``name`` does not take."""
    unknown = sorted(k for k, v in options.items() if v is not None and k not in SERVING_OPTIONS[name])
    if unknown:
        raise ValueError(f"{name} has no setting {', '.join(unknown)}")
    return {k: v for k, v in options.items() if v is not None}


def serving_options(repository: Path, name: str, **overrides: Any) -> dict[str, Any]:
    """The ``config.pbtxt`` settings a new export of ``name`` writes: the current ones, then ``overrides``.

    Overrides that are ``None`` keep the current value (or the default where the model has no config yet).
    """
    path = Path(repository) / name / "config.pbtxt"
    options = config_options(read_config(path)) if path.is_file() else {}
    options.update({key: value for key, value in overrides.items() if value is not None})
    return options
