"""Triton python-backend adapter of ``ranker``: prompts -> candidate scores (label logits) with ONNX Runtime.

The prompt is the instruction text. Inside the model it becomes the chat template's user turn, the assistant
turn is opened and ``answer_prefix`` appended; the scores are the logits of the labels " A".." T" for the
next token. ``model.onnx`` (written by ``tools/export``) takes right-padded ``input_ids`` and
``attention_mask`` and returns the label logits [B, 20]. ``triton_adapter.py`` beside it holds what the
adapters share (tensor names from the config, one response per request).

Config parameters: ``answer_prefix`` (must match training), ``max_prompt_tokens`` (longer prompts are
rejected, since truncating would cut off candidates or the question), ``num_threads`` (ONNX Runtime
intra-op threads, default 2).

A ``KIND_GPU`` instance runs on ONNX Runtime's CUDA provider on its device (needs ``onnxruntime-gpu``).
"""

import numpy as np
from transformers import AutoTokenizer
from triton_adapter import BatchedModel, chat_token_rows, onnx_session, run_onnx


class TritonPythonModel(BatchedModel):
    """Batches the prompts of all requests in an execution into one ONNX Runtime run."""

    def load(self, args: dict) -> None:
        if "answer_prefix" not in self.config.get("parameters", {}):
            # Scoring without the training prefix would silently read the wrong position's logits.
            raise ValueError("config.pbtxt must set the answer_prefix parameter (written by tools/export)")
        self.answer_prefix = self.config["parameters"]["answer_prefix"]["string_value"]
        self.max_prompt_tokens = int(self.parameter("max_prompt_tokens", "1024"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.version_dir))
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.session = onnx_session(self.version_dir / "model.onnx", args, int(self.parameter("num_threads", "2")))

    def prepare(self, texts: list[str]) -> list:
        return chat_token_rows(self.tokenizer, texts, suffix=self.answer_prefix, max_tokens=self.max_prompt_tokens)

    def run(self, rows: list) -> np.ndarray:
        batch = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="np")  # [B, L], right
        return run_onnx(self.session, batch).astype(np.float32)  # [B, C]
