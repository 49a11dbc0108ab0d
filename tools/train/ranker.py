"""Instruction-tune the ranker: SmolLM2 with LoRA on T3 (re-ranking) and T0 (yes/no) instructions.

Scored exactly as served: the instruction becomes the chat template's user turn, the assistant turn opens
with ``prompts.RANKER_ANSWER_PREFIX`` and the next-token logits of the labels (" A".." T" for T3, " no" /
" yes" for T0) are the scores (:func:`services.core.modeltext.ranker_scorer`, the module the ONNX export wraps). The
loss is cross-entropy over the labels of the candidates present.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.core.modeltext import label_token_ids, ranker_model_text, ranker_scorer
from tools.train.common import LoopConfig, Record, Task, cycle, lora_layers, run_loop, setup_torch
from tools.train.examples import (
    HardNegatives,
    RankerExample,
    RankerMix,
    TrainingData,
    draw_samples,
    load_training_data,
    ranker_example,
    validation_ranker_examples,
)

log = logging.getLogger(__name__)

POINTWISE_TOKENS = (" no", " yes")


@dataclass
class RankerTrainConfig:
    data_dir: Path
    base_model: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=300, batch_size=4, lr=3e-4, eval_every=100))
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    top_layers: int = 8
    """LoRA on the top N decoder layers only (0 = all): the backward pass stops there, which is what makes
    CPU training affordable."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    mix: RankerMix = field(default_factory=RankerMix)
    hard_negative_encoder: Path | None = None
    """Encoder folder (or LoRA adapter) whose item vectors give hard negatives; None = uniform random only."""
    examples_per_epoch: int = 4000
    validation_users: int = 200
    max_history: int = 10


def pointwise_token_ids(tokenizer) -> list[int]:
    ids = []
    for text in POINTWISE_TOKENS:
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"{text!r} is {len(tokens)} tokens in this tokenizer; need exactly 1")
        ids.append(tokens[0])
    return ids


class RankerBatcher:
    """Tokenises ranker examples the way the served model does and right-pads them."""

    def __init__(self, tokenizer, device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def __call__(self, examples: list[RankerExample]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.tokenizer(ranker_model_text(self.tokenizer, e.prompt), add_special_tokens=False)["input_ids"]
                for e in examples]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)  # [B, L]
        mask = torch.zeros((len(rows), length), dtype=torch.long)  # [B, L]
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)


def ranking_loss(scorer, pointwise, batcher: RankerBatcher, examples: list[RankerExample]) -> torch.Tensor:
    """Mean cross-entropy over each example's labels (T3: the first ``num_choices`` labels; T0: no/yes)."""
    losses = []
    for task, head in (("T3", scorer), ("T0", pointwise)):
        group = [e for e in examples if e.task == task]
        if not group:
            continue
        logits = head(*batcher(group))  # [B, C]
        for row, example in zip(logits, group):
            losses.append(torch.nn.functional.cross_entropy(row[: example.num_choices].unsqueeze(0),
                                                            torch.tensor([example.answer], device=row.device)))
    return torch.stack(losses).mean()


def hit_rate_at_1(scorer, batcher: RankerBatcher, examples: list[RankerExample], batch_size: int) -> dict[str, float]:
    hits, by_template = 0, {}
    for start in range(0, len(examples), batch_size):
        group = examples[start: start + batch_size]
        logits = scorer(*batcher(group))
        for row, example in zip(logits, group):
            hit = int(int(row[: example.num_choices].argmax()) == example.answer)
            hits += hit
            by_template.setdefault(example.template_id, []).append(hit)
    metrics = {"HR@1": hits / max(1, len(examples))}
    metrics.update({f"HR@1 {t}": sum(v) / len(v) for t, v in by_template.items()})
    return metrics


def hard_negative_source(data: TrainingData, encoder: Path | None, device: torch.device) -> HardNegatives | None:
    if encoder is None:
        return None
    from tools.core.text_encoder import item_vectors

    ids = list(data.catalog.items)
    return HardNegatives(ids, item_vectors(encoder, [data.catalog[i] for i in ids], device))


def load_ranker_model(config: RankerTrainConfig, device: torch.device):
    """The base model with LoRA as ``config`` says, and its tokenizer.

    Returns:
        ``(peft_model, lm, tokenizer)``: ``lm`` is the LoRA-injected base model the scorers wrap.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model))
    lm = AutoModelForCausalLM.from_pretrained(str(config.base_model), dtype=torch.float32)
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=lora_layers(lm.config.num_hidden_layers, config.top_layers),
    )
    model = get_peft_model(lm, lora).to(device)
    return model, lm, tokenizer


def ranker_task(model, lm, tokenizer, batches: Iterator[list[RankerExample]], validation: list[RankerExample],
                device: torch.device) -> Task:
    """What :func:`run_loop` trains: the served scoring of ``batches`` (cross-entropy over the labels) and
    validation HR@1 on ``validation``. ``train_ranker`` feeds it MovieLens instructions; a test feeds it a toy
    task through the same path."""
    # The scorers wrap the (LoRA-injected) base model: the same module the export turns into ONNX.
    scorer = ranker_scorer(lm, label_token_ids(tokenizer)).to(device)
    pointwise = ranker_scorer(lm, pointwise_token_ids(tokenizer)).to(device)
    batcher = RankerBatcher(tokenizer, device)

    def save(path: Path) -> None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    return Task(
        model=model,
        batches=batches,
        loss=lambda batch: ranking_loss(scorer, pointwise, batcher, batch),
        validate=lambda: hit_rate_at_1(scorer, batcher, validation, 8),
        save=save,
        metric="HR@1",
    )


def train_ranker(config: RankerTrainConfig, resume: bool = False) -> Record:
    device = setup_torch(config.loop)
    data = load_training_data(config.data_dir)
    model, lm, tokenizer = load_ranker_model(config, device)
    hard = hard_negative_source(data, config.hard_negative_encoder, device)
    validation = validation_ranker_examples(data, config.validation_users, config.loop.seed,
                                            max_history=config.max_history)

    def epoch(n: int) -> list[list[RankerExample]]:
        rng = random.Random(f"{config.loop.seed}:ranker:{n}")
        samples = draw_samples(data, config.examples_per_epoch, rng)
        examples = [ranker_example(data, s, rng, config.mix, hard, max_history=config.max_history) for s in samples]
        size = config.loop.batch_size
        return [examples[i: i + size] for i in range(0, len(examples) - size + 1, size)]

    record = Record("ranker", config, config.out_dir / "record.json",
                    extra={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "validation_examples": len(validation)})
    task = ranker_task(model, lm, tokenizer, cycle(epoch), validation, device)
    return run_loop(task, config.loop, config.out_dir, record, resume)
