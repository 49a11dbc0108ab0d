"""Fit the retrieval service's fusion weights: how the sequence model, the text, popularity and the query's
understood attributes combine.

The served retrieval score (:func:`services.core.fusion.fuse_retrieval`) is
``sequence * s_seq + text * cos / temperature + popularity * log(1 + count) + intent * b``, with one set of
weights per situation: with a query, without one (the sequence model runs in both), and without the sequence
model (an anonymous caller with a query). Scores rank the same under a positive scale, so the sequence weight
is fixed at 1 (0 without it) and the others are searched jointly on a grid, maximising NDCG@10 over the whole
catalog (history excluded) on validation users: history = the training part, target = the validation item; the
test items are never looked at. The queries are the teacher's intentions about the validation item, vague and
specific in turn, from the TRAINING phrase bank (``tools/core/teacher.py``); the evaluation's bank is never used.

Every part is the served one: the sequence model's user and item vectors, the served text rule (request
text = query + recent titles, blended with the history's item vectors; the query alone for an anonymous
caller) over the given text encoder's item vectors, and the intent heads (``tools/train/intent.py``) on the
query alone. The heads the service runs are fitted on every training phrase, so on those phrases they would
read better than on a caller's unseen wording and the fit would trust them too much: here each query is read
by heads fitted WITHOUT its wording (the cross-validation folds the index build chooses its L2 weight by).
The fitted weights are written to ``tools/train/adapters/retrieval_fusion.json``; the retrieval service's
settings default to them (a unit test keeps the two equal).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from services.core.catalog import item_text
from services.core.contracts import (
    INTENT_MIN_CONFIDENCE,
    RECENT_HISTORY_ITEMS,
    RETRIEVAL_HISTORY_WEIGHT,
    RETRIEVAL_TEMPERATURE,
)
from services.core.fusion import SERVED_RETRIEVAL_FUSION, SITUATIONS, RetrievalFusion, SourceWeights
from services.core.modeltext import mean_pooled_encoder
from tools.core import teacher
from tools.core.machine import repo_path
from tools.core.metrics import ndcg_of_ranks
from tools.core.retrieval_score import CatalogScorer
from tools.core.sequence_model import SequenceScorer
from tools.train.examples import load_training_data, validation_samples
from tools.train.intent import choose_l2, cross_fitted_models, fit_intent_model, intent_examples

log = logging.getLogger(__name__)

FUSION_FILE = Path(__file__).resolve().parent / "adapters" / "retrieval_fusion.json"
TEXT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# Without a query, the text weight is kept only if it raises validation NDCG@10 by more than this many standard
# errors of the paired per-user gain: a gain within noise is not worth a text-encoder call on every such request.
MIN_TEXT_GAIN_SE = 2.0
POPULARITY_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
INTENT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)
QUERY_SITUATIONS = ("with_query", "without_sequence")
KINDS = ("vague", "specific")
TOP_ROWS = 15


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
    situations: tuple[str, ...] = SITUATIONS
    """The situations fitted; the others keep the served weights (a catalog without genres has no training
    queries worth fitting the query situations on: :func:`fit_situations`)."""


def _per_user_ndcg(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@10 and HR@10 of each row's target over the row's scores, ``excluded`` masked out. Ties count half
    (the target's expected rank among equal scores), so a constant score is not a perfect one."""
    s = np.where(excluded, -np.inf, scores)
    target = s[np.arange(len(s)), targets]
    ranks = (s > target[:, None]).sum(axis=1) + ((s == target[:, None]).sum(axis=1) - 1) / 2.0
    return ndcg_of_ranks(ranks, 10), (ranks < 10).astype(np.float64)


def _ndcg_at_10(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> tuple[float, float]:
    """Mean NDCG@10 and HR@10 (see :func:`_per_user_ndcg`)."""
    ndcg, hit = _per_user_ndcg(scores, targets, excluded)
    return float(ndcg.mean()), float(hit.mean())


@dataclass
class ValidationScores:
    """Each source's score of every catalog item for each validation user (rows: users, columns: ``ids``)."""

    samples: list
    scorer: CatalogScorer
    """The served score's offline form over the catalog (``tools/core/retrieval_score.py``)."""
    sequence: np.ndarray
    """Sequence model logits; items it does not know are filled with the row's mean."""
    cosines: dict[str, np.ndarray]
    """Text rule cosines per situation ("with_query", "without_query", "without_sequence")."""
    excluded: np.ndarray
    """The history of each row (never retrieved)."""
    targets: np.ndarray
    intent: np.ndarray
    """Each row's query read by cross-fitted intent heads: every item's understood-attribute score ``b``
    (0 where the heads name nothing)."""
    kinds: list[str]
    """Each row's query kind ("vague" or "specific")."""
    intent_record: dict = field(default_factory=dict)
    """How the cross-fitted heads were fitted (L2 weight, examples) and how many queries they read."""

    @property
    def ids(self) -> list[str]:
        """The catalog's item ids, in column order."""
        return self.scorer.ids

    @property
    def log_popularity(self) -> np.ndarray:
        return self.scorer.log_popularity

    def fused(self, weights: SourceWeights, situation: str) -> np.ndarray:
        """The served fused score of every item (without the history mask)."""
        return self.scorer.fused(weights, sequence=self.sequence, text=self.cosines[situation],
                                 intent=self.intent if situation in QUERY_SITUATIONS else None)


def fit_situations(catalog) -> tuple[str, ...]:
    """What can be fitted on this catalog: the query situations need the teacher's training queries, which are
    written from genres (and years); without genres only the situation without a query is fitted."""
    has_genres = sum(bool(item.genres) for item in catalog) >= 0.5 * len(catalog)
    return SITUATIONS if has_genres else ("without_query",)


def training_queries(catalog, samples, seed: int) -> tuple[list[str], list[str], list[str]]:
    """The teacher's intention about each sample's target from the training bank, vague and specific in turn:
    (queries, kinds, wordings), the wording being the bank phrase or template (what a fold holds out)."""
    rng = random.Random(f"retrieval-fusion:{seed}")
    queries, kinds, wordings = [], [], []
    for n, sample in enumerate(samples):
        item = catalog[sample.target]
        if n % 2 == 0:
            query = teacher.vague_intention(item, rng)
            queries.append(query), kinds.append("vague"), wordings.append(query)
        else:
            query, template = teacher.specific_request_and_template(item, rng)
            queries.append(query), kinds.append("specific"), wordings.append(template)
    return queries, kinds, wordings


def cross_fitted_intent(catalog, ids: list[str], query_vectors: np.ndarray, wordings: list[str], pooled, tokenizer,
                        device) -> tuple[np.ndarray, dict]:
    """Each query's understood-attribute score of every item, read by heads fitted without its wording (the
    L2 weight chosen as the index build chooses it); a wording in no fold is read by heads fitted on all."""
    from tools.core.text_encoder import encode

    examples, heads = intent_examples(catalog)
    with torch.no_grad():
        x = encode(pooled, tokenizer, [e.text for e in examples], device).numpy()
    l2, _ = choose_l2(x, examples, heads)
    folds = cross_fitted_models(x, examples, heads, l2)
    everything = fit_intent_model(x, examples, heads, l2=l2)
    out = np.zeros((len(wordings), len(ids)))
    named = 0
    for row, (vector, wording) in enumerate(zip(query_vectors, wordings)):
        model = next((m for held, m in folds if wording in held), everything)
        understood = model.understand(np.asarray(vector, dtype=np.float64), INTENT_MIN_CONFIDENCE)
        if understood:
            named += 1
            out[row] = model.item_scores(understood, catalog, ids)
    return out, {"l2": l2, "examples": len(examples), "queries read": len(wordings), "queries naming a value": named,
                 "min_confidence": INTENT_MIN_CONFIDENCE}


def validation_scores(config: RetrievalFitConfig, *, samples_of=validation_samples,
                      queries_of=training_queries) -> ValidationScores:
    """Score the whole catalog with each source for the validation users, as the retrieval service would.

    ``samples_of(data, users)`` and ``queries_of(catalog, samples, seed)`` choose the cases and their queries (the
    fit's: validation cases and the training bank; an experiment may pass others, e.g. ``tools/lab``)."""
    from tools.core.text_encoder import encode, load_encoder

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cpu")
    data = load_training_data(config.data_dir)
    catalog = data.catalog
    samples = samples_of(data, config.validation_users)
    ids = list(catalog.items)
    position = {item: n for n, item in enumerate(ids)}
    targets = np.array([position[s.target] for s in samples])
    excluded = np.zeros((len(samples), len(ids)), dtype=bool)
    for row, sample in enumerate(samples):
        excluded[row, [position[i] for i in sample.history if i in position]] = True

    encoder, tokenizer = load_encoder(config.encoder, device)
    pooled = mean_pooled_encoder(encoder)
    recent = [[catalog[i] for i in s.history[-RECENT_HISTORY_ITEMS:]] for s in samples]
    queries, kinds, wordings = queries_of(catalog, samples, config.seed)
    with torch.no_grad():
        item_text_vectors = encode(pooled, tokenizer, [item_text(catalog[i]) for i in ids], device).numpy()
        texts = {
            "without_query": [prompts.retrieval_text("", r, RECENT_HISTORY_ITEMS) for r in recent],
            "with_query": [prompts.retrieval_text(q, r, RECENT_HISTORY_ITEMS) for q, r in zip(queries, recent)],
            # An anonymous caller: the request text is the query alone (and there is no history to blend).
            "without_sequence": [prompts.retrieval_text(q, [], RECENT_HISTORY_ITEMS) for q in queries],
        }
        encoded = {k: encode(pooled, tokenizer, v, device).numpy() for k, v in texts.items()}
        query_vectors = encode(pooled, tokenizer, [q.strip() for q in queries], device).numpy()
    sequence = SequenceScorer(config.sequence)
    scorer = CatalogScorer(ids, data.split.popularity, item_text_vectors, sequence.item_vectors())
    seq = scorer.sequence_logits(sequence.user_vectors([s.history for s in samples]))  # [N, items]
    recent_ids = [[i.item_id for i in r] for r in recent]
    cosines = {situation: scorer.text_cosines(vectors, recent_ids if situation != "without_sequence"
                                              else [[] for _ in recent_ids])
               for situation, vectors in encoded.items()}
    if any(situation in QUERY_SITUATIONS for situation in config.situations):
        intent, intent_record = cross_fitted_intent(catalog, ids, query_vectors, wordings, pooled, tokenizer, device)
    else:  # no query situation is fitted: the intent heads are not needed
        intent, intent_record = None, {"skipped": "no situation with a query is fitted"}
    log.info("intent heads: %s", intent_record)

    seq_filled = np.where(np.isnan(seq), np.nanmean(seq, axis=1, keepdims=True), seq)
    return ValidationScores(samples, scorer, seq_filled, cosines, excluded, targets, intent, kinds,
                            intent_record)


def _sequence_weight(situation: str) -> float:
    """Fixed: 1 where the sequence model runs (the other weights are relative to it), 0 where it does not."""
    return 0.0 if situation == "without_sequence" else 1.0


def _search(scores: ValidationScores, situation: str) -> list[dict]:
    """Every grid point of the situation with its NDCG@10 / HR@10, per query kind too."""
    sequence = _sequence_weight(situation)
    intent_grid = INTENT_GRID if situation in QUERY_SITUATIONS else (0.0,)
    masks = {kind: np.array([k == kind for k in scores.kinds]) for kind in KINDS}
    rows = []
    for tw, pw, iw in itertools.product(TEXT_GRID, POPULARITY_GRID, intent_grid):
        w = SourceWeights(sequence=sequence, text=tw, popularity=pw, intent=iw)
        ndcg, hit = _per_user_ndcg(scores.fused(w, situation), scores.targets, scores.excluded)
        row = {"text": tw, "popularity": pw, "intent": iw, "NDCG@10": round(float(ndcg.mean()), 5),
               "HR@10": round(float(hit.mean()), 5)}
        if situation in QUERY_SITUATIONS:
            row.update({f"NDCG@10 {kind}": round(float(ndcg[m].mean()), 5) for kind, m in masks.items()})
        rows.append(row)
    return rows


def _weights_of(row: dict, *, sequence: float) -> SourceWeights:
    return SourceWeights(sequence=sequence, text=row["text"], popularity=row["popularity"], intent=row["intent"])


def _best(rows: list[dict]) -> dict:
    """The best NDCG@10; ties to the smaller weights (cheaper, and less reliant on one source)."""
    return max(rows, key=lambda g: (g["NDCG@10"], -g["text"], -g["intent"], -g["popularity"]))


def _paired_gain(scores: ValidationScores, situation: str, a: SourceWeights, b: SourceWeights) -> dict:
    """Mean per-user NDCG@10 gain of ``a`` over ``b`` and its standard error."""
    gain = (_per_user_ndcg(scores.fused(a, situation), scores.targets, scores.excluded)[0]
            - _per_user_ndcg(scores.fused(b, situation), scores.targets, scores.excluded)[0])
    return {"gain": float(gain.mean()), "gain_stderr": float(gain.std(ddof=1) / np.sqrt(len(gain)))}


def fit(config: RetrievalFitConfig) -> dict:
    """Grid-search the weights of every situation; returns the record (``fusion``: the chosen weights)."""
    scores = validation_scores(config)
    seq, log_pop, targets, excluded = scores.sequence, scores.log_popularity, scores.targets, scores.excluded
    record: dict = {"validation_users": len(scores.samples), "grid": {}, "reference": {},
                    "intent_heads": scores.intent_record,
                    "grids": {"text": TEXT_GRID, "popularity": POPULARITY_GRID, "intent": INTENT_GRID}}
    chosen = {}
    for situation in SITUATIONS:
        if situation not in config.situations:
            # The intent heads learn from the same genre phrases: without them they read nothing (intent 0).
            chosen[situation] = replace(getattr(SERVED_RETRIEVAL_FUSION, situation), intent=0.0)
            record["reference"][situation] = {"not fitted": "the served weights are kept, without the intent term "
                                                            "(no training queries for this catalog)"}
            continue
        rows = _search(scores, situation)
        best = _best(rows)
        sequence = _sequence_weight(situation)
        weights = partial(_weights_of, sequence=sequence)
        if situation == "without_query":
            # Without a query the text side costs a text-encoder call per request: it must earn it.
            no_text = _best([g for g in rows if g["text"] == 0])
            gain = _paired_gain(scores, situation, weights(best), weights(no_text))
            record["text_without_query"] = {"best with text": best, "best without text": no_text, **gain,
                                            "rule": f"text kept if its gain > {MIN_TEXT_GAIN_SE} standard errors"}
            if gain["gain"] <= MIN_TEXT_GAIN_SE * gain["gain_stderr"]:
                best = no_text
        chosen[situation] = weights(best)
        record["grid"][situation] = {"top": sorted(rows, key=lambda g: -g["NDCG@10"])[:TOP_ROWS]}
        cos = scores.cosines[situation]
        reference = {
            "popularity alone": dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(
                np.broadcast_to(log_pop, seq.shape).copy(), targets, excluded))),
            "text rule alone (text 1, popularity 1)": dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(
                cos / RETRIEVAL_TEMPERATURE + log_pop, targets, excluded))),
            "fused (chosen)": best,
            # The weights the code served when this fit ran (the previous fit, on the first run after a change).
            "served when fitted": dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(
                scores.fused(getattr(SERVED_RETRIEVAL_FUSION, situation), situation), targets, excluded))),
        }
        if sequence:
            reference["sequence alone"] = dict(zip(("NDCG@10", "HR@10"), _ndcg_at_10(seq, targets, excluded)))
        if situation in QUERY_SITUATIONS:
            # What the intent term adds: the best grid point without it, and the paired gain over it.
            no_intent = _best([g for g in rows if g["intent"] == 0])
            reference["best without intent"] = no_intent
            reference["chosen over best without intent"] = _paired_gain(scores, situation, weights(best),
                                                                        weights(no_intent))
            record["grid"][situation]["best per intent weight"] = [
                _best([g for g in rows if g["intent"] == iw]) for iw in INTENT_GRID]
        record["reference"][situation] = reference
        log.info("%s: %s -> NDCG@10 %.4f", situation, chosen[situation], best["NDCG@10"])
    fusion = RetrievalFusion(**chosen)
    record.update({"fusion": fusion.to_json(), "config": {k: repo_path(v) if isinstance(v, Path) else v
                                                           for k, v in asdict(config).items()},
                   "temperature": RETRIEVAL_TEMPERATURE, "history_weight": RETRIEVAL_HISTORY_WEIGHT,
                   "queries": "training bank: vague_intention (even rows) / specific_request (odd rows)"})
    return record


def write(record: dict, command: str, path: Path = FUSION_FILE) -> Path:
    path.write_text(json.dumps({**record, "command": command}, indent=1, sort_keys=True) + "\n")
    return path


def read_retrieval_fusion(path: Path = FUSION_FILE) -> RetrievalFusion:
    """The committed fitted weights."""
    return RetrievalFusion.from_json(json.loads(path.read_text())["fusion"])
