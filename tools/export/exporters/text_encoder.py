"""``text_encoder``: a BERT-style encoder as one ONNX graph of mean pooling and L2 normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.core.contracts import (
    ONNX_ATTENTION_MASK,
    ONNX_EMBEDDING,
    ONNX_INPUT_IDS,
    ONNX_TOKEN_TYPE_IDS,
    TEXT_ENCODER,
)
from services.core.modeltext import mean_pooled_encoder
from tools.export.exporters.base import Exported, ExportJob, ModelExporter, run_export
from tools.export.onnx import export_graph, onnx_metadata
from tools.export.parity import encoder_parity
from tools.export.samples import canary_inputs, sample_texts

_INPUTS = (ONNX_INPUT_IDS, ONNX_ATTENTION_MASK, ONNX_TOKEN_TYPE_IDS)


class TextEncoderExporter(ModelExporter):
    """Traces the mean-pooled encoder on a padded pair; checks it on the longer, differently shaped samples."""

    name = TEXT_ENCODER

    def load(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        encoder = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
        self.encoder = mean_pooled_encoder(encoder)

    def _inputs(self, texts: list[str], tensors: str) -> dict[str, Any]:
        batch = self.tokenizer(texts, padding=True, return_tensors=tensors, return_token_type_ids=True)
        return {name: batch[name] if tensors == "pt" else batch[name].astype("int64") for name in _INPUTS}

    def _torch_embedding(self, text: str) -> Any:
        import torch

        with torch.no_grad():  # unpadded, one at a time: also checks that padding changes nothing
            return self.encoder(*self._inputs([text], "pt").values())[0].numpy()

    def write(self, job: ExportJob) -> Exported:
        texts = sample_texts()
        session = export_graph(self.encoder, self._inputs(texts[:2], "pt"), job.staging,
                               output_name=ONNX_EMBEDDING, precision=job.precision)
        (exported,) = session.run([ONNX_EMBEDDING], self._inputs(texts, "np"))  # [B, D]
        parity = encoder_parity([self._torch_embedding(text) for text in texts], exported, job.policy)
        (canary,) = session.run([ONNX_EMBEDDING], self._inputs([canary_inputs()[TEXT_ENCODER]], "np"))
        embedding_dim = int(exported.shape[1])
        return Exported(
            metadata={**onnx_metadata(), "embedding_dim": embedding_dim, "pooling": "mean, l2-normalised",
                      "parity": parity},
            canary_output=canary[0],
            config={"embedding_dim": embedding_dim},
            summary=f"(max abs diff {parity['max_abs_diff']:.2g})",
        )


def export_text_encoder(model_dir: Path, repository: Path, version: int | None = None, **options: Any) -> Path:
    """Export a BERT-style encoder (e.g. all-MiniLM-L6-v2 or a fine-tuned copy) as ``text_encoder``.

    ``int8`` parity is judged by cosine similarity as well. Options: those of
    :func:`tools.export.exporters.base.run_export`.

    Returns:
        The written version folder.
    """
    return run_export(TextEncoderExporter(), model_dir, repository, version, **options)
