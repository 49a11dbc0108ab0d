"""The sequential trainer learns, resumes, and its model exports with the parity gate."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tools.core import sequence_model
from tools.train import sequential

TINY = sequence_model.SequentialConfig(max_len=8, hidden=16, inner=32, layers=1, heads=2, dropout=0.0, attn_dropout=0.0,
                                   lr=5e-3, batch_size=32, epochs=30, patience=30, window_stride=4, threads=1)


def _toy(num_users: int = 60, items: int = 12) -> sequential.SequentialData:
    """Users walk the catalog in order (item i is followed by i + 1): a pattern only a sequence model sees."""
    rng = random.Random(0)
    vocab = [f"i{n}" for n in range(items)]
    train, valid = [], []
    for _ in range(num_users):
        start = rng.randrange(items)
        walk = [vocab[(start + k) % items] for k in range(7)]
        train.append(walk[:-1])
        valid.append((walk[:-1], walk[-1]))
    return sequential.build_data(vocab, train, valid)


def test_training_learns_the_next_item_of_a_toy_sequence() -> None:
    data = _toy()
    untrained = sequential.rank_metrics(sequence_model.SequenceModel(len(data.vocab), TINY), data.valid, k=1)
    result = sequential.train_sequential(data, TINY, show_bar=False)
    trained = sequential.rank_metrics(result.model, data.valid, k=1)
    assert untrained["HR@1"] < 0.3 and trained["HR@1"] > 0.9
    assert result.record["best_epoch"] >= 1 and result.record["train_targets"] > 0


def test_sampled_negatives_learn_the_toy_sequence_over_a_larger_catalog() -> None:
    data = _toy(num_users=200, items=60)
    result = sequential.train_sequential(data, replace(TINY, negatives=8, epochs=40, patience=40), show_bar=False)
    assert sequential.rank_metrics(result.model, data.valid, k=1)["HR@1"] > 0.9


def test_the_sampled_loss_masks_a_drawn_target_and_falls_back_to_the_full_softmax() -> None:
    import torch

    model = sequence_model.SequenceModel(5, TINY)
    hidden = torch.randn(3, TINY.hidden)
    targets = torch.tensor([1, 2, 3])
    full = torch.nn.functional.cross_entropy(hidden @ model.item_vectors().T, targets)
    rng = torch.Generator().manual_seed(0)
    assert torch.equal(sequential.batch_loss(model, hidden, targets, 0, rng), full)
    assert torch.equal(sequential.batch_loss(model, hidden, targets, 5, rng), full)  # not fewer than the catalog
    # Orthogonal item vectors and hidden states pointing at the target: the target's logit is 20, every
    # other item's 0. Of 4 draws out of 5 items the target is often one; counted as its own negative it
    # would cost log(2) at least. Masked, the loss is about 4 e^-20.
    with torch.no_grad():
        model.items.weight.copy_(torch.eye(6, TINY.hidden))
    for _ in range(5):
        loss = sequential.batch_loss(model, 20 * torch.eye(6, TINY.hidden)[targets], targets, 4, rng)
        assert torch.isfinite(loss) and loss < 1e-6


def test_an_epoch_longer_than_the_budget_is_cut_and_validated() -> None:
    data = _toy(num_users=200)
    result = sequential.train_sequential(data, replace(TINY, batch_size=4), max_minutes=1e-9, show_bar=False)
    (only,) = result.record["epochs"]
    assert 0 < only["rows_trained"] < result.record["train_rows"] and "valid_NDCG@10" in only


def test_a_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    data = _toy()
    checkpoint = tmp_path / "checkpoint.pt"
    config = replace(TINY, epochs=4)
    sequential.train_sequential(replace(data), replace(config, epochs=2), show_bar=False, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="another configuration"):
        sequential.train_sequential(data, replace(config, lr=1e-2), show_bar=False, checkpoint=checkpoint,
                                    resume=True)
    resumed = sequential.train_sequential(data, replace(config, epochs=2), show_bar=False, checkpoint=checkpoint,
                                          resume=True)
    assert [e["epoch"] for e in resumed.record["epochs"]] == [1, 2]  # nothing left to do at the same budget


def test_every_target_is_trained_once_with_its_context() -> None:
    rows, masks = sequential.training_rows([list(range(1, 24))], max_len=8, stride=4)
    assert int(masks.sum()) == 22  # 23 items: 22 targets, each counted once
    targets = sorted(int(t) for row, mask in zip(rows, masks) for t in row[1:][mask])
    assert targets == list(range(2, 24))


def test_save_load_and_export_with_the_parity_gate(tmp_path: Path) -> None:
    from tools.export import export_model

    data = _toy()
    model = sequential.train_sequential(data, replace(TINY, epochs=1), show_bar=False).model
    folder = sequence_model.save(model, data.vocab, tmp_path / "model")
    version = export_model("sequence_encoder", folder, tmp_path / "repo")
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["canary"]["input_name"] == "item_ids"
    assert json.loads((version / "item_ids.json").read_text()) == data.vocab
    vectors = np.load(version / "item_vectors.npy")
    assert vectors.shape == (len(data.vocab) + 1, TINY.hidden)
    config = (tmp_path / "repo" / "sequence_encoder" / "config.pbtxt").read_text()
    assert "allow_ragged_batch: true" in config and "dims: -1" in config and "num_versions: 2" in config
