"""torch -> ONNX export, the ONNX Runtime session the parity checks run, and int8 dynamic quantisation."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from tools.export.parity import FP32

ONNX_OPSET = 17
ONNX_FILE = "model.onnx"


def onnx_metadata() -> dict[str, Any]:
    """The ``metadata.json`` fields every ONNX export records."""
    return {"format": "onnx", "opset": ONNX_OPSET}


def dynamic_axes(input_names: list[str], output_names: list[str], *,
                 per_token: bool = False) -> dict[str, dict[int, str]]:
    """Every input is ``[batch, sequence]`` and every output ``[batch, ...]`` (``per_token``: ``[batch,
    sequence, ...]``, one row per input token), of any size."""
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes.update({name: {0: "batch", 1: "sequence"} if per_token else {0: "batch"} for name in output_names})
    return axes


def export_onnx(module: Any, args: tuple[Any, ...], path: Path, *, input_names: list[str],
                output_names: list[str], per_token: bool = False) -> None:
    """``torch.onnx.export`` with the TorchScript exporter (the dynamo one needs onnxscript)."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated but is the one that needs no onnxscript; the tracer warnings
        # concern shape arithmetic that the parity check on other shapes verifies.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes(input_names, output_names, per_token=per_token),
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def ort_session(path: Path, num_threads: int = 1) -> Any:
    """An ONNX Runtime CPU session on ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def quantize_int8(source: Path, dest: Path) -> None:
    """ONNX Runtime dynamic quantisation: 8-bit weights per output channel, activations quantised at run time.

    Weights are unsigned (U8U8): with signed weights (U8S8) CPUs with AVX2 but no VNNI saturate the integer
    products, which took the ranker's top-1 agreement with torch to 0 on such a machine.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a line per tensor through the root logger at INFO; keep the export's log readable.
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(source, dest, weight_type=QuantType.QUInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def export_graph(module: Any, trace_inputs: dict[str, Any], staging: Path, *, output_name: str,
                 precision: str, per_token: bool = False) -> Any:
    """Trace ``module`` on ``trace_inputs`` into ``staging/model.onnx`` at ``precision``; a session on it.

    The fp32 graph of an int8 export is quantised and not kept.

    Args:
        module: The torch module; its positional inputs are ``trace_inputs``' values, in order.
        trace_inputs: Example tensors by graph input name (dynamic batch and sequence axes).
        staging: The version folder being built.
        output_name: The graph's output.
        precision: ``fp32`` or ``int8``.
        per_token: The output has a row per input token (its second axis is the sequence).
    """
    final = staging / ONNX_FILE
    fp32 = final if precision == FP32 else staging / "model.fp32.onnx"
    export_onnx(module, tuple(trace_inputs.values()), fp32, input_names=list(trace_inputs),
                output_names=[output_name], per_token=per_token)
    if fp32 != final:
        quantize_int8(fp32, final)
        fp32.unlink()
    return ort_session(final)
