"""The model-only baseline of `instructrec bench`: the served ranker and encoder run by ONNX Runtime in one process.

Same ONNX files, tokenizers, text rules (``services.core.modeltext.ranker_model_text``, the encoder's truncation) and
intra-op thread counts as the Triton models serve, so the difference from the served figures is what the
serving stack costs: gRPC hops, Triton's queue and the python backend's copies, retrieval's search, the
instruction service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.core.contracts import (
    ONNX_ATTENTION_MASK,
    ONNX_EMBEDDING,
    ONNX_INPUT_IDS,
    ONNX_LABEL_LOGITS,
    ONNX_TOKEN_TYPE_IDS,
    RANKER,
    RANKER_ANSWER_PREFIX,
    TEXT_ENCODER,
)
from services.core.modeltext import right_pad
from tools.bench.driver import load_average


def config_parameter(config: Mapping[str, Any], key: str, default: str) -> str:
    """A ``parameters`` string value of a Triton model config in JSON form."""
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


def providers(device: str, device_id: int = 0) -> list[Any]:
    """ONNX Runtime execution providers for ``device`` ("cpu" or "cuda").

    Raises:
        RuntimeError: ``cuda`` without ``CUDAExecutionProvider`` (install ``onnxruntime-gpu``): a silent fall
            back to the CPU would report CPU figures as GPU ones.
    """
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu instead of onnxruntime); "
            f"available: {ort.get_available_providers()}"
        )
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brings, when present
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


def _session(path: Path, num_threads: int, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers(device))
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"the CUDA provider did not load (CUDA/cuDNN libraries?): {session.get_providers()}")
    return session


@dataclass
class Timed:
    """One model call: time spent tokenising and in ONNX Runtime."""

    tokenize_ms: float
    run_ms: float

    @property
    def total_ms(self) -> float:
        return self.tokenize_ms + self.run_ms


class ModelOnly:
    """The served ``text_encoder`` and ``ranker`` versions, loaded straight into ONNX Runtime.

    Args:
        repository: The model repository Triton serves.
        versions: Served version per model (``{RANKER: "1", TEXT_ENCODER: "1"}``).
        configs: Served model config per model, JSON form (``get_model_config(...)["config"]``): thread
            counts, the ranker's answer prefix and the encoder's truncation come from it.
        device: "cpu" or "cuda".
    """

    def __init__(self, repository: Path, versions: Mapping[str, str], configs: Mapping[str, Mapping[str, Any]],
                 device: str = "cpu") -> None:
        from transformers import AutoTokenizer

        encoder_dir = Path(repository) / TEXT_ENCODER / str(versions[TEXT_ENCODER])
        ranker_dir = Path(repository) / RANKER / str(versions[RANKER])
        encoder_config, ranker_config = configs[TEXT_ENCODER], configs[RANKER]
        self.encoder_threads = int(config_parameter(encoder_config, "num_threads", "1"))
        self.ranker_threads = int(config_parameter(ranker_config, "num_threads", "2"))
        self.max_tokens = int(config_parameter(encoder_config, "max_tokens", "256"))
        self.answer_prefix = config_parameter(ranker_config, "answer_prefix", RANKER_ANSWER_PREFIX)
        self.encoder_tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        self.encoder_tokenizer.padding_side = "right"
        self.ranker_tokenizer = AutoTokenizer.from_pretrained(str(ranker_dir))
        pad = self.ranker_tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.ranker_tokenizer.eos_token_id or 0)
        self.encoder = _session(encoder_dir / "model.onnx", self.encoder_threads, device)
        self.ranker = _session(ranker_dir / "model.onnx", self.ranker_threads, device)
        self.encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        self.device = device

    def encode(self, texts: Sequence[str]) -> Timed:
        """Embed ``texts`` in one run, as ``text_encoder`` does for one execution."""
        t0 = time.perf_counter()
        encoded = self.encoder_tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                                         return_tensors="np")
        feeds = {ONNX_INPUT_IDS: encoded["input_ids"].astype(np.int64),
                 ONNX_ATTENTION_MASK: encoded["attention_mask"].astype(np.int64)}
        if ONNX_TOKEN_TYPE_IDS in self.encoder_inputs:
            token_types = encoded.get("token_type_ids")
            feeds[ONNX_TOKEN_TYPE_IDS] = (np.zeros_like(feeds[ONNX_INPUT_IDS]) if token_types is None
                                          else token_types.astype(np.int64))
        t1 = time.perf_counter()
        self.encoder.run([ONNX_EMBEDDING], feeds)
        t2 = time.perf_counter()
        return Timed((t1 - t0) * 1000, (t2 - t1) * 1000)

    def ranker_rows(self, instructions: Sequence[str]) -> list[list[int]]:
        """Token ids of the text the ranker scores for each instruction."""
        from services.core.modeltext import ranker_model_text

        texts = [ranker_model_text(self.ranker_tokenizer, p, self.answer_prefix) for p in instructions]
        return self.ranker_tokenizer(texts, add_special_tokens=False)["input_ids"]

    def rank(self, instructions: Sequence[str]) -> tuple[Timed, np.ndarray]:
        """Score ``instructions`` in one run, as ``ranker`` does for one execution: (timing, label logits [B, 20])."""
        t0 = time.perf_counter()
        input_ids, attention_mask = right_pad(self.ranker_rows(instructions), self.pad_id)
        t1 = time.perf_counter()
        feeds = {ONNX_INPUT_IDS: input_ids, ONNX_ATTENTION_MASK: attention_mask}
        (scores,) = self.ranker.run([ONNX_LABEL_LOGITS], feeds)
        t2 = time.perf_counter()
        return Timed((t1 - t0) * 1000, (t2 - t1) * 1000), scores

    def request_latency(self, encoder_text: str | None, instruction: str) -> dict[str, float]:
        """One request's model work at batch size 1: the encoder (when retrieval ran) then the ranker."""
        encoded = self.encode([encoder_text]) if encoder_text else Timed(0.0, 0.0)
        ranked, _ = self.rank([instruction])
        return {"encoder_ms": encoded.total_ms, "ranker_ms": ranked.total_ms,
                "run_ms": encoded.run_ms + ranked.run_ms, "total_ms": encoded.total_ms + ranked.total_ms}

    def warm_up(self, encoder_text: str, instruction: str) -> None:
        """First runs allocate ONNX Runtime's arenas: keep them out of the figures."""
        for _ in range(2):
            self.request_latency(encoder_text, instruction)

    def throughput(self, inputs: Sequence[tuple[str | None, str]], batch_size: int) -> dict[str, float]:
        """Requests per second for the same inputs in batches of ``batch_size`` (encoder batch, then ranker batch)."""
        t0 = time.perf_counter()
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            texts = [text for text, _ in chunk if text]
            if texts:
                self.encode(texts)
            self.rank([instruction for _, instruction in chunk])
        elapsed = time.perf_counter() - t0
        return {"batch_size": batch_size, "requests": len(inputs), "elapsed_s": elapsed,
                "throughput_rps": len(inputs) / elapsed}

    def throughput_report(self, inputs: Sequence[tuple[str | None, str]], max_batch: int) -> dict[str, Any]:
        """Throughput at batch size 1 and at the ranker's max batch size, with the load and thread counts."""
        load = load_average()
        throughput = [self.throughput(inputs, 1)]
        if max_batch > 1:
            throughput.append(self.throughput(inputs, max_batch))
        return {"load_1m_before": load, "load_1m_after": load_average(), "device": self.device,
                "ranker_threads": self.ranker_threads, "encoder_threads": self.encoder_threads,
                "throughput": throughput}
