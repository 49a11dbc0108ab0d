"""What an export must reproduce of its checkpoint: the parity policies per model and precision, and the checks.

Each ONNX export is checked against torch on sample inputs (``tools/export/samples.py``); an export whose
outputs differ by more than the tolerance is deleted and :class:`ParityError` raised. int8 exports are held
to a looser bound plus what serving actually reads: the ranker's candidate order, the encoder's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from services.core.contracts import PREFERENCE_GENERATOR, RANKER, REQUEST_READER, SEQUENCE_ENCODER, TEXT_ENCODER

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)

# Max abs difference allowed between torch and ONNX Runtime outputs in the parity check.
ENCODER_PARITY_TOLERANCE = 1e-4
# The sequence model's user vectors are dot-product logits of magnitude ~10: 1e-4 is far below a rank change.
SEQUENCE_PARITY_TOLERANCE = 1e-4
RANKER_PARITY_TOLERANCE = 1e-3
# The reader's role logits are O(10); a difference of 1e-3 never changes a word's label.
READER_PARITY_TOLERANCE = 1e-3
# int8 moves SmolLM2-135M's label logits by up to about 9 (fp32: 3e-5), so the int8 ranker is judged by
# what serving uses, the order of the candidates: measured top-1 agreement 1.0 and top-5 overlap 0.77 over
# the seven parity prompts (docs/export-and-push.md). The loose logit bound still catches a broken graph.
RANKER_INT8_TOLERANCE = 15.0
RANKER_INT8_MIN_TOP1_AGREEMENT = 0.7
RANKER_INT8_MIN_TOPK_OVERLAP = 0.6
# int8 embeddings stay unit vectors; what matters for retrieval is their direction.
ENCODER_INT8_TOLERANCE = 0.05
ENCODER_INT8_MIN_COSINE = 0.98
TOP_K = 5


class ParityError(RuntimeError):
    """The exported model's outputs differ from the source checkpoint's beyond the tolerance."""


@dataclass(frozen=True)
class ParityPolicy:
    """What an export must satisfy against torch; the agreement bounds apply where they are set.

    Attributes:
        tolerance: Largest max-abs difference of the outputs.
        min_top1_agreement: ``ranker``: share of parity prompts whose best candidate is the same.
        min_topk_overlap: ``ranker``: mean overlap of the top-``TOP_K`` candidate sets.
        min_cosine: ``text_encoder``: smallest cosine similarity between the two embeddings of a text.
    """

    tolerance: float
    min_top1_agreement: float | None = None
    min_topk_overlap: float | None = None
    min_cosine: float | None = None


# The policy of each model and precision; a model missing at a precision cannot be exported at it.
_POLICIES: dict[tuple[str, str], ParityPolicy] = {
    (TEXT_ENCODER, FP32): ParityPolicy(ENCODER_PARITY_TOLERANCE),
    (TEXT_ENCODER, INT8): ParityPolicy(ENCODER_INT8_TOLERANCE, min_cosine=ENCODER_INT8_MIN_COSINE),
    (RANKER, FP32): ParityPolicy(RANKER_PARITY_TOLERANCE),
    (RANKER, INT8): ParityPolicy(RANKER_INT8_TOLERANCE, RANKER_INT8_MIN_TOP1_AGREEMENT, RANKER_INT8_MIN_TOPK_OVERLAP),
    (PREFERENCE_GENERATOR, FP32): ParityPolicy(0.0),
    (SEQUENCE_ENCODER, FP32): ParityPolicy(SEQUENCE_PARITY_TOLERANCE),
    (REQUEST_READER, FP32): ParityPolicy(READER_PARITY_TOLERANCE),
}


def parity_policy(name: str, precision: str = FP32, tolerance: float | None = None) -> ParityPolicy:
    """The parity requirements of ``name`` exported at ``precision`` (``tolerance`` overrides the bound)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    policy = _POLICIES.get((name, precision))
    if policy is None:
        raise ValueError(f"{name} is served by torch from safetensors; int8 applies to {TEXT_ENCODER} and {RANKER}")
    return policy if tolerance is None else replace(policy, tolerance=tolerance)


def max_abs_parity(reference: Any, exported: Any, policy: ParityPolicy, what: str) -> dict[str, Any]:
    """Figures of the max-abs check of ``exported`` against ``reference``; ParityError past the tolerance."""
    import numpy as np

    reference = np.asarray(reference, dtype=np.float32)
    exported = np.asarray(exported, dtype=np.float32)
    if reference.shape != exported.shape:
        raise ParityError(f"{what}: output shape {exported.shape} differs from torch {reference.shape}")
    max_abs_diff = float(np.max(np.abs(reference - exported))) if reference.size else 0.0
    figures: dict[str, Any] = {
        "samples": int(reference.shape[0]),
        "max_abs_diff": max_abs_diff,
        "argmax_agreement": float(np.mean(reference.argmax(-1) == exported.argmax(-1))),
        "tolerance": policy.tolerance,
    }
    if not np.isfinite(max_abs_diff) or max_abs_diff > policy.tolerance:
        raise ParityError(f"{what}: ONNX Runtime differs from torch by {max_abs_diff:.3g} > {policy.tolerance:g}")
    return figures


def ranking_agreement(reference: Any, exported: Any, num_candidates: list[int], k: int = TOP_K) -> dict[str, float]:
    """How far two sets of label logits agree on the order of each row's first ``num_candidates`` labels.

    Returns:
        ``top1_agreement``: share of rows with the same best candidate; ``topk_overlap``: mean share of
        the reference's top-k candidates that are also in the other's top-k (k capped by the row's count).
    """
    import numpy as np

    top1, overlap = [], []
    for ref, exp, n in zip(np.asarray(reference), np.asarray(exported), num_candidates):
        kk = min(k, n)
        top1.append(float(np.argmax(ref[:n]) == np.argmax(exp[:n])))
        ref_top = set(np.argsort(-ref[:n], kind="stable")[:kk].tolist())
        exp_top = set(np.argsort(-exp[:n], kind="stable")[:kk].tolist())
        overlap.append(len(ref_top & exp_top) / kk)
    return {"top1_agreement": float(np.mean(top1)), "topk_overlap": float(np.mean(overlap)), "k": k}


def _at_least(value: float, bound: float | None, what: str) -> None:
    if bound is not None and value < bound:
        raise ParityError(f"{what} {value:.2f} < {bound:.2f}")


def ranker_parity(reference: Any, exported: Any, num_candidates: list[int], policy: ParityPolicy) -> dict[str, Any]:
    """The ranker's figures: max-abs of the label logits, then the ranking agreement the policy asks for."""
    figures = max_abs_parity(reference, exported, policy, RANKER)
    figures.update(ranking_agreement(reference, exported, num_candidates))
    figures["min_top1_agreement"] = policy.min_top1_agreement
    figures["min_topk_overlap"] = policy.min_topk_overlap
    _at_least(figures["top1_agreement"], policy.min_top1_agreement, f"{RANKER}: top-1 agreement with torch")
    _at_least(figures["topk_overlap"], policy.min_topk_overlap, f"{RANKER}: top-{TOP_K} overlap with torch")
    return figures


def encoder_parity(reference: Any, exported: Any, policy: ParityPolicy) -> dict[str, Any]:
    """The encoder's figures: max-abs of the embeddings, then their smallest cosine similarity."""
    import numpy as np

    figures = max_abs_parity(reference, exported, policy, TEXT_ENCODER)
    ref, exp = np.asarray(reference, dtype=np.float64), np.asarray(exported, dtype=np.float64)
    cosine = (ref * exp).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(exp, axis=-1))
    figures["min_cosine"] = float(cosine.min())
    figures["min_cosine_required"] = policy.min_cosine
    if policy.min_cosine is not None and not figures["min_cosine"] >= policy.min_cosine:
        raise ParityError(f"{TEXT_ENCODER}: cosine similarity with torch {figures['min_cosine']:.4f} "
                          f"< {policy.min_cosine:.4f}")
    return figures


def copy_parity(max_abs_diff: float, same_tokens: bool, policy: ParityPolicy) -> dict[str, Any]:
    """The generator's figures: its saved copy must give the source's logits and greedy tokens."""
    if not max_abs_diff <= policy.tolerance or not same_tokens:
        raise ParityError(f"{PREFERENCE_GENERATOR}: saved copy differs (max abs diff {max_abs_diff:.3g}, "
                          f"greedy tokens equal: {same_tokens})")
    return {"samples": 1, "max_abs_diff": max_abs_diff, "greedy_tokens_equal": same_tokens,
            "tolerance": policy.tolerance}

