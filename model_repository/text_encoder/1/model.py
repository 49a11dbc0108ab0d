"""Triton python-backend adapter of ``text_encoder``: texts -> embeddings (mean-pooled, L2-normalised).

Assets in this version folder (written by ``tools/export``): ``model.onnx`` (inputs ``input_ids``,
``attention_mask``, ``token_type_ids``; one output [B, D]), tokenizer files, ``metadata.json``, and
``triton_adapter.py`` (what the adapters share: tensor names from the config, one response per request).

Config parameters: ``max_tokens`` (longer texts are truncated, default 256), ``num_threads`` (ONNX Runtime
intra-op threads, default 1).

A ``KIND_GPU`` instance runs on ONNX Runtime's CUDA provider on its device (needs ``onnxruntime-gpu``).
"""

import numpy as np
from triton_adapter import BatchedModel, run_onnx


class TritonPythonModel(BatchedModel):
    """Batches the texts of all requests in an execution into one ONNX Runtime run."""

    def load(self, args: dict) -> None:
        self.load_onnx_encoder(args, default_max_tokens=256)

    def run(self, rows: list) -> np.ndarray:
        encoded = self.tokenizer(rows, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np")
        return run_onnx(self.session, encoded).astype(np.float32)  # [B, D]
