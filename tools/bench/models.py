"""Two ranker ONNX graphs side by side on the same instructions: speed and how far the rankings agree.

For decisions such as int8 dynamic quantisation: a faster graph is only worth serving if it ranks the
candidates as the reference does. The instructions come from a bench report (the overhead pass keeps the
exact instructions the gateway sent), so both graphs see served traffic. Runs are interleaved round by
round, so drifts in the machine's other load fall on both alike.

    python -m tools.bench.models --report var/bench/<run>.json --candidate var/bench/ranker-int8 --quantize
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from services.core.contracts import ONNX_ATTENTION_MASK, ONNX_INPUT_IDS, ONNX_LABEL_LOGITS, RANKER, RANKER_ANSWER_PREFIX
from services.core.modeltext import right_pad
from tools.bench.stats import jsonable, percentile


def quantize_int8(reference_dir: Path, out_dir: Path) -> Path:
    """``out_dir`` = ``reference_dir`` with ``model.onnx`` dynamically quantised to int8.

    Same settings as ``instructrec export --quantize int8``: unsigned 8-bit weights per output channel
    (signed weights saturate on CPUs with AVX2 but no VNNI).
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in reference_dir.iterdir():
        if path.is_file() and path.name != "model.onnx" and path.suffix != ".py":
            shutil.copy2(path, out_dir / path.name)
    logging.disable(logging.INFO)
    try:
        quantize_dynamic(reference_dir / "model.onnx", out_dir / "model.onnx", weight_type=QuantType.QUInt8,
                         per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    return out_dir


def agreement(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> dict[str, float]:
    """Top-1 agreement, mean top-k overlap and the largest logit difference of two score matrices [N, C]."""
    top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    overlap = float(np.mean([len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k
                             for a, b in zip(reference, candidate)]))
    return {"top1_agreement": top1, f"top{k}_overlap": overlap,
            "max_abs_diff": float(np.abs(reference - candidate).max())}


def compare(reference_dir: Path, candidate_dir: Path, instructions: list[str], *, threads: int = 2,
            rounds: int = 2, batch_sizes: tuple[int, ...] = (1, 8),
            answer_prefix: str = RANKER_ANSWER_PREFIX) -> dict[str, Any]:
    """Milliseconds per request of each graph at each batch size (per round), and their agreement."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from services.core.modeltext import ranker_model_text

    tokenizer = AutoTokenizer.from_pretrained(str(reference_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rows = tokenizer([ranker_model_text(tokenizer, p, answer_prefix) for p in instructions],
                     add_special_tokens=False)["input_ids"]

    def session(folder: Path) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(folder / "model.onnx"), sess_options=options,
                                    providers=["CPUExecutionProvider"])

    sessions = {"reference": session(reference_dir), "candidate": session(candidate_dir)}

    def scores(name: str, batch: list[list[int]]) -> np.ndarray:
        input_ids, attention_mask = right_pad(batch, pad_id)
        feeds = {ONNX_INPUT_IDS: input_ids, ONNX_ATTENTION_MASK: attention_mask}
        return sessions[name].run([ONNX_LABEL_LOGITS], feeds)[0]

    for name in sessions:
        scores(name, rows[:1])  # arenas allocated outside the timings
    timings: dict[str, dict[str, list[float]]] = {n: {str(b): [] for b in batch_sizes} for n in sessions}
    loads = []
    for _ in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for name in sessions:
            for size in batch_sizes:
                t0 = time.perf_counter()
                for start in range(0, len(rows), size):
                    scores(name, rows[start:start + size])
                timings[name][str(size)].append((time.perf_counter() - t0) * 1000 / len(rows))
    reference = np.concatenate([scores("reference", rows[i:i + 1]) for i in range(len(rows))])
    candidate = np.concatenate([scores("candidate", rows[i:i + 1]) for i in range(len(rows))])
    lengths = [len(r) for r in rows]
    return {
        "reference": str(reference_dir), "candidate": str(candidate_dir), "threads": threads,
        "prompts": len(rows), "prompt_tokens": {"min": min(lengths), "p50": percentile(lengths, 50),
                                                "max": max(lengths)},
        "load_1m_per_round": loads, "ms_per_request": timings,
        "speedup": {size: float(np.mean(timings["reference"][size]) / np.mean(timings["candidate"][size]))
                    for size in timings["reference"]},
        "agreement": agreement(reference, candidate),
    }


def main(
    report: Annotated[Path, typer.Option(help="A bench report whose overhead pass holds served instructions.")],
    candidate: Annotated[Path, typer.Option(help="Folder with the candidate model.onnx (and tokenizer files).")],
    reference: Annotated[Path, typer.Option(help="Folder with the reference model.onnx.")] = Path(
        "model_repository") / RANKER / "1",
    quantize: Annotated[bool, typer.Option(help="First write --candidate as the int8 quantisation of --reference.")]
    = False,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (the served ranker uses 2).")] = 2,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.")] = 2,
    out: Annotated[Path | None, typer.Option(help="JSON output (default: next to --candidate).")] = None,
) -> None:
    """Compare two ranker graphs on served instructions: ms per request at batch 1 and 8, ranking agreement."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    data = json.loads(report.read_text())
    instructions = [r["instruction"] for r in data.get("overhead", {}).get("requests", [])]
    if not instructions:
        raise typer.BadParameter("the report has no overhead-pass instructions", param_hint="--report")
    if quantize:
        quantize_int8(reference, candidate)
    answer_prefix = (data.get("meta", {}).get("served_configs", {}).get(RANKER, {}).get("parameters", {})
                     .get("answer_prefix", {}).get("string_value", RANKER_ANSWER_PREFIX))
    result = compare(reference, candidate, instructions, threads=threads, rounds=rounds, answer_prefix=answer_prefix)
    path = out or candidate.with_name(candidate.name + "-compare.json")
    path.write_text(json.dumps(jsonable(result), indent=2) + "\n")
    print(json.dumps(jsonable({k: result[k] for k in ("speedup", "agreement", "ms_per_request", "load_1m_per_round")})))
    print(f"wrote {path}")


if __name__ == "__main__":
    typer.run(main)
