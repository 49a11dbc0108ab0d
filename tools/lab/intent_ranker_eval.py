"""How the intent ranker is judged (#15): NDCG@10 and HR@1 of each validation list under every method, per
intention kind, the paired bootstrap between methods, and the validation curves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from tools.core.metrics import bootstrap, ndcg, rank_of
from tools.eval.intentions import SPECIFIC, VAGUE, StringFilter
from tools.lab.intent_ranker_data import KINDS, NONE, IntentRankerConfig, ListExample
from tools.lab.intent_ranker_features import LMFeatures, TextFeatures
from tools.lab.intent_ranker_model import LMResidual, TextResidual, scores_of

KIND_NAMES = {SPECIFIC: "specific (I2)", VAGUE: "vague (I1)", NONE: "no intention (I0)"}
METHODS = ("retrieval order", "LM residual", "MiniLM residual", "filter + sequence model (list)",
           "filter + sequence model (full catalog)")
RANDOM_METHODS = ("popularity (list)", "fused retrieval score (list)", "sequence model (list)", "LM alone",
                  "MiniLM alone", "filter + popularity (list)", "filter + sequence model (list)")


def list_rank(scores: Sequence[float], answer: int) -> int | None:
    """0-based rank of the answer in the list (ties against it); None when the list misses the target."""
    return None if answer < 0 else rank_of(scores, answer)


def per_user_metrics(ranks: Sequence[int | None]) -> dict[str, np.ndarray]:
    return {"NDCG@10": np.array([ndcg(r, 10) for r in ranks]),
            "HR@1": np.array([float(r == 0) for r in ranks])}


def filter_ranks(string_filter: StringFilter, examples: Sequence[ListExample]) -> list[int | None]:
    out = []
    for e in examples:
        order = string_filter.order(e.query, e.candidates, e.sequence)
        out.append(order.index(e.target) if e.answer >= 0 else None)
    return out


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
