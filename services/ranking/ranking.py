"""Listwise ranking from label logits (no gRPC or Triton here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument, Unavailable
from services.core.contracts import MAX_CANDIDATES
from services.core.deadlines import Budget
from services.core.fusion import fuse
from services.core.validation import Limits, require_max_chars


def validate_rank_request(
    instruction: str,
    candidate_item_ids: Sequence[str],
    max_instruction_chars: int,
    limits: Limits = Limits(),
    retrieval_scores: Sequence[float] = (),
) -> None:
    """Check a ranking request.

    Raises:
        InvalidArgument: naming the offending field.
    """
    if not instruction.strip():
        raise InvalidArgument("instruction: must not be empty")
    require_max_chars("instruction", instruction, max_instruction_chars)
    if not candidate_item_ids:
        raise InvalidArgument("candidate_item_ids: at least one candidate is required")
    limits.check_ids("candidate_item_ids", candidate_item_ids, MAX_CANDIDATES)
    limits.check_distinct("candidate_item_ids", candidate_item_ids)
    if retrieval_scores:
        if len(retrieval_scores) != len(candidate_item_ids):
            raise InvalidArgument(
                f"retrieval_scores: {len(retrieval_scores)} scores for {len(candidate_item_ids)} candidates "
                "(give one per candidate, or none)"
            )
        bad = [n for n, v in enumerate(retrieval_scores) if not np.isfinite(v)]
        if bad:
            raise InvalidArgument(f"retrieval_scores: not finite at positions {bad[:5]}")


def rank_from_label_logits(
    candidate_item_ids: Sequence[str],
    label_logits: np.ndarray,
    retrieval_scores: Sequence[float] | None = None,
    lm_weight: float = 1.0,
    temperature: float = 1.0,
) -> list[tuple[str, float]]:
    """Order candidates by the ranker's logits for their labels, fused with their retrieval scores if given.

    Args:
        candidate_item_ids: Candidates in label order (A first).
        label_logits: Logits of all labels, ``[num_labels]``; the first ``len(candidate_item_ids)`` are used.
        retrieval_scores: The retriever's score of each candidate (aligned), or None / empty for LM only.
        lm_weight: Weight of the LM's log-probabilities against the retrieval logits (see :func:`fuse`).
        temperature: Divides the retrieval scores (the retriever's training temperature).

    Returns:
        ``(item_id, probability)`` best first, where probability is the softmax of the (fused) logits over
        the candidates only. Ties keep label order.

    Raises:
        Unavailable: the model returned fewer logits than candidates or non-finite values.
    """
    n = len(candidate_item_ids)
    logits = np.asarray(label_logits, dtype=np.float64).reshape(-1)
    if logits.shape[0] < n:
        raise Unavailable(f"ranker returned {logits.shape[0]} label logits for {n} candidates")
    logits = logits[:n]
    if not np.all(np.isfinite(logits)):
        raise Unavailable("ranker returned non-finite logits")
    logprobs = logits - logits.max()
    logprobs -= np.log(np.exp(logprobs).sum())
    fused = fuse(logprobs, np.asarray(retrieval_scores, dtype=np.float64) if retrieval_scores else None,
                 lm_weight, temperature)
    probs = np.exp(fused - fused.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    return [(candidate_item_ids[i], float(probs[i])) for i in order]


# Scores one instruction with the served ranker: (label logits, model version); the float is its timeout.
ScoreFn = Callable[[str, float], Awaitable[tuple[np.ndarray, str]]]


@dataclass(frozen=True)
class Ranked:
    """Candidates best first with their probabilities, and the ranker version ("" when it was not called)."""

    items: list[tuple[str, float]]
    model_version: str = ""


class CandidateRanker:
    """Ranks an instruction's lettered candidates: the LM's label log-probabilities fused with retrieval scores.

    With retrieval scores and an LM weight of 0 the fused order is the retrieval order, so the ranker model
    is not called at all.
    """

    def __init__(self, score: ScoreFn, *, lm_weight: float, retrieval_temperature: float, score_timeout_s: float,
                 max_instruction_chars: int, limits: Limits) -> None:
        self._score = score
        self._lm_weight = lm_weight
        self._temperature = retrieval_temperature
        self._score_timeout_s = score_timeout_s
        self._max_instruction_chars = max_instruction_chars
        self._limits = limits

    async def rank(self, instruction: str, candidate_item_ids: Sequence[str], retrieval_scores: Sequence[float],
                   budget: Budget) -> Ranked:
        """Validate the request and rank its candidates.

        Raises:
            InvalidArgument: naming the offending field.
            Unavailable: the ranker failed or returned unusable logits.
            DeadlineExceeded: no time was left to call the ranker.
        """
        validate_rank_request(instruction, candidate_item_ids, self._max_instruction_chars, self._limits,
                              retrieval_scores)
        if retrieval_scores and self._lm_weight == 0:
            return Ranked(rank_from_label_logits(candidate_item_ids, np.zeros(len(candidate_item_ids)),
                                                 retrieval_scores, 0.0, self._temperature))
        logits, version = await self._score(instruction, budget.hop("ranker", self._score_timeout_s))
        items = rank_from_label_logits(candidate_item_ids, logits, retrieval_scores or None, self._lm_weight,
                                       self._temperature)
        return Ranked(items, version)
