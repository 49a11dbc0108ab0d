"""The intent ranker's scorers (#15): a residual head over the fused retrieval score whose output layer starts at
zero, on the LM's states (with trainable top layers over cached lower states) or on MiniLM features, and the
listwise loss with optional distillation from the fused score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tools.lab.frozen_lm import FrozenLM
from tools.lab.intent_ranker_data import IntentRankerConfig, ListExample
from tools.lab.intent_ranker_features import LMFeatures, TextFeatures, text_blocks


class ResidualHead(nn.Module):
    """Per-candidate residual from feature blocks [B, K, d_j]; the output layer starts at 0."""

    def __init__(self, dims: Sequence[int], kind: str = "mlp", hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        width = sum(dims)
        if kind == "mlp":
            self.body = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
            width = hidden
        elif kind == "linear":
            self.body = nn.Identity()
        else:
            raise ValueError(f"head {kind!r}: mlp or linear")
        self.out = nn.Linear(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([norm(b.float()) for norm, b in zip(self.norms, blocks)], dim=-1)  # [B, K, sum d]
        return self.out(self.body(x)).squeeze(-1)  # [B, K]


def residual_scores(fused: torch.Tensor, head: ResidualHead, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``fused + r``: [B, K]."""
    return fused + head(blocks)


class LMResidual(nn.Module):
    """The LM side: trainable top layers (if any) over cached lower states, the cached reads, the head."""

    def __init__(self, lm: FrozenLM, config: IntentRankerConfig) -> None:
        super().__init__()
        self.lm = lm
        self.trains_layers = lm.split < len(lm.model.layers)
        reads = len(lm.read_layers) + (0 if self.trains_layers else 1)
        dims = [lm.hidden] * (reads + (1 if self.trains_layers else 0))
        self.head = ResidualHead(dims, config.head, config.head_hidden, config.dropout)
        self.top = lm.top if self.trains_layers else nn.ModuleList()
        self.norm = lm.model.norm if self.trains_layers else None

    def blocks(self, features: LMFeatures, rows: Sequence[int]) -> list[torch.Tensor]:
        device = self.lm.device
        reads = torch.stack([features.reads[r] for r in rows]).to(device)  # [B, K, R, H]
        blocks = [reads[:, :, j] for j in range(reads.shape[2])]
        if self.trains_layers:
            lowers = [features.lower[r] for r in rows]
            length = max(x.shape[0] for x in lowers)
            hidden = torch.zeros(len(rows), length, self.lm.hidden, device=device)
            mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
            for b, x in enumerate(lowers):
                hidden[b, : x.shape[0]] = x.to(device).float()
                mask[b, : x.shape[0]] = 1
            top = self.lm.upper(hidden, mask)  # [B, L, H]
            pos = torch.tensor([features.positions[r] for r in rows], device=device)  # [B, K]
            blocks.append(top.gather(1, pos.unsqueeze(-1).expand(-1, -1, top.shape[-1])))
        return blocks

    def forward(self, fused: torch.Tensor, features: LMFeatures, rows: Sequence[int]) -> torch.Tensor:
        return residual_scores(fused, self.head, self.blocks(features, rows))


class TextResidual(nn.Module):
    """The comparator: the same residual head on MiniLM features."""

    def __init__(self, dim: int, config: IntentRankerConfig) -> None:
        super().__init__()
        self.head = ResidualHead([dim] * 3, config.head, config.head_hidden, config.dropout)

    def forward(self, fused: torch.Tensor, features: TextFeatures, rows: Sequence[int]) -> torch.Tensor:
        blocks = [b.to(fused.device) for b in text_blocks(features, rows)]
        return residual_scores(fused, self.head, blocks)


def fused_of(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([examples[r].fused for r in rows], dtype=torch.float32, device=device)


def teacher_of(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([examples[r].teacher_scores for r in rows], dtype=torch.float32, device=device)


def list_loss(scores: torch.Tensor, answers: torch.Tensor, teacher: torch.Tensor | None,
              config: IntentRankerConfig) -> torch.Tensor:
    """Cross-entropy on the target, plus ``distil`` x KL(softmax(teacher / T) || softmax(scores / T)) x T^2."""
    loss = nn.functional.cross_entropy(scores, answers)
    if teacher is not None and config.distil > 0:
        t = config.distil_temperature
        kl = nn.functional.kl_div(nn.functional.log_softmax(scores / t, dim=-1),
                                  nn.functional.log_softmax(teacher / t, dim=-1), log_target=True,
                                  reduction="batchmean")
        loss = loss + config.distil * kl * t * t
    return loss


def answers_of(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([examples[r].answer for r in rows], dtype=torch.long, device=device)


def batch_rows(n: int, batch: int, step: int, seed: int) -> list[int]:
    """Rows of ``step``'s batch: epochs are seeded permutations, so a resumed run draws the same batches."""
    per_epoch = max(1, n // batch)
    epoch, offset = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[offset * batch: (offset + 1) * batch].tolist()


@torch.no_grad()
def scores_of(model, examples, features, device, batch: int = 64) -> list[list[float]]:
    out = []
    for start in range(0, len(examples), batch):
        rows = list(range(start, min(len(examples), start + batch)))
        fused = fused_of(examples, rows, device)
        out += model(fused, features, rows).cpu().tolist()
    return out
