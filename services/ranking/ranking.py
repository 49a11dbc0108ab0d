"""Listwise ranking from label logits (no gRPC or Triton here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.common.errors import InvalidArgument, Unavailable
from services.common.prompts import MAX_CANDIDATES
from services.common.validation import Limits, require_max_chars


def validate_rank_request(
    instruction: str, candidate_item_ids: Sequence[str], max_instruction_chars: int, limits: Limits = Limits()
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


def rank_from_label_logits(candidate_item_ids: Sequence[str], label_logits: np.ndarray) -> list[tuple[str, float]]:
    """Order candidates by the ranker's logits for their labels.

    Args:
        candidate_item_ids: Candidates in label order (A first).
        label_logits: Logits of all labels, ``[num_labels]``; the first ``len(candidate_item_ids)`` are used.

    Returns:
        ``(item_id, probability)`` best first, where probability is the softmax over the candidates' labels
        only. Ties keep label order.

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
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    return [(candidate_item_ids[i], float(probs[i])) for i in order]
