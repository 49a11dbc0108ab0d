"""Retrieval Recall@20 on the validation users, and the encoder's latency, against the number of recent
history titles in the retrieval text (docs/performance.md, "History length of the retrieval text").

Recall comes from the retriever trainer's ``recall_at`` (the committed tuned encoder adapter and the served
retrieval rule: history blend, popularity prior); the latency is that of the exported tuned version
(``model_repository/text_encoder/2``, written by `make run`) in ONNX Runtime on one thread, batch size 1.
The test items are never looked at. Writes var/bench/history_len.json.

    .venv/bin/python tools/lab/retrieval_history_length.py [VALIDATION_USERS]   # 0 or nothing: all
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoTokenizer

from services.core import prompts
from services.core.contracts import RETRIEVAL_HISTORY_WEIGHT, RETRIEVAL_POPULARITY_WEIGHT
from services.core.modeltext import mean_pooled_encoder
from tools.core.text_encoder import load_encoder
from tools.export import DEFAULT_MAX_TOKENS
from tools.train.examples import load_training_data, validation_samples
from tools.train.retriever import recall_at

DATA_DIR = Path("var/data/movielens-100k")
ADAPTER = Path("tools/train/adapters/text_encoder")
EXPORT = Path("model_repository/text_encoder/2")
LENGTHS = (10, 7, 5, 3)
TIMED_TEXTS = 150


def onnx_latency_ms(texts: list[str]) -> tuple[float, float]:
    """Median latency of one text per run (after 10 warm-up runs) and the mean token count."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(EXPORT / "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(str(EXPORT))
    inputs = {i.name for i in session.get_inputs()}
    latencies, tokens = [], []
    for text in texts:
        encoded = tokenizer([text], truncation=True, max_length=256, return_tensors="np")
        feeds = {"input_ids": encoded["input_ids"].astype(np.int64),
                 "attention_mask": encoded["attention_mask"].astype(np.int64)}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        start = time.perf_counter()
        session.run(None, feeds)
        latencies.append((time.perf_counter() - start) * 1000)
        tokens.append(encoded["input_ids"].shape[1])
    return float(np.median(latencies[10:])), float(np.mean(tokens))


def main(validation_users: int) -> dict:
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    data = load_training_data(DATA_DIR)
    history_weight = RETRIEVAL_HISTORY_WEIGHT
    popularity_weight = RETRIEVAL_POPULARITY_WEIGHT
    samples = validation_samples(data, validation_users)
    encoder, tokenizer = load_encoder(ADAPTER, cpu)
    pooled = mean_pooled_encoder(encoder)
    out = {}
    for n in LENGTHS:
        with torch.no_grad():
            recall = recall_at(pooled, tokenizer, data, samples, cpu, 20, history_weight, n, DEFAULT_MAX_TOKENS,
                               (popularity_weight,))["Recall@20"]
        texts = [prompts.retrieval_text("", [data.catalog[i] for i in s.history[-n:]], n) for s in samples]
        latency, tokens = onnx_latency_ms(texts[:TIMED_TEXTS])
        out[n] = {"recall@20": recall, "tokens_mean": tokens, "encoder_ms_p50": latency,
                  "validation_users": len(samples)}
        print(n, out[n], flush=True)
    Path("var/bench").mkdir(parents=True, exist_ok=True)
    Path("var/bench/history_len.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
