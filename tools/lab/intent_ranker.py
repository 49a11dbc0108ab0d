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

This module is the command line and the training loop; the parts live beside it: ``intent_ranker_data`` (the
configuration and the lists), ``intent_ranker_features`` (cached LM and MiniLM features), ``intent_ranker_model``
(the residual heads and the loss), ``intent_ranker_eval`` (metrics, comparisons, curves), with the frozen LM in
``frozen_lm`` and the retrieval score in ``hybrid_retrieval``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tools.core.machine import machine
from tools.eval.intentions import StringFilter
from tools.lab.frozen_lm import FrozenLM
from tools.lab.hybrid_retrieval import HybridRetrieval
from tools.lab.intent_ranker_data import KINDS, LISTS, IntentRankerConfig, training_examples, validation_examples
from tools.lab.intent_ranker_eval import METHODS, RANDOM_METHODS, comparisons, evaluate
from tools.lab.intent_ranker_features import cached_lm_features, text_features
from tools.lab.intent_ranker_model import (
    LMResidual,
    TextResidual,
    answers_of,
    batch_rows,
    fused_of,
    list_loss,
    teacher_of,
)
from tools.train.common import jsonable, resolve_device
from tools.train.examples import load_training_data

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
RECORD_FILE = "record.json"
BEST_FILE = "best_heads.pt"


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
    device = resolve_device(config.device)
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
    record = {"model": "intent-ranker (experimental)", "config": jsonable(config), "status": "running",
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
                 "config": jsonable(config)}
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
        fused, answers = fused_of(train_ex, rows, device), answers_of(train_ex, rows, device)
        teacher = teacher_of(train_ex, rows, device) if config.distil > 0 else None
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
