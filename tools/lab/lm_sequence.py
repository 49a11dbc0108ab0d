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

This module is the command line and the run; the parts live beside it: ``lm_sequence_features`` (the windows, the
cached LM states and the pairs), ``lm_sequence_heads`` (the heads, their training and metrics),
``lm_sequence_fusion`` (cross-fitted SASRec logits and late fusion), with the frozen LM in ``frozen_lm``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tools.core.machine import machine
from tools.core.metrics import bootstrap
from tools.lab.lm_sequence_features import TEST, TRAIN, VALID, LMSequenceConfig, build_pairs, cached_states, windows
from tools.lab.lm_sequence_fusion import FUSIONS, cross_fitted_sequence, fold_sequence_models, late_fusion, seen_mask
from tools.lab.lm_sequence_heads import (
    SCORERS,
    evaluate_scores,
    fit,
    full_ranks,
    list_ranks,
    metrics,
    random_lists,
    scores_of,
)


def run(config: LMSequenceConfig) -> dict:
    from tools.lab.hybrid_retrieval import HybridRetrieval
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
