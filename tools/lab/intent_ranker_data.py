"""The intent ranker's configuration and its examples (#15): candidate lists drawn from the training part (with a
training-bank intention on a share of them) and the validation users' lists (evaluation-bank wording), either
retrieval's top K or the target among random items, with the prompt each list is read from."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core import prompts
from services.core.catalog import Item
from services.core.contracts import LABELS
from tools.core import teacher
from tools.core.split import Case
from tools.eval.intentions import SPECIFIC, VAGUE
from tools.eval.search import SearchEvaluation
from tools.lab.frozen_lm import ExperimentInputs
from tools.lab.hybrid_retrieval import HybridRetrieval
from tools.train.examples import TrainingData, draw_samples, validation_samples

NONE = "I0"
KINDS = (SPECIFIC, VAGUE, NONE)
LISTS = ("retrieval", "random")


@dataclass
class IntentRankerConfig(ExperimentInputs):
    out_dir: Path = Path("var/intent-ranker/run")
    train_examples: int = 200
    """Training lists (each contains its target) whose LM features are computed."""
    validation_users: int = 50
    candidates: int = 10
    history_items: int = 5
    specific_share: float = 1 / 3
    vague_share: float = 1 / 3
    """The rest of the training examples carry no intention."""
    top_layers: int = 0
    """Trainable top decoder layers (full fine-tuning, lower layers cached); 0: frozen LM, head only."""
    read_layers: tuple[int, ...] = (15,)
    """Frozen layers (outputs after that many layers) also read at each candidate's last token, besides the
    final (normed) state."""
    head: str = "mlp"
    """Residual head: "mlp" (LayerNorm per block, Linear-GELU-Dropout, Linear to 1 initialised to 0) or "linear"."""
    head_hidden: int = 128
    dropout: float = 0.1
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    layer_lr: float = 5e-5
    weight_decay: float = 0.01
    eval_every: int = 50
    feature_batch: int = 8
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    max_minutes: float = 0.0
    """Stop training (after a validation and a checkpoint) after this much wall time; 0: no limit."""
    lists: str = "retrieval"
    """"retrieval": retrieval's top K, scored fused + r; "random": the target + K-1 random unseen items, scored r
    alone (no fusion under it)."""
    distil: float = 0.0
    """Weight of the KL term towards the fused retrieval score's softmax over each list (0: the hard label only)."""
    distil_temperature: float = 1.0

    @property
    def alone(self) -> bool:
        return self.lists == "random"

    def names(self) -> dict[str, str]:
        """Method names of the two scorers and the order under them, in this mode."""
        if self.alone:
            return {"lm": "LM alone", "minilm": "MiniLM alone", "base": "popularity (list)"}
        return {"lm": "LM residual", "minilm": "MiniLM residual", "base": "retrieval order"}


@dataclass
class ListExample:
    """One candidate list: retrieval's top-K in a shuffled prompt order (position carries no signal)."""

    user: str
    history: tuple[str, ...]
    target: str
    kind: str
    query: str
    candidates: list[str]
    fused: list[float]
    """Fused retrieval score of each candidate (prompt order)."""
    sequence: list[float]
    """Sequence-model logit of each candidate (-inf: unknown), for the filter + sequence model baseline."""
    answer: int
    """Index of the target in ``candidates``; -1 when retrieval's top-K missed it (validation only)."""
    full_filter_rank: int | None = None
    """Validation: the target's rank under filter + sequence model over the whole unseen catalog."""
    teacher: list[float] | None = None
    """The fused retrieval score of each candidate (the distillation teacher); ``fused`` itself when None."""
    popularity: list[float] | None = None
    """log(1 + training interactions) of each candidate."""

    @property
    def teacher_scores(self) -> list[float]:
        return self.fused if self.teacher is None else self.teacher


def prompt_segments(catalog, history: Sequence[str], query: str, candidates: Sequence[str],
                    history_items: int) -> tuple[str, list[str]]:
    """The prompt's header and one segment per candidate line; the score is read at each segment's last token."""
    header = "Recently watched: " + prompts.format_history([catalog[i] for i in history], history_items) + "."
    if query.strip():
        header += f'\nRequest: "{query.strip()}".'
    header += "\nCandidates:"
    lines = [f"\n{label}. {prompts.candidate_text(catalog[c])}" for label, c in zip(LABELS, candidates)]
    return header, lines


def _draw_kind(rng: random.Random, config: IntentRankerConfig) -> str:
    x = rng.random()
    return SPECIFIC if x < config.specific_share else VAGUE if x < config.specific_share + config.vague_share else NONE


def _training_query(kind: str, target: Item, rng: random.Random) -> str:
    if kind == SPECIFIC:
        return teacher.specific_intention(target)
    if kind == VAGUE:
        return teacher.vague_intention(target, rng)
    return ""


def _lists(retrieval: HybridRetrieval, samples: Sequence[Case], kinds: Sequence[str], queries: Sequence[str],
           k: int, rng: random.Random, exclude_future: bool, batch: int = 256) -> list[ListExample]:
    """Retrieval's top-``k`` of each sample, shuffled. ``exclude_future``: a training cut point's later items
    (the rest of the user's training sequence) are not candidates: they are false negatives, and a validation
    list never holds them either (its history is the whole training sequence)."""
    out = []
    for start in range(0, len(samples), batch):
        chunk = samples[start: start + batch]
        fused, seq = retrieval.fused([s.history for s in chunk], queries[start: start + batch])
        for row, sample in enumerate(chunk):
            if exclude_future:
                later = [retrieval.position[i] for i in sample.seen if i != sample.target and i in retrieval.position]
                fused[row, later] = -np.inf
            top = np.argsort(-fused[row], kind="stable")[:k]
            ids = [retrieval.ids[j] for j in top]
            order = list(range(k))
            rng.shuffle(order)
            ids = [ids[j] for j in order]
            cols = [retrieval.position[i] for i in ids]
            s = seq[row, cols]
            out.append(ListExample(sample.user_id, sample.history, sample.target, kinds[start + row],
                                   queries[start + row], ids, [float(x) for x in fused[row, cols]],
                                   [float(x) if np.isfinite(x) else -math.inf for x in s],
                                   ids.index(sample.target) if sample.target in ids else -1))
    return out


def _random_lists(retrieval: HybridRetrieval, samples: Sequence[Case], kinds: Sequence[str],
                  queries: Sequence[str], k: int, rng: random.Random, batch: int = 256) -> list[ListExample]:
    """The target and ``k - 1`` random items the sample has not seen (a training cut point's later items are
    seen: never negatives), shuffled; scored from nothing (``fused`` 0), the fused retrieval score kept as the
    teacher and baseline."""
    out = []
    for start in range(0, len(samples), batch):
        chunk = samples[start: start + batch]
        fused, seq = retrieval.fused([s.history for s in chunk], queries[start: start + batch])
        for row, sample in enumerate(chunk):
            pool = [i for i in retrieval.ids if i not in sample.seen and i != sample.target]
            ids = [sample.target, *rng.sample(pool, k - 1)]
            rng.shuffle(ids)
            cols = [retrieval.position[i] for i in ids]
            s = seq[row, cols]
            out.append(ListExample(sample.user_id, sample.history, sample.target, kinds[start + row],
                                   queries[start + row], ids, [0.0] * k,
                                   [float(x) if np.isfinite(x) else -math.inf for x in s], ids.index(sample.target),
                                   teacher=[float(x) for x in np.nan_to_num(fused[row, cols], nan=-1e4,
                                                                             neginf=-1e4)],
                                   popularity=[float(retrieval.log_pop[c]) for c in cols]))
    return out


def _make_lists(config: IntentRankerConfig, retrieval: HybridRetrieval, samples, kinds, queries, rng,
                exclude_future: bool) -> list[ListExample]:
    if config.alone:
        return _random_lists(retrieval, samples, kinds, queries, config.candidates, rng)
    return _lists(retrieval, samples, kinds, queries, config.candidates, rng, exclude_future=exclude_future)


DRAW_CHUNK = 256


def training_examples(data: TrainingData, retrieval: HybridRetrieval, config: IntentRankerConfig) -> tuple[list, dict]:
    """``train_examples`` lists from the training part that contain their target, and what it took. Draws come
    in fixed chunks, so a larger run's first lists are a smaller run's (its cached features are reused)."""
    rng = random.Random(f"intent-ranker:{config.seed}:train")
    kept: list[ListExample] = []
    drawn = 0
    counts = {k: {"drawn": 0, "kept": 0} for k in KINDS}
    while len(kept) < config.train_examples:
        samples = draw_samples(data, DRAW_CHUNK, rng)
        kinds = [_draw_kind(rng, config) for _ in samples]
        queries = [_training_query(k, data.catalog[s.target], rng) for k, s in zip(kinds, samples)]
        for example in _make_lists(config, retrieval, samples, kinds, queries, rng, exclude_future=True):
            if len(kept) >= config.train_examples:
                break
            drawn += 1
            counts[example.kind]["drawn"] += 1
            if example.answer >= 0:
                kept.append(example)
                counts[example.kind]["kept"] += 1
    return kept, {"drawn": drawn, "kept": len(kept), "by_kind": counts}


def validation_examples(data: TrainingData, retrieval: HybridRetrieval, config: IntentRankerConfig) -> list:
    """Validation users x (specific, vague, none), evaluation-bank wording seeded as ``tools/eval/search.py``."""
    samples = validation_samples(data, config.validation_users)
    evaluation = SearchEvaluation(data.split, None, lambda h: {}, seed=config.seed, concurrency=1, name="ranker")
    rng = random.Random(f"intent-ranker:{config.seed}:validation")
    out = []
    for kind in KINDS:
        queries = [evaluation._query(s, kind) if kind != NONE else ""
                   for s in samples]
        examples = _make_lists(config, retrieval, samples, [kind] * len(samples), queries, rng,
                               exclude_future=False)
        seq = retrieval.sequence_scores([s.history for s in samples])
        for example, sample, row in zip(examples, samples, seq):
            history = set(sample.history)
            unseen = [i for i in retrieval.ids if i not in history]
            scores = {i: float(row[retrieval.position[i]]) for i in unseen if np.isfinite(row[retrieval.position[i]])}
            order = evaluation._baselines(example.query, unseen, scores)["filter + sequence model"]
            example.full_filter_rank = order.index(sample.target) if sample.target in order[:10] else None
        out += examples
    return out
