"""Triton python-backend adapter: ``text`` -> ``embedding`` (mean-pooled, L2-normalised) with ONNX Runtime.

Assets in this version folder (written by ``tools/export.py``): ``model.onnx`` (inputs ``input_ids``,
``attention_mask``, ``token_type_ids``; output ``embedding`` [B, D]), tokenizer files, ``metadata.json``.

Config parameters: ``max_tokens`` (longer texts are truncated, default 256), ``num_threads`` (ONNX Runtime
intra-op threads, default 1).

A ``KIND_GPU`` instance runs on ONNX Runtime's CUDA provider on its device (needs ``onnxruntime-gpu``).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


def _invalid_input(message: str):
    """A per-request error with code INVALID_ARG: clients see INVALID_ARGUMENT (bad input), not INTERNAL."""
    # TritonError is only bound into pb_utils once the stub runs, so it is looked up here, not at import.
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


def _providers(args: dict) -> list:
    """ONNX Runtime providers for this instance: CUDA on a ``KIND_GPU`` instance's device, else the CPU.

    A GPU instance without the CUDA provider fails to load rather than silently running on the CPU.
    """
    if args.get("model_instance_kind") != "GPU":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("KIND_GPU instance, but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brings, when present
    device_id = int(args.get("model_instance_device_id", 0))
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


def _check_device(session, args: dict) -> None:
    """ONNX Runtime falls back to the CPU when the CUDA libraries fail to load: refuse that on a GPU instance."""
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"KIND_GPU instance, but the CUDA provider did not load: {session.get_providers()}")


def _decode_texts(array: np.ndarray) -> list[str]:
    """Decode one request's ``[n, 1]`` string tensor; raises ValueError for undecodable or empty text."""
    texts = []
    for value in array.reshape(-1):
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if not text.strip():
            raise ValueError("text must not be empty")
        texts.append(text)
    if not texts:
        raise ValueError("request has no text")
    return texts


class TritonPythonModel:
    """Batches the texts of all requests in an execution into one ONNX Runtime run."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.max_tokens = int(_parameter(config, "max_tokens", "256"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(version_dir))
        self.tokenizer.padding_side = "right"
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "num_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), sess_options=options, providers=_providers(args)
        )
        _check_device(self.session, args)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        spans: list[tuple[int, int] | str] = []  # per request: rows in the batch, or an error message
        for request in requests:
            try:
                request_texts = _decode_texts(pb_utils.get_input_tensor_by_name(request, "text").as_numpy())
            except (ValueError, AttributeError) as exc:
                spans.append(f"bad text input: {exc}")
                continue
            spans.append((len(texts), len(texts) + len(request_texts)))
            texts.extend(request_texts)

        embeddings = np.zeros((0, 0), dtype=np.float32)
        if texts:
            encoded = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np"
            )
            feeds = {
                "input_ids": encoded["input_ids"].astype(np.int64),  # [B, L]
                "attention_mask": encoded["attention_mask"].astype(np.int64),  # [B, L]
            }
            if "token_type_ids" in self.input_names:
                token_type_ids = encoded.get("token_type_ids")
                feeds["token_type_ids"] = (
                    np.zeros_like(feeds["input_ids"]) if token_type_ids is None else token_type_ids.astype(np.int64)
                )
            (embeddings,) = self.session.run(["embedding"], feeds)  # [B, D]

        responses = []
        for span in spans:
            if isinstance(span, str):
                responses.append(pb_utils.InferenceResponse(error=_invalid_input(span)))
                continue
            start, end = span
            output = pb_utils.Tensor("embedding", np.ascontiguousarray(embeddings[start:end], dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses

    def finalize(self) -> None:
        self.session = None
