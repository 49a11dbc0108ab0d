"""`instructrec bootstrap`: your own catalog and interactions to a served workspace in one command.

Steps (each recorded in the workspace manifest when it finishes, and skipped on a rerun with the same inputs,
so a run cut short resumes; the sequence model resumes mid-training from its checkpoint):

1. ``data``: validate the catalog and interactions and write the leave-one-out split (``prepare-data``).
2. ``sequence_model``: train SASRec on the training part, the validation items choosing the epoch (early
   stopping), within a time budget; ``sequence_runs`` runs with seeds ``seed, seed + 1, ...`` and the one with
   the best validation NDCG@10 served (runs differ by about 0.005 test NDCG@10 on MovieLens latest-small:
   docs/lab/sequence-sweep.md).
3. ``model_repository``: the workspace's Triton repository: this sequence model exported (parity-checked), and
   the shared models (text encoder, ranker, preference generator, request reader) linked from the project's.
4. ``indexes``: a Triton on that repository; the text index with the intent heads and the sequence index.
5. ``fusion``: the retrieval weights fitted on validation users (what the retrieval service serves for it).
6. ``evaluation``: test users, full ranking: the served rule (no query) beside popularity and the sequence
   model alone.

Layout: :mod:`tools.core.workspace`. Serve it with ``instructrec run --data-dir <workspace>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from services.common.settings import ROOT
from services.core.catalog import Catalog
from services.core.contracts import SEQUENCE_ENCODER, SERVED_MODELS, TEXT_ENCODER
from tools.core.metrics import at_10, catalog_ranks
from tools.core.sequence_model import SequenceScorer, SequentialConfig
from tools.core.split import load_split
from tools.core.workspace import WORKSPACE_STEPS, DatasetWorkspace, file_digest

log = logging.getLogger("instructrec.bootstrap")


@dataclass(frozen=True)
class BootstrapConfig:
    catalog: Path
    interactions: Path
    root: Path
    """The workspace folder (``var/datasets/<name>``)."""
    synonyms: Path | None = None
    train_minutes: float = 45.0
    """Time budget of the sequence model's training, all runs together (early stopping usually ends each run
    sooner); each run may use what is left divided by the runs still to come."""
    sequence: SequentialConfig = SequentialConfig()
    sequence_runs: int = 2
    """Training runs of the sequence model (seeds ``sequence.seed + k``); validation picks the served one."""
    sequence_eval_users: int = 5_000
    """Validation (and test) users the sequence model's epochs are judged on (0: all)."""
    validation_users: int = 1_000
    """Validation users the retrieval weights are fitted on (0: all)."""
    evaluation_users: int = 0
    """Test users of the evaluation step (0: all)."""
    shared_repository: Path = ROOT / "model_repository"
    """The project's model repository, whose text encoder, ranker, preference generator and request reader the
    workspace serves (linked, not copied)."""
    prepare_shared: bool = True
    """Export the shared models' base and tuned versions first where missing (what `instructrec prepare` does)."""
    workspace: Path = ROOT / "var"
    """The project's working folder (converted base models, Triton's backends)."""


def _inputs(config: BootstrapConfig) -> dict:
    return {"catalog": file_digest(config.catalog), "interactions": file_digest(config.interactions),
            "synonyms": file_digest(config.synonyms) if config.synonyms else None,
            "sequence": {k: v for k, v in vars(config.sequence).items()}, "sequence_runs": config.sequence_runs,
            "train_minutes": config.train_minutes}


def bootstrap(config: BootstrapConfig, say: Callable[[str], None] = log.info) -> dict:
    """Run every step not yet done for these inputs; returns the manifest."""
    ws = DatasetWorkspace.at(config.root)
    manifest = ws.manifest()
    inputs = _inputs(config)
    if manifest.get("inputs") != inputs:
        if manifest:
            say(f"{ws.root}: the inputs changed since the last bootstrap: every step runs again")
        manifest = {"name": ws.name, "inputs": inputs, "steps": {}}
    steps = {"data": _data, "sequence_model": _sequence_model, "model_repository": _model_repository,
             "indexes": _indexes, "fusion": _fusion, "evaluation": _evaluation}
    assert tuple(steps) == WORKSPACE_STEPS
    for name, step in steps.items():
        if name in manifest["steps"]:
            say(f"[{name}] done before ({manifest['steps'][name].get('seconds', 0):.0f} s), skipped")
            continue
        say(f"[{name}] ...")
        t0 = time.perf_counter()
        record = step(config, ws, manifest)
        record["seconds"] = round(time.perf_counter() - t0, 1)
        manifest["steps"][name] = record
        ws.write_manifest(manifest)
        say(f"[{name}] done in {record['seconds']:.0f} s: {json.dumps(_brief(record))}")
    return manifest


def _brief(record: dict) -> dict:
    return {k: v for k, v in record.items() if not isinstance(v, (dict, list))}


def _data(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    from tools.data import prepare_custom

    prepare_custom(config.catalog, config.interactions, ws.data_dir, config.synonyms)
    split = load_split(ws.data_dir)
    manifest["catalog_digest"] = file_digest(ws.data_dir / "items.jsonl")
    return {"items": len(split.catalog), "users": len(split.train), "test_users": len(split.test_cases),
            "interactions": sum(len(s) for s in split.train.values()) + 2 * len(split.test_cases)}


def _sequence_model(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    """Train ``sequence_runs`` runs into ``sequence/seed-<seed>/`` (each resumable) and copy the one with the best
    validation NDCG@10 to ``sequence/model`` and ``sequence/record.json``, what the later steps read."""
    import shutil

    from tools.train import sequential

    threads = config.sequence.threads or os.cpu_count() or 1
    runs, validation, used = [], [], 0.0
    for k in range(config.sequence_runs):
        seed = config.sequence.seed + k
        budget = max(1.0, (config.train_minutes - used) / (config.sequence_runs - k))
        record = sequential.run(ws.data_dir, ws.sequence_run / f"seed-{seed}",
                                replace(config.sequence, threads=threads, seed=seed), resume=True,
                                max_minutes=budget, max_eval_users=config.sequence_eval_users,
                                eval_seed=config.sequence.seed)
        used += record["seconds"] / 60
        validation.append(record["best_valid_NDCG@10"])
        runs.append({"seed": seed, "epochs": len(record["epochs"]), "best_epoch": record["best_epoch"],
                     "valid_NDCG@10": round(record["best_valid_NDCG@10"], 4),
                     "test_NDCG@10": round(record["test_full_ranking"]["NDCG@10"], 4),
                     "train_seconds": record["seconds"]})
    chosen = runs[int(np.argmax(validation))]  # the first run on a tie
    source = ws.sequence_run / f"seed-{chosen['seed']}"
    shutil.rmtree(ws.sequence_run / sequential.MODEL_DIR, ignore_errors=True)
    shutil.copytree(source / sequential.MODEL_DIR, ws.sequence_run / sequential.MODEL_DIR)
    shutil.copy2(source / sequential.RECORD_FILE, ws.sequence_run / sequential.RECORD_FILE)
    return {"epochs": chosen["epochs"], "best_epoch": chosen["best_epoch"], "seed": chosen["seed"],
            "best_valid_NDCG@10": chosen["valid_NDCG@10"],
            "train_seconds": round(sum(r["train_seconds"] for r in runs), 1),
            "runs": runs}


def _model_repository(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    from tools.export import ensure_default_repository, export_model, latest_version, write_config
    from tools.runtime.assets import ensure_tuned_versions
    from tools.train.sequential import MODEL_DIR

    shared = Path(config.shared_repository).resolve()
    if config.prepare_shared:
        ensure_default_repository(shared, config.workspace)
        ensure_tuned_versions(shared, config.workspace)
    ws.model_repository.mkdir(parents=True, exist_ok=True)
    for name in SERVED_MODELS:
        if name == SEQUENCE_ENCODER:
            continue
        link = ws.model_repository / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(shared / name, target_is_directory=True)
    if latest_version(ws.model_repository, SEQUENCE_ENCODER) is None and not (
            ws.model_repository / SEQUENCE_ENCODER / "config.pbtxt").is_file():
        write_config(ws.model_repository, SEQUENCE_ENCODER)
    folder = export_model(SEQUENCE_ENCODER, ws.sequence_run / MODEL_DIR, ws.model_repository,
                          workspace=config.workspace)
    return {"sequence_encoder_version": int(folder.name), "shared_models": str(shared)}


def _indexes(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    from tools.index import build_index, build_sequence_index_async
    from tools.runtime.triton_server import TritonServer

    server = TritonServer(ws.model_repository, models=(TEXT_ENCODER, SEQUENCE_ENCODER),  # what the indexes read
                          backend_dir=config.workspace / "triton" / "backends",
                          log_file=ws.root / "logs" / "bootstrap-triton.log")
    data = ws.data_dir
    with server:
        server.wait_ready(timeout_s=600)
        build_index(data / "items.jsonl", data / "train.csv", ws.index_dir, server.grpc_addr)
        asyncio.run(build_sequence_index_async(data / "items.jsonl", data / "train.csv", ws.sequence_index_dir,
                                               server.grpc_addr, ws.model_repository))
    return {"text_index": str(ws.index_dir), "sequence_index": str(ws.sequence_index_dir),
            "index_bytes": sum(p.stat().st_size for d in (ws.index_dir, ws.sequence_index_dir)
                               for p in d.rglob("*") if p.is_file())}


def _served_encoder() -> Path:
    from tools.core.base_models import minilm_dir
    from tools.train.run import published_adapter

    return published_adapter(TEXT_ENCODER) or minilm_dir()


def _fusion(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    from tools.train import retrieval_fusion
    from tools.train.sequential import MODEL_DIR

    catalog = Catalog.load(ws.data_dir / "items.jsonl")
    fit_config = retrieval_fusion.RetrievalFitConfig(
        ws.data_dir, _served_encoder(), ws.sequence_run / MODEL_DIR, validation_users=config.validation_users,
        situations=retrieval_fusion.fit_situations(catalog))
    record = retrieval_fusion.fit(fit_config)
    retrieval_fusion.write(record, "instructrec bootstrap", ws.fusion_path)
    return {"fitted": list(fit_config.situations), "fusion": record["fusion"],
            "validation_users": record["validation_users"]}


def _evaluation(config: BootstrapConfig, ws: DatasetWorkspace, manifest: dict) -> dict:
    """Full ranking of the whole catalog for test users (history excluded): the served rule without a query (its
    text side included when its weight is not 0), popularity, and the sequence model alone."""
    import torch

    from services.core import prompts
    from services.core.catalog import item_text
    from services.core.contracts import RECENT_HISTORY_ITEMS
    from services.core.fusion import read_fusion_file
    from services.core.modeltext import mean_pooled_encoder
    from tools.core.retrieval_score import CatalogScorer
    from tools.core.text_encoder import encode, load_encoder
    from tools.train.sequential import MODEL_DIR

    split = load_split(ws.data_dir)
    cases = split.test_cases[:config.evaluation_users] if config.evaluation_users else split.test_cases
    ids = list(split.catalog.items)
    position = {i: n for n, i in enumerate(ids)}
    weights = read_fusion_file(ws.fusion_path).without_query
    sequence = SequenceScorer(ws.sequence_run / MODEL_DIR)
    text_vectors = np.zeros((len(ids), 1), dtype=np.float32)
    cosines = None
    if weights.text:
        device = torch.device("cpu")
        encoder, tokenizer = load_encoder(_served_encoder(), device)
        pooled = mean_pooled_encoder(encoder)
        recent = [[split.catalog[i] for i in c.history[-RECENT_HISTORY_ITEMS:]] for c in cases]
        with torch.no_grad():
            text_vectors = encode(pooled, tokenizer, [item_text(split.catalog[i]) for i in ids], device).numpy()
            requests = encode(pooled, tokenizer, [prompts.retrieval_text("", r, RECENT_HISTORY_ITEMS)
                                                  for r in recent], device).numpy()
    scorer = CatalogScorer(ids, split.popularity, text_vectors, sequence.item_vectors())
    if weights.text:
        cosines = scorer.text_cosines(requests, [[i.item_id for i in r] for r in recent])
    seq = scorer.sequence_logits(sequence.user_vectors([c.history for c in cases]))
    methods = {"served (no query)": scorer.fused(weights, sequence=seq, text=cosines),
               "popularity": np.broadcast_to(scorer.log_popularity, seq.shape).copy(),
               "sequence model alone": seq}
    out = {"users": len(cases), "weights": vars(weights)}
    targets = [position[c.target] for c in cases]
    seen = [[position[i] for i in c.seen if i in position] for c in cases]
    for name, scores in methods.items():
        out[name] = at_10(catalog_ranks(scores, targets, seen))
    ws.evaluation_path.write_text(json.dumps(out, indent=1) + "\n")
    return out
