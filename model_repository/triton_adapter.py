"""What the python-backend adapters (``<model>/<version>/model.py``) share.

``tools/export`` copies this file into every version folder beside ``model.py``. Triton's python backend puts
the version folder on ``sys.path``, so ``model.py`` imports it as ``triton_adapter``; each version keeps the
copy it was exported with. It cannot import the project's packages (the Triton image has none of them).

:class:`BatchedModel` is the ``TritonPythonModel`` contract: ``initialize`` reads ``config.pbtxt`` (tensor
names and parameters, written by ``tools/export/config.py`` from ``services/core/contracts.py``) and lets the
model load its assets; ``execute`` decodes each request's strings, runs the model once on the rows of all
requests, and answers each request in order, with a per-request ``INVALID_ARG`` error for a bad one rather
than failing the whole batch.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def invalid_input(message: str):
    """A per-request error with code INVALID_ARG: clients see INVALID_ARGUMENT (bad input), not INTERNAL."""
    # TritonError is only bound into pb_utils once the stub runs, so it is looked up here, not at import.
    return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)


def decode_texts(array: np.ndarray, what: str) -> list[str]:
    """Decode one request's ``[n, 1]`` string tensor; raises ValueError for undecodable or empty text."""
    texts = []
    for value in array.reshape(-1):
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if not text.strip():
            raise ValueError(f"{what} must not be empty")
        texts.append(text)
    if not texts:
        raise ValueError(f"request has no {what}")
    return texts


def chat_token_rows(tokenizer, prompts: list[str], *, suffix: str, max_tokens: int) -> list[list[int]]:
    """Token ids of each prompt as the chat template's user turn, the opened assistant turn, then ``suffix``.

    Raises:
        ValueError: If a prompt is longer than ``max_tokens`` (truncating would cut off its end).
    """
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        + suffix
        for p in prompts
    ]
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    longest = max(len(row) for row in rows)
    if longest > max_tokens:
        raise ValueError(f"prompt is {longest} tokens, more than max_prompt_tokens={max_tokens}")
    return rows


def onnx_session(path: Path, args: dict, num_threads: int):
    """An ONNX Runtime session: CUDA on a ``KIND_GPU`` instance's device, else the CPU.

    A GPU instance without a working CUDA provider fails to load rather than silently running on the CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    gpu = args.get("model_instance_kind") == "GPU"
    providers = ["CPUExecutionProvider"]
    if gpu:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(
                "KIND_GPU instance, but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
            )
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brings, when present
        device_id = int(args.get("model_instance_device_id", 0))
        providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    # ONNX Runtime falls back to the CPU when the CUDA libraries fail to load: refuse that on a GPU instance.
    if gpu and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"KIND_GPU instance, but the CUDA provider did not load: {session.get_providers()}")
    return session


def run_onnx(session, encoded) -> np.ndarray:
    """Run a single-output graph on a tokenizer's output: each graph input is the tokenizer field of its name.

    A field the tokenizer does not produce (``token_type_ids`` of some tokenizers) is fed as zeros.
    """
    fields = {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}  # [B, L] each
    zeros = np.zeros_like(next(iter(fields.values())))
    feeds = {i.name: fields.get(i.name, zeros) for i in session.get_inputs()}
    (output,) = session.run(None, feeds)
    return output


class BatchedModel:
    """Base of each adapter's ``TritonPythonModel``; subclasses implement :meth:`load` and :meth:`run`.

    Attributes set by ``initialize``: ``config`` (the parsed model config), ``version_dir`` (the assets),
    ``input_name`` and ``output_name`` (the model's single input and output tensor).
    """

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input_name = self.config["input"][0]["name"]
        self.output_name = self.config["output"][0]["name"]
        self.load(args)

    def parameter(self, key: str, default: str) -> str:
        """A ``config.pbtxt`` parameter, ``default`` when unset or empty."""
        value = self.config.get("parameters", {}).get(key, {}).get("string_value", "")
        return value or default

    def load(self, args: dict) -> None:
        """Load the model's assets from ``self.version_dir``."""
        raise NotImplementedError

    def load_onnx_encoder(self, args: dict, default_max_tokens: int) -> None:
        """An encoder's assets: ``max_tokens`` (config parameter), its tokenizer (right padding) and the ONNX
        Runtime session of ``model.onnx`` with ``num_threads`` intra-op threads."""
        from transformers import AutoTokenizer

        self.max_tokens = int(self.parameter("max_tokens", str(default_max_tokens)))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.version_dir))
        self.tokenizer.padding_side = "right"
        self.session = onnx_session(self.version_dir / "model.onnx", args, int(self.parameter("num_threads", "1")))

    def prepare(self, texts: list[str]) -> list:
        """One request's rows for :meth:`run` (default: the texts); ValueError fails that request alone."""
        return texts

    def run(self, rows: list) -> np.ndarray:
        """The output tensor's rows ``[B, ...]`` for the rows of all good requests, in order."""
        raise NotImplementedError

    def _request_rows(self, request) -> list | str:
        """The request's rows, or the error message it is answered with."""
        try:
            texts = decode_texts(pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy(),
                                 self.input_name)
        except (ValueError, AttributeError) as exc:
            return f"bad {self.input_name} input: {exc}"
        try:
            return self.prepare(texts)
        except ValueError as exc:
            return str(exc)

    def execute(self, requests: list) -> list:
        per_request = [self._request_rows(request) for request in requests]
        rows = [row for item in per_request if not isinstance(item, str) for row in item]
        outputs = self.run(rows) if rows else None
        responses = []
        start = 0
        for item in per_request:
            if isinstance(item, str):
                responses.append(pb_utils.InferenceResponse(error=invalid_input(item)))
                continue
            end = start + len(item)
            output = pb_utils.Tensor(self.output_name, np.ascontiguousarray(outputs[start:end]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start = end
        return responses

    def finalize(self) -> None:
        """Drop the model's assets (``load`` keeps them as attributes)."""
        self.__dict__.clear()
