"""``sequence_encoder``: the SASRec model as one ONNX graph (item rows in, user vector out), its vocabulary and
its item vectors (what `instructrec build-index` indexes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.core.contracts import (
    ONNX_ITEM_INDICES,
    ONNX_USER_VECTOR,
    SEQUENCE_ENCODER,
    SEQUENCE_ITEM_IDS_FILE,
    SEQUENCE_ITEM_VECTORS_FILE,
)
from tools.export.exporters.base import Exported, ExportJob, ModelExporter, run_export
from tools.export.onnx import export_graph, onnx_metadata
from tools.export.parity import max_abs_parity
from tools.export.samples import sample_histories


class SequenceEncoderExporter(ModelExporter):
    """Traces the model on two padded histories; checks it on other histories, the padded rows included."""

    name = SEQUENCE_ENCODER

    def load(self, model_dir: Path) -> None:
        from tools.core import sequence_model

        if not sequence_model.is_sequence_checkpoint(model_dir):
            raise ValueError(f"{model_dir} is not a sequence model folder (model.safetensors, item_ids.json, "
                             "config.json from `instructrec train sequential`)")
        self.model, self.vocab = sequence_model.load(model_dir)
        self.rows = {item: n for n, item in enumerate(self.vocab, start=1)}

    def _batch(self, histories: list[list[str]]) -> Any:
        import torch

        from tools.core.sequence_model import left_pad

        length = self.model.config.max_len
        rows = [left_pad([self.rows[i] for i in h if i in self.rows], length) for h in histories]
        return torch.tensor(rows, dtype=torch.long)  # [B, L]

    def write(self, job: ExportJob) -> Exported:
        import numpy as np
        import torch

        histories = sample_histories(self.vocab)
        # The fused attention kernels of eval mode have no ONNX form: trace the plain ops.
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            session = export_graph(self.model, {ONNX_ITEM_INDICES: self._batch(histories[:2])}, job.staging,
                                   output_name=ONNX_USER_VECTOR, precision=job.precision)
            with torch.no_grad():
                reference = self.model(self._batch(histories)).numpy()
                canary_history = histories[0]
                canary = self.model(self._batch([canary_history])).numpy()[0]
                item_vectors = self.model.item_vectors().detach().numpy().astype(np.float32)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        (exported,) = session.run([ONNX_USER_VECTOR], {ONNX_ITEM_INDICES: self._batch(histories).numpy()})
        parity = max_abs_parity(reference, exported, job.policy, SEQUENCE_ENCODER)
        (job.staging / SEQUENCE_ITEM_IDS_FILE).write_text(json.dumps(self.vocab))
        np.save(job.staging / SEQUENCE_ITEM_VECTORS_FILE, item_vectors)
        dim = int(exported.shape[1])
        return Exported(
            metadata={**onnx_metadata(), "embedding_dim": dim, "items": len(self.vocab),
                      "max_history_items": self.model.config.max_len, "parity": parity},
            canary_output=canary,
            canary_input=canary_history,
            config={"embedding_dim": dim, "max_history_items": self.model.config.max_len},
            summary=f"(max abs diff {parity['max_abs_diff']:.2g})",
        )


def export_sequence_encoder(model_dir: Path, repository: Path, version: int | None = None, **options: Any) -> Path:
    """Export a sequence model folder (`instructrec train sequential`) as ``sequence_encoder``.

    Options: those of :func:`tools.export.exporters.base.run_export`.

    Returns:
        The written version folder.
    """
    return run_export(SequenceEncoderExporter(), model_dir, repository, version, **options)
