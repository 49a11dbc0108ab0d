"""Train the request reader: a token tagger on the text encoder's family (MiniLM) with LoRA and a new head.

Each word of a request gets a role label (``services/core/reading.py`` ``WORD_LABELS``); the label of a word is read
at its first sub-word token (:func:`word_inputs`, the rule the served model applies too). Examples come from the
training bank (``tools/train/reader_examples.py`` and the composed frames of ``tools/train/reader_frames.py``) over
the catalog's vocabulary; validation (which picks the
checkpoint) is a fresh draw from the same bank, so neither the evaluation bank's wording nor its value
combinations are ever looked at. Metric: the share of validation requests whose every word is labelled right.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from services.core.reading import WORD_LABELS
from tools.core.reading_examples import Bank, Example, Renderer, generate, load_vocabulary
from tools.core.request_reader import MAX_TOKENS, predict_labels, word_inputs
from tools.train.common import LoopConfig, Record, Task, cycle, run_loop, setup_torch
from tools.train.reader_frames import served_bank

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class ReaderTrainConfig:
    data_dir: Path
    base_model: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1500, batch_size=32, lr=1e-3, eval_every=250,
                                                                warmup_steps=50, checkpoint_every=250))
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    examples: int = 40_000
    validation_examples: int = 1000
    max_tokens: int = MAX_TOKENS
    bank: Bank = field(default_factory=served_bank)
    """The clauses examples are drawn from: the hand-written families and composed frames
    (``tools/train/reader_frames.py``; the lab tries other banks: ``tools/lab/reader_bank_wide.py``)."""


def _targets(firsts: list[list[int]], examples: Sequence[Example], length: int) -> torch.Tensor:
    out = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, (positions, example) in enumerate(zip(firsts, examples)):
        for token, label in zip(positions, example.labels):
            if token >= 0:
                out[row, token] = label
    return out


def train_reader(config: ReaderTrainConfig, resume: bool = False) -> Record:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    device = setup_torch(config.loop)
    vocabulary = load_vocabulary(config.data_dir)
    renderer = Renderer(vocabulary, config.bank, "train")
    examples = generate(renderer, config.examples, config.loop.seed)
    validation = generate(Renderer(vocabulary, config.bank, "train"), config.validation_examples,
                          config.loop.seed + 10_000)
    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model))
    base = AutoModelForTokenClassification.from_pretrained(
        str(config.base_model), num_labels=len(WORD_LABELS), id2label=dict(enumerate(WORD_LABELS)),
        label2id={name: n for n, name in enumerate(WORD_LABELS)})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), modules_to_save=["classifier"])
    model = get_peft_model(base, lora).to(device)

    def epoch(n: int) -> list[list[Example]]:
        order = np.random.default_rng(config.loop.seed + n).permutation(len(examples))
        size = config.loop.batch_size
        return [[examples[i] for i in order[s:s + size]] for s in range(0, len(order) - size + 1, size)]

    def loss(batch: list[Example]) -> torch.Tensor:
        inputs, firsts = word_inputs(tokenizer, [e.words for e in batch], config.max_tokens)
        targets = _targets(firsts, batch, inputs["input_ids"].shape[1]).to(device)
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, len(WORD_LABELS)), targets.reshape(-1),
                                                 ignore_index=IGNORE)

    def validate() -> dict[str, float]:
        predicted = predict_labels(model, tokenizer, [e.words for e in validation], device, config.max_tokens)
        right = [np.array(p) == np.array(e.labels) for (p, _), e in zip(predicted, validation)]
        return {"request_accuracy": float(np.mean([r.all() for r in right])),
                "word_accuracy": float(np.mean(np.concatenate(right)))}

    def save(path: Path) -> None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    record = Record("request_reader", config, config.out_dir / "record.json",
                    extra={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "examples": len(examples), "validation_examples": len(validation),
                           "labels": list(WORD_LABELS)})
    task = Task(model=model, batches=cycle(epoch), loss=loss, validate=validate, save=save,
                metric="request_accuracy")
    return run_loop(task, config.loop, config.out_dir, record, resume)
