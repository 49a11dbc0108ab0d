"""Retrieval Recall@20 on the validation users, and the encoder's latency, against the number of recent
history titles in the retrieval text (docs/performance.md, "History length of the retrieval text").

Runs in one process on the committed tuned encoder adapter and the served retrieval rule (history blend,
popularity prior); the latency is that of the exported tuned version (``model_repository/text_encoder/2``,
written by `make run`) in ONNX Runtime on one thread, batch size 1. The test items are never looked at.
Writes var/bench/history_len.json.

    .venv/bin/python scripts/retrieval_history_length.py [VALIDATION_USERS]   # 0 or nothing: all
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoTokenizer

from services.common import prompts
from services.common.catalog import item_text
from services.retrieval.index import ItemIndex, user_vector, write_item_index
from services.retrieval.settings import RetrievalSettings
from tools.export import mean_pooled_encoder
from tools.train.examples import load_training_data, validation_samples
from tools.train.retriever import encode, load_encoder

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
    catalog = data.catalog
    fields = RetrievalSettings.model_fields
    history_weight = fields["history_weight"].default
    popularity_weight = fields["popularity_weight"].default
    samples = validation_samples(data, validation_users)
    encoder, tokenizer = load_encoder(ADAPTER, cpu)
    pooled = mean_pooled_encoder(encoder)
    ids = list(catalog.items)
    with torch.no_grad():
        vectors = encode(pooled, tokenizer, [item_text(catalog[i]) for i in ids], cpu).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        write_item_index(Path(tmp), ids, vectors, text_encoder_version="adapter",
                         popularity=[data.split.popularity[i] for i in ids])
        index = ItemIndex.load(tmp)
    out = {}
    for n in LENGTHS:
        texts = [prompts.retrieval_text("", [catalog[i] for i in s.history[-n:]], n) for s in samples]
        with torch.no_grad():
            queries = encode(pooled, tokenizer, texts, cpu).numpy()
        hits = 0
        for sample, query in zip(samples, queries):
            recent = [i for i in sample.history[-n:] if i in index]
            vector = user_vector(query, index.vectors_for(recent) if recent else None, history_weight)
            top = [i for i, _ in index.search(vector, 20, set(sample.history), popularity_weight)]
            hits += sample.target in top
        latency, tokens = onnx_latency_ms(texts[:TIMED_TEXTS])
        out[n] = {"recall@20": hits / len(samples), "tokens_mean": tokens, "encoder_ms_p50": latency,
                  "validation_users": len(samples)}
        print(n, out[n], flush=True)
    Path("var/bench").mkdir(parents=True, exist_ok=True)
    Path("var/bench/history_len.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
