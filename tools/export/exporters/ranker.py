"""``ranker``: a causal LM as one ONNX graph returning the label logits at the answer position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core import prompts
from services.core.contracts import ONNX_ATTENTION_MASK, ONNX_INPUT_IDS, ONNX_LABEL_LOGITS, RANKER, RANKER_ANSWER_PREFIX
from services.core.modeltext import label_token_ids, ranker_model_text, ranker_scorer, right_pad
from tools.export.exporters.base import Exported, ExportJob, ModelExporter, run_export
from tools.export.hf import chat_tokenizer
from tools.export.onnx import export_graph, onnx_metadata
from tools.export.parity import ranker_parity
from tools.export.samples import canary_inputs, parity_prompts


class RankerExporter(ModelExporter):
    """Traces the label scorer on two padded prompts; checks it against the full LM on each prompt unpadded."""

    name = RANKER

    def __init__(self, answer_prefix: str = RANKER_ANSWER_PREFIX) -> None:
        self.answer_prefix = answer_prefix

    def load(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer = chat_tokenizer(model_dir)
        self.label_ids = label_token_ids(self.tokenizer)
        # Eager attention traces to plain matmuls + an explicit mask, which exports with dynamic shapes.
        self.lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                       attn_implementation="eager").eval()

    def _row(self, prompt: str) -> list[int]:
        text = ranker_model_text(self.tokenizer, prompt, self.answer_prefix)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _inputs(self, rows: list[list[int]]) -> dict[str, Any]:
        input_ids, attention_mask = right_pad(rows, self.tokenizer.pad_token_id)  # [B, L] each
        return {ONNX_INPUT_IDS: input_ids, ONNX_ATTENTION_MASK: attention_mask}

    def _torch_logits(self, row: list[int]) -> Any:
        import torch

        with torch.no_grad():  # the full LM, unpadded: checks the wrapper, the padding and the export at once
            logits = self.lm(input_ids=torch.tensor([row]), use_cache=False).logits  # [1, L, V]
        return logits[0, -1, self.label_ids].numpy()

    def write(self, job: ExportJob) -> Exported:
        import torch

        samples = parity_prompts(job.precision)
        rows = [self._row(prompt) for prompt, _ in samples]
        trace = {name: torch.from_numpy(array) for name, array in self._inputs(rows[:2]).items()}
        session = export_graph(ranker_scorer(self.lm, self.label_ids), trace, job.staging,
                               output_name=ONNX_LABEL_LOGITS, precision=job.precision)
        (exported,) = session.run([ONNX_LABEL_LOGITS], self._inputs(rows))  # [B, C]
        reference = [self._torch_logits(row) for row in rows]
        parity = ranker_parity(reference, exported, [n for _, n in samples], job.policy)
        canary_rows = [self._row(canary_inputs()[RANKER])]
        (canary,) = session.run([ONNX_LABEL_LOGITS], self._inputs(canary_rows))
        return Exported(
            metadata={**onnx_metadata(), "labels": [prompts.label_token_text(label) for label in prompts.LABELS],
                      "label_token_ids": self.label_ids, "answer_prefix": self.answer_prefix, "parity": parity},
            canary_output=canary[0],
            config={"answer_prefix": self.answer_prefix},
            summary=f"(max abs diff {parity['max_abs_diff']:.2g}, top-1 agreement {parity['top1_agreement']:.2f})",
        )


def export_ranker(
    model_dir: Path, repository: Path, version: int | None = None, *,
    answer_prefix: str = RANKER_ANSWER_PREFIX, **options: Any,
) -> Path:
    """Export a causal LM (the base model, a LoRA-merged or a fully fine-tuned one) as ``ranker``.

    Args:
        model_dir: Hugging Face causal-LM folder with a chat template.
        repository: The model repository folder.
        version: Version to write; ``None`` for the next one.
        answer_prefix: Text after the assistant tag, before the label; must equal the training one.
        **options: Those of :func:`tools.export.exporters.base.run_export`; ``int8`` parity is also judged by
            ranking agreement.

    Returns:
        The written version folder.

    Raises:
        ValueError: If a label is not a single token in the model's tokenizer.
    """
    return run_export(RankerExporter(answer_prefix), model_dir, repository, version, **options)
