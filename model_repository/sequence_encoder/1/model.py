"""Triton python-backend adapter of ``sequence_encoder``: an item history -> the user vector (SASRec).

A request's ``item_ids`` input is one history: catalog item ids, oldest first (shape [1, n], any n; the
input allows ragged batches, so histories of different lengths share one execution). Ids this version
does not know (items added to the catalog after it was trained) are left out; a history with none it knows
is a bad request. The last ``max_history_items`` known ids are left-padded with 0 into one row.

Assets in this version folder (written by ``tools/export``): ``model.onnx`` (input: model item rows [B, L],
output: user vectors [B, H]), ``item_ids.json`` (catalog id of model row 1, 2, ...), ``item_vectors.npy``
(the item side of the dot product, what ``instructrec build-index`` indexes), ``metadata.json``, and
``triton_adapter.py`` (what the adapters share: tensor names from the config, one response per request).

Config parameters: ``max_history_items`` (default 50, the length the model was trained on), ``num_threads``
(ONNX Runtime intra-op threads, default 1).
"""

import json

import numpy as np
from triton_adapter import BatchedModel, onnx_session


class TritonPythonModel(BatchedModel):
    """Batches the histories of all requests in an execution into one ONNX Runtime run."""

    def load(self, args: dict) -> None:
        vocab = json.loads((self.version_dir / "item_ids.json").read_text())
        self.rows = {item_id: row for row, item_id in enumerate(vocab, start=1)}
        self.max_len = int(self.parameter("max_history_items", "50"))
        self.session = onnx_session(self.version_dir / "model.onnx", args, int(self.parameter("num_threads", "1")))
        self.graph_input = self.session.get_inputs()[0].name

    def prepare(self, texts: list[str]) -> list:
        known = [self.rows[i] for i in texts if i in self.rows]
        if not known:
            raise ValueError(f"none of the {len(texts)} item_ids is known to this model version")
        return [known[-self.max_len:]]

    def run(self, rows: list) -> np.ndarray:
        batch = np.zeros((len(rows), self.max_len), dtype=np.int64)  # [B, L], left-padded with 0
        for n, row in enumerate(rows):
            batch[n, self.max_len - len(row):] = row
        (vectors,) = self.session.run(None, {self.graph_input: batch})
        return vectors.astype(np.float32)  # [B, H]
