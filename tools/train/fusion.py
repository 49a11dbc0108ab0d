"""Fit the ranking stage's fusion weight: how much the LM ranker's log-probabilities count against the
retrieval score.

The served ranking score of a candidate is ``lm_weight * log p_LM(label) + retrieval_score / temperature``
(:func:`services.core.fusion.fuse`): a product of the two experts, with the retriever's score on the
scale of its training logits (``temperature`` = its InfoNCE temperature). ``lm_weight`` = 0 serves the
retrieval order; a large one the LM's order. It is chosen here on validation users (history = the training
part, target = the validation item; the test items are never used), on both kinds of candidate lists the
ranker sees: protocol 1 (target + 9 random unseen items) and protocol 2 (target + the retriever's top 9
unseen items), maximising the mean HR@1 of the two.

Every part is the served one: the retrieval score is :meth:`ItemIndex.score` of the served retrieval rule
(request text + history vectors, popularity prior) over item vectors of the given encoder, and the LM
scores are :func:`services.core.modeltext.ranker_scorer` label logits of the served instruction templates (P1-I0 and
P2-I0 alternating, P2 with the teacher's statement, as the ranker's own validation).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from services.common.settings import ROOT
from services.core import prompts
from services.core.contracts import (
    RECENT_HISTORY_ITEMS,
    RETRIEVAL_HISTORY_WEIGHT,
)
from services.core.fusion import SERVED_RETRIEVAL_FUSION, RetrievalFusion, fuse
from tools.core.machine import repo_path
from tools.core.sampling import candidate_list, random_negatives
from tools.core.sequence_model import PUBLISHED_DIR
from tools.export import combined_sha256, weights_sha256
from tools.train.retrieval_fusion import RetrievalFitConfig, validation_scores

log = logging.getLogger(__name__)

FUSION_FILE = Path(__file__).resolve().parent / "adapters" / "fusion.json"
"""Committed fitted weights, one entry per served model set ("tuned", "base"). `instructrec run` passes the
entry of the models it serves as RANKING_LM_WEIGHT; the setting's default is the tuned entry (a test keeps
them equal), which the k8s deployment serves."""

DEFAULT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


@dataclass
class FusionFitConfig:
    data_dir: Path
    ranker: Path
    """LoRA adapter folder or Hugging Face model folder of the ranker."""
    encoder: Path
    """LoRA adapter folder or Hugging Face model folder of the text encoder."""
    validation_users: int = 200
    seed: int = 0
    sequence: Path = PUBLISHED_DIR
    """Folder of the sequence model (the served retrieval fuses it)."""
    retrieval: RetrievalFusion = field(default_factory=lambda: SERVED_RETRIEVAL_FUSION)
    """The served retrieval weights."""
    temperature: float = 1.0
    """Divides the retrieval scores in the ranking fusion: 1, they are already logits."""
    grid: tuple[float, ...] = DEFAULT_GRID
    batch_size: int = 8
    threads: int = 0


@dataclass(frozen=True)
class FusionCase:
    """One validation list: candidates in label order, the target's position, the LM prompt."""

    kind: str  # "random" | "retrieved"
    candidates: tuple[str, ...]
    answer: int
    prompt: str


def load_causal_lm(path: Path):
    """A causal LM folder, or a LoRA adapter merged into its base; with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tools.export import RANKER, is_lora_adapter, resolve_adapter_base

    if is_lora_adapter(path):
        from peft import PeftModel

        base = resolve_adapter_base(path, RANKER, None)
        lm = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        lm = PeftModel.from_pretrained(lm, str(path)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(base))
    else:
        lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return lm.eval(), tokenizer


def hit_rates(cases: Sequence[FusionCase], lm_logprobs: Sequence[np.ndarray], retrieval: Sequence[np.ndarray],
              weight: float, temperature: float) -> dict[str, float]:
    """HR@1 per kind of list (and their mean) when ranking by the fused score at ``weight``."""
    hits: dict[str, list[int]] = {}
    for case, lm, ret in zip(cases, lm_logprobs, retrieval):
        fused = fuse(lm, ret, weight, temperature)
        # Ties keep label order, as the served ranking does.
        best = int(np.argmax(fused))
        hits.setdefault(case.kind, []).append(int(best == case.answer))
    out = {f"HR@1 {k}": sum(v) / len(v) for k, v in sorted(hits.items())}
    out["HR@1"] = sum(out.values()) / len(out)
    return out


# The LM weight is served only if it beats the retrieval order (weight 0) by more than this many standard errors
# of the paired per-list difference: a gain within noise is not worth a ranker call on every request.
MIN_LM_GAIN_SE = 2.0


def lm_gain(cases: Sequence[FusionCase], lm_logprobs: Sequence[np.ndarray], retrieval: Sequence[np.ndarray],
            weight: float, temperature: float) -> dict[str, float]:
    """Mean and standard error of the per-list HR@1 difference between ``weight`` and the retrieval order."""
    diffs = []
    for case, lm, ret in zip(cases, lm_logprobs, retrieval):
        fused = int(np.argmax(fuse(lm, ret, weight, temperature))) == case.answer
        alone = int(np.argmax(fuse(lm, ret, 0.0, temperature))) == case.answer
        diffs.append(float(fused) - float(alone))
    d = np.asarray(diffs)
    return {"gain": float(d.mean()), "stderr": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
            "lists": len(d)}


def fit_fusion(config: FusionFitConfig) -> dict:
    """Score the validation lists with both models and pick the weight with the best mean HR@1."""
    import torch
    from tqdm import tqdm

    from services.core.modeltext import label_token_ids, ranker_scorer
    from tools.train.examples import RankerExample, load_training_data, render_for, validation_samples
    from tools.train.ranker import RankerBatcher

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cpu")
    data = load_training_data(config.data_dir)
    recent_n = RECENT_HISTORY_ITEMS
    samples = validation_samples(data, config.validation_users)

    # Retrieval side: the served fused rule (sequence model, text, popularity; the weights of requests
    # without a query, as these lists have none), scored over the whole catalog.
    scores = validation_scores(RetrievalFitConfig(config.data_dir, config.encoder, config.sequence,
                                                  validation_users=config.validation_users, seed=config.seed))
    ids = scores.ids
    position = {item: n for n, item in enumerate(ids)}
    fused = scores.fused(config.retrieval.without_query, "without_query")  # [users, items], logits

    cases: list[FusionCase] = []
    retrieval: list[np.ndarray] = []
    for n, sample in enumerate(samples):
        # Not the evaluation's per-user key: other negatives than the user's protocol-1 test list. ``seen`` is
        # the history and the validation item (validation_samples): the test item is never looked at.
        rng = random.Random(f"fusion:{config.seed}:{sample.user_id}")
        template = prompts.TEMPLATES_BY_ID["P1-I0-T3-0" if n % 2 == 0 else "P2-I0-T3-0"]
        row = fused[n]
        hard = [ids[j] for j in np.argsort(-row, kind="stable") if ids[j] not in sample.seen][:9]
        for kind, negatives in (("random", random_negatives(ids, set(sample.seen), 9, rng)), ("retrieved", hard)):
            candidates, answer = candidate_list(sample.target, negatives, rng)
            prompt = render_for(data, sample, template, candidates, rng, prompts.DEFAULT_ITEM_NOUN, recent_n)
            cases.append(FusionCase(kind, tuple(candidates), answer, prompt))
            retrieval.append(np.asarray([row[position[c]] for c in candidates]))

    # LM side: label logits of the served ranker, as log-probabilities over each list's labels.
    lm, tokenizer = load_causal_lm(config.ranker)
    scorer = ranker_scorer(lm, label_token_ids(tokenizer)).to(device)
    batcher = RankerBatcher(tokenizer, device)
    lm_logprobs: list[np.ndarray] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(cases), config.batch_size), desc="ranker", leave=False):
            group = cases[start: start + config.batch_size]
            logits = scorer(*batcher([RankerExample(c.prompt, c.answer, len(c.candidates), "T3", "") for c in group]))
            for row, case in zip(logits, group):
                lm_logprobs.append(torch.log_softmax(row[: len(case.candidates)].double(), -1).numpy())

    grid = {str(w): hit_rates(cases, lm_logprobs, retrieval, w, config.temperature) for w in config.grid}
    lm_only = hit_rates(cases, lm_logprobs, [np.zeros(len(c.candidates)) for c in cases], 1.0, config.temperature)
    best = max(config.grid, key=lambda w: (grid[str(w)]["HR@1"], -w))
    significance = lm_gain(cases, lm_logprobs, retrieval, best, config.temperature)
    served = best if significance["gain"] > MIN_LM_GAIN_SE * significance["stderr"] else 0.0
    return {
        "lm_weight": served,
        "best_weight": best,
        "lm_gain_over_retrieval": {**significance, "rule": f"the LM is kept if its gain > {MIN_LM_GAIN_SE} "
                                                             "standard errors (it costs a ranker call)"},
        "retrieval_temperature": config.temperature,
        "validation": grid[str(served)],
        "retrieval_only": grid[str(0.0)] if 0.0 in config.grid else None,
        "lm_only": lm_only,
        "grid": grid,
        "validation_users": len(samples),
        "lists": len(cases),
        "seed": config.seed,
        "ranker": repo_path(config.ranker),
        "ranker_sha256": combined_sha256(weights_sha256(config.ranker)),
        "encoder": repo_path(config.encoder),
        "encoder_sha256": combined_sha256(weights_sha256(config.encoder)),
        "retrieval": {"history_weight": RETRIEVAL_HISTORY_WEIGHT, "fusion": config.retrieval.to_json(),
                      "sequence": repo_path(config.sequence),
                      "sequence_sha256": combined_sha256(weights_sha256(config.sequence))},
        "config": {k: (repo_path(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }


def read_fusion(models: str, path: Path = FUSION_FILE) -> float | None:
    """The committed fitted ``lm_weight`` for a model set ("tuned" or "base"); None when not fitted."""
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(models)
    return None if entry is None else float(entry["lm_weight"])


def stale_fusion(models: str, path: Path = FUSION_FILE) -> list[str]:
    """The adapters whose weights differ from those ``models``' committed weight was fitted on (empty when the
    fit is current, or when the checkpoint is not on this machine to check)."""
    if not path.is_file():
        return []
    entry = json.loads(path.read_text()).get(models)
    if entry is None:
        return []
    stale = []
    for model in ("ranker", "encoder"):
        path, digest = entry.get(model), entry.get(f"{model}_sha256")
        # Only the committed adapters are retrained; base models are fixed conversions of packaged weights
        # (and hashing them costs seconds).
        if not path or not digest or not path.startswith("tools/train/adapters/"):
            continue
        folder = ROOT / path
        if folder.is_dir() and combined_sha256(weights_sha256(folder)) != digest:
            stale.append(f"{model} ({path})")
    return stale


def write_fusion(models: str, result: dict, path: Path = FUSION_FILE) -> Path:
    """Store ``result`` as the entry of ``models`` (other entries are kept)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[models] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
