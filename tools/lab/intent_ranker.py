"""Experimental intention-aware ranker (#15): an LM residual on top of the fused retrieval score.

Each candidate's score is ``fused_i + r_i``: ``fused_i`` is the served hybrid retrieval score (the committed
SASRec + the served text encoder's cosine + log popularity, :func:`services.core.fusion.fuse_retrieval` with the
served weights) and ``r_i`` is read from the LM's hidden state at the candidate's last token, in ONE causal pass
over a short prompt (recent titles, the intention, the lettered candidate list), through a small head whose
output layer is initialised to zero. Training therefore starts exactly at the retrieval order and any gain is
the LM's. The weight ``w`` of ``fused + w * r`` is absorbed into the head (w = 1; a learned w starting at 0
would leave both w and the head without gradient).

Cost on 2 CPU cores decides the recipe: the LM is loaded as the decoder alone (``AutoModel``, no vocabulary
projection, so the LM head is never computed), its lower ``num_layers - top_layers`` layers are frozen and run
once per example, and what the head (and the ``top_layers`` trainable layers, 0 on the CPU) reads is cached
across epochs and across ``--resume``. The same residual on MiniLM features (the served text encoder's vectors
of the request text, the intention alone and each candidate) is trained beside it on the same lists, so the
comparison says whether the LM adds more than a 22M encoder.

Examples come from the training part only (cut points of the training sequences, :func:`draw_samples`), with
an intention from the TRAINING bank (``tools/core/teacher.py``) on a share of them; only lists that contain the
target train. Validation uses the split's validation cases, with intentions from the EVALUATION bank
(``tools/eval/intentions.py``, the wording ``tools/eval/search.py`` uses, seeded the same way) and without
intention; metrics are NDCG@10 and HR@1 of the reranked top-K list (the target outside the list counts as a
miss, so they are full-ranking metrics of a retrieve-K-then-rerank system).

``--lists random`` asks the other question (#15's "the LM alone on validation 1+9 random lists"): each list is the
target and ``candidates - 1`` random unseen items, the scorer has no fused score under it (``0 + r``: the LM
alone, and the MiniLM head alone), and it is judged against popularity, the sequence model and the fused
retrieval score on the same lists. ``--distil D`` adds D x the KL divergence from the fused retrieval score's
softmax over the list (the teacher: SASRec + text + popularity) to the scorer's, ten soft labels per list
besides the one hard label.

    python -m tools.lab.intent_ranker --out var/intent-ranker/tiny --train-examples 200 --validation-users 50
    python -m tools.lab.intent_ranker --lists random --out var/intent-ranker/random --train-examples 1000 \
        --validation-users 300 --distil 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from services.core import prompts
from services.core.catalog import Item, item_text
from services.core.contracts import LABELS
from services.core.fusion import SERVED_RETRIEVAL_FUSION, RetrievalFusion, SourceWeights
from tools.core import teacher
from tools.core.machine import machine, repo_path
from tools.core.metrics import bootstrap, ndcg
from tools.core.retrieval_score import CatalogScorer
from tools.core.sequence_model import SequenceScorer
from tools.core.split import Case
from tools.eval.intentions import SPECIFIC, VAGUE, StringFilter
from tools.eval.search import SearchEvaluation
from tools.train.examples import TrainingData, draw_samples, load_training_data, validation_samples

log = logging.getLogger(__name__)

NONE = "I0"
KINDS = (SPECIFIC, VAGUE, NONE)
# The base score the recorded runs (docs/lab/ranker-experiments.md) were made on: the retrieval rule fitted
# without the intent heads' term (this tool does not run the heads), so that they stay reproducible now that the
# served rule's query weights are fitted jointly with that term.
BASE_FUSION = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=2.0, popularity=0.75),
                              without_query=SERVED_RETRIEVAL_FUSION.without_query,
                              without_sequence=SERVED_RETRIEVAL_FUSION.without_sequence)
KIND_NAMES = {SPECIFIC: "specific (I2)", VAGUE: "vague (I1)", NONE: "no intention (I0)"}
METHODS = ("retrieval order", "LM residual", "MiniLM residual", "filter + sequence model (list)",
           "filter + sequence model (full catalog)")
RANDOM_METHODS = ("popularity (list)", "fused retrieval score (list)", "sequence model (list)", "LM alone",
                  "MiniLM alone", "filter + popularity (list)", "filter + sequence model (list)")
LISTS = ("retrieval", "random")
CHECKPOINT_FILE = "checkpoint.pt"
RECORD_FILE = "record.json"
BEST_FILE = "best_heads.pt"


@dataclass
class IntentRankerConfig:
    data_dir: Path = Path("var/data/movielens-100k")
    base_model: Path = Path("var/base_models/smollm2-135m-instruct")
    encoder: Path = Path("tools/train/adapters/text_encoder")
    """The served text encoder (LoRA adapter folder or HF folder): retrieval's cosine and the MiniLM features."""
    sequence: Path = Path("tools/train/adapters/sequence_encoder")
    out_dir: Path = Path("var/intent-ranker/run")
    cache_dir: Path | None = None
    """Where the examples and frozen LM features are cached (default: ``out_dir/cache``)."""
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


# ---- retrieval (the served hybrid rule, computed in-process) ---------------------------------------------


class HybridRetrieval:
    """The served fused retrieval score of every catalog item, from the committed sequence model and encoder
    (:class:`tools.core.retrieval_score.CatalogScorer`, the one offline form of the served score)."""

    def __init__(self, data: TrainingData, encoder_path: Path, sequence_path: Path, device: torch.device) -> None:
        from services.core.modeltext import mean_pooled_encoder
        from tools.core.text_encoder import encode, load_encoder

        self.data, self.device, self._encode_fn = data, device, encode
        catalog = data.catalog
        self.ids = list(catalog.items)
        self.position = {item: n for n, item in enumerate(self.ids)}
        encoder, self.tokenizer = load_encoder(encoder_path, device)
        self.pooled = mean_pooled_encoder(encoder)
        self.item_vectors = self.encode([item_text(catalog[i]) for i in self.ids])  # [N, 384]
        self.sequence = SequenceScorer(sequence_path)
        self.scorer = CatalogScorer(self.ids, data.split.popularity, self.item_vectors, self.sequence.item_vectors())
        self.log_pop = self.scorer.log_popularity

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.item_vectors.shape[1] if hasattr(self, "item_vectors") else 384), np.float32)
        with torch.no_grad():
            return self._encode_fn(self.pooled, self.tokenizer, list(texts), self.device).cpu().numpy()

    def sequence_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[B, N] sequence-model logits (NaN for items it does not know)."""
        return self.scorer.sequence_logits(self.sequence.user_vectors(histories))

    def fused(self, histories: Sequence[Sequence[str]], queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Fused scores [B, N] (history items -inf) and the sequence logits [B, N], as the retrieval service."""
        catalog = self.data.catalog
        seq = self.sequence_scores(histories)
        recent = [[catalog[i] for i in h[-prompts.DEFAULT_MAX_HISTORY_ITEMS:]] for h in histories]
        texts = [prompts.retrieval_text(q, r, prompts.DEFAULT_MAX_HISTORY_ITEMS) for q, r in zip(queries, recent)]
        text = self.scorer.text_cosines(self.encode(texts), [[i.item_id for i in r] for r in recent])
        out = np.empty_like(seq)
        for row, (h, q) in enumerate(zip(histories, queries)):
            weights = BASE_FUSION.weights(has_query=bool(q.strip()))
            out[row] = self.scorer.fused(weights, sequence=seq[row:row + 1],
                                         text=text[row:row + 1] if weights.text > 0 else None)[0]
            out[row, [self.position[i] for i in h if i in self.position]] = -np.inf
        return out, seq


# ---- examples ---------------------------------------------------------------------------------------------


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


class PromptTokenizer:
    """Token ids of a prompt and the positions of each candidate's last token (segments tokenised apart)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def __call__(self, header: str, lines: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = list(self.tokenizer(header, add_special_tokens=False)["input_ids"])
        if self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        positions = []
        for line in lines:
            ids += self._ids(line)
            positions.append(len(ids) - 1)
        return ids, positions


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


# ---- features ---------------------------------------------------------------------------------------------


class FrozenLM:
    """The decoder of the causal LM, without its vocabulary projection: lower layers frozen, top layers trainable."""

    def __init__(self, path: Path, top_layers: int, read_layers: Sequence[int], device: torch.device) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa").to(device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        n = len(self.model.layers)
        self.split = n - top_layers
        self.read_layers = tuple(r for r in read_layers if 0 < r <= self.split and not (top_layers == 0 and r == n))
        self.top = nn.ModuleList(self.model.layers[self.split:])
        for p in self.top.parameters():
            p.requires_grad_(True)
        for p in self.model.norm.parameters():
            p.requires_grad_(top_layers > 0)
        self.device = device
        self.hidden = self.model.config.hidden_size

    def _run(self, hidden: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        causal = create_causal_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask, cache=None,
                                    position_ids=position_ids)
        rope = self.model.rotary_emb(hidden, position_ids=position_ids)
        outs = []
        for layer in layers:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=position_ids)
            outs.append(hidden)
        return outs

    @torch.no_grad()
    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Input of the top stack [B, L, H] and the read layers' states [B, L, H] each (final normed when frozen)."""
        hidden = self.model.embed_tokens(ids)
        outs = self._run(hidden, mask, self.model.layers[: self.split])
        base = outs[-1] if outs else hidden
        reads = [outs[r - 1] for r in self.read_layers]
        if self.split == len(self.model.layers):
            reads.append(self.model.norm(base))
        return base, reads

    def upper(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers and the final norm: [B, L, H] -> [B, L, H]."""
        outs = self._run(hidden, mask, self.top)
        return self.model.norm(outs[-1])


@dataclass
class LMFeatures:
    """Cached per-example LM states: ``reads`` [K, R, H] at the candidates; ``lower`` [L, H] when top layers train."""

    reads: list[torch.Tensor]
    positions: list[list[int]]
    lower: list[torch.Tensor] | None
    tokens: list[int]
    seconds: float


def padded_batch(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids [B, L] and their attention mask [B, L] (1 on real tokens)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    return ids, mask


def lm_features(lm: FrozenLM, catalog, examples: Sequence[ListExample], history_items: int, batch: int,
                desc: str = "LM features") -> LMFeatures:
    from tqdm import tqdm

    tok = PromptTokenizer(lm.tokenizer)
    rows = [tok(*prompt_segments(catalog, e.history, e.query, e.candidates, history_items)) for e in examples]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    reads: list = [None] * len(rows)
    lowers: list | None = [None] * len(rows) if lm.split < len(lm.model.layers) else None
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # little padding per batch
    started = time.monotonic()
    for start in tqdm(range(0, len(order), batch), desc=desc, leave=False):
        chunk = order[start: start + batch]
        ids, mask = padded_batch([rows[i][0] for i in chunk], pad)
        base, layer_reads = lm.lower(ids.to(lm.device), mask.to(lm.device))
        for b, i in enumerate(chunk):
            pos = torch.tensor(rows[i][1], device=lm.device)
            reads[i] = torch.stack([r[b, pos] for r in layer_reads], dim=1).half().cpu() if layer_reads else \
                torch.zeros(len(pos), 0, lm.hidden, dtype=torch.half)  # [K, R, H]
            if lowers is not None:
                lowers[i] = base[b, : len(rows[i][0])].half().cpu()  # [L, H]
    seconds = time.monotonic() - started
    return LMFeatures(reads, [r[1] for r in rows], lowers, [len(r[0]) for r in rows], seconds)


@dataclass
class TextFeatures:
    """MiniLM side: the request text and the intention alone per example (candidates read from the item table)."""

    request: torch.Tensor  # [N, D]
    query: torch.Tensor  # [N, D] (zeros without intention)
    items: torch.Tensor  # [catalog, D]
    candidates: torch.Tensor  # [N, K] rows of ``items``


def text_features(retrieval: HybridRetrieval, examples: Sequence[ListExample], history_items: int) -> TextFeatures:
    catalog = retrieval.data.catalog
    request = retrieval.encode([prompts.retrieval_text(e.query, [catalog[i] for i in e.history[-history_items:]],
                                                       history_items) for e in examples])
    with_query = [n for n, e in enumerate(examples) if e.query.strip()]
    query = np.zeros_like(request)
    if with_query:
        query[with_query] = retrieval.encode([examples[n].query for n in with_query])
    candidates = torch.tensor([[retrieval.position[c] for c in e.candidates] for e in examples])
    return TextFeatures(torch.from_numpy(request).float(), torch.from_numpy(query).float(),
                        torch.from_numpy(retrieval.item_vectors).float(), candidates)


def text_blocks(features: TextFeatures, rows: Sequence[int]) -> list[torch.Tensor]:
    """[B, K, D] blocks: the candidate, candidate x request, candidate x intention."""
    items = features.items[features.candidates[list(rows)]]  # [B, K, D]
    request = features.request[list(rows)].unsqueeze(1)  # [B, 1, D]
    query = features.query[list(rows)].unsqueeze(1)
    return [items, items * request, items * query]


# ---- the residual scorer ----------------------------------------------------------------------------------


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


# ---- metrics ----------------------------------------------------------------------------------------------


def list_rank(scores: Sequence[float], answer: int) -> int | None:
    """0-based rank of the answer in the list (ties against it); None when the list misses the target."""
    if answer < 0:
        return None
    target = scores[answer]
    return sum(1 for i, s in enumerate(scores) if i != answer and s >= target)


def per_user_metrics(ranks: Sequence[int | None]) -> dict[str, np.ndarray]:
    return {"NDCG@10": np.array([ndcg(r, 10) for r in ranks]),
            "HR@1": np.array([float(r == 0) for r in ranks])}


def filter_ranks(string_filter: StringFilter, examples: Sequence[ListExample]) -> list[int | None]:
    out = []
    for e in examples:
        order = string_filter.order(e.query, e.candidates, e.sequence)
        out.append(order.index(e.target) if e.answer >= 0 else None)
    return out


# ---- training ---------------------------------------------------------------------------------------------


def _fused(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([examples[r].fused for r in rows], dtype=torch.float32, device=device)


def _teacher(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
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


def _answers(examples: Sequence[ListExample], rows: Sequence[int], device) -> torch.Tensor:
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
        fused = _fused(examples, rows, device)
        out += model(fused, features, rows).cpu().tolist()
    return out


class TextResidual(nn.Module):
    """The comparator: the same residual head on MiniLM features."""

    def __init__(self, dim: int, config: IntentRankerConfig) -> None:
        super().__init__()
        self.head = ResidualHead([dim] * 3, config.head, config.head_hidden, config.dropout)

    def forward(self, fused: torch.Tensor, features: TextFeatures, rows: Sequence[int]) -> torch.Tensor:
        blocks = [b.to(fused.device) for b in text_blocks(features, rows)]
        return residual_scores(fused, self.head, blocks)


def evaluate(lm_model: LMResidual, text_model: TextResidual, val: list[ListExample], val_lm: LMFeatures,
             val_text: TextFeatures, string_filter: StringFilter, device, alone: bool = False) -> tuple[dict, dict]:
    """Per-kind mean metrics of every method and the per-user arrays (for the bootstrap); ``alone``: random
    lists, the scorers without fusion, against the list baselines."""
    lm_model.eval()
    text_model.eval()
    lm_scores = scores_of(lm_model, val, val_lm, device)
    text_scores = scores_of(text_model, val, val_text, device)
    lm_model.train()
    text_model.train()
    if alone:
        ranks = {
            "popularity (list)": [_first_rank(e.popularity, e.candidates, e.target) for e in val],
            "fused retrieval score (list)": [list_rank(e.teacher_scores, e.answer) for e in val],
            "sequence model (list)": [_first_rank(e.sequence, e.candidates, e.target) for e in val],
            "LM alone": [list_rank(s, e.answer) for s, e in zip(lm_scores, val)],
            "MiniLM alone": [list_rank(s, e.answer) for s, e in zip(text_scores, val)],
            "filter + popularity (list)": [string_filter.order(e.query, e.candidates, e.popularity).index(e.target)
                                           for e in val],
            "filter + sequence model (list)": filter_ranks(string_filter, val),
        }
    else:
        ranks = {
            "retrieval order": [list_rank(e.fused, e.answer) for e in val],
            "LM residual": [list_rank(s, e.answer) for s, e in zip(lm_scores, val)],
            "MiniLM residual": [list_rank(s, e.answer) for s, e in zip(text_scores, val)],
            "filter + sequence model (list)": filter_ranks(string_filter, val),
            "filter + sequence model (full catalog)": [e.full_filter_rank for e in val],
        }
    table, per_user = {}, {}
    for kind in KINDS:
        idx = [n for n, e in enumerate(val) if e.kind == kind]
        per_user[kind] = {m: per_user_metrics([r[n] for n in idx]) for m, r in ranks.items()}
        table[kind] = {m: {k: round(float(v.mean()), 5) for k, v in per_user[kind][m].items()} for m in ranks}
        table[kind]["target in list"] = round(float(np.mean([val[n].answer >= 0 for n in idx])), 5)
    return table, per_user


def _first_rank(scores: Sequence[float], candidates: Sequence[str], target: str) -> int:
    """The target's rank when ``candidates`` are sorted by ``scores``, ties in list order (as the baselines of
    ``tools/eval/search.py`` break them)."""
    order = [i for _, _, i in sorted((-s, n, i) for n, (i, s) in enumerate(zip(candidates, scores)))]
    return order.index(target)


def comparisons(per_user: dict, seed: int, alone: bool = False) -> dict:
    pairs = (("LM residual", "retrieval order"), ("LM residual", "MiniLM residual"),
             ("MiniLM residual", "retrieval order"), ("LM residual", "filter + sequence model (list)"),
             ("LM residual", "filter + sequence model (full catalog)"),
             ("MiniLM residual", "filter + sequence model (full catalog)"))
    if alone:
        pairs = (("LM alone", "popularity (list)"), ("LM alone", "MiniLM alone"), ("MiniLM alone", "popularity (list)"),
                 ("LM alone", "fused retrieval score (list)"), ("LM alone", "sequence model (list)"),
                 ("LM alone", "filter + sequence model (list)"))
    out = {}
    for kind, methods in per_user.items():
        out[kind] = {}
        for a, b in pairs:
            out[kind][f"{a} - {b}"] = {
                k: {m: round(v, 5) for m, v in bootstrap(methods[a][k], methods[b][k], seed).items()}
                for k in ("NDCG@10", "HR@1")}
    return out


FEATURE_CHUNK = 100


def _cache_key(config: IntentRankerConfig, *extra: object) -> str:
    keys = ("data_dir", "base_model", "encoder", "sequence", "candidates", "history_items", "specific_share",
            "vague_share", "top_layers", "read_layers", "seed")
    # Retrieval-list caches of earlier runs keep their keys: the list kind joins the key only when it is new.
    extra_keys = {"lists": config.lists} if config.alone else {}
    raw = json.dumps({k: str(getattr(config, k)) for k in keys} | extra_keys | {"extra": [str(x) for x in extra]},
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _jsonable(config: IntentRankerConfig) -> dict:
    return {k: repo_path(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in asdict(config).items()}


def _merge(parts: Sequence[LMFeatures]) -> LMFeatures:
    lower = None if parts[0].lower is None else [x for p in parts for x in p.lower]
    return LMFeatures([x for p in parts for x in p.reads], [x for p in parts for x in p.positions], lower,
                      [x for p in parts for x in p.tokens], sum(p.seconds for p in parts))


def cached_lm_features(lm: FrozenLM, catalog, examples: Sequence[ListExample], config: IntentRankerConfig,
                       cache_dir: Path, name: str) -> tuple[LMFeatures, float]:
    """Frozen LM features in chunks of ``FEATURE_CHUNK`` lists, each cached under a hash of its prompts; returns
    the features and the seconds spent computing (not loading) them in this run."""
    parts, computed = [], 0.0
    for start in range(0, len(examples), FEATURE_CHUNK):
        chunk = examples[start: start + FEATURE_CHUNK]
        key = _cache_key(config, name, [(e.user, e.target, e.query, e.candidates) for e in chunk])
        path = cache_dir / f"{name}-{start // FEATURE_CHUNK:04d}-{key}.pt"
        if path.is_file():
            parts.append(torch.load(path, weights_only=False))
            continue
        features = lm_features(lm, catalog, chunk, config.history_items, config.feature_batch,
                               f"LM features ({name} {start}-{start + len(chunk)})")
        computed += features.seconds
        tmp = path.with_suffix(".tmp")
        torch.save(features, tmp)
        tmp.replace(path)
        parts.append(features)
    return _merge(parts), computed


def prepare(config: IntentRankerConfig, device: torch.device):
    """Examples and features; the frozen LM's are cached (see :func:`cached_lm_features`)."""
    cache_dir = config.cache_dir or config.out_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    lm = FrozenLM(config.base_model, config.top_layers, config.read_layers, device)
    data = load_training_data(config.data_dir)
    started = time.monotonic()
    retrieval = HybridRetrieval(data, config.encoder, config.sequence, device)
    train, stats = training_examples(data, retrieval, config)
    val = validation_examples(data, retrieval, config)
    retrieval_seconds = time.monotonic() - started
    train_lm, train_s = cached_lm_features(lm, data.catalog, train, config, cache_dir, "train")
    val_lm, val_s = cached_lm_features(lm, data.catalog, val, config, cache_dir, "validation")
    started = time.monotonic()
    train_text = text_features(retrieval, train, config.history_items)
    val_text = text_features(retrieval, val, config.history_items)
    return lm, data, {"train": train, "val": val, "stats": stats, "train_lm": train_lm, "val_lm": val_lm,
                      "train_text": train_text, "val_text": val_text,
                      "timing": {"retrieval_and_lists_s": round(retrieval_seconds, 1),
                                 "lm_features_computed_train_s": round(train_s, 1),
                                 "lm_features_computed_val_s": round(val_s, 1),
                                 "text_features_s": round(time.monotonic() - started, 1)}}


def train(config: IntentRankerConfig, resume: bool = False) -> dict:
    torch.manual_seed(config.seed)
    if config.threads and config.device == "cpu":
        torch.set_num_threads(config.threads)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {config.device}: torch sees no CUDA device")
    device = torch.device(config.device)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run_started = time.monotonic()
    lm, data, cached = prepare(config, device)
    train_ex, val = cached["train"], cached["val"]
    train_lm, val_lm = cached["train_lm"], cached["val_lm"]
    train_text, val_text = cached["train_text"], cached["val_text"]
    prepare_s = time.monotonic() - run_started
    string_filter = StringFilter(data.catalog)
    names = config.names()

    lm_model = LMResidual(lm, config).to(device)
    text_model = TextResidual(train_text.items.shape[1], config).to(device)
    groups = [{"params": list(lm_model.head.parameters()), "lr": config.lr}]
    if lm_model.trains_layers:
        groups.append({"params": [p for p in lm.top.parameters()] + list(lm.model.norm.parameters()),
                       "lr": config.layer_lr})
    lm_opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    text_opt = torch.optim.AdamW(text_model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    tokens = np.array(train_lm.tokens + val_lm.tokens)
    record = {"model": "intent-ranker (experimental)", "config": _jsonable(config), "status": "running",
              "examples": cached["stats"], "validation_lists": len(val), "timing": dict(cached["timing"]),
              "tokens_per_example": {"mean": round(float(tokens.mean()), 1), "min": int(tokens.min()),
                                     "max": int(tokens.max())},
              "lm_feature_s_per_example": round((train_lm.seconds + val_lm.seconds) / max(1, len(tokens)), 4),
              "trainable_parameters": {
                  "lm": sum(p.numel() for g in groups for p in g["params"]),
                  "minilm": sum(p.numel() for p in text_model.parameters())},
              "machine": machine(), "validations": []}
    step = 0
    checkpoint = config.out_dir / CHECKPOINT_FILE
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--resume: no {checkpoint}")
        state = torch.load(checkpoint, weights_only=False)
        lm_model.load_state_dict(state["lm"])
        text_model.load_state_dict(state["text"])
        lm_opt.load_state_dict(state["lm_opt"])
        text_opt.load_state_dict(state["text_opt"])
        step = state["step"]
        record["validations"] = state["validations"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed at step %d", step)

    def write() -> None:
        record["seconds_this_run"] = round(time.monotonic() - run_started, 1)
        tmp = config.out_dir / (RECORD_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(config.out_dir / RECORD_FILE)

    def validate_and_checkpoint() -> None:
        t0 = time.monotonic()
        table, per_user = evaluate(lm_model, text_model, val, val_lm, val_text, string_filter, device, config.alone)
        entry = {"step": step, "validation_s": round(time.monotonic() - t0, 1), "metrics": table}
        record["validations"].append(entry)
        record["comparison"] = comparisons(per_user, config.seed, config.alone)
        record["comparison_step"] = step
        metric = "HR@1" if config.alone else "NDCG@10"
        log.info("step %d: %s LM %s | MiniLM %s | %s %s", step, metric,
                 {k: table[k][names["lm"]][metric] for k in KINDS},
                 {k: table[k][names["minilm"]][metric] for k in KINDS}, names["base"],
                 {k: table[k][names["base"]][metric] for k in KINDS})
        state = {"step": step, "lm": lm_model.state_dict() if lm_model.trains_layers else
                 {k: v for k, v in lm_model.state_dict().items() if k.startswith("head.")},
                 "text": text_model.state_dict(), "lm_opt": lm_opt.state_dict(), "text_opt": text_opt.state_dict(),
                 "validations": record["validations"], "torch_rng": torch.get_rng_state(),
                 "config": _jsonable(config)}
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(checkpoint)
        write()

    if step == 0:
        validate_and_checkpoint()
    lm_model.train()
    text_model.train()
    train_started = time.monotonic()
    step_times, losses = [], {"lm": [], "minilm": []}
    stopped = False
    while step < config.steps:
        rows = batch_rows(len(train_ex), config.batch_size, step, config.seed)
        t0 = time.monotonic()
        fused, answers = _fused(train_ex, rows, device), _answers(train_ex, rows, device)
        teacher = _teacher(train_ex, rows, device) if config.distil > 0 else None
        loss = list_loss(lm_model(fused, train_lm, rows), answers, teacher, config)
        loss.backward()
        lm_opt.step()
        lm_opt.zero_grad(set_to_none=True)
        text_loss = list_loss(text_model(fused, train_text, rows), answers, teacher, config)
        text_loss.backward()
        text_opt.step()
        text_opt.zero_grad(set_to_none=True)
        step += 1
        step_times.append(time.monotonic() - t0)
        losses["lm"].append(loss.item())
        losses["minilm"].append(text_loss.item())
        out_of_time = config.max_minutes > 0 and time.monotonic() - train_started > 60 * config.max_minutes
        if step % config.eval_every == 0 or step == config.steps or out_of_time:
            record["train_loss"] = {k: round(float(np.mean(v[-config.eval_every:])), 5) for k, v in losses.items()}
            record["seconds_per_step"] = round(float(np.mean(step_times)), 4)
            validate_and_checkpoint()
        if out_of_time and step < config.steps:
            stopped = True
            break
    record["status"] = "stopped at time limit" if stopped else "finished"
    record["timing"]["prepare_this_run_s"] = round(prepare_s, 1)
    record["timing"]["train_this_run_s"] = round(time.monotonic() - train_started, 1)
    write()
    return record


def plot_curves(records: dict[str, Path], out: Path) -> Path:
    """Validation NDCG@10 per intention kind against steps, one line per method and run (matplotlib PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(5 * len(KINDS), 4), sharey=False)
    for name, path in records.items():
        record = json.loads(Path(path).read_text())
        names = replace(IntentRankerConfig(), lists=record["config"].get("lists", "retrieval")).names()
        styles = {names["base"]: ":", names["lm"]: "-", names["minilm"]: "--"}
        steps = [v["step"] for v in record["validations"]]
        for ax, kind in zip(axes, KINDS):
            for method, style in styles.items():
                ys = [v["metrics"][kind][method]["NDCG@10"] for v in record["validations"]]
                ax.plot(steps, ys, style, marker="o", markersize=3, label=f"{name}: {method}")
            ax.set_title(KIND_NAMES[kind])
            ax.set_xlabel("step")
            ax.set_ylabel("validation NDCG@10 (top-10 list)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def parse_args(argv: Sequence[str] | None = None) -> tuple[IntentRankerConfig, bool]:
    d = IntentRankerConfig()
    p = argparse.ArgumentParser(prog="python -m tools.lab.intent_ranker", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help="the prepared split")
    p.add_argument("--base-model", type=Path, default=d.base_model, help="the causal LM folder (SmolLM2)")
    p.add_argument("--encoder", type=Path, default=d.encoder, help="the served text encoder (adapter or folder)")
    p.add_argument("--sequence", type=Path, default=d.sequence, help="the served sequence model folder")
    p.add_argument("--out", type=Path, default=d.out_dir, help="run folder: record.json, checkpoint.pt, cache/")
    p.add_argument("--cache-dir", type=Path, default=None, help="examples + frozen features cache (default OUT/cache)")
    p.add_argument("--train-examples", type=int, default=d.train_examples, help="training lists (with the target)")
    p.add_argument("--validation-users", type=int, default=d.validation_users, help="0: all validation users")
    p.add_argument("--candidates", type=int, default=d.candidates, help="retrieval top-K reranked")
    p.add_argument("--history-items", type=int, default=d.history_items, help="recent titles in the prompt")
    p.add_argument("--top-layers", type=int, default=d.top_layers, help="trainable top decoder layers (0: frozen)")
    p.add_argument("--read-layers", type=str, default=",".join(map(str, d.read_layers)),
                   help="comma-separated frozen layers also read at each candidate ('' for none)")
    p.add_argument("--head", choices=("mlp", "linear"), default=d.head, help="residual head")
    p.add_argument("--head-hidden", type=int, default=d.head_hidden, help="MLP head width")
    p.add_argument("--dropout", type=float, default=d.dropout, help="MLP head dropout")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="lists per step")
    p.add_argument("--lr", type=float, default=d.lr, help="head learning rate")
    p.add_argument("--layer-lr", type=float, default=d.layer_lr, help="learning rate of the trainable top layers")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="validate and checkpoint every N steps")
    p.add_argument("--feature-batch", type=int, default=d.feature_batch, help="prompts per frozen forward pass")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu or cuda")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="training wall-time limit (0: none)")
    p.add_argument("--lists", choices=LISTS, default=d.lists,
                   help="retrieval: rerank retrieval's top K (fused + r); random: target + K-1 random, r alone")
    p.add_argument("--distil", type=float, default=d.distil, help="weight of the KL term to the fused score's softmax")
    p.add_argument("--distil-temperature", type=float, default=d.distil_temperature)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    a = p.parse_args(argv)
    config = replace(d, data_dir=a.data_dir, base_model=a.base_model, encoder=a.encoder, sequence=a.sequence,
                     out_dir=a.out, cache_dir=a.cache_dir, train_examples=a.train_examples,
                     validation_users=a.validation_users, candidates=a.candidates, history_items=a.history_items,
                     top_layers=a.top_layers,
                     read_layers=tuple(int(x) for x in a.read_layers.split(",") if x.strip()),
                     head=a.head, head_hidden=a.head_hidden, dropout=a.dropout,
                     weight_decay=a.weight_decay, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                     layer_lr=a.layer_lr, eval_every=a.eval_every, feature_batch=a.feature_batch, seed=a.seed,
                     device=a.device, threads=a.threads, max_minutes=a.max_minutes, lists=a.lists,
                     distil=a.distil, distil_temperature=a.distil_temperature)
    return config, a.resume


def main(argv: Sequence[str] | None = None) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config, resume = parse_args(argv)
    record = train(config, resume)
    best = record["validations"][-1]["metrics"]
    methods = RANDOM_METHODS if config.alone else METHODS
    print(json.dumps({k: {m: best[k][m] for m in methods} for k in KINDS}, indent=2))


if __name__ == "__main__":
    main()
