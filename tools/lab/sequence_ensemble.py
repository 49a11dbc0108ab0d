"""Do several SASRec runs ranked together beat one (issue #30, MovieLens latest-small)?

Scores the validation and test cases of a split with each trained model (folders written by
``tools.lab.sequence_sweep`` or the bootstrap: ``<run>/model``) and with the sum of their logits, which is what one
served model with the members' user and item vectors concatenated would score (``[u1, u2] . [v1, v2]``). Prints and
writes full-ranking NDCG@10 (history excluded) of each member and of the sum, with the sum's paired gain over the
first member and its standard error. Nothing here is served.

    python -m tools.lab.sequence_ensemble --data-dir var/datasets/ml-latest-small/data \\
        var/datasets/ml-latest-small/sequence/model var/lab/sequence-sweep/d02/model --out docs/lab/sequence-ensemble
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from tools.core.metrics import ndcg_of_ranks
from tools.core.sequence_model import left_pad, load


def _per_case_ndcg(scores: np.ndarray, cases, index: dict[str, int]) -> np.ndarray:
    """NDCG@10 of each case's target over ``scores`` [cases, V + 1] (row 0 padding), its history excluded."""
    s = scores.copy()
    s[:, 0] = -np.inf
    for row, case in enumerate(cases):
        s[row, [index[i] for i in case.history if i in index and i != case.target]] = -np.inf
    targets = np.array([index[c.target] for c in cases])
    ranks = (s > s[np.arange(len(s)), targets][:, None]).sum(axis=1)
    return ndcg_of_ranks(ranks, 10)


def main(models: list[Path] = typer.Argument(..., help="Model folders (each a saved sequence model)."),
         data_dir: Path = typer.Option(..., help="The split the models were trained on."),
         out: Path = typer.Option(Path("docs/lab/sequence-ensemble"))) -> None:
    from tools.core.split import load_split

    split = load_split(data_dir)
    loaded = [load(m) for m in models]
    vocab = loaded[0][1]
    if any(v != vocab for _, v in loaded):
        raise typer.BadParameter("the models were trained on different catalogs")
    index = {item: n + 1 for n, item in enumerate(vocab)}
    record: dict = {"command": "python -m tools.lab.sequence_ensemble --data-dir " + str(data_dir) + " "
                    + " ".join(map(str, models)) + f" --out {out}", "models": [str(m) for m in models]}
    for name, cases in (("validation", split.valid_cases), ("test", split.test_cases)):
        cases = [c for c in cases if c.target in index]
        logits = []
        with torch.no_grad():
            for model, _ in loaded:
                model.eval()
                seqs = torch.tensor([left_pad([index[i] for i in c.history if i in index], model.config.max_len)
                                     for c in cases])
                logits.append((model(seqs) @ model.item_vectors().T).numpy())
        members = [_per_case_ndcg(s, cases, index) for s in logits]
        summed = _per_case_ndcg(sum(logits), cases, index)
        gain = summed - members[0]
        record[name] = {"users": len(cases), "members NDCG@10": [round(float(m.mean()), 4) for m in members],
                        "sum NDCG@10": round(float(summed.mean()), 4),
                        "gain over the first": round(float(gain.mean()), 4),
                        "stderr": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    typer.run(main)
