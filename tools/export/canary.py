"""The canary of a push: the fixed input an export recorded in ``metadata.json`` with its output, and the check
that a version Triton now serves answers it the same way (shape, finite, within the parity tolerance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from services.core.contracts import TEXT_ENCODER, TRITON_CONTRACTS
from tools.export.samples import canary_inputs
from tools.export.versions import METADATA_FILE

# The text encoder's outputs are L2-normalised: a canary embedding whose norm is off by more is broken.
EMBEDDING_NORM_TOLERANCE = 1e-3


class CanaryError(RuntimeError):
    """The canary inference's output is wrong (shape, NaN, or too far from what the export computed)."""


def check_canary(name: str, spec: dict[str, Any], output: Any) -> dict[str, Any]:
    """Check a canary output against the spec the export recorded.

    Args:
        name: Model name.
        spec: The ``canary`` entry of the version's ``metadata.json``.
        output: The output tensor as Triton returned it (with the batch axis).

    Returns:
        Figures for the report (``max_abs_diff`` for numeric outputs).

    Raises:
        CanaryError: If the output is missing, has the wrong shape, is not finite, or is too far from the
            expected output.
    """
    if output is None:
        raise CanaryError(f"{name} returned no {spec['output_name']!r} output")
    array = np.asarray(output)
    if array.dtype == np.object_:  # text output: it must be one decodable string
        if array.shape != (1, 1):
            raise CanaryError(f"{name} returned shape {list(array.shape)}, expected [1, 1]")
        value = array.reshape(-1)[0]
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError as exc:
            raise CanaryError(f"{name} returned undecodable text: {exc}") from None
        return {"text_chars": len(text)}
    expected = spec.get("expected")
    if array.ndim > 2:  # per-word outputs ([1, W, L]): the canary compares them flattened
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2 or array.shape[0] != 1 or (expected is not None and array.shape[1] != len(expected)):
        want = f"[1, {len(expected)}]" if expected is not None else "[1, n]"
        raise CanaryError(f"{name} returned shape {list(array.shape)}, expected {want}")
    values = array.astype(np.float32)[0]
    if not np.all(np.isfinite(values)):
        raise CanaryError(f"{name} returned non-finite values")
    figures: dict[str, Any] = {}
    if expected is not None:  # exports before canaries were recorded have no expected output
        max_abs_diff = float(np.max(np.abs(values - np.asarray(expected, dtype=np.float32))))
        tolerance = spec.get("tolerance")
        figures.update(max_abs_diff=max_abs_diff, tolerance=tolerance)
        if tolerance is not None and max_abs_diff > tolerance:
            raise CanaryError(f"{name} output differs from the export's by {max_abs_diff:.3g} > {tolerance:g}")
    if name == TEXT_ENCODER:
        norm = float(np.linalg.norm(values))
        figures["norm"] = norm
        if abs(norm - 1.0) > EMBEDDING_NORM_TOLERANCE:
            raise CanaryError(f"{name} embedding has norm {norm:.4f}, expected 1")
    return figures


def canary_spec(version_dir: Path, name: str) -> dict[str, Any]:
    """The version's canary from ``metadata.json``; an export without one gets the fixed input only."""
    meta = json.loads((version_dir / METADATA_FILE).read_text())
    if meta.get("canary"):
        return meta["canary"]
    contract = TRITON_CONTRACTS[name]
    input_name, output_name = contract.input_name, contract.output_name
    return {"input_name": input_name, "input": canary_inputs()[name], "output_name": output_name,
            "expected": None, "tolerance": None}
