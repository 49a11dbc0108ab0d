"""Lab (issue #29, protocol 7): do the retrieval weights fitted over the whole catalog also rank best inside the
few items a compositional request's filters allow?

Protocol 7 builds, for each test user, a request from their next item (a genre it has, a frequent genre it lacks,
its decade) and compares the served stack with "filter + sequence model" (the sequence model alone over the
items the exact reading allows). The served ``with_query`` weights were fitted over the whole catalog
(``tools/train/retrieval_fusion.py``): popularity and the intent heads separate a target from 1,682 items, but
inside a filtered set of a few dozen items of one genre and decade they may only add noise.

This measures it on VALIDATION users (the test items are never looked at): the same validation scores as the
fit, each user's request and allowed set built from their validation item as protocol 7 builds them from the test
item (``--queries protocol7``: the request says no more than its filters; ``--queries teacher``: the fit's
training-bank intentions about the item, which describe it beyond the filters), and NDCG@10 inside that set for
the served weights, the sequence model alone, and every point of the fit's grid (paired gains with their
standard errors). ``--split test`` scores the test cases instead, for the fixed reference weights only (no grid:
nothing is chosen on them), to see how much of the validation gain the served stack should show on protocol 7.

    python -m tools.lab.filtered_fusion --out docs/lab/filtered-fusion
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import typer

from services.core.fusion import SERVED_RETRIEVAL_FUSION, SourceWeights
from tools.eval.following import compositional_request, constraint_filters, meets
from tools.train.examples import load_training_data, validation_samples
from tools.train.retrieval_fusion import (
    INTENT_GRID,
    POPULARITY_GRID,
    TEXT_GRID,
    RetrievalFitConfig,
    _per_user_ndcg,
    training_queries,
    validation_scores,
)

log = logging.getLogger(__name__)


def _request(catalog, sample, seed: int) -> tuple[str, dict] | None:
    """Protocol 7's request for a case (its text and exact reading), built from the case's target as protocol 7
    builds it from a test item."""
    return compositional_request(catalog, Counter(), catalog[sample.target], random.Random(f"{seed}:{sample.user_id}"))


def allowed_masks(catalog, ids: list[str], samples, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's allowed items (protocol 7's filters built from its target), and which rows have a request."""
    allowed = np.zeros((len(samples), len(ids)), dtype=bool)
    usable = np.zeros(len(samples), dtype=bool)
    for row, sample in enumerate(samples):
        built = _request(catalog, sample, seed)
        if built is not None:
            filters = constraint_filters(built[1])
            allowed[row] = [meets(catalog[i], filters) for i in ids]
            usable[row] = True
    return allowed, usable


def protocol7_scores(data_dir: Path, encoder: Path, sequence: Path, seed: int, queries: str, split: str):
    """The validation (or test) scores of every source with protocol 7's requests (or the teacher's), each row's
    allowed items and which rows have a request."""

    def protocol7_queries(catalog, samples, _seed):
        texts = [(_request(catalog, sample, seed) or ("",))[0] for sample in samples]
        return texts, ["specific"] * len(texts), texts  # wordings in no fold: the served heads read them

    scores = validation_scores(
        RetrievalFitConfig(data_dir, encoder, sequence, situations=("with_query",)),
        samples_of=(lambda data, count: list(data.split.test_cases)) if split == "test" else validation_samples,
        queries_of=protocol7_queries if queries == "protocol7" else training_queries)
    data = load_training_data(data_dir)
    allowed, usable = allowed_masks(data.catalog, scores.ids, scores.samples, seed)
    log.info("%d of %d %s users have a request; median allowed items %d", usable.sum(), len(usable), split,
             int(np.median(allowed[usable].sum(axis=1))))
    return scores, allowed, usable, data


def ease_scores(train: dict[str, list[str]], ids: list[str], histories: list, l2: float) -> np.ndarray:
    """EASE (Steck 2019): the closed-form item-item model fitted on the training interactions; each history's
    score of every item ``[len(histories), len(ids)]``."""
    position = {i: n for n, i in enumerate(ids)}
    x = np.zeros((len(train), len(ids)), dtype=np.float64)
    for row, items in enumerate(train.values()):
        x[row, [position[i] for i in items if i in position]] = 1.0
    gram = x.T @ x + l2 * np.eye(len(ids))
    inverse = np.linalg.inv(gram)
    b = -inverse / np.diag(inverse)
    np.fill_diagonal(b, 0.0)
    h = np.zeros((len(histories), len(ids)))
    for row, history in enumerate(histories):
        h[row, [position[i] for i in history if i in position]] = 1.0
    return h @ b


def recent_log_popularity(train_csv: Path, ids: list[str], share: float) -> np.ndarray:
    """``log(1 + count)`` of each item over the latest ``share`` of the training interactions by timestamp (a
    "trending" prior in place of the all-time counts)."""
    from services.core.catalog import read_interactions

    rows = sorted(read_interactions(train_csv), key=lambda r: r.timestamp)
    counts = Counter(r.item_id for r in rows[int(len(rows) * (1.0 - share)):])
    return np.log1p(np.array([counts.get(i, 0) for i in ids], dtype=np.float64))


def main(
    data_dir: Path = Path("var/data/movielens-100k"),
    encoder: Path = Path("tools/train/adapters/text_encoder"),
    sequence: Path = Path("tools/train/adapters/sequence_encoder"),
    seed: int = 0,
    queries: str = "protocol7",
    split: str = "validation",
    item_item: str = typer.Option("", help="EASE L2 weight and fusion weight to test, 'l2:weight' (test split); "
                                           "on validation every point of a small grid."),
    recent: float = typer.Option(1.0, help="Count popularity over this latest share of the training interactions "
                                           "(1: all of them, as served)."),
    out: Path = Path("docs/lab/filtered-fusion"),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    scores, allowed, usable, data = protocol7_scores(data_dir, encoder, sequence, seed, queries, split)
    if recent < 1.0:
        scores.scorer.log_popularity = recent_log_popularity(Path(data_dir) / "train.csv", scores.ids, recent)
    excluded = (scores.excluded | ~allowed)[usable]
    targets = scores.targets[usable]

    def per_user(w: SourceWeights) -> np.ndarray:
        return _per_user_ndcg(scores.fused(w, "with_query")[usable], targets, excluded)[0]

    reference = {
        "sequence alone": SourceWeights(1.0),
        "served with_query": SERVED_RETRIEVAL_FUSION.with_query,
        "served without_query": SERVED_RETRIEVAL_FUSION.without_query,
    }
    base = per_user(reference["sequence alone"])
    rows = []
    grid = itertools.product(TEXT_GRID, POPULARITY_GRID, INTENT_GRID) if split == "validation" else ()
    for text, pop, intent in grid:
        gain = per_user(SourceWeights(1.0, text, pop, intent)) - base
        rows.append({"text": text, "popularity": pop, "intent": intent, "NDCG@10": float(base.mean() + gain.mean()),
                     "gain over sequence alone": float(gain.mean()),
                     "stderr": float(gain.std(ddof=1) / np.sqrt(len(gain)))})
    command = (f"python -m tools.lab.filtered_fusion --queries {queries} --split {split}"
               + (f" --item-item {item_item}" if item_item else "") + (f" --recent {recent}" if recent < 1 else "")
               + f" --out {out}")
    record = {"split": split, "command": command, "users": int(usable.sum()),
              "median allowed items": int(np.median(allowed[usable].sum(axis=1))),
              "reference": {}, "top": sorted(rows, key=lambda r: -r["NDCG@10"])[:15]}
    for name, w in reference.items():
        gain = per_user(w) - base
        record["reference"][name] = {"weights": w.__dict__, "NDCG@10": float(base.mean() + gain.mean()),
                                     "gain over sequence alone": float(gain.mean()),
                                     "stderr": float(gain.std(ddof=1) / np.sqrt(len(gain)))}
    if item_item or split == "validation":
        points = [tuple(float(v) for v in item_item.split(":"))] if item_item else list(
            itertools.product((100.0, 300.0, 1000.0), (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)))
        served = scores.fused(SERVED_RETRIEVAL_FUSION.with_query, "with_query")[usable]
        cache: dict[float, np.ndarray] = {}
        record["item_item"] = []
        for l2, weight in points:
            if l2 not in cache:
                cache[l2] = ease_scores(data.split.train, scores.ids, [s.history for s in scores.samples], l2)[usable]
            for name, fused in (("served", served), ("sequence", scores.sequence[usable])):
                gain = _per_user_ndcg(fused + weight * cache[l2], targets, excluded)[0] - base
                record["item_item"].append({"l2": l2, "weight": weight, "over": name,
                                            "NDCG@10": float(base.mean() + gain.mean()),
                                            "gain over sequence alone": float(gain.mean()),
                                            "stderr": float(gain.std(ddof=1) / np.sqrt(len(gain)))})
        record["item_item"].sort(key=lambda r: -r["NDCG@10"])
        print(json.dumps(record["item_item"][:6], indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"reference": record["reference"], "best": record["top"][:5]}, indent=1))


if __name__ == "__main__":
    typer.run(main)
