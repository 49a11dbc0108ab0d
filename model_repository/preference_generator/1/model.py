"""Triton python-backend adapter: ``prompt`` -> ``text`` (a generated preference statement) with torch.

The version folder holds a Hugging Face causal-LM folder (safetensors + tokenizer with chat template),
written by ``tools/export.py``. The prompt becomes the chat template's user turn; generation is greedy with
the KV cache over the left-padded batch, and only the new tokens are decoded.

Config parameters: ``max_new_tokens`` (default 48), ``max_prompt_tokens`` (longer prompts are rejected,
default 1024), ``num_threads`` (torch intra-op threads, default 1).

A ``KIND_GPU`` instance generates with torch on its CUDA device.
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM, AutoTokenizer


def _invalid_input(message: str):
    """A per-request error with code INVALID_ARG: clients see INVALID_ARGUMENT (bad input), not INTERNAL."""
    # TritonError is only bound into pb_utils once the stub runs, so it is looked up here, not at import.
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


def _device(args: dict) -> torch.device:
    """``cuda:<id>`` for a ``KIND_GPU`` instance (failing to load when torch has no CUDA), else the CPU."""
    if args.get("model_instance_kind") != "GPU":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("KIND_GPU instance, but torch has no CUDA here (install a CUDA build of torch)")
    return torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")


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
    """Generates for the prompts of all requests in an execution with one ``generate()`` call."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.max_new_tokens = int(_parameter(config, "max_new_tokens", "48"))
        self.max_prompt_tokens = int(_parameter(config, "max_prompt_tokens", "1024"))
        torch.set_num_threads(int(_parameter(config, "num_threads", "1")))
        self.device = _device(args)
        self.tokenizer = AutoTokenizer.from_pretrained(str(version_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(version_dir), dtype=torch.float32).eval().to(self.device)

    def _model_text(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )

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
        generated: list[str] = []
        if rows:
            batch = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")  # [B, L], left
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # [B, L + new]
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            generated = [t.strip() for t in self.tokenizer.batch_decode(new_tokens.cpu(), skip_special_tokens=True)]

        responses = []
        start = 0
        for error, ids in zip(errors, per_request):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=_invalid_input(error)))
                continue
            end = start + len(ids)
            texts = np.array([[t.encode("utf-8")] for t in generated[start:end]], dtype=np.object_)  # [n, 1]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text", texts)]))
            start = end
        return responses

    def finalize(self) -> None:
        self.model = None
