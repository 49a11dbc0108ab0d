"""How the stages' scores combine into one ranking (the served rule, also fitted and evaluated offline)."""

from __future__ import annotations

import numpy as np


def fuse(lm_logprobs: np.ndarray, retrieval_scores: np.ndarray | None, lm_weight: float,
         temperature: float) -> np.ndarray:
    """The fused ranking logit of each candidate: ``lm_weight * log p_LM + retrieval_score / temperature``.

    A product of experts: the LM's listwise log-probabilities and the retriever's score on the scale of its
    training logits (``temperature`` = its InfoNCE temperature). Without retrieval scores, the LM alone.
    """
    lm = np.asarray(lm_logprobs, dtype=np.float64)
    if retrieval_scores is None:
        return lm
    return lm_weight * lm + np.asarray(retrieval_scores, dtype=np.float64) / temperature
