"""Triton python-backend adapter: ``prompt`` -> ``candidate_scores`` (label logits) with ONNX Runtime.

The prompt is the instruction text. Inside the model it becomes the chat template's user turn, the assistant
turn is opened and ``answer_prefix`` appended; the scores are the logits of the labels " A".." T" for the
next token. ``model.onnx`` (written by ``tools/export.py``) takes right-padded ``input_ids`` and
``attention_mask`` and returns ``label_logits`` [B, 20].

Config parameters: ``answer_prefix`` (must match training), ``max_prompt_tokens`` (longer prompts are
rejected, since truncating would cut off candidates or the question), ``num_threads`` (ONNX Runtime
intra-op threads, default 2).

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
            raise ValueError("prompt must not be empty")
        texts.append(text)
    if not texts:
        raise ValueError("request has no prompt")
    return texts


class TritonPythonModel:
    """Batches the prompts of all requests in an execution into one ONNX Runtime run."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        if "answer_prefix" not in config.get("parameters", {}):
            # Scoring without the training prefix would silently read the wrong position's logits.
            raise ValueError("config.pbtxt must set the answer_prefix parameter (written by tools/export.py)")
        self.answer_prefix = config["parameters"]["answer_prefix"]["string_value"]
        self.max_prompt_tokens = int(_parameter(config, "max_prompt_tokens", "1024"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(version_dir))
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id or 0
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "num_threads", "2"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), sess_options=options, providers=_providers(args)
        )
        _check_device(self.session, args)

    def _model_text(self, prompt: str) -> str:
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return chat + self.answer_prefix

    def execute(self, requests: list) -> list:
        errors: list[str | None] = []
        per_request: list[list[list[int]]] = []
        for request in requests:
            try:
                prompts = _decode_texts(pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy())
            except (ValueError, AttributeError) as exc:
                errors.append(f"bad prompt input: {exc}")
                per_request.append([])
                continue
            ids = self.tokenizer([self._model_text(p) for p in prompts], add_special_tokens=False)["input_ids"]
            too_long = max(len(row) for row in ids)
            if too_long > self.max_prompt_tokens:
                errors.append(f"prompt is {too_long} tokens, more than max_prompt_tokens={self.max_prompt_tokens}")
                per_request.append([])
                continue
            errors.append(None)
            per_request.append(ids)

        rows = [row for ids in per_request for row in ids]
        scores = np.zeros((0, 0), dtype=np.float32)
        if rows:
            length = max(len(row) for row in rows)
            input_ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)  # [B, L]
            attention_mask = np.zeros((len(rows), length), dtype=np.int64)  # [B, L]
            for i, row in enumerate(rows):
                input_ids[i, : len(row)] = row
                attention_mask[i, : len(row)] = 1
            (scores,) = self.session.run(
                ["label_logits"], {"input_ids": input_ids, "attention_mask": attention_mask}
            )  # [B, C]

        responses = []
        start = 0
        for error, ids in zip(errors, per_request):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=_invalid_input(error)))
                continue
            end = start + len(ids)
            output = pb_utils.Tensor("candidate_scores", np.ascontiguousarray(scores[start:end], dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start = end
        return responses

    def finalize(self) -> None:
        self.session = None
