"""``preference_generator``: a causal LM saved as safetensors, served by torch ``generate()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core.contracts import PREFERENCE_GENERATOR
from services.core.modeltext import ranker_model_text
from tools.export.exporters.base import Exported, ExportJob, ModelExporter, run_export
from tools.export.hf import chat_tokenizer
from tools.export.parity import copy_parity
from tools.export.samples import sample_prompts

_GREEDY_TOKENS = 4


class PreferenceGeneratorExporter(ModelExporter):
    """Loads and saves the checkpoint again (normalising it to safetensors), then reloads the saved copy and
    checks it gives the source's logits and greedy tokens."""

    name = PREFERENCE_GENERATOR

    def load(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer = chat_tokenizer(model_dir)
        self.source = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def _compare(self, copy: Any, input_ids: Any) -> tuple[float, bool]:
        import torch

        settings = dict(max_new_tokens=_GREEDY_TOKENS, do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        with torch.no_grad():
            ref_logits = self.source(input_ids=input_ids).logits[0, -1]  # [V]
            new_logits = copy(input_ids=input_ids).logits[0, -1]  # [V]
            same_tokens = bool(torch.equal(self.source.generate(input_ids, **settings),
                                           copy.generate(input_ids, **settings)))
        return float((ref_logits - new_logits).abs().max()), same_tokens

    def write(self, job: ExportJob) -> Exported:
        import torch
        from transformers import AutoModelForCausalLM

        prompt = ranker_model_text(self.tokenizer, sample_prompts()[0], answer_prefix="")
        input_ids = torch.tensor([self.tokenizer(prompt, add_special_tokens=False)["input_ids"]])  # [1, L]
        self.source.save_pretrained(str(job.staging))
        copy = AutoModelForCausalLM.from_pretrained(str(job.staging), dtype=torch.float32).eval()
        parity = copy_parity(*self._compare(copy, input_ids), job.policy)
        return Exported(metadata={"format": "huggingface-safetensors", "parity": parity})


def export_preference_generator(model_dir: Path, repository: Path, version: int | None = None,
                                **options: Any) -> Path:
    """Export a causal LM with a chat template as ``preference_generator`` (``fp32`` only: it runs in torch).

    Options: those of :func:`tools.export.exporters.base.run_export`; the default tolerance on the saved
    copy's logits is 0.

    Returns:
        The written version folder.
    """
    return run_export(PreferenceGeneratorExporter(), model_dir, repository, version, **options)
