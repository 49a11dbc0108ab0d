"""`instructrec retrain` on a real Triton: the store's interactions (the seed and what was recorded) train a new
sequence model; it is pushed with its index only when it is not worse than the served version on each user's
last item, and otherwise nothing changes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from services.common.interaction_store import Event, open_store, seed_once
from services.core.contracts import SEQUENCE_ENCODER
from services.core.index import ItemIndex
from tools.core.sequence_model import SequentialConfig
from tools.export import latest_version
from tools.retrain import RetrainConfig, retrain

pytestmark = pytest.mark.triton

TINY = SequentialConfig(max_len=20, hidden=16, inner=32, layers=1, heads=2, epochs=2, patience=2, batch_size=64)


def _store(tmp_path: Path, dataset: Path) -> str:
    async def fill() -> None:
        store = open_store(str(tmp_path / "interactions.sqlite3"))
        await store.open()
        await seed_once(store, dataset / "train.csv")
        await store.record([Event("new-user", str(i), f"rec-{i}", 2e9 + i) for i in (3, 9, 27, 31)])
        await store.close()

    asyncio.run(fill())
    return str(tmp_path / "interactions.sqlite3")


def test_a_retrained_model_is_pushed_with_its_index_only_when_not_worse(
        tiny_model_repository: Path, dataset: Path, start_triton, tmp_path: Path) -> None:
    repository = tmp_path / "repository"  # only the sequence model, so the session's repository is left alone
    shutil.copytree(tiny_model_repository / SEQUENCE_ENCODER, repository / SEQUENCE_ENCODER)
    store = _store(tmp_path, dataset)
    served = latest_version(repository, SEQUENCE_ENCODER)  # 1, or later when another test pushed one
    with start_triton(repository, [SEQUENCE_ENCODER], name="retrain-triton") as triton:
        config = RetrainConfig(store, dataset / "items.jsonl", repository, [triton.grpc_addr],
                               tmp_path / "index-sequence", tmp_path / "run", train_minutes=1, sequence=TINY,
                               min_users=5)
        kept = retrain(RetrainConfig(**{**config.__dict__, "tolerance": -1.0, "out_dir": tmp_path / "run0"}))
        assert kept["decision"].startswith("kept the served version") and kept["served_version"] == served
        assert latest_version(repository, SEQUENCE_ENCODER) == served and not (tmp_path / "index-sequence").exists()

        pushed = retrain(RetrainConfig(**{**config.__dict__, "tolerance": 1.0}))
        assert pushed["pushed_version"] == served + 1 == latest_version(repository, SEQUENCE_ENCODER)
        assert pushed["users"] >= 10 and set(pushed["new"]) == {"HR@10", "NDCG@10"}
        assert ItemIndex.load(tmp_path / "index-sequence").model_version == str(served + 1)
        assert (tmp_path / "run" / "retrain.json").is_file()
