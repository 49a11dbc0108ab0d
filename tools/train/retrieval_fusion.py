"""Fit the retrieval service's fusion weights: how the sequence model, the text and popularity combine.

The served retrieval score (:func:`services.core.fusion.fuse_retrieval`) is
``sequence * s_seq + text * cos / temperature + popularity * log(1 + count)``, with one set of weights per
situation: requests with a query and without. Scores rank the same under a positive scale, so the sequence
weight is fixed at 1 and the text and popularity weights are searched on a grid, maximising NDCG@10 over the
whole catalog (history excluded) on validation users: history = the training part, target = the validation
item; the test items are never looked at. The queries of the "with query" situation are the teacher's
intentions about the validation item (vague and specific in turn, from the training phrase bank).

Every part is the served one: the sequence model's user and item vectors, and the served text rule (request
text = query + recent titles, blended with the history's item vectors) over the given text encoder's item
vectors. The fitted weights are written to ``tools/train/adapters/retrieval_fusion.json``; the retrieval
service's settings default to them (a unit test keeps the two equal).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from services.core.catalog import item_text
from services.core.contracts import RECENT_HISTORY_ITEMS, RETRIEVAL_HISTORY_WEIGHT, RETRIEVAL_TEMPERATURE
from services.core.fusion import RetrievalFusion, SourceWeights
from services.core.index import user_vector
from services.core.modeltext import mean_pooled_encoder
from tools import teacher
from tools.train import sequential
from tools.train.common import repo_path
from tools.train.examples import load_training_data, validation_samples

log = logging.getLogger(__name__)

FUSION_FILE = Path(__file__).resolve().parent / "adapters" / "retrieval_fusion.json"
TEXT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# Without a query, the text weight is kept only if it raises validation NDCG@10 by more than this many standard
# errors of the paired per-user gain: a gain within noise is not worth a text-encoder call on every such request.
MIN_TEXT_GAIN_SE = 2.0
POPULARITY_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


@dataclass
class RetrievalFitConfig:
    data_dir: Path
    encoder: Path
    """LoRA adapter folder or Hugging Face folder of the text encoder (the served one)."""
    sequence: Path
    """Folder of the sequence model (``tools/train/adapters/sequence_encoder``)."""
    validation_users: int = 0
    """0: all validation users."""
    seed: int = 0
    threads: int = 0


def _per_user_ndcg(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@10 and HR@10 of each row's target over the row's scores, ``excluded`` masked out."""
    s = np.where(excluded, -np.inf, scores)
    target = s[np.arange(len(s)), targets]
    ranks = (s > target[:, None]).sum(axis=1)
    hit = ranks < 10
    return hit / np.log2(ranks + 2.0), hit.astype(np.float64)


def _ndcg_at_10(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> tuple[float, float]:
    """Mean NDCG@10 and HR@10 (see :func:`_per_user_ndcg`)."""
    ndcg, hit = _per_user_ndcg(scores, targets, excluded)
    return float(ndcg.mean()), float(hit.mean())


@dataclass
class ValidationScores:
    """Each source's score of every catalog item for each validation user (rows: users, columns: ``ids``)."""

    samples: list
    ids: list[str]
    sequence: np.ndarray
    """Sequence model logits; items it does not know are filled with the row's mean."""
    cosines: dict[str, np.ndarray]
    """Text rule cosines per situation ("with_query", "without_query")."""
    log_popularity: np.ndarray
    excluded: np.ndarray
    """The history of each row (never retrieved)."""
    targets: np.ndarray

    def fused(self, weights: SourceWeights, situation: str) -> np.ndarray:
        """The served fused score of every item (without the history mask)."""
        return (weights.sequence * self.sequence + weights.text * self.cosines[situation] / RETRIEVAL_TEMPERATURE
                + weights.popularity * self.log_popularity)


def validation_scores(config: RetrievalFitConfig) -> ValidationScores:
    """Score the whole catalog with each source for the validation users, as the retrieval service would."""
    from tools.train.retriever import encode, load_encoder

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cpu")
    data = load_training_data(config.data_dir)
    catalog = data.catalog
    samples = validation_samples(data, config.validation_users)
    ids = list(catalog.items)
    position = {item: n for n, item in enumerate(ids)}
    targets = np.array([position[s.target] for s in samples])
    excluded = np.zeros((len(samples), len(ids)), dtype=bool)
    for row, sample in enumerate(samples):
        excluded[row, [position[i] for i in sample.history if i in position]] = True
    log_pop = np.log1p(np.array([data.split.popularity[i] for i in ids], dtype=np.float64))

    model, vocab = sequential.load(config.sequence)
    seq_index = {item: n for n, item in enumerate(vocab, start=1)}
    with torch.no_grad():
        seqs = torch.tensor([sequential.left_pad([seq_index[i] for i in s.history if i in seq_index],
                                                 model.config.max_len) for s in samples])
        users = model(seqs).numpy()  # [N, H]
        item_vectors = model.item_vectors().numpy()  # [V + 1, H]
    rows = np.array([seq_index.get(i, 0) for i in ids])
    seq = users @ item_vectors[rows].T  # [N, items]
    seq[:, rows == 0] = np.nan

    encoder, tokenizer = load_encoder(config.encoder, device)
    pooled = mean_pooled_encoder(encoder)
    rng = random.Random(f"retrieval-fusion:{config.seed}")
    recent = [[catalog[i] for i in s.history[-RECENT_HISTORY_ITEMS:]] for s in samples]
    queries = [teacher.vague_intention(catalog[s.target], rng) if n % 2 == 0 else
               teacher.specific_intention(catalog[s.target]) for n, s in enumerate(samples)]
    with torch.no_grad():
        item_text_vectors = encode(pooled, tokenizer, [item_text(catalog[i]) for i in ids], device).numpy()
        texts = {
            "without_query": [prompts.retrieval_text("", r, RECENT_HISTORY_ITEMS) for r in recent],
            "with_query": [prompts.retrieval_text(q, r, RECENT_HISTORY_ITEMS) for q, r in zip(queries, recent)],
        }
        encoded = {k: encode(pooled, tokenizer, v, device).numpy() for k, v in texts.items()}
    cosines = {}
    for situation, vectors in encoded.items():
        blended = np.stack([user_vector(v, item_text_vectors[[position[i.item_id] for i in r]] if r else None,
                                        RETRIEVAL_HISTORY_WEIGHT) for v, r in zip(vectors, recent)])
        cosines[situation] = blended @ item_text_vectors.T  # [N, items]

    seq_filled = np.where(np.isnan(seq), np.nanmean(seq, axis=1, keepdims=True), seq)
    return ValidationScores(samples, ids, seq_filled, cosines, log_pop, excluded, targets)


def fit(config: RetrievalFitConfig) -> dict:
    """Grid-search the weights of both situations; returns the record (``fusion``: the chosen weights)."""
    scores = validation_scores(config)
    samples, seq_filled, log_pop = scores.samples, scores.sequence, scores.log_popularity
    targets, excluded, seq = scores.targets, scores.excluded, scores.sequence
    record: dict = {"validation_users": len(samples), "grid": {}, "reference": {}}
    chosen = {}
    for situation, cos in scores.cosines.items():
        grid = {}
        for tw in TEXT_GRID:
            for pw in POPULARITY_GRID:
                ndcg, hr = _ndcg_at_10(seq_filled + tw * cos / RETRIEVAL_TEMPERATURE + pw * log_pop, targets,
                                       excluded)
                grid[f"text={tw},popularity={pw}"] = {"NDCG@10": round(ndcg, 5), "HR@10": round(hr, 5),
                                                       "text": tw, "popularity": pw}
        best = max(grid.values(), key=lambda g: (g["NDCG@10"], -g["text"], -g["popularity"]))
        if situation == "without_query":
            # Without a query the text side costs a text-encoder call per request: it must earn it.
            no_text = max((g for g in grid.values() if g["text"] == 0), key=lambda g: (g["NDCG@10"], -g["popularity"]))
            gain = (_per_user_ndcg(seq_filled + best["text"] * cos / RETRIEVAL_TEMPERATURE + best["popularity"]
                                   * log_pop, targets, excluded)[0]
                    - _per_user_ndcg(seq_filled + no_text["popularity"] * log_pop, targets, excluded)[0])
            stderr = float(gain.std(ddof=1) / np.sqrt(len(gain)))
            record["text_without_query"] = {"best with text": best, "best without text": no_text,
                                            "gain": float(gain.mean()), "gain_stderr": stderr,
                                            "rule": f"text kept if its gain > {MIN_TEXT_GAIN_SE} standard errors"}
            if gain.mean() <= MIN_TEXT_GAIN_SE * stderr:
                best = no_text
        chosen[situation] = SourceWeights(sequence=1.0, text=best["text"], popularity=best["popularity"])
        record["grid"][situation] = grid
        text_only = _ndcg_at_10(cos / RETRIEVAL_TEMPERATURE + log_pop, targets, excluded)
        record["reference"][situation] = {
            "sequence alone": dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(seq_filled, targets, excluded))),
            "text rule alone (text 1, popularity 1)": dict(zip(("NDCG@10", "HR@10"), text_only)),
            "popularity alone": dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(
                np.broadcast_to(log_pop, seq.shape).copy(), targets, excluded))),
            "fused (chosen)": {"NDCG@10": best["NDCG@10"], "HR@10": best["HR@10"]},
        }
        log.info("%s: text %s, popularity %s -> NDCG@10 %.4f (sequence alone %.4f)", situation, best["text"],
                 best["popularity"], best["NDCG@10"], record["reference"][situation]["sequence alone"]["NDCG@10"])
    fusion = RetrievalFusion(with_query=chosen["with_query"], without_query=chosen["without_query"])
    record.update({"fusion": fusion.to_json(), "config": {k: repo_path(v) if isinstance(v, Path) else v
                                                           for k, v in asdict(config).items()},
                   "temperature": RETRIEVAL_TEMPERATURE, "history_weight": RETRIEVAL_HISTORY_WEIGHT})
    return record


def write(record: dict, command: str, path: Path = FUSION_FILE) -> Path:
    path.write_text(json.dumps({**record, "command": command}, indent=2, sort_keys=True) + "\n")
    return path


def read_retrieval_fusion(path: Path = FUSION_FILE) -> RetrievalFusion:
    """The committed fitted weights."""
    return RetrievalFusion.from_json(json.loads(path.read_text())["fusion"])
