"""`instructrec train` on tiny random models: the loop, resume, the three trainers, publishing and export."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tools import export
from tools.core.base_models import smollm2_tokenizer_dir
from tools.data import prepare_custom
from tools.tiny_models import build_tiny_encoder, build_tiny_lm
from tools.train import run as train_run
from tools.train.common import LoopConfig
from tools.train.examples import RankerMix, draw_samples, load_training_data, ranker_example
from tools.train.generator import GeneratorTrainConfig, train_generator
from tools.train.ranker import RankerBatcher, RankerTrainConfig, pointwise_token_ids, ranking_loss, train_ranker
from tools.train.retriever import RetrieverTrainConfig, train_retriever

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split_dir(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_custom(dataset / "items.jsonl", dataset / "train.csv", tmp_path_factory.mktemp("split"))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm"), smollm2_tokenizer_dir(ROOT / "var"))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def _loop(steps: int, **kw) -> LoopConfig:
    return LoopConfig(steps=steps, batch_size=2, eval_every=2, checkpoint_every=2, warmup_steps=1, threads=1, **kw)


def test_ranker_trains_keeps_the_best_adapter_and_resumes(split_dir, tiny_lm, tiny_encoder, tmp_path):
    config = RankerTrainConfig(data_dir=split_dir, base_model=tiny_lm, out_dir=tmp_path / "ranker",
                               loop=_loop(4), validation_users=6, examples_per_epoch=16,
                               hard_negative_encoder=tiny_encoder)
    record = train_ranker(config)
    assert record.status == "finished"
    saved = json.loads((tmp_path / "ranker" / "record.json").read_text())
    assert [v["step"] for v in saved["validations"]] == [0, 2, 4]
    assert saved["steps_done"] == 4 and saved["config"]["loop"]["seed"] == 0
    assert 0 <= saved["best"]["HR@1"] <= 1 and "HR@1 P1-I0-T3-0" in saved["best"]
    for folder in ("adapter", "checkpoint"):
        assert (tmp_path / "ranker" / folder / "adapter_model.safetensors").is_file()

    resumed = train_ranker(replace(config, loop=_loop(6)), resume=True)
    saved = json.loads((tmp_path / "ranker" / "record.json").read_text())
    assert resumed.status == "finished" and saved["steps_done"] == 6
    assert [v["step"] for v in saved["validations"]] == [0, 2, 4, 6]


def test_resume_without_a_checkpoint_is_refused(split_dir, tiny_lm, tmp_path):
    config = RankerTrainConfig(data_dir=split_dir, base_model=tiny_lm, out_dir=tmp_path / "ranker", loop=_loop(2),
                               validation_users=2, examples_per_epoch=8)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_ranker(config, resume=True)


def test_ranking_loss_falls_on_the_examples_it_trains_on(split_dir, tiny_lm):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    data = load_training_data(split_dir)
    rng = random.Random(0)
    batch = [ranker_example(data, s, rng, RankerMix(pointwise_share=0.3), None) for s in draw_samples(data, 6, rng)]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))
    lm = AutoModelForCausalLM.from_pretrained(str(tiny_lm))
    model = get_peft_model(lm, LoraConfig(r=8, lora_alpha=32, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    scorer = export.ranker_scorer(lm, export.label_token_ids(tokenizer))
    pointwise = export.ranker_scorer(lm, pointwise_token_ids(tokenizer))
    batcher = RankerBatcher(tokenizer, torch.device("cpu"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = ranking_loss(scorer, pointwise, batcher, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1  # gradients reach the LoRA weights through the served scorer


def test_retriever_adapter_trains_and_exports_merged(split_dir, tiny_encoder, tmp_path):
    config = RetrieverTrainConfig(data_dir=split_dir, base_model=tiny_encoder, out_dir=tmp_path / "encoder",
                                  loop=replace(_loop(2), batch_size=8), validation_users=6, examples_per_epoch=32)
    record = train_retriever(config)
    assert record.status == "finished" and 0 <= record.best["Recall@20"] <= 1
    repository = tmp_path / "repo"
    version = export.export_model(export.TEXT_ENCODER, tmp_path / "encoder" / "adapter", repository,
                                  base=tiny_encoder)
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["adapter"]["merged"] is True and meta["parity"]["max_abs_diff"] < 1e-4


def test_generator_trains_on_teacher_statements(split_dir, tiny_lm, tmp_path):
    config = GeneratorTrainConfig(data_dir=split_dir, base_model=tiny_lm, out_dir=tmp_path / "generator",
                                  loop=_loop(2), validation_users=4, generation_users=2, max_new_tokens=4,
                                  examples_per_epoch=8)
    record = train_generator(config)
    saved = json.loads((tmp_path / "generator" / "record.json").read_text())
    assert record.status == "finished" and saved["best"]["loss"] > 0
    assert {"generated", "teacher"} <= set(saved["validation_samples"][0])
    assert saved["validations"][-1]["loss"] < saved["validations"][0]["loss"]


def test_publish_writes_the_adapter_card_and_record_the_export_recognises(split_dir, tiny_lm, tmp_path):
    config = RankerTrainConfig(data_dir=split_dir, base_model=tiny_lm, out_dir=tmp_path / "run" / "ranker",
                               loop=_loop(2), validation_users=2, examples_per_epoch=8)
    train_ranker(config)
    published = train_run.publish("ranker", config.out_dir, "instructrec train ranker", tmp_path / "adapters")
    assert sorted(p.name for p in published.iterdir()) == sorted(
        [*train_run.ADAPTER_FILES, "README.md", "record.json"])
    card = (published / "README.md").read_text()
    assert "instructrec train ranker" in card and "Seed 0" in card and "HR@1" in card
    assert train_run.published_adapter("ranker", tmp_path / "adapters") == published
    version = export.export_model("ranker", published, tmp_path / "repo", base=tiny_lm)
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["source_sha256"] == train_run.adapter_sha256(published)


def test_fusion_fit_scores_validation_lists_with_both_models_and_stores_the_best_weight(
        split_dir, tiny_lm, tiny_encoder, tmp_path):
    from tools.train.fusion import FusionFitConfig, fit_fusion, read_fusion, write_fusion

    result = fit_fusion(FusionFitConfig(split_dir, tiny_lm, tiny_encoder, validation_users=6, grid=(0.0, 1.0, 50.0),
                                        threads=1))
    assert result["lists"] == 2 * result["validation_users"] > 0
    assert result["lm_weight"] in (0.0, 1.0, 50.0)
    assert result["validation"] == result["grid"][str(result["lm_weight"])]
    assert result["retrieval_only"] == result["grid"]["0.0"]
    assert set(result["validation"]) == {"HR@1", "HR@1 random", "HR@1 retrieved"}
    assert all(0.0 <= v <= 1.0 for v in result["validation"].values())
    # The weight with the best mean HR@1 is the best weight (ties go to the smaller one); it is served only
    # when its gain over the retrieval order (weight 0) is beyond two standard errors, else 0 is.
    best = max(result["grid"].values(), key=lambda m: m["HR@1"])["HR@1"]
    assert result["grid"][str(result["best_weight"])]["HR@1"] == best
    assert all(result["grid"][str(w)]["HR@1"] < best for w in (0.0, 1.0, 50.0) if w < result["best_weight"])
    gain = result["lm_gain_over_retrieval"]
    assert result["lm_weight"] == (result["best_weight"] if gain["gain"] > 2 * gain["stderr"] else 0.0)
    path = write_fusion("base", result, tmp_path / "fusion.json")
    write_fusion("tuned", {**result, "lm_weight": 0.5}, path)
    assert read_fusion("base", path) == result["lm_weight"] and read_fusion("tuned", path) == 0.5
    assert read_fusion("tuned", tmp_path / "missing.json") is None
