"""The sequential recommender served as ``sequence_encoder`` (SASRec): the model, its folder format and the
published checkpoint. Imported by its trainer (``tools/train/sequential.py``), the exporter, the fits and
evaluation, so none of them imports another's module to reach it.

Inputs are left-padded with 0 (catalog items are 1..N), so the most recent item is always at the last
position and the user vector is ``hidden[:, -1]``: the ONNX export reads it the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from services.core.contracts import SEQUENCE_ENCODER
from tools.core.adapters import PUBLISHED_ADAPTERS

PUBLISHED_DIR = PUBLISHED_ADAPTERS / SEQUENCE_ENCODER
"""The committed checkpoint `make run` serves (``instructrec train sequential --publish`` writes it)."""
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "item_ids.json"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class SequentialConfig:
    """Model and training hyper-parameters (defaults: RecBole 1.2.1's SASRec, tuned on validation)."""

    max_len: int = 50
    hidden: int = 64
    inner: int = 256
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10
    window_stride: int = 10
    """Training rows are windows of ``max_len + 1`` items ending every ``window_stride`` items, so each target
    is predicted with (nearly) its full context; the loss is taken only on the targets new to each window."""
    negatives: int = 0
    """0: the loss is a softmax over the whole catalog; N > 0: over each target and N items drawn uniformly per
    batch (shared by its targets; a drawn item that is the target is masked), for catalogs where a
    [targets x catalog] logit matrix no longer fits (issue #31). Uniform draws need no log-Q correction."""
    seed: int = 0
    threads: int = 0


class SequenceModel(nn.Module):
    """Item ids 1..num_items (0 = padding), left-padded sequences [B, L] -> user vectors [B, H]."""

    def __init__(self, num_items: int, config: SequentialConfig) -> None:
        super().__init__()
        self.config = config
        self.items = nn.Embedding(num_items + 1, config.hidden, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.hidden)
        self.norm = nn.LayerNorm(config.hidden, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, config.inner, dropout=config.dropout, activation="gelu",
            batch_first=True, norm_first=False, layer_norm_eps=1e-12,
        )
        layer.self_attn.dropout = config.attn_dropout  # the attention weights' dropout (RecBole's attn_dropout_prob)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def hidden_states(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: ``seqs`` [B, L] left-padded -> [B, L, H]."""
        length = seqs.shape[1]
        positions = torch.arange(length, device=seqs.device) + (self.config.max_len - length)
        x = self.items(seqs) + self.positions(positions).unsqueeze(0)  # [B, L, H]
        x = self.dropout(self.norm(x))
        # Blocked keys: the future (causal) and, for every query but itself, the left padding. Each position
        # keeps itself as a key, so a padded query's row is never fully masked (NaN); padded outputs are never
        # read. Built from comparisons only, which every ONNX runtime implements.
        index = torch.arange(length, device=seqs.device)
        future = index.unsqueeze(0) > index.unsqueeze(1)  # [L, L]: key j after query i
        other = index.unsqueeze(0) != index.unsqueeze(1)  # [L, L]
        pad = seqs == 0  # [B, L]
        blocked = future.unsqueeze(0) | (pad.unsqueeze(1) & other.unsqueeze(0))  # [B, L, L]
        mask = torch.zeros(blocked.shape, device=seqs.device).masked_fill(blocked, float("-inf"))
        mask = mask.repeat_interleave(self.config.heads, dim=0)  # [B * heads, L, L]
        return self.encoder(x, mask=mask)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """User vectors: the hidden state at the most recent position. [B, L] -> [B, H]."""
        return self.hidden_states(seqs)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        """The item side of the dot product, [num_items + 1, H] (row 0 is padding)."""
        return self.items.weight


def left_pad(ids: Sequence[int], length: int) -> list[int]:
    ids = list(ids)[-length:]
    return [0] * (length - len(ids)) + ids


def save(model: SequenceModel, vocab: Sequence[str], out_dir: Path) -> Path:
    """Write the trained model as a folder: weights, its catalog-id vocabulary and its configuration."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    (out_dir / VOCAB_FILE).write_text(json.dumps(list(vocab)))
    (out_dir / CONFIG_FILE).write_text(json.dumps(asdict(model.config), indent=2) + "\n")
    return out_dir


def load(folder: Path) -> tuple[SequenceModel, list[str]]:
    """Read a folder written by :func:`save`."""
    config = SequentialConfig(**json.loads((folder / CONFIG_FILE).read_text()))
    vocab = json.loads((folder / VOCAB_FILE).read_text())
    model = SequenceModel(len(vocab), config)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), vocab


def is_sequence_checkpoint(folder: Path) -> bool:
    return all((Path(folder) / name).is_file() for name in (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE))


def score_candidates(model: SequenceModel, index: dict[str, int], history: Sequence[str],
                     candidates: Sequence[str]) -> list[float]:
    """Scores of ``candidates`` for ``history`` (oldest first); items the model does not know score -inf."""
    with torch.no_grad():
        seq = torch.tensor([left_pad([index[i] for i in history if i in index], model.config.max_len)])
        user = model(seq)[0]
        vectors = model.item_vectors()
        return [float(user @ vectors[index[c]]) if c in index else -math.inf for c in candidates]


class SequenceScorer:
    """A saved checkpoint loaded for offline scoring: the served sequence model as an evaluation baseline."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.model, vocab = load(self.folder)
        self.rows = {item: n for n, item in enumerate(vocab, start=1)}

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[N, H] user vectors of the histories (oldest first; items the model does not know are skipped)."""
        length = self.model.config.max_len
        seqs = torch.tensor([left_pad([self.rows[i] for i in h if i in self.rows], length) for h in histories])
        return self.model(seqs).numpy()

    @torch.no_grad()
    def item_vectors(self) -> dict[str, np.ndarray]:
        """The item vector of every item the model knows (what the sequence index holds)."""
        vectors = self.model.item_vectors().numpy()  # [V + 1, H]
        return {item: vectors[n] for item, n in self.rows.items()}

    @torch.no_grad()
    def catalog_scores(self, history: Sequence[str]) -> dict[str, float]:
        """The score of every item the model knows for ``history`` (oldest first; unknown items skipped)."""
        seq = torch.tensor([left_pad([self.rows[i] for i in history if i in self.rows], self.model.config.max_len)])
        scores = (self.model(seq) @ self.model.item_vectors().T)[0].numpy()  # [V + 1]
        return {item: float(scores[n]) for item, n in self.rows.items()}

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> list[float]:
        """Scores of ``candidates``; items the model does not know score -inf."""
        return score_candidates(self.model, self.rows, history, candidates)


class ExportedSequenceScorer:
    """A sequence_encoder version folder of the model repository (its ONNX graph and item vectors) scored in
    this process: what that version serves, for comparing a retrained model with it."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        from services.core.contracts import SEQUENCE_ITEM_IDS_FILE, SEQUENCE_ITEM_VECTORS_FILE

        self.folder = Path(folder)
        vocab = json.loads((self.folder / SEQUENCE_ITEM_IDS_FILE).read_text())
        self.rows = {item: n for n, item in enumerate(vocab, start=1)}
        self._vectors = np.load(self.folder / SEQUENCE_ITEM_VECTORS_FILE)  # [V + 1, H]
        self.max_len = int(json.loads((self.folder / "metadata.json").read_text())["max_history_items"])
        self._session = ort.InferenceSession(str(self.folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def user_vectors(self, histories: Sequence[Sequence[str]], batch: int = 256) -> np.ndarray:
        from services.core.contracts import ONNX_ITEM_INDICES, ONNX_USER_VECTOR

        rows = np.array([left_pad([self.rows[i] for i in h if i in self.rows], self.max_len) for h in histories],
                        dtype=np.int64)
        return np.concatenate([self._session.run([ONNX_USER_VECTOR], {ONNX_ITEM_INDICES: rows[s:s + batch]})[0]
                               for s in range(0, len(rows), batch)])

    def item_vectors(self) -> dict[str, np.ndarray]:
        return {item: self._vectors[n] for item, n in self.rows.items()}
