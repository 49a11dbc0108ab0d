"""Experimental (#15): the frozen LM read at every item of a user's history, with a head over the whole catalog.

RANKER-RESEARCH.md's recipe (b), the cheapest test of whether SmolLM2 adds anything to the sequence model. One
causal pass per user over their most recent ``window`` items, one line each (``Title (Year) [Genres]``), gives a
hidden state at every item's last token; the state at item j is a (history prefix, next item) pair. That is one
1,682-way label per ~18 tokens, against one 10-way label per ~265 tokens for the listwise prompt.

The window is the end of train + validation, so ONE pass per user serves every split without leaking: causal
attention means the state at the last training item has not seen the validation item, and its target is the
validation item; the state at the validation item predicts the test item; earlier states predict training items
and are the only ones trained on.

Heads (all trained with full-catalog cross-entropy on the training pairs only, model chosen on validation):
- ``LM alone``: Linear over [LayerNorm(layer-15 state), LayerNorm(final state)] with a per-item bias. The bias
  alone is learned popularity, so ``bias alone`` is reported beside it: the LM must beat that, not just the
  hand-written popularity rule.
- ``MiniLM alone``: the same head on the served text encoder's vectors of the same prefix (mean of the window's
  items so far and the last item), so the comparison says whether a 135M LM adds more than a 22M encoder.
- ``SASRec + ...``: the same heads as a residual on the committed sequence model's logits of the same prefix,
  initialised to zero (step 0 is exactly SASRec), plus the ``SASRec + bias`` control; with
  ``--cross-fit-sequence K`` they train on the logits of SASRecs that never saw the user.
- ``SASRec (+) ...``: late fusion, the heads trained alone plus SASRec with scalar weights fitted on validation
  (cross-fitted over users for the validation figures).

    python -m tools.lab.lm_sequence --out var/lm-sequence/run        # ~30 min of LM passes on 2 cores, cached
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.core import prompts
from tools.core import sequence_model
from tools.core.machine import machine
from tools.core.metrics import bootstrap
from tools.core.sampling import random_negatives
from tools.lab.intent_ranker import FrozenLM, PromptTokenizer, padded_batch
from tools.train import sequential

log = logging.getLogger(__name__)

HEADER = "Movies this user watched, oldest first:"
TRAIN, VALID, TEST = "train", "valid", "test"


@dataclass
class LMSequenceConfig:
    data_dir: Path = Path("var/data/movielens-100k")
    base_model: Path = Path("var/base_models/smollm2-135m-instruct")
    encoder: Path = Path("tools/train/adapters/text_encoder")
    sequence: Path = Path("tools/train/adapters/sequence_encoder")
    out_dir: Path = Path("var/lm-sequence/run")
    cache_dir: Path | None = None
    window: int = 24
    """Most recent items of train + validation read per user (one line each)."""
    read_layers: tuple[int, ...] = (15,)
    users: int = 0
    """Users (0: all); the first N of the split's order."""
    feature_batch: int = 8
    chunk_users: int = 64
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    dropout: float = 0.2
    head_rank: int = 0
    """Rank of the heads' item scores (0: a full Linear, inputs x items weights)."""
    draws: int = 5
    """1+9 random-negative lists per validation/test user."""
    negatives: int = 9
    cross_fit_sequence: int = 0
    """Folds of users for cross-fitted SASRec logits under the residual heads' training pairs: each user's come
    from a SASRec trained without that user (0: the committed model's, which was fitted on those very targets)."""
    fusion_folds: int = 5
    """Folds of validation users for the cross-fitted late-fusion weights."""
    seed: int = 0
    threads: int = 2


# ---- the per-user windows and their LM states -----------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One user's window: the items read, what each state predicts and which split that target belongs to."""

    user: str
    items: tuple[str, ...]
    targets: tuple[str, ...]
    kinds: tuple[str, ...]


def windows(split, window: int, users: int = 0) -> list[Window]:
    """Train + validation (the last ``window``), each item's next item as its target, the test item last."""
    out = []
    valid = {c.user_id: c.target for c in split.valid_cases}
    for case in split.test_cases[: users or None]:
        seq = [*split.train.get(case.user_id, []), *([valid[case.user_id]] if case.user_id in valid else [])]
        items = seq[-window:]
        if not items:
            continue
        targets = [*items[1:], case.target]
        n_train = len(split.train.get(case.user_id, []))
        start = len(seq) - len(items)
        kinds = []
        for j in range(len(items)):
            t = start + j + 1  # the target's index in seq (len(seq) = the test item)
            kinds.append(TRAIN if t < n_train else VALID if t < len(seq) else TEST)
        out.append(Window(case.user_id, tuple(items), tuple(targets), tuple(kinds)))
    return out


def window_segments(catalog, items: Sequence[str]) -> tuple[str, list[str]]:
    return HEADER, [f"\n{prompts.candidate_text(catalog[i])}" for i in items]


def lm_states(lm: FrozenLM, catalog, rows: Sequence[Window], batch: int) -> tuple[list[torch.Tensor], int]:
    """[len(items), R, H] half-precision states per window (read layers then the final normed state); tokens."""
    tok = PromptTokenizer(lm.tokenizer)
    encoded = [tok(*window_segments(catalog, w.items)) for w in rows]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out: list = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))
    for start in range(0, len(order), batch):
        chunk = order[start: start + batch]
        ids, mask = padded_batch([encoded[i][0] for i in chunk], pad)
        _, reads = lm.lower(ids.to(lm.device), mask.to(lm.device))
        for b, i in enumerate(chunk):
            pos = torch.tensor(encoded[i][1], device=lm.device)
            out[i] = torch.stack([r[b, pos] for r in reads], dim=1).half().cpu()
    return out, sum(len(e[0]) for e in encoded)


def cached_states(config: LMSequenceConfig, catalog, rows: Sequence[Window]) -> tuple[list[torch.Tensor], dict]:
    """LM states of every window, computed in chunks of users that are cached on disk (so a stopped run resumes)."""
    from tqdm import tqdm

    cache = Path(config.cache_dir or config.out_dir / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    lm = None
    states: list[torch.Tensor] = []
    cost = {"tokens": 0, "seconds": 0.0, "computed_users": 0, "cached_users": 0}
    """tokens / seconds: the LM passes behind every state, whether computed now or read from the cache."""
    for start in tqdm(range(0, len(rows), config.chunk_users), desc="LM states"):
        chunk = rows[start: start + config.chunk_users]
        layers = "-".join(map(str, config.read_layers))
        key = f"w{config.window}-r{layers}-{chunk[0].user}-{chunk[-1].user}-{len(chunk)}"
        path = cache / f"{key}.pt"
        if path.exists():
            saved = torch.load(path)
            if saved["items"] == [list(w.items) for w in chunk]:
                states += saved["states"]
                cost["tokens"] += saved["tokens"]
                cost["seconds"] += saved["seconds"]
                cost["cached_users"] += len(chunk)
                continue
        if lm is None:
            lm = FrozenLM(config.base_model, 0, config.read_layers, torch.device("cpu"))
        began = time.monotonic()
        part, tokens = lm_states(lm, catalog, chunk, config.feature_batch)
        seconds = time.monotonic() - began
        torch.save({"items": [list(w.items) for w in chunk], "states": part, "tokens": tokens,
                    "seconds": seconds}, path)
        cost["tokens"] += tokens
        cost["seconds"] += seconds
        cost["computed_users"] += len(chunk)
        log.info("users %d-%d: %d tokens in %.0f s", start, start + len(chunk), tokens, seconds)
        states += part
    return states, cost



# ---- pairs, features and the base scores ----------------------------------------------------------------


@dataclass
class Pairs:
    """Every (prefix state, next item) pair of every window, flattened."""

    user: list[str]
    kind: np.ndarray  # [P] str
    target: np.ndarray  # [P] catalog row of the target
    exclude: list[np.ndarray]  # catalog rows seen before the target (not ranked in full ranking)
    lm: torch.Tensor  # [P, R, H] half
    text: torch.Tensor  # [P, 2, D]: mean of the window's items so far, the last item (served text encoder)
    sasrec: torch.Tensor  # [P, N] the committed sequence model's logits of the full prefix
    prefix: list[list[str]] = field(default_factory=list)  # the full history before each target
    sasrec_train: torch.Tensor | None = None  # [P, N] the residual's base when training (None: ``sasrec``)


def build_pairs(split, rows: Sequence[Window], states: Sequence[torch.Tensor], retrieval) -> Pairs:
    position = retrieval.position
    valid = {c.user_id: c.target for c in split.valid_cases}
    user, kind, target, exclude, prefixes, text = [], [], [], [], [], []
    vectors = torch.from_numpy(np.asarray(retrieval.item_vectors, dtype=np.float32))
    for w in rows:
        seq = [*split.train.get(w.user, []), *([valid[w.user]] if w.user in valid else [])]
        start = len(seq) - len(w.items)
        rows_w = torch.tensor([position[i] for i in w.items])
        cumulative = vectors[rows_w].cumsum(0) / torch.arange(1, len(w.items) + 1).unsqueeze(1)
        for j, (t, k) in enumerate(zip(w.targets, w.kinds)):
            prefix = seq[: start + j + 1]
            user.append(w.user)
            kind.append(k)
            target.append(position[t])
            exclude.append(np.array([position[i] for i in set(prefix)]))
            prefixes.append(prefix)
            text.append(torch.stack([cumulative[j], vectors[rows_w[j]]]))
    sasrec = []
    for s in range(0, len(prefixes), 512):
        part = retrieval.sequence_scores(prefixes[s: s + 512])
        low = np.nanmin(part, axis=1, keepdims=True) - 1.0
        sasrec.append(torch.from_numpy(np.where(np.isnan(part), low, part).astype(np.float32)))
    return Pairs(user, np.array(kind), np.array(target), exclude, torch.cat([s.float() for s in states]).half(),
                 torch.stack(text), torch.cat(sasrec), prefixes)


class CatalogHead(nn.Module):
    """LayerNorm per feature block, dropout, Linear to one score per catalog item (with a per-item bias).

    ``zero``: the output weight and bias start at 0, so a residual head starts exactly at the score under it.
    ``dims`` empty: the bias alone (learned popularity). ``rank`` > 0: the Linear is factored through ``rank``
    dimensions (a projection, then ``rank``-dimensional item vectors), ``rank x (inputs + items)`` weights instead
    of ``inputs x items``."""

    def __init__(self, dims: Sequence[int], items: int, dropout: float, zero: bool, rank: int = 0) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(items))
        self.linear = None
        if dims:
            out = nn.Linear(rank or sum(dims), items)
            self.linear = nn.Sequential(nn.Linear(sum(dims), rank, bias=False), out) if rank else out
            nn.init.zeros_(out.bias)
            if zero:
                nn.init.zeros_(out.weight)

    def forward(self, blocks: torch.Tensor | None) -> torch.Tensor:
        if self.linear is None:
            return self.bias.unsqueeze(0)
        x = torch.cat([norm(blocks[:, b].float()) for b, norm in enumerate(self.norms)], dim=1)
        return self.linear(self.dropout(x)) + self.bias


@dataclass
class Scorer:
    """A trained head over one feature set, alone or as a residual on the sequence model's logits."""

    name: str
    features: str | None  # "lm", "text" or None (bias only)
    residual: bool

    def blocks(self, pairs: Pairs, rows) -> torch.Tensor | None:
        return None if self.features is None else getattr(pairs, self.features)[rows]

    def base(self, pairs: Pairs, rows, training: bool = False) -> torch.Tensor:
        if not self.residual:
            return torch.zeros(len(rows), pairs.sasrec.shape[1])
        return (pairs.sasrec_train if training and pairs.sasrec_train is not None else pairs.sasrec)[rows]


SCORERS = (
    Scorer("bias alone", None, False),
    Scorer("LM alone", "lm", False),
    Scorer("MiniLM alone", "text", False),
    Scorer("SASRec + bias", None, True),
    Scorer("SASRec + LM", "lm", True),
    Scorer("SASRec + MiniLM", "text", True),
)


# ---- metrics --------------------------------------------------------------------------------------------


def full_ranks(scores: torch.Tensor, pairs: Pairs, rows: Sequence[int]) -> np.ndarray:
    """0-based rank of each target among the catalog items not seen before it (ties count against it)."""
    out = np.empty(len(rows), dtype=np.int64)
    for n, r in enumerate(rows):
        s = scores[n].clone()
        s[torch.from_numpy(pairs.exclude[r])] = -math.inf
        t = pairs.target[r]
        out[n] = int((s >= s[t]).sum()) - 1
    return out


def list_ranks(scores: torch.Tensor, pairs: Pairs, rows: Sequence[int], lists: Sequence[np.ndarray]) -> np.ndarray:
    """[len(rows), draws] ranks of the target within each 1+K list (catalog rows, target included)."""
    out = np.empty((len(rows), len(lists[0])), dtype=np.int64)
    for n, (r, user_lists) in enumerate(zip(rows, lists)):
        t = scores[n, pairs.target[r]]
        for d, cands in enumerate(user_lists):
            out[n, d] = int((scores[n, torch.from_numpy(cands)] >= t).sum()) - 1
    return out


def metrics(full: np.ndarray, lists: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user metrics: full-ranking HR@10 / NDCG@10, 1+K HR@1 / NDCG@5 averaged over the draws."""
    ndcg = lambda r, k: np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)  # noqa: E731
    return {"HR@10": (full < 10).astype(float), "NDCG@10": ndcg(full, 10),
            "HR@1 (1+9)": (lists < 1).mean(axis=1), "NDCG@5 (1+9)": ndcg(lists, 5).mean(axis=1)}


def random_lists(split, pairs: Pairs, rows: Sequence[int], draws: int, negatives: int, seed: int,
                 position: dict[str, int]) -> list[np.ndarray]:
    """Per row, ``draws`` lists of the target + ``negatives`` random items the user never interacted with."""
    ids = list(split.catalog.items)
    seen = {c.user_id: c.seen for c in split.test_cases}
    out = []
    for r in rows:
        user = pairs.user[r]
        rng = random.Random(f"{seed}:{user}:{pairs.kind[r]}")
        out.append(np.array([[pairs.target[r], *(position[i] for i in random_negatives(ids, set(seen[user]),
                                                                                        negatives, rng))]
                             for _ in range(draws)]))
    return out


# ---- training -------------------------------------------------------------------------------------------


def scores_of(head: CatalogHead, scorer: Scorer, pairs: Pairs, rows: Sequence[int], batch: int = 512) -> torch.Tensor:
    head.eval()
    with torch.no_grad():
        parts = []
        for s in range(0, len(rows), batch):
            r = rows[s: s + batch]
            parts.append(scorer.base(pairs, r) + head(scorer.blocks(pairs, r)))
    return torch.cat(parts)


def evaluate_scores(scores: torch.Tensor, pairs: Pairs, rows, lists) -> dict[str, np.ndarray]:
    return metrics(full_ranks(scores, pairs, rows), list_ranks(scores, pairs, rows, lists))


def evaluate_rows(head, scorer, pairs, rows, lists) -> dict[str, np.ndarray]:
    return evaluate_scores(scores_of(head, scorer, pairs, rows), pairs, rows, lists)


def fit(scorer: Scorer, pairs: Pairs, train_rows: np.ndarray, valid_rows, valid_lists, config: LMSequenceConfig):
    """Train one head; keep the epoch with the best validation NDCG@10 (epoch 0 = the untrained head)."""
    torch.manual_seed(config.seed)
    dims = [] if scorer.features is None else [getattr(pairs, scorer.features).shape[2]] * \
        getattr(pairs, scorer.features).shape[1]
    head = CatalogHead(dims, pairs.sasrec.shape[1], config.dropout, zero=scorer.residual, rank=config.head_rank)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    targets = torch.from_numpy(pairs.target)
    curve, best, best_state = [], -1.0, None
    began = time.monotonic()
    for epoch in range(config.epochs + 1):
        if epoch:
            head.train()
            order = rng.permutation(train_rows)
            losses = []
            for s in range(0, len(order), config.batch_size):
                r = order[s: s + config.batch_size]
                logits = scorer.base(pairs, r, training=True) + head(scorer.blocks(pairs, r))
                loss = nn.functional.cross_entropy(logits, targets[r])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        m = evaluate_rows(head, scorer, pairs, valid_rows, valid_lists)
        point = {"epoch": epoch, "loss": float(np.mean(losses)) if epoch else None,
                 **{k: float(v.mean()) for k, v in m.items()}}
        curve.append(point)
        log.info("%s epoch %d: %s", scorer.name, epoch, point)
        if point["NDCG@10"] > best:
            best, best_state = point["NDCG@10"], {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head, curve, time.monotonic() - began


# ---- cross-fitted sequence model ------------------------------------------------------------------------


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


def run(config: LMSequenceConfig) -> dict:
    from tools.lab.intent_ranker import HybridRetrieval
    from tools.train.examples import load_training_data

    random.seed(config.seed)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    data = load_training_data(config.data_dir)
    split = data.split
    rows = windows(split, config.window, config.users)
    states, cost = cached_states(config, split.catalog, rows)
    retrieval = HybridRetrieval(data, config.encoder, config.sequence, torch.device("cpu"))
    pairs = build_pairs(split, rows, states, retrieval)
    if config.cross_fit_sequence:
        fold_of, models = fold_sequence_models(split, config.cross_fit_sequence, config.sequence,
                                               config.out_dir / "sequence-folds", config.seed)
        pairs.sasrec_train = cross_fitted_sequence(pairs, retrieval.position, fold_of, models)
    train_rows = np.flatnonzero(pairs.kind == TRAIN)
    judged = {k: np.flatnonzero(pairs.kind == k) for k in (VALID, TEST)}
    lists = {k: random_lists(split, pairs, r, config.draws, config.negatives, config.seed, retrieval.position)
             for k, r in judged.items()}
    per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {k: {} for k in judged}
    log_pop = torch.from_numpy(retrieval.log_pop.astype(np.float32))
    for k, r in judged.items():
        n = len(r)
        pop = log_pop.unsqueeze(0).expand(n, -1) + 1e-6 * torch.rand(n, len(log_pop))  # ties broken at random
        per_user[k]["popularity"] = metrics(full_ranks(pop, pairs, r), list_ranks(pop, pairs, r, lists[k]))
        seq = pairs.sasrec[r]
        per_user[k]["SASRec"] = metrics(full_ranks(seq, pairs, r), list_ranks(seq, pairs, r, lists[k]))
    curves, seconds = {}, {}
    alone = {k: {"SASRec": pairs.sasrec[r]} for k, r in judged.items()}  # judged scores of the heads alone
    for scorer in SCORERS:
        head, curves[scorer.name], seconds[scorer.name] = fit(scorer, pairs, train_rows, judged[VALID],
                                                              lists[VALID], config)
        for k, r in judged.items():
            scores = scores_of(head, scorer, pairs, r)
            per_user[k][scorer.name] = evaluate_scores(scores, pairs, r, lists[k])
            if not scorer.residual:
                alone[k][scorer.name] = scores
        if scorer.features == "lm":
            torch.save(head.state_dict(), config.out_dir / f"{scorer.name.replace(' ', '_').replace('+', '')}.pt")
    fusion = {}
    valid_targets = torch.from_numpy(pairs.target[judged[VALID]])
    valid_mask = seen_mask(pairs, judged[VALID], pairs.sasrec.shape[1])
    for name, heads in FUSIONS:
        parts = {k: torch.stack([alone[k]["SASRec"], *(alone[k][h] for h in heads)]) for k in judged}
        fused = {}
        fused[VALID], fused[TEST], fusion[name] = late_fusion(parts[VALID], parts[TEST], valid_targets, valid_mask,
                                                              config.fusion_folds, config.seed)
        for k, r in judged.items():
            per_user[k][name] = evaluate_scores(fused[k], pairs, r, lists[k])
    summary = {k: {name: {m: float(v.mean()) for m, v in ms.items()} for name, ms in methods.items()}
               for k, methods in per_user.items()}
    comparisons = {}
    for a, b in (("LM alone", "popularity"), ("LM alone", "bias alone"), ("LM alone", "MiniLM alone"),
                 ("LM alone", "SASRec"), ("SASRec + LM", "SASRec"), ("SASRec + LM", "SASRec + bias"),
                 ("SASRec + LM", "SASRec + MiniLM"), ("SASRec + MiniLM", "SASRec + bias"),
                 ("SASRec (+) LM", "SASRec"), ("SASRec (+) LM", "SASRec (+) bias"),
                 ("SASRec (+) MiniLM", "SASRec"), ("SASRec (+) MiniLM (+) LM", "SASRec (+) MiniLM"),
                 ("SASRec (+) bias (+) LM", "SASRec (+) bias"), ("SASRec (+) bias (+) MiniLM", "SASRec (+) bias"),
                 ("SASRec + LM", "SASRec (+) bias (+) LM")):
        comparisons[f"{a} - {b}"] = {k: {m: bootstrap(per_user[k][a][m], per_user[k][b][m], seed=config.seed)
                                         for m in ("NDCG@10", "HR@1 (1+9)")} for k in judged}
    record = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": machine(),
        "pairs": {"train": int(len(train_rows)), **{k: int(len(r)) for k, r in judged.items()}},
        "lm_cost": cost,
        "items_per_user": float(np.mean([len(w.items) for w in rows])),
        "head_seconds": seconds,
        "late_fusion": fusion,
        "summary": summary,
        "comparisons": comparisons,
        "curves": curves,
    }
    (config.out_dir / "record.json").write_text(json.dumps(record, indent=2))
    return record


# ---- command line -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[LMSequenceConfig, bool]:
    p = argparse.ArgumentParser(prog="python -m tools.lab.lm_sequence", description=__doc__.split("\n\n")[0])
    defaults = LMSequenceConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if name == "read_layers":
            p.add_argument(flag, type=int, nargs="*", default=list(value))
        elif isinstance(value, Path) or name == "cache_dir":
            p.add_argument(flag, type=Path, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    p.add_argument("--states-only", action="store_true", help="compute and cache the LM states, train nothing")
    args = vars(p.parse_args(argv))
    states_only = args.pop("states_only")
    args["read_layers"] = tuple(args["read_layers"])
    return LMSequenceConfig(**args), states_only


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, states_only = parse_args(argv)
    torch.set_num_threads(config.threads)
    if states_only:
        from tools.core.split import load_split

        split = load_split(config.data_dir)
        rows = windows(split, config.window, config.users)
        _, cost = cached_states(config, split.catalog, rows)
        print(json.dumps(cost))
        return
    record = run(config)
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
