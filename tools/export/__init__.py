"""Export checkpoints into the Triton model repository and write the models' ``config.pbtxt``.

Layout written (see docs/architecture.md)::

    <repository>/<name>/config.pbtxt              built from Triton's ModelConfig protobuf
    <repository>/<name>/<version>/model.py        copy of the committed python-backend adapter
    <repository>/<name>/<version>/triton_adapter.py  copy of the adapters' shared helper
    <repository>/<name>/<version>/model.onnx      text_encoder, ranker (preference_generator: HF safetensors)
    <repository>/<name>/<version>/tokenizer*      tokenizer files (with the chat template for the LMs)
    <repository>/<name>/<version>/metadata.json   provenance and parity figures, written last

One module a job:

- ``config``: ``config.pbtxt`` from ``model_config_pb2``, the serving defaults and the settings an export takes.
- ``versions``: version folders, staging and atomic installation, pruning, removal.
- ``repository``: the lock that serialises exports, the listing of a repository.
- ``provenance``: checkpoint hashes, tool and library versions, ``metadata.json``.
- ``samples``, ``parity``: the fixed parity and canary inputs; the policies and checks against torch.
- ``onnx``: torch -> ONNX, the ONNX Runtime session, int8 dynamic quantisation.
- ``merge``: LoRA adapters (detection, base resolution, merging, provenance).
- ``exporters``: the shared core (``exporters/base.py``) and one small module per model kind.
- ``pipeline``: :func:`export_model` (``instructrec export``) and :func:`ensure_default_repository`.

Every export goes to a new version folder, built in a hidden sibling folder and renamed into place, so Triton
never sees a half-written version; an export whose outputs differ from torch beyond the tolerance is deleted
and :class:`ParityError` raised. Each version's ``metadata.json`` also holds the canary (a fixed input and the
output the export produced for it) that ``tools/export/push.py`` checks on Triton.
"""

from __future__ import annotations

from services.core import prompts
from services.core.contracts import MODEL_NAMES, PREFERENCE_GENERATOR, RANKER, REQUEST_READER, TEXT_ENCODER
from services.core.modeltext import label_token_ids, mean_pooled_encoder, ranker_model_text, ranker_scorer, right_pad
from tools.core.adapters import default_base_model, is_lora_adapter, resolve_adapter_base
from tools.export import versions
from tools.export.config import (
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_TOKENS,
    DEFAULTS,
    SERVING_OPTIONS,
    ServingDefaults,
    build_config,
    check_serving,
    config_options,
    read_config,
    serving_options,
    write_committed_configs,
    write_config,
)
from tools.export.exporters import EXPORTERS, export_preference_generator, export_ranker, export_text_encoder
from tools.export.merge import adapter_provenance, merge_lora_adapter
from tools.export.onnx import ONNX_OPSET
from tools.export.parity import (
    ENCODER_INT8_MIN_COSINE,
    ENCODER_INT8_TOLERANCE,
    ENCODER_PARITY_TOLERANCE,
    FP32,
    INT8,
    PRECISIONS,
    RANKER_INT8_MIN_TOP1_AGREEMENT,
    RANKER_INT8_MIN_TOPK_OVERLAP,
    RANKER_INT8_TOLERANCE,
    RANKER_PARITY_TOLERANCE,
    TOP_K,
    ParityError,
    ParityPolicy,
    parity_policy,
    ranking_agreement,
)
from tools.export.pipeline import ensure_default_repository, export_model
from tools.export.provenance import combined_sha256, weights_sha256
from tools.export.repository import repository_lock, repository_versions
from tools.export.samples import canary_inputs, parity_prompts, sample_prompts, sample_texts
from tools.export.versions import (
    ADAPTER_FILE,
    ADAPTER_HELPER_FILE,
    COMMITTED_REPOSITORY,
    METADATA_FILE,
    STAGING_PREFIX,
    TRASH_PREFIX,
    has_weights,
    latest_version,
    next_version,
    prune_versions,
    remove_stale_staging,
    remove_version,
    version_dirs,
)

__all__ = [
    "ADAPTER_FILE", "ADAPTER_HELPER_FILE", "COMMITTED_REPOSITORY", "DEFAULTS", "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_MAX_PROMPT_TOKENS", "DEFAULT_MAX_TOKENS", "ENCODER_INT8_MIN_COSINE",
    "ENCODER_INT8_TOLERANCE", "ENCODER_PARITY_TOLERANCE", "EXPORTERS", "FP32", "INT8", "METADATA_FILE",
    "MODEL_NAMES", "ONNX_OPSET", "PRECISIONS", "PREFERENCE_GENERATOR", "RANKER", "RANKER_INT8_MIN_TOP1_AGREEMENT",
    "RANKER_INT8_MIN_TOPK_OVERLAP", "RANKER_INT8_TOLERANCE", "RANKER_PARITY_TOLERANCE", "REQUEST_READER",
    "SERVING_OPTIONS",
    "STAGING_PREFIX", "TEXT_ENCODER", "TOP_K", "TRASH_PREFIX", "ParityError", "ParityPolicy", "ServingDefaults",
    "adapter_provenance", "build_config", "canary_inputs", "check_serving", "combined_sha256", "config_options",
    "default_base_model", "ensure_default_repository", "export_model", "export_preference_generator",
    "export_ranker", "export_text_encoder", "has_weights", "is_lora_adapter", "label_token_ids", "latest_version",
    "mean_pooled_encoder", "merge_lora_adapter", "next_version", "parity_policy", "parity_prompts", "prompts",
    "prune_versions", "ranker_model_text", "ranker_scorer", "ranking_agreement", "read_config",
    "remove_stale_staging", "remove_version", "repository_lock", "repository_versions", "resolve_adapter_base",
    "right_pad", "sample_prompts", "sample_texts", "serving_options", "versions", "version_dirs",
    "weights_sha256", "write_committed_configs", "write_config",
]
