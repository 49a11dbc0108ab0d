"""The every-prefix LM experiment's two ways to combine a head with the sequence model (#15): cross-fitted SASRec
logits under the residual heads' training pairs, and late fusion of heads trained alone with scalar weights
fitted on validation."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.core import sequence_model
from tools.lab.lm_sequence_features import TRAIN, Pairs
from tools.train import sequential

log = logging.getLogger(__name__)


def user_folds(users: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    order = np.random.default_rng(seed).permutation(len(users))
    return {users[i]: n % folds for n, i in enumerate(order)}


def fold_sequence_models(split, folds: int, committed: Path, cache: Path, seed: int) -> tuple[dict[str, int], list]:
    """One SASRec per fold of users, trained (committed configuration, early-stopped on the other folds'
    validation items) on every user's training sequence but that fold's; cached under ``cache/fold<f>``."""
    fold_of = user_folds([c.user_id for c in split.test_cases], folds, seed)
    config = sequence_model.SequentialConfig(**json.loads((committed / sequence_model.CONFIG_FILE).read_text()))
    vocab = list(split.catalog.items)
    models = []
    for f in range(folds):
        folder = cache / f"fold{f}"
        if not sequence_model.is_sequence_checkpoint(folder):
            keep = [u for u, g in fold_of.items() if g != f]
            data = sequential.build_data(vocab, [split.train.get(u, []) for u in keep],
                                         [(c.history, c.target) for c in split.valid_cases if fold_of[c.user_id] != f])
            log.info("cross-fit fold %d: SASRec on %d users", f, len(keep))
            result = sequential.train_sequential(data, config, show_bar=False, checkpoint=folder / "checkpoint.pt",
                                                 resume=True)
            sequence_model.save(result.model, vocab, folder)
            (folder / "record.json").write_text(json.dumps(result.record, indent=2))
        model, model_vocab = sequence_model.load(folder)
        if model_vocab != vocab:
            raise ValueError(f"{folder} was trained on another catalog")
        models.append(model)
    return fold_of, models


def cross_fitted_sequence(pairs: Pairs, position: dict[str, int], fold_of: dict[str, int],
                          models: Sequence) -> torch.Tensor:
    """``pairs.sasrec`` with every training pair's logits replaced by its user's out-of-fold model's (whose
    vocabulary is the catalog's order, so model item ``n + 1`` is catalog row ``n``)."""
    out = pairs.sasrec.clone()
    train_rows = np.flatnonzero(pairs.kind == TRAIN)
    for f, model in enumerate(models):
        rows = [int(r) for r in train_rows if fold_of[pairs.user[r]] == f]
        for s in range(0, len(rows), 512):
            part = rows[s: s + 512]
            length = model.config.max_len
            seqs = torch.tensor([sequence_model.left_pad([position[i] + 1 for i in pairs.prefix[r]], length)
                                 for r in part])
            with torch.no_grad():
                out[part] = model(seqs) @ model.item_vectors()[1:].T
    return out


# ---- late fusion: SASRec plus heads trained alone, weights fitted on validation ----------------------------

FUSIONS = (
    ("SASRec (+) bias", ("bias alone",)),
    ("SASRec (+) LM", ("LM alone",)),
    ("SASRec (+) MiniLM", ("MiniLM alone",)),
    ("SASRec (+) MiniLM (+) LM", ("MiniLM alone", "LM alone")),
    ("SASRec (+) bias (+) LM", ("bias alone", "LM alone")),
    ("SASRec (+) bias (+) MiniLM", ("bias alone", "MiniLM alone")),
)
"""Stacking instead of a residual: each head is trained alone on the training pairs (where SASRec's own logits are
over-confident, having been fitted on those very targets), and only the scalar weights of SASRec and the heads
are fitted, on validation pairs, where every score is honest. Validation figures are cross-fitted over users
(each user's weights come from the other folds); test uses the weights fitted on all validation users."""


def seen_mask(pairs: Pairs, rows: Sequence[int], items: int) -> torch.Tensor:
    mask = torch.zeros(len(rows), items, dtype=torch.bool)
    for n, r in enumerate(rows):
        mask[n, torch.from_numpy(pairs.exclude[r])] = True
    return mask


def fit_weights(parts: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, l2: float = 1e-4) -> torch.Tensor:
    """Weights ``w`` [C] of ``sum_c w_c parts[c]`` ([C, n, N]) minimising full-catalog cross-entropy of the targets,
    seen items excluded; starts at (1, 0, ...), i.e. the first part alone."""
    w = torch.zeros(parts.shape[0], dtype=parts.dtype)
    w[0] = 1.0
    w.requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.einsum("c,cnm->nm", w, parts).masked_fill(mask, -math.inf)
        loss = nn.functional.cross_entropy(logits, targets) + l2 * (w[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def late_fusion(valid: torch.Tensor, test: torch.Tensor, valid_targets: torch.Tensor, valid_mask: torch.Tensor,
                folds: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Fused validation scores (cross-fitted over ``folds`` of users) and test scores (weights from all validation).

    ``valid`` / ``test``: [C, n, N] parts, SASRec first."""
    fold = torch.from_numpy(np.random.default_rng(seed).permutation(valid.shape[1]) % folds)
    out = torch.empty(valid.shape[1:])
    fold_weights = []
    for f in range(folds):
        held, kept = fold == f, fold != f
        w = fit_weights(valid[:, kept], valid_targets[kept], valid_mask[kept])
        out[held] = torch.einsum("c,cnm->nm", w, valid[:, held])
        fold_weights.append(w.tolist())
    w = fit_weights(valid, valid_targets, valid_mask)
    return out, torch.einsum("c,cnm->nm", w, test), {"weights": w.tolist(), "fold_weights": fold_weights}
