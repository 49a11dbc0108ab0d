"""`instructrec retrain`: learn from what users did since the last model, and push it only if it is not worse.

1. Read every user's history from the interaction store the gateways write (``RecordInteractions``; the seed
   from ``train.csv`` included), items of the catalog only, users with at least 3 items.
2. Hold out each user's last item (the evaluation slice) and the one before it (validation, which picks the
   epoch); train the sequence model on the rest within a time budget (resumable from its checkpoint).
3. Score the held-out slice, full ranking of the catalog with the history excluded, with the new model and with
   the version the repository serves now (its ONNX graph and item vectors, in this process).
4. Only if the new model's NDCG@10 is not below the served one's (by more than ``tolerance``): export it as the
   next ``sequence_encoder`` version and push it to every Triton (``tools/export/push.py``: parity, canary,
   rollback), then build the sequence index of that version. Retrieval switches to the new pair once both are
   there (the old pair answers until then: no downtime). Otherwise nothing changes, and the record says why.

The record (``<out_dir>/retrain.json``) holds both figures, the decision and the pushed version.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from services.common.interaction_store import open_store
from services.core.catalog import Catalog
from services.core.contracts import SEQUENCE_ENCODER
from tools.core.metrics import at_10, catalog_ranks
from tools.core.sequence_model import ExportedSequenceScorer, SequenceScorer, SequentialConfig, save

log = logging.getLogger("instructrec.retrain")


@dataclass(frozen=True)
class RetrainConfig:
    store: str
    """The interaction store the gateways use (``GATEWAY_INTERACTION_STORE``: a SQLite file or a URL)."""
    catalog: Path
    repository: Path
    """The model repository Triton serves."""
    triton: Sequence[str]
    """Triton gRPC addresses to push to; the first also serves the index build."""
    sequence_index_dir: Path
    """Where retrieval reads the sequence index (``RETRIEVAL_SEQUENCE_INDEX_DIR``)."""
    out_dir: Path
    """The run folder: checkpoint, model, record."""
    train_minutes: float = 30.0
    sequence: SequentialConfig = SequentialConfig()
    tolerance: float = 0.0
    """The new model ships when its held-out NDCG@10 >= the served one's minus this."""
    min_users: int = 20
    workspace: Path = Path("var")


def _read_histories(store_target: str) -> dict[str, list[str]]:
    async def read() -> dict[str, list[str]]:
        store = open_store(store_target)
        await store.open()
        try:
            return await store.histories()
        finally:
            await store.close()

    return asyncio.run(read())


def held_out_split(histories: dict[str, list[str]], catalog: Catalog) -> tuple[dict, list, list]:
    """(training sequences by user, validation (history, item) pairs, evaluation (history, item) pairs)."""
    train, valid, test = {}, [], []
    for user, items in histories.items():
        items = [i for i in items if i in catalog]
        if len(items) < 3:
            continue
        train[user] = items[:-2]
        valid.append((items[:-2], items[-2]))
        test.append((items[:-1], items[-1]))
    return train, valid, test


def _scores_at_10(scorer, cases: list[tuple[list[str], str]], ids: list[str]) -> dict[str, float]:
    import numpy as np

    position = {item: n for n, item in enumerate(ids)}
    vectors = scorer.item_vectors()
    items = np.stack([vectors.get(i, np.full(len(next(iter(vectors.values()))), np.nan)) for i in ids])
    scores = scorer.user_vectors([h for h, _ in cases]) @ items.T  # unknown items: NaN, ranked last
    return at_10(catalog_ranks(scores, [position[t] for _, t in cases],
                               [[position[i] for i in h] for h, _ in cases]))


def retrain(config: RetrainConfig) -> dict:
    """Run the job (see the module docstring); returns the record."""
    from tools.export import latest_version
    from tools.export.push import publish
    from tools.index import build_sequence_index_async
    from tools.train.sequential import build_data, train_sequential

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.load(config.catalog)
    train, valid, test = held_out_split(_read_histories(config.store), catalog)
    if len(train) < config.min_users:
        raise ValueError(f"{len(train)} users with 3 or more interactions in the store, at least "
                         f"{config.min_users} needed")
    ids = list(catalog.items)
    threads = config.sequence.threads or os.cpu_count() or 1
    result = train_sequential(build_data(ids, list(train.values()), valid), replace(config.sequence, threads=threads),
                              max_minutes=config.train_minutes, checkpoint=out / "checkpoint.pt", resume=True)
    model_dir = save(result.model, ids, out / "model")
    served_version = latest_version(config.repository, SEQUENCE_ENCODER)
    new = _scores_at_10(SequenceScorer(model_dir), test, ids)
    record = {"users": len(train), "interactions": sum(len(s) for s in train.values()) + 2 * len(test),
              "epochs": len(result.record["epochs"]), "best_epoch": result.record["best_epoch"],
              "new": new, "served_version": served_version, "tolerance": config.tolerance,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if served_version is not None:
        served_folder = Path(config.repository) / SEQUENCE_ENCODER / str(served_version)
        record["served"] = _scores_at_10(ExportedSequenceScorer(served_folder), test, ids)
    if "served" in record and new["NDCG@10"] < record["served"]["NDCG@10"] - config.tolerance:
        record["decision"] = "kept the served version: the new model is worse on the held-out slice"
    else:
        version_dir, report = publish(SEQUENCE_ENCODER, model_dir, Path(config.repository), list(config.triton),
                                      workspace=config.workspace)
        popularity = out / "train.csv"  # the index's popularity prior: the training part the model saw
        with open(popularity, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["user_id", "item_id", "timestamp"])
            writer.writerows((user, item, n) for user, items in train.items() for n, item in enumerate(items))
        asyncio.run(build_sequence_index_async(config.catalog, popularity, config.sequence_index_dir,
                                               config.triton[0], config.repository, model_version=version_dir.name))
        record.update({"decision": f"pushed version {version_dir.name} and its sequence index",
                       "pushed_version": int(version_dir.name),
                       "push": asdict(report) if report is not None else None})
    (out / "retrain.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("retrain: %s (new NDCG@10 %.4f, served %s)", record["decision"], new["NDCG@10"],
             record.get("served", {}).get("NDCG@10"))
    return record
