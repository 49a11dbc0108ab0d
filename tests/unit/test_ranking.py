import numpy as np
import pytest

from services.common.errors import InvalidArgument, Unavailable
from services.ranking.ranking import rank_from_label_logits, validate_rank_request


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


class _RankerThatMustNotRun:
    model_name = "ranker"

    async def infer_text(self, text, timeout_s=None):  # pragma: no cover - failing is the assertion
        raise AssertionError("the ranker model was called")


class _Context:
    def time_remaining(self):
        return 10.0


def test_lm_weight_zero_ranks_by_retrieval_scores_without_calling_the_ranker():
    import asyncio

    from instructrec.v1 import ranking_service_pb2

    from services.ranking.servicer import RankingServicer
    from services.ranking.settings import RankingSettings

    servicer = RankingServicer(RankingSettings(lm_weight=0.0, retrieval_temperature=0.5), _RankerThatMustNotRun())
    request = ranking_service_pb2.RankCandidatesRequest(
        instruction="Pick one.\nA. x\nB. y\nC. z\nAnswer:", candidate_item_ids=["x", "y", "z"],
        retrieval_scores=[0.1, 0.9, 0.4])
    reply = asyncio.run(servicer.RankCandidates(request, _Context()))
    assert [i.item_id for i in reply.ranked_items] == ["y", "z", "x"]
    expected = np.exp(np.array([0.9, 0.4, 0.1]) / 0.5)
    assert [i.score for i in reply.ranked_items] == pytest.approx(list(expected / expected.sum()), rel=1e-6)
    assert not reply.model_versions
