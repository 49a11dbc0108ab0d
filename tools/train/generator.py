"""Tune the preference generator: SmolLM2 with LoRA to write P2 statements from the history it is served.

Input: ``prompts.render_preference_prompt`` of the recent history in the chat template, exactly as the
Triton model builds it. Target: the teacher's statement (:func:`tools.core.teacher.explicit_preference`, from the
genres, years and the user's own ratings of those items) followed by the end-of-turn token. The loss covers
the target tokens only. Validation: target-token loss and, on a few users, greedy generation compared with
the teacher's statement (exact match and genre-word F1).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.core.modeltext import ranker_model_text
from tools.core.teacher import VAGUE_BANK
from tools.train.common import LoopConfig, Record, Task, cycle, lora_layers, run_loop, setup_torch
from tools.train.examples import (
    PreferenceExample,
    draw_samples,
    load_training_data,
    preference_example,
    validation_samples,
)

log = logging.getLogger(__name__)

GENRE_WORDS = {g.lower() for g in VAGUE_BANK}


@dataclass
class GeneratorTrainConfig:
    data_dir: Path
    base_model: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=150, batch_size=8, lr=5e-4, eval_every=50))
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    top_layers: int = 10
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    examples_per_epoch: int = 4000
    validation_users: int = 64
    generation_users: int = 12
    max_new_tokens: int = 48
    max_history: int = 10


def model_text(tokenizer, prompt: str) -> str:
    """The served generator's input (``model_repository/preference_generator/1/model.py``): the chat
    template's user turn and the opened assistant turn, i.e. the ranker's text without an answer prefix."""
    return ranker_model_text(tokenizer, prompt, answer_prefix="")


class GeneratorBatcher:
    """Prompt + target + end-of-turn, right-padded; labels are -100 outside the target."""

    def __init__(self, tokenizer, device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def __call__(self, examples: list[PreferenceExample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, labels = [], []
        for e in examples:
            prompt = self.tokenizer(model_text(self.tokenizer, e.prompt), add_special_tokens=False)["input_ids"]
            target = self.tokenizer(e.target + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)  # [B, L]
        mask = torch.zeros((len(rows), length), dtype=torch.long)  # [B, L]
        lab = torch.full((len(rows), length), -100, dtype=torch.long)  # [B, L]
        for i, (row, label) in enumerate(zip(rows, labels)):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            lab[i, : len(row)] = torch.tensor(label)
        return ids.to(self.device), mask.to(self.device), lab.to(self.device)


def _genre_f1(generated: str, target: str) -> float:
    words = lambda text: {g for g in GENRE_WORDS if g in text.lower()}  # noqa: E731
    got, want = words(generated), words(target)
    if not got and not want:
        return 1.0
    overlap = len(got & want)
    if not overlap:
        return 0.0
    precision, recall = overlap / len(got), overlap / len(want)
    return 2 * precision * recall / (precision + recall)


def train_generator(config: GeneratorTrainConfig, resume: bool = False) -> Record:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = setup_torch(config.loop)
    data = load_training_data(config.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model))
    lm = AutoModelForCausalLM.from_pretrained(str(config.base_model), dtype=torch.float32)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules),
                      layers_to_transform=lora_layers(lm.config.num_hidden_layers, config.top_layers))
    model = get_peft_model(lm, lora).to(device)
    batcher = GeneratorBatcher(tokenizer, device)
    validation = [preference_example(data, s, max_history=config.max_history)
                  for s in validation_samples(data, config.validation_users)]

    def epoch(n: int) -> list[list[PreferenceExample]]:
        rng = random.Random(f"{config.loop.seed}:generator:{n}")
        examples = [preference_example(data, s, max_history=config.max_history)
                    for s in draw_samples(data, config.examples_per_epoch, rng)]
        size = config.loop.batch_size
        return [examples[i: i + size] for i in range(0, len(examples) - size + 1, size)]

    def loss(batch: list[PreferenceExample]) -> torch.Tensor:
        ids, mask, labels = batcher(batch)
        return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss

    def validate() -> dict[str, float]:
        losses = [loss(validation[i: i + 8]).item() for i in range(0, len(validation), 8)]
        sample = validation[: config.generation_users]
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        batch = tokenizer([model_text(tokenizer, e.prompt) for e in sample], add_special_tokens=False,
                          padding=True, return_tensors="pt")
        tokenizer.padding_side = side
        output = model.generate(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device),
                                max_new_tokens=config.max_new_tokens, do_sample=False,
                                pad_token_id=batcher.pad)
        texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        texts = [t.strip() for t in texts]
        exact = sum(t == e.target for t, e in zip(texts, sample)) / max(1, len(sample))
        f1 = sum(_genre_f1(t, e.target) for t, e in zip(texts, sample)) / max(1, len(sample))
        record.extra["validation_samples"] = [{"generated": t, "teacher": e.target} for t, e in zip(texts[:3], sample)]
        mean_loss = sum(losses) / len(losses)
        return {"neg_loss": -mean_loss, "loss": mean_loss, "exact_match": exact, "genre_f1": f1}

    def save(path: Path) -> None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    record = Record("preference_generator", config, config.out_dir / "record.json",
                    extra={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    task = Task(model=model, batches=cycle(epoch), loss=loss, validate=validate, save=save, metric="neg_loss")
    return run_loop(task, config.loop, config.out_dir, record, resume)
