import numpy as np
import pytest

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.core.deadlines import Budget
from services.core.validation import Limits
from services.ranking.ranking import CandidateRanker, rank_from_label_logits, validate_rank_request


def test_orders_candidates_by_their_label_logits_and_ignores_unused_labels():
    logits = np.array([0.0, 3.0, 1.0] + [100.0] * 17, dtype=np.float32)
    ranked = rank_from_label_logits(["a", "b", "c"], logits)
    assert [i for i, _ in ranked] == ["b", "c", "a"]
    probs = [p for _, p in ranked]
    assert sum(probs) == pytest.approx(1.0)
    assert probs[0] == pytest.approx(np.exp(3) / (1 + np.exp(3) + np.exp(1)))


def test_ties_keep_label_order():
    assert [i for i, _ in rank_from_label_logits(["x", "y", "z"], np.zeros(20))] == ["x", "y", "z"]


def test_too_few_or_bad_logits_are_a_model_failure():
    with pytest.raises(Unavailable):
        rank_from_label_logits(["a", "b"], np.zeros(1))
    with pytest.raises(Unavailable):
        rank_from_label_logits(["a", "b"], np.array([np.nan, 0.0]))


@pytest.mark.parametrize(
    ("instruction", "candidates", "field"),
    [
        ("", ["a"], "instruction"),
        ("x" * 101, ["a"], "instruction"),
        ("rank", [], "candidate_item_ids"),
        ("rank", [str(i) for i in range(21)], "candidate_item_ids"),
        ("rank", ["a", "a"], "candidate_item_ids"),
        ("rank", ["a", ""], "candidate_item_ids"),
    ],
)
def test_invalid_requests_name_the_field(instruction, candidates, field):
    with pytest.raises(InvalidArgument, match=field):
        validate_rank_request(instruction, candidates, max_instruction_chars=100)


def test_fusion_adds_weighted_lm_log_probabilities_to_tempered_retrieval_scores():
    logits = np.array([2.0, 0.0, 1.0] + [50.0] * 17)
    retrieval = [0.10, 0.30, 0.20]
    # Retrieval alone (weight 0): b > c > a.
    assert [i for i, _ in rank_from_label_logits(["a", "b", "c"], logits, retrieval, 0.0, 0.05)] == ["b", "c", "a"]
    # The LM dominates at a large weight: a > c > b.
    assert [i for i, _ in rank_from_label_logits(["a", "b", "c"], logits, retrieval, 100.0, 0.05)] == ["a", "c", "b"]
    # Hand-computed at weight 1, temperature 0.1: fused = log softmax(lm) + score / 0.1.
    lm = np.array([2.0, 0.0, 1.0])
    fused = lm - np.log(np.exp(lm).sum()) + np.array(retrieval) / 0.1
    expected = np.exp(fused) / np.exp(fused).sum()
    ranked = dict(rank_from_label_logits(["a", "b", "c"], logits, retrieval, 1.0, 0.1))
    assert [ranked[i] for i in "abc"] == pytest.approx(expected.tolist())


def test_without_retrieval_scores_the_lm_alone_ranks_whatever_the_weight():
    logits = np.array([0.0, 3.0, 1.0])
    assert rank_from_label_logits(["a", "b", "c"], logits, None, 0.0, 0.05) == rank_from_label_logits(
        ["a", "b", "c"], logits)


@pytest.mark.parametrize(
    ("scores", "message"),
    [([0.1], "2 candidates"), ([0.1, float("nan")], "not finite"), ([0.1, float("inf")], "not finite")],
)
def test_retrieval_scores_must_align_with_candidates_and_be_finite(scores, message):
    with pytest.raises(InvalidArgument, match=f"retrieval_scores: .*{message}"):
        validate_rank_request("rank", ["a", "b"], max_instruction_chars=100, retrieval_scores=scores)


def _ranker(score, **overrides):
    options = {"lm_weight": 0.2, "retrieval_temperature": 0.05, "score_timeout_s": 5.0,
               "max_instruction_chars": 1000, "limits": Limits()}
    return CandidateRanker(score, **{**options, **overrides})


async def _must_not_run(instruction, timeout_s):  # pragma: no cover - failing is the assertion
    raise AssertionError("the ranker model was called")


async def test_lm_weight_zero_ranks_by_retrieval_scores_without_calling_the_ranker():
    ranker = _ranker(_must_not_run, lm_weight=0.0, retrieval_temperature=0.5)
    ranked = await ranker.rank("Pick one.\nA. x\nB. y\nC. z\nAnswer:", ["x", "y", "z"], [0.1, 0.9, 0.4], Budget(10.0))
    assert [i for i, _ in ranked.items] == ["y", "z", "x"]
    expected = np.exp(np.array([0.9, 0.4, 0.1]) / 0.5)
    assert [p for _, p in ranked.items] == pytest.approx(list(expected / expected.sum()), rel=1e-6)
    assert ranked.model_version == ""


async def test_the_ranker_is_called_with_the_hop_timeout_and_its_version_reported():
    seen = []

    async def score(instruction, timeout_s):
        seen.append(timeout_s)
        return np.array([0.0, 5.0, 0.0]), "2"

    ranked = await _ranker(score, lm_weight=1.0, score_timeout_s=3.0).rank("Pick.", ["a", "b", "c"], [], Budget(10.0))
    assert [i for i, _ in ranked.items][0] == "b" and ranked.model_version == "2"
    assert seen == [3.0]


async def test_no_time_left_fails_before_the_ranker_is_called():
    with pytest.raises(DeadlineExceeded):
        await _ranker(_must_not_run).rank("Pick.", ["a", "b"], [], Budget(0.0))
