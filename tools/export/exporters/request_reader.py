"""``request_reader``: a token classifier (MiniLM with a role head) as one ONNX graph of role logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from services.core.contracts import (
    ONNX_ATTENTION_MASK,
    ONNX_INPUT_IDS,
    ONNX_TOKEN_LOGITS,
    ONNX_TOKEN_TYPE_IDS,
    REQUEST_READER,
)
from services.core.reading import WORD_LABELS, split_words
from tools.core.request_reader import MAX_TOKENS, word_inputs
from tools.export.exporters.base import Exported, ExportJob, ModelExporter, run_export
from tools.export.onnx import export_graph, onnx_metadata
from tools.export.parity import max_abs_parity
from tools.export.samples import canary_inputs, sample_requests

_INPUTS = (ONNX_INPUT_IDS, ONNX_ATTENTION_MASK, ONNX_TOKEN_TYPE_IDS)


class _Logits:
    """The classifier's token logits as a plain function of the three inputs (what the graph computes)."""

    def __init__(self, model: Any) -> None:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):  # [B, T] each -> [B, T, L]
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).logits

        self.module = Wrapped().eval()


class RequestReaderExporter(ModelExporter):
    """Traces the classifier on two requests; checks the logits on longer, differently shaped ones."""

    name = REQUEST_READER

    def load(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForTokenClassification.from_pretrained(str(model_dir), dtype=torch.float32,
                                                                attn_implementation="eager")
        if model.config.num_labels != len(WORD_LABELS):
            raise ValueError(f"{model_dir}: {model.config.num_labels} labels, the reader has {len(WORD_LABELS)}")
        self.graph = _Logits(model).module

    def _inputs(self, requests: list[str], tensors: str) -> tuple[dict[str, Any], list[list[int]]]:
        batch, firsts = word_inputs(self.tokenizer, [[w.text for w in split_words(r)] for r in requests], MAX_TOKENS)
        fields = {name: batch.get(name) if name in batch else batch["input_ids"] * 0 for name in _INPUTS}
        if tensors == "np":
            fields = {k: v.numpy().astype("int64") for k, v in fields.items()}
        return fields, firsts

    def write(self, job: ExportJob) -> Exported:
        import torch

        requests = sample_requests()
        session = export_graph(self.graph, self._inputs(requests[:2], "pt")[0], job.staging,
                               output_name=ONNX_TOKEN_LOGITS, precision=job.precision, per_token=True)
        inputs, _ = self._inputs(requests, "np")
        (exported,) = session.run([ONNX_TOKEN_LOGITS], inputs)  # [B, T, L]
        with torch.no_grad():
            reference = self.graph(*self._inputs(requests, "pt")[0].values()).numpy()
        mask = inputs[ONNX_ATTENTION_MASK].astype(bool)  # padded tokens are never read
        parity = max_abs_parity(reference[mask], exported[mask], job.policy, REQUEST_READER)
        canary_inputs_, firsts = self._inputs([canary_inputs()[REQUEST_READER]], "np")
        (logits,) = session.run([ONNX_TOKEN_LOGITS], canary_inputs_)
        return Exported(
            metadata={**onnx_metadata(), "labels": list(WORD_LABELS), "max_tokens": MAX_TOKENS, "parity": parity},
            canary_output=_word_probabilities(logits[0], firsts[0]).reshape(-1),
            summary=f"(max abs diff {parity['max_abs_diff']:.2g})",
        )


def _word_probabilities(logits: np.ndarray, firsts: list[int]) -> np.ndarray:
    """[W, L]: each word's role probabilities at its first token (a word cut off: certainly O), as the served
    adapter computes them."""
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    out = np.zeros((len(firsts), probs.shape[-1]), dtype=np.float32)
    for word, token in enumerate(firsts):
        if token < 0:
            out[word, 0] = 1.0
        else:
            out[word] = probs[token]
    return out


def export_request_reader(model_dir: Path, repository: Path, version: int | None = None, **options: Any) -> Path:
    """Export a token classifier with the reader's labels (a merged reader adapter) as ``request_reader``.

    Returns:
        The written version folder.
    """
    return run_export(RequestReaderExporter(), model_dir, repository, version, **options)
