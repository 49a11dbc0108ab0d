"""`instructrec bootstrap` end to end on a small synthetic shop (tiny shared models on a real Triton): every step
writes into the data set's workspace, a rerun skips what is done, a workspace whose parts do not belong
together is refused, and the stack serves the workspace's own sequence model, indexes and fitted weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.core.contracts import SEQUENCE_ENCODER, SERVED_MODELS
from tests.integration.conftest import ROOT
from tests.integration.stack_helpers import running_stack
from tools.bootstrap import BootstrapConfig, bootstrap
from tools.core.sequence_model import SequentialConfig
from tools.core.workspace import WORKSPACE_STEPS, DatasetWorkspace
from tools.runtime.assets import WorkspaceMismatch, check_workspace
from tools.synthetic import ShopSpec, write_shop

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def shop_workspace(tmp_path_factory: pytest.TempPathFactory, tiny_model_repository: Path) -> DatasetWorkspace:
    source = tmp_path_factory.mktemp("shop-source")
    write_shop(source, ShopSpec(items=60, users=120, mean_history=8, seed=3))
    config = BootstrapConfig(
        source / "items.jsonl", source / "interactions.csv", tmp_path_factory.mktemp("datasets") / "shop",
        source / "synonyms.json", train_minutes=2,
        sequence=SequentialConfig(hidden=16, inner=32, layers=1, heads=1, epochs=3, patience=2, batch_size=64),
        validation_users=60, shared_repository=tiny_model_repository, prepare_shared=False, workspace=ROOT / "var")
    lines: list[str] = []
    manifest = bootstrap(config, say=lines.append)
    assert list(manifest["steps"]) == list(WORKSPACE_STEPS)
    again: list[str] = []
    assert bootstrap(config, say=again.append)["steps"] == manifest["steps"]  # a rerun does nothing again
    assert all("skipped" in line for line in again)
    return DatasetWorkspace.at(config.root)


def test_every_part_lives_in_the_workspace_and_was_made_for_its_catalog(shop_workspace: DatasetWorkspace) -> None:
    ws = shop_workspace
    manifest = ws.manifest()
    assert manifest["steps"]["data"]["items"] == 60 and manifest["steps"]["sequence_model"]["epochs"] <= 3
    runs = manifest["steps"]["sequence_model"]["runs"]  # two seeds; the better on validation is served
    assert [r["seed"] for r in runs] == [0, 1]
    validation = [json.loads((ws.sequence_run / f"seed-{r['seed']}" / "record.json").read_text())["best_valid_NDCG@10"]
                  for r in runs]
    chosen = runs[validation.index(max(validation))]
    assert manifest["steps"]["sequence_model"]["seed"] == chosen["seed"]
    served = json.loads((ws.sequence_run / "record.json").read_text())
    assert served["config"]["seed"] == chosen["seed"]
    assert (ws.sequence_run / "model" / "model.safetensors").read_bytes() == (
        ws.sequence_run / f"seed-{chosen['seed']}" / "model" / "model.safetensors").read_bytes()
    for name in SERVED_MODELS:  # the shared models linked, the sequence model its own
        assert (ws.model_repository / name).is_symlink() == (name != SEQUENCE_ENCODER)
    vocab = json.loads((ws.model_repository / SEQUENCE_ENCODER / "1" / "item_ids.json").read_text())
    assert sorted(vocab) == sorted(f"p{n}" for n in range(60))
    fusion = json.loads(ws.fusion_path.read_text())
    assert set(fusion["fusion"]) == {"with_query", "without_query", "without_sequence"}
    assert "not fitted" in json.dumps(fusion["reference"]["with_query"])  # a shop has no genres to ask about
    evaluation = manifest["steps"]["evaluation"]
    assert evaluation["users"] == manifest["steps"]["data"]["test_users"] > 100
    assert {"served (no query)", "popularity", "sequence model alone"} <= set(evaluation)
    check_workspace(ws)


def test_a_workspace_whose_parts_do_not_belong_together_is_refused(shop_workspace: DatasetWorkspace,
                                                                     tmp_path: Path) -> None:
    copy = DatasetWorkspace.at(tmp_path / "shop")
    shutil.copytree(shop_workspace.root, copy.root, symlinks=True)
    with open(copy.data_dir / "items.jsonl", "a") as f:
        f.write(json.dumps({"item_id": "new", "title": "Something new"}) + "\n")
    with pytest.raises(WorkspaceMismatch, match="changed since the bootstrap"):
        check_workspace(copy)
    shutil.copy2(shop_workspace.data_dir / "items.jsonl", copy.data_dir / "items.jsonl")
    copy.fusion_path.unlink()
    with pytest.raises(WorkspaceMismatch, match="retrieval_fusion.json is missing"):
        check_workspace(copy)


async def test_the_stack_serves_the_workspaces_own_models_and_weights(shop_workspace: DatasetWorkspace,
                                                                       start_triton) -> None:
    ws = shop_workspace
    with start_triton(ws.model_repository, name="shop-triton") as triton:
        overrides = {"retrieval": {"catalog_path": ws.data_dir / "items.jsonl", "index_dir": ws.index_dir,
                                   "sequence_index_dir": ws.sequence_index_dir, "fusion_path": ws.fusion_path},
                     "instruction": {"catalog_path": ws.data_dir / "items.jsonl"}}
        async with running_stack(triton.grpc_addr, ws.data_dir, ws.index_dir, service_overrides=overrides) as s, \
                grpc.aio.insecure_channel(s.addr("gateway")) as channel:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
            r = await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="7"), timeout=60)
            assert len(r.items) == 10 and not r.degraded and all(i.item_id.startswith("p") for i in r.items)
            assert {(v.model_name, v.version) for v in r.model_versions} >= {(SEQUENCE_ENCODER, "1")}
            shoes = await stub.Recommend(recommend_service_pb2.RecommendRequest(
                user_id="7", query="running shoes under 150, not Velo"), timeout=60)
            assert shoes.items and not shoes.degraded
            assert {f.source for f in shoes.applied_filters} >= {"query"}
