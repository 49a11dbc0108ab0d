"""LoRA adapters: telling them apart from full checkpoints, finding their base, merging them, their provenance."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from services.core.contracts import SEQUENCE_ENCODER, TEXT_ENCODER
from tools.export.hf import has_tokenizer, offline
from tools.export.provenance import combined_sha256, weights_sha256

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def is_lora_adapter(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is a PEFT adapter folder (it has ``adapter_config.json``)."""
    return (Path(checkpoint) / ADAPTER_CONFIG).is_file()


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())


def default_base_model(name: str, workspace: Path = Path("var")) -> Path:
    """The base model a LoRA adapter of ``name`` is trained on, unless the adapter or ``--base`` says otherwise.

    It is also what version 1 of ``name`` is exported from.
    """
    from tools.base_models import minilm_dir, smollm2_dir

    if name == SEQUENCE_ENCODER:
        from tools.train.sequential import PUBLISHED_DIR

        return PUBLISHED_DIR  # trained here, not a pretrained model: version 1 is the committed model
    return minilm_dir() if name == TEXT_ENCODER else smollm2_dir(workspace)


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
    recorded = _adapter_config(adapter_dir).get("base_model_name_or_path")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    fallback = default_base_model(name, workspace)
    if recorded:
        logger.info("adapter base %r is not a local folder; using %s", recorded, fallback)
    return fallback


def merge_lora_adapter(adapter_dir: Path, *, base_dir: Path, dest: Path, name: str) -> Path:
    """Merge a LoRA adapter into its base model (``merge_and_unload``) and save a plain Hugging Face folder.

    The tokenizer comes from the adapter folder when it holds one (a trainer may save it there), else from
    the base.

    Returns:
        ``dest``, with safetensors weights and the tokenizer.
    """
    offline()
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto = AutoModel if name == TEXT_ENCODER else AutoModelForCausalLM
    base = auto.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.eval()
    dest.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(dest))
    tokenizer_dir = adapter_dir if has_tokenizer(adapter_dir) else base_dir
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(dest))
    return dest


def adapter_provenance(adapter_dir: Path, *, base_dir: Path) -> dict[str, Any]:
    """``metadata.json`` source fields of an export made from a merged LoRA adapter."""
    adapter_hashes = weights_sha256(adapter_dir)
    config = _adapter_config(adapter_dir)
    targets = config.get("target_modules")
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
            "target_modules": sorted(targets) if isinstance(targets, list) else targets,
        },
    }
