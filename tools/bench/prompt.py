"""Where the ranker's prompt tokens go: system and template text, history titles, the preference statement and
the lettered candidates, counted with the served ranker's own tokenizer and chat template.

The instructions are those the serving path writes (``services.core.prompts``) for known users: their recent
history, a preference statement of the teacher's length, and 20 candidates (the most popular items outside the
history, standing in for retrieval's). Offline: no server is needed.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from services.core import prompts
from services.core.catalog import Catalog, InteractionStore
from services.core.contracts import RANKER, RANKER_ANSWER_PREFIX
from services.core.modeltext import ranker_model_text

# A statement of the length the generator writes (48 new tokens at most; the teacher's typical wording).
TYPICAL_STATEMENT = "Enjoys comedy, drama and romance films, mostly from the 1990s and 1980s. Tends to rate horror low."


def prompt_parts(data_dir: Path, repository: Path, *, version: str = "1", users: int = 200, seed: int = 0,
                 num_candidates: int = prompts.MAX_CANDIDATES) -> dict[str, Any]:
    """Mean (and max) tokens per part of the ranker prompt over ``users`` known users."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(repository) / RANKER / version))
    catalog = Catalog.load(data_dir / "items.jsonl")
    store = InteractionStore.load(data_dir / "train.csv")
    counts: dict[str, int] = {}
    for history in store.histories.values():
        for item in history:
            counts[item] = counts.get(item, 0) + 1
    popular = sorted((i for i in counts if i in catalog), key=lambda i: -counts[i])
    rng = random.Random(seed)
    chosen = rng.sample(sorted(store.histories), min(users, len(store.histories)))

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    parts: dict[str, list[int]] = {"total": [], "history": [], "statement": [], "candidates": [], "template": []}
    for user in chosen:
        history = [catalog[i] for i in store.histories[user] if i in catalog]
        seen = {i.item_id for i in history}
        candidates = [catalog[i] for i in popular if i not in seen][:num_candidates]
        template = prompts.select_template(True, True, False)
        instruction = prompts.render_instruction(template, history=history, candidates=candidates,
                                                 preference=TYPICAL_STATEMENT)
        total = tokens(ranker_model_text(tokenizer, instruction, RANKER_ANSWER_PREFIX))
        h = tokens(prompts.format_history(history))
        s = tokens(TYPICAL_STATEMENT)
        c = tokens(prompts.format_candidates(candidates))
        for name, value in (("total", total), ("history", h), ("statement", s), ("candidates", c),
                            ("template", total - h - s - c)):
            parts[name].append(value)
    return {"users": len(chosen), "num_candidates": num_candidates, "tokenizer": f"{RANKER} v{version}",
            "mean": {k: statistics.mean(v) for k, v in parts.items()},
            "max": {k: max(v) for k, v in parts.items()}}
