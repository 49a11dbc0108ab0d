"""LoRA adapters for an export: merging them into their base, and their provenance.

Telling an adapter from a full checkpoint and finding its base: ``tools/core/adapters.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core.contracts import REQUEST_READER, TEXT_ENCODER
from tools.core.adapters import adapter_config
from tools.export.hf import has_tokenizer, offline
from tools.export.provenance import combined_sha256, weights_sha256


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

    if name == REQUEST_READER:  # the base is a plain encoder: the head (saved in the adapter) gets the reader's labels
        from transformers import AutoModelForTokenClassification

        from services.core.reading import WORD_LABELS

        base = AutoModelForTokenClassification.from_pretrained(
            str(base_dir), dtype=torch.float32, num_labels=len(WORD_LABELS), id2label=dict(enumerate(WORD_LABELS)),
            label2id={label: n for n, label in enumerate(WORD_LABELS)})
    else:
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
    config = adapter_config(adapter_dir)
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
