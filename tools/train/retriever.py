"""Tune the retriever's text encoder (MiniLM) on T2 matching pairs with in-batch negatives, with LoRA.

Query side: exactly the text the retrieval service encodes for a request (``prompts.retrieval_text``: an
optional intention, then the recent history titles). Item side: ``catalog.item_text`` (what the index is
built from). Both go through the served pooling (:func:`services.core.modeltext.mean_pooled_encoder`: mean over tokens,
L2 normalisation). Loss: symmetric InfoNCE over the batch (every other target in the batch is a negative;
pairs that share a target are not counted as negatives of each other).

Validation: Recall@20 of the served retrieval rule (:func:`services.core.index.user_vector`: the encoded
request blended with the mean of the history's item vectors, plus the log-popularity prior at the served
``RETRIEVAL_POPULARITY_WEIGHT``; other weights are recorded too) over the whole catalog, on validation users.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from services.core.catalog import item_text
from services.core.contracts import RETRIEVAL_HISTORY_WEIGHT, RETRIEVAL_POPULARITY_WEIGHT, RETRIEVAL_TEMPERATURE
from services.core.fusion import SourceWeights
from services.core.modeltext import mean_pooled_encoder
from tools.core.retrieval_score import CatalogScorer
from tools.core.text_encoder import DEFAULT_MAX_TOKENS, encode
from tools.train.common import LoopConfig, Record, Task, cycle, run_loop, setup_torch
from tools.train.examples import RetrievalPair, draw_samples, load_training_data, retrieval_pair, validation_samples

log = logging.getLogger(__name__)


@dataclass
class RetrieverTrainConfig:
    data_dir: Path
    base_model: Path
    out_dir: Path
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=300, batch_size=64, lr=1e-3, eval_every=100,
                                                                warmup_steps=20))
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    temperature: float = RETRIEVAL_TEMPERATURE
    intention_share: float = 0.3
    examples_per_epoch: int = 20000
    validation_users: int = 300
    max_history: int = 10
    max_tokens: int = DEFAULT_MAX_TOKENS


def info_nce(queries: torch.Tensor, items: torch.Tensor, targets: Sequence[str], temperature: float) -> torch.Tensor:
    """Symmetric in-batch contrastive loss; a row's other positives with the same target are masked out."""
    logits = queries @ items.t() / temperature  # [B, B]
    same = torch.tensor([[a == b for b in targets] for a in targets], device=logits.device)
    eye = torch.eye(len(targets), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    labels = torch.arange(len(targets), device=logits.device)
    return 0.5 * (torch.nn.functional.cross_entropy(logits, labels)
                  + torch.nn.functional.cross_entropy(logits.t(), labels))


def recall_at(pooled, tokenizer, data, samples, device, k: int, history_weight: float, max_history: int,
              max_tokens: int, popularity_weights: Sequence[float] = (0.0,)) -> dict[str, float]:
    """Recall@k of the served retrieval rule over the whole catalog (history items excluded), for each
    popularity-prior weight (``ItemIndex.search``): ``Recall@k`` for the first weight, ``Recall@k w=..`` each."""
    ids = list(data.catalog.items)
    vectors = encode(pooled, tokenizer, [item_text(data.catalog[i]) for i in ids], device, max_tokens).cpu().numpy()
    texts = [prompts.retrieval_text("", [data.catalog[i] for i in s.history[-max_history:]], max_history)
             for s in samples]
    queries = encode(pooled, tokenizer, texts, device, max_tokens).cpu().numpy()
    scorer = CatalogScorer(ids, data.split.popularity, vectors, history_weight=history_weight,
                           temperature=RETRIEVAL_TEMPERATURE)
    cosines = scorer.text_cosines(queries, [s.history[-max_history:] for s in samples])  # [N, items]
    hits = dict.fromkeys(popularity_weights, 0)
    for weight in popularity_weights:
        # The text index's search rule, cos + w * log(1 + count): the served score with text 1 and popularity
        # w / T ranks the same (it is that rule divided by the temperature T).
        scores = scorer.fused(SourceWeights(sequence=0.0, text=1.0, popularity=weight / RETRIEVAL_TEMPERATURE),
                              text=cosines)
        for row, sample in enumerate(samples):
            scores[row, [scorer.position[i] for i in sample.history]] = -np.inf
            top = np.argpartition(-scores[row], k)[:k]
            hits[weight] += int(scorer.position[sample.target] in set(top.tolist()))
    out = {f"Recall@{k} w={w}": h / max(1, len(samples)) for w, h in hits.items()}
    out[f"Recall@{k}"] = out[f"Recall@{k} w={popularity_weights[0]}"]
    return out


def train_retriever(config: RetrieverTrainConfig, resume: bool = False) -> Record:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    device = setup_torch(config.loop)
    data = load_training_data(config.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model))
    encoder = AutoModel.from_pretrained(str(config.base_model))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules))
    model = get_peft_model(encoder, lora).to(device)
    pooled = mean_pooled_encoder(encoder).to(device)
    validation = validation_samples(data, config.validation_users)
    history_weight = RETRIEVAL_HISTORY_WEIGHT
    served_weight = RETRIEVAL_POPULARITY_WEIGHT
    weights = (served_weight, *(w for w in (0.0, 0.025, 0.1) if w != served_weight))

    def epoch(n: int) -> list[list[RetrievalPair]]:
        rng = random.Random(f"{config.loop.seed}:retriever:{n}")
        samples = draw_samples(data, config.examples_per_epoch, rng)
        pairs = [retrieval_pair(data, s, rng, config.intention_share, config.max_history) for s in samples]
        size = config.loop.batch_size
        return [pairs[i: i + size] for i in range(0, len(pairs) - size + 1, size)]

    def loss(batch: list[RetrievalPair]) -> torch.Tensor:
        queries = encode(pooled, tokenizer, [p.query for p in batch], device, config.max_tokens)
        items = encode(pooled, tokenizer, [p.item for p in batch], device, config.max_tokens)
        return info_nce(queries, items, [p.target for p in batch], config.temperature)

    def save(path: Path) -> None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    record = Record("text_encoder", config, config.out_dir / "record.json",
                    extra={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "validation_users": len(validation), "history_weight": history_weight,
                           "popularity_weight": served_weight})
    task = Task(
        model=model,
        batches=cycle(epoch),
        loss=loss,
        validate=lambda: recall_at(pooled, tokenizer, data, validation, device, 20, history_weight,
                                   config.max_history, config.max_tokens, weights),
        save=save,
        metric="Recall@20",
    )
    return run_loop(task, config.loop, config.out_dir, record, resume)
