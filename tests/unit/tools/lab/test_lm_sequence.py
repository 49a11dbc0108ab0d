"""The every-prefix LM experiment: its windows never train on a judged item, a residual head starts exactly at
the sequence model, full-ranking ranks skip seen items, the head's training loop learns a toy task, and late
fusion gives weight to an informative score and leaves the base alone when the other score is flat."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from services.core.catalog import Catalog, Item
from tools.core.split import Case, Split
from tools.lab.lm_sequence_features import TEST, TRAIN, VALID, LMSequenceConfig, Pairs, windows
from tools.lab.lm_sequence_fusion import fit_weights, late_fusion
from tools.lab.lm_sequence_heads import CatalogHead, Scorer, fit, full_ranks, list_ranks


@pytest.fixture(autouse=True)
def _restore_torch_state():
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def toy_split() -> Split:
    catalog = Catalog(items={str(n): Item(str(n), f"Film {n}", 1990, ("Drama",)) for n in range(12)})
    train = {"u": ["0", "1", "2", "3", "4"], "v": ["5"]}
    valid = [Case("u", ("0", "1", "2", "3", "4"), "6", frozenset({"0", "1", "2", "3", "4", "6", "7"}))]
    test = [Case("u", ("0", "1", "2", "3", "4", "6"), "7", frozenset({"0", "1", "2", "3", "4", "6", "7"})),
            Case("v", ("5",), "8", frozenset({"5", "8"}))]
    return Split(catalog, train, valid, test, Counter(i for s in train.values() for i in s))


def test_windows_train_only_on_training_items_and_end_at_the_validation_then_test_targets() -> None:
    rows = {w.user: w for w in windows(toy_split(), window=4)}
    u = rows["u"]
    assert u.items == ("2", "3", "4", "6")  # the end of train + validation
    assert u.targets == ("3", "4", "6", "7")
    assert u.kinds == (TRAIN, TRAIN, VALID, TEST)
    v = rows["v"]  # no validation item: the one training item's state predicts the test item
    assert (v.items, v.targets, v.kinds) == (("5",), ("8",), (TEST,))


def toy_pairs(n: int, items: int, seed: int) -> Pairs:
    """Features that carry the target: block 0 is a noisy one-hot code of the target."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, items, (n,), generator=g)
    code = torch.randn(items, 8, generator=g)
    feats = (code[target] + 0.3 * torch.randn(n, 8, generator=g)).unsqueeze(1)
    return Pairs(user=[str(i) for i in range(n)], kind=np.array([TRAIN] * n), target=target.numpy(),
                 exclude=[np.array([], dtype=np.int64)] * n, lm=feats.half(), text=feats,
                 sasrec=torch.randn(n, items, generator=g))


def test_a_residual_head_starts_exactly_at_the_sequence_model() -> None:
    pairs = toy_pairs(20, 15, seed=0)
    scorer = Scorer("SASRec + LM", "lm", residual=True)
    head = CatalogHead([8], 15, dropout=0.0, zero=True)
    rows = np.arange(20)
    assert torch.equal(scorer.base(pairs, rows) + head(scorer.blocks(pairs, rows)), pairs.sasrec)


def test_full_ranking_skips_seen_items_and_counts_ties_against_the_target() -> None:
    pairs = toy_pairs(1, 5, seed=0)
    pairs.target[:] = 2
    scores = torch.tensor([[5.0, 4.0, 3.0, 3.0, 1.0]])
    assert full_ranks(scores, pairs, [0])[0] == 3  # items 0, 1 above and item 3 tied
    pairs.exclude[0] = np.array([0, 1])
    assert full_ranks(scores, pairs, [0])[0] == 1
    assert list_ranks(scores, pairs, [0], [np.array([[2, 4], [2, 0]])]).tolist() == [[0, 1]]


def test_the_head_learns_a_toy_task_on_held_out_pairs() -> None:
    pairs = toy_pairs(600, 15, seed=1)
    pairs.sasrec.zero_()
    train, valid = np.arange(400), np.arange(400, 600)
    lists = [np.array([[pairs.target[r], *[(pairs.target[r] + k) % 15 for k in range(1, 10)]]]) for r in valid]
    config = LMSequenceConfig(epochs=8, batch_size=32, lr=1e-2, dropout=0.0)
    _, curve, _ = fit(Scorer("LM alone", "lm", residual=False), pairs, train, valid, lists, config)
    assert curve[0]["epoch"] == 0 and curve[-1]["loss"] is not None
    assert max(p["HR@1 (1+9)"] for p in curve) > 0.8 > curve[0]["HR@1 (1+9)"] + 0.3


def test_a_low_rank_head_starts_at_the_sequence_model_and_still_learns() -> None:
    pairs = toy_pairs(600, 15, seed=1)
    rows = np.arange(600)
    residual = CatalogHead([8], 15, dropout=0.0, zero=True, rank=4)
    scorer = Scorer("SASRec + LM", "lm", residual=True)
    assert torch.equal(scorer.base(pairs, rows) + residual(scorer.blocks(pairs, rows)), pairs.sasrec)
    full = sum(p.numel() for p in CatalogHead([8], 15, dropout=0.0, zero=False).parameters())
    assert sum(p.numel() for p in residual.parameters()) < full
    pairs.sasrec.zero_()
    train, valid = np.arange(400), np.arange(400, 600)
    lists = [np.array([[pairs.target[r], *[(pairs.target[r] + k) % 15 for k in range(1, 10)]]]) for r in valid]
    config = LMSequenceConfig(epochs=8, batch_size=32, lr=1e-2, dropout=0.0, head_rank=4)
    head, curve, _ = fit(Scorer("LM alone", "lm", residual=False), pairs, train, valid, lists, config)
    assert isinstance(head.linear, nn.Sequential)
    assert max(p["HR@1 (1+9)"] for p in curve) > 0.8 > curve[0]["HR@1 (1+9)"] + 0.3


def fusion_parts(n: int, items: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[2, n, items]: a weak base score (target + noise) and a sharper second score."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, items, (n,), generator=g)
    onehot = nn.functional.one_hot(target, items).float()
    base = 0.5 * onehot + torch.randn(n, items, generator=g)
    other = 2.0 * onehot + torch.randn(n, items, generator=g)
    return torch.stack([base, other]), target


def test_late_fusion_weights_an_informative_score_and_beats_the_base_on_held_out_users() -> None:
    valid, valid_t = fusion_parts(300, 20, seed=0)
    test, test_t = fusion_parts(200, 20, seed=1)
    mask = torch.zeros(300, 20, dtype=torch.bool)
    fused_valid, fused_test, info = late_fusion(valid, test, valid_t, mask, folds=3, seed=0)
    assert info["weights"][1] > info["weights"][0] > 0
    assert len(info["fold_weights"]) == 3

    def hr1(scores, target):
        return float((scores.argmax(1) == target).float().mean())

    assert hr1(fused_valid, valid_t) > hr1(valid[0], valid_t) + 0.2
    assert hr1(fused_test, test_t) > hr1(test[0], test_t) + 0.2


def test_late_fusion_with_a_flat_second_score_keeps_the_base_order() -> None:
    parts, target = fusion_parts(100, 10, seed=2)
    parts[1] = 0.0
    mask = torch.zeros(100, 10, dtype=torch.bool)
    mask[:, 0] = True  # seen items are excluded from the loss, not an error
    target[target == 0] = 1
    w = fit_weights(parts, target, mask)
    assert w[0] > 0
    assert torch.equal((w[0] * parts[0]).argsort(1), parts[0].argsort(1))


def test_cross_fitted_sequence_replaces_only_training_pairs_with_the_other_folds_model() -> None:
    from tools.core.sequence_model import SequenceModel, SequentialConfig
    from tools.lab.lm_sequence_fusion import cross_fitted_sequence

    config = SequentialConfig(max_len=4, hidden=8, inner=16, layers=1, heads=1, dropout=0.0, attn_dropout=0.0)
    models = [SequenceModel(5, config).eval() for _ in range(2)]
    position = {str(n): n for n in range(5)}
    pairs = Pairs(user=["u", "u", "v"], kind=np.array([TRAIN, VALID, TRAIN]), target=np.array([1, 2, 3]),
                  exclude=[np.array([0])] * 3, lm=torch.zeros(3, 1, 1).half(), text=torch.zeros(3, 1, 1),
                  sasrec=torch.full((3, 5), 7.0), prefix=[["0"], ["0", "1"], ["4"]])
    out = cross_fitted_sequence(pairs, position, {"u": 0, "v": 1}, models)
    assert torch.equal(out[1], pairs.sasrec[1])  # a judged pair keeps the committed model's logits
    with torch.no_grad():
        for row, f, seq in ((0, 0, [0, 0, 0, 1]), (2, 1, [0, 0, 0, 5])):
            expected = models[f](torch.tensor([seq])) @ models[f].item_vectors()[1:].T
            assert torch.allclose(out[row], expected[0])
