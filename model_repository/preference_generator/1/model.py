"""Triton python-backend adapter of ``preference_generator``: prompts -> generated preference statements (torch).

The version folder holds a Hugging Face causal-LM folder (safetensors + tokenizer with chat template),
written by ``tools/export``, and ``triton_adapter.py`` (what the adapters share: tensor names from the
config, one response per request). The prompt becomes the chat template's user turn; generation is greedy
with the KV cache over the left-padded batch, and only the new tokens are decoded.

Config parameters: ``max_new_tokens`` (default 48), ``max_prompt_tokens`` (longer prompts are rejected,
default 1024), ``num_threads`` (torch intra-op threads, default 1).

A ``KIND_GPU`` instance generates with torch on its CUDA device.
"""

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from triton_adapter import BatchedModel, chat_token_rows


def _device(args: dict) -> torch.device:
    """``cuda:<id>`` for a ``KIND_GPU`` instance (failing to load when torch has no CUDA), else the CPU."""
    if args.get("model_instance_kind") != "GPU":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("KIND_GPU instance, but torch has no CUDA here (install a CUDA build of torch)")
    return torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")


class TritonPythonModel(BatchedModel):
    """Generates for the prompts of all requests in an execution with one ``generate()`` call."""

    def load(self, args: dict) -> None:
        self.max_new_tokens = int(self.parameter("max_new_tokens", "48"))
        self.max_prompt_tokens = int(self.parameter("max_prompt_tokens", "1024"))
        torch.set_num_threads(int(self.parameter("num_threads", "1")))
        self.device = _device(args)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.version_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(self.version_dir), dtype=torch.float32)
        self.model = model.eval().to(self.device)

    def prepare(self, texts: list[str]) -> list:
        return chat_token_rows(self.tokenizer, texts, suffix="", max_tokens=self.max_prompt_tokens)

    def run(self, rows: list) -> np.ndarray:
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
        texts = self.tokenizer.batch_decode(new_tokens.cpu(), skip_special_tokens=True)
        return np.array([[t.strip().encode("utf-8")] for t in texts], dtype=np.object_)  # [B, 1]
