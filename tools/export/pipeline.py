"""``instructrec export``: a checkpoint (a Hugging Face folder or a LoRA adapter) into the next version; and the
default repository that ``instructrec prepare`` and the k8s setup job export from the base models."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from services.core.contracts import MODEL_NAMES, REQUEST_READER
from tools.core.adapters import PUBLISHED_ADAPTERS, default_base_model, is_lora_adapter, resolve_adapter_base
from tools.export.config import check_serving, serving_options, write_config
from tools.export.exporters import EXPORTERS
from tools.export.merge import adapter_provenance, merge_lora_adapter
from tools.export.parity import FP32, parity_policy
from tools.export.versions import latest_version, refresh_adapter_helper

logger = logging.getLogger(__name__)


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

    The repository's current ``config.pbtxt`` settings are kept unless overridden.

    Args:
        name: ``text_encoder``, ``ranker`` or ``preference_generator``.
        checkpoint: A Hugging Face model folder, or a LoRA adapter folder (``adapter_config.json``), which
            is merged into its base model first.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one.
        base: Base model folder of a LoRA adapter (see :func:`tools.export.merge.resolve_adapter_base`).
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
    check_serving(name, config_overrides)  # refuse a setting the model does not take before any work
    options = serving_options(repository, name, **config_overrides)
    options.pop("embedding_dim", None)  # the encoder's output size comes from the checkpoint, not the old config
    export = EXPORTERS[name]
    if not is_lora_adapter(checkpoint):
        return export(checkpoint, repository, version, precision=precision, tolerance=tolerance, **options)
    base_dir = resolve_adapter_base(checkpoint, name, base, workspace=workspace)
    logger.info("merging LoRA adapter %s into %s", checkpoint, base_dir)
    with tempfile.TemporaryDirectory(prefix="instructrec-merged-") as tmp:
        merged = merge_lora_adapter(checkpoint, base_dir=base_dir, dest=Path(tmp) / "merged", name=name)
        return export(merged, repository, version, precision=precision, tolerance=tolerance,
                      provenance=adapter_provenance(checkpoint, base_dir=base_dir), **options)


def ensure_default_repository(
    repository: Path = Path("model_repository"), workspace: Path = Path("var")
) -> dict[str, int]:
    """Export the embedded base models into version 1 of each model that has no finished version yet.

    Idempotent and quick when done. The first run converts SmolLM2 from its GGUF (about 45 s) and exports
    the three models. A model with later versions is left alone even when pruning (``instructrec export
    --keep``) removed its version 1. A missing ``config.pbtxt`` is written with the defaults; an existing
    one is kept. A committed ``1/`` folder's copy of the adapters' shared helper is brought up to date.

    Args:
        repository: The model repository folder.
        workspace: The git-ignored working folder (converted base models).

    Returns:
        The latest finished version of each model, by name.
    """
    repository = Path(repository)
    for name, export in EXPORTERS.items():
        if latest_version(repository, name) is None:
            if name == REQUEST_READER:
                # The reader has no useful base model (its head is trained here): version 1 is the committed
                # adapter, merged into MiniLM.
                export_model(name, PUBLISHED_ADAPTERS / name, repository, version=1, workspace=workspace)
            else:
                export(default_base_model(name, workspace), repository, 1, write_model_config=False)
        refresh_adapter_helper(repository, name)
        if not (repository / name / "config.pbtxt").is_file():
            write_config(repository, name)
    return {name: latest_version(repository, name) for name in MODEL_NAMES}  # type: ignore[misc]
