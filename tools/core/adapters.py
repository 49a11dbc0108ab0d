"""LoRA adapter folders: telling them apart from full checkpoints and finding the base model they apply to.

Shared by the trainers (which write them), the fits and evaluation (which load them) and the exporter (which
merges them): none of those imports another to reach these rules.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from services.common.settings import ROOT
from services.core.contracts import REQUEST_READER, SEQUENCE_ENCODER, TEXT_ENCODER

logger = logging.getLogger(__name__)

PUBLISHED_ADAPTERS = ROOT / "tools" / "train" / "adapters"
"""The committed adapters (one folder per model, ``instructrec train --publish``): what `make run` serves."""

ADAPTER_CONFIG = "adapter_config.json"


def is_lora_adapter(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is a PEFT adapter folder (it has ``adapter_config.json``)."""
    return (Path(checkpoint) / ADAPTER_CONFIG).is_file()


def adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """The PEFT ``adapter_config.json`` of an adapter folder."""
    return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())


def default_base_model(name: str, workspace: Path = Path("var")) -> Path:
    """The base model a LoRA adapter of ``name`` is trained on, unless the adapter or ``--base`` says otherwise.

    It is also what version 1 of ``name`` is exported from.
    """
    from tools.core.base_models import minilm_dir, smollm2_dir

    if name == SEQUENCE_ENCODER:
        from tools.core.sequence_model import PUBLISHED_DIR

        return PUBLISHED_DIR  # trained here, not a pretrained model: version 1 is the committed model
    return minilm_dir() if name in (TEXT_ENCODER, REQUEST_READER) else smollm2_dir(workspace)


def resolve_adapter_base(
    adapter_dir: Path, name: str, base: Path | None = None, *, workspace: Path = Path("var")
) -> Path:
    """The base model folder of a LoRA adapter.

    Order: ``base`` when given; else the adapter's ``base_model_name_or_path`` when that is a local folder
    (a hub id cannot be fetched here); else :func:`default_base_model`.
    """
    if base is not None:
        if not Path(base).is_dir():
            raise FileNotFoundError(f"base model folder {base} does not exist")
        return Path(base)
    recorded = adapter_config(adapter_dir).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    fallback = default_base_model(name, workspace)
    if recorded:
        logger.info("adapter base %r is not a local folder; using %s", recorded, fallback)
    return fallback
