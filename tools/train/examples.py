"""Training examples for the three models, from the training part of the split only.

A training example takes one user's training sequence, a cut point ``t`` and uses ``seq[:t]`` as history
and ``seq[t]`` as the target, so the validation and test items are never seen. Validation examples are the
split's validation cases (history = training part, target = validation item). Instructions are rendered
with :mod:`services.core.prompts` (the module the instruction service serves from) and the teacher
substitutes of :mod:`tools.core.teacher`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core import prompts
from services.core.catalog import Catalog, Item, item_text, read_interactions, user_sequences
from tools.core import teacher
from tools.core.sampling import candidate_list, random_negatives
from tools.core.split import Case, Split, load_split

MIN_HISTORY = 3


@dataclass(frozen=True)
class TrainingData:
    """The split plus the training sequences with ratings (the teacher's preferences need ratings)."""

    split: Split
    sequences: dict[str, list[tuple[str, float | None]]]

    @property
    def catalog(self) -> Catalog:
        return self.split.catalog

    def rated(self, ids: Sequence[str], user: str) -> list[tuple[Item, float | None]]:
        ratings = dict(self.sequences.get(user, ()))
        return [(self.catalog[i], ratings.get(i)) for i in ids]


def load_training_data(data_dir: Path) -> TrainingData:
    split = load_split(Path(data_dir))
    rows = user_sequences(read_interactions(Path(data_dir) / "train.csv"))
    sequences = {u: [(r.item_id, r.rating) for r in seq] for u, seq in rows.items()}
    return TrainingData(split, sequences)


def draw_samples(data: TrainingData, count: int, rng: random.Random) -> list[Case]:
    """``count`` cut points over the training sequences, users weighted by their number of cut points."""
    users = [u for u, seq in data.split.train.items() if len(seq) > MIN_HISTORY]
    weights = [len(data.split.train[u]) - MIN_HISTORY for u in users]
    out = []
    for user in rng.choices(users, weights=weights, k=count):
        seq = data.split.train[user]
        t = rng.randrange(MIN_HISTORY, len(seq))
        out.append(Case(user, tuple(seq[:t]), seq[t], frozenset(seq)))
    return out


def validation_samples(data: TrainingData, count: int) -> list[Case]:
    """Validation cases as samples. What they count as seen is the history and the validation item only: the
    test item is the future of a validation case, so it may be drawn as a negative like any other item."""
    cases = [c for c in data.split.valid_cases if len(c.history) >= 1][:count] if count else data.split.valid_cases
    return [Case(c.user_id, c.history, c.target, frozenset(c.history) | {c.target}) for c in cases]


class HardNegatives:
    """The retriever's nearest unseen items to a history (mean of its recent item vectors), for hard negatives."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray, recent: int = prompts.DEFAULT_MAX_HISTORY_ITEMS,
                 pool: int = 50) -> None:
        self.item_ids = list(item_ids)
        self.index = {i: n for n, i in enumerate(self.item_ids)}
        self.vectors = vectors.astype(np.float32)
        self.recent = recent
        self.pool = pool

    def nearest(self, history: Sequence[str], seen: frozenset[str]) -> list[str]:
        rows = [self.index[i] for i in history[-self.recent:] if i in self.index]
        if not rows:
            return []
        query = self.vectors[rows].mean(axis=0)
        scores = self.vectors @ query
        order = np.argsort(-scores)
        return [self.item_ids[j] for j in order[: self.pool + len(seen)] if self.item_ids[j] not in seen][: self.pool]


def _intention(template: prompts.InstructionTemplate, target: Item, rng: random.Random) -> str:
    if template.intention == "I1":
        return teacher.vague_intention(target, rng)
    if template.intention == "I2":
        return teacher.specific_intention(target)
    return ""


@dataclass(frozen=True)
class RankerExample:
    """One ranker instruction and its answer: the target's index among the scored labels."""

    prompt: str
    answer: int
    num_choices: int
    task: str  # "T3": labels A.. ; "T0": (no, yes)
    template_id: str


def render_for(
    data: TrainingData, sample: Case, template: prompts.InstructionTemplate, candidates: Sequence[str],
    rng: random.Random, noun: str, max_history: int,
) -> str:
    """The instruction text for ``sample`` under ``template`` (the candidate list is used by T3 only)."""
    catalog = data.catalog
    history = [catalog[i] for i in sample.history]
    target = catalog[sample.target]
    preference = ""
    if template.preference == "P2":
        preference = teacher.explicit_preference(data.rated(sample.history[-max_history:], sample.user_id))
    return prompts.render_instruction(
        template,
        history=history,
        candidates=[catalog[i] for i in candidates] if template.task == "T3" else [],
        candidate=catalog[candidates[0]] if template.task == "T0" else None,
        query=_intention(template, target, rng),
        preference=preference,
        noun=noun,
        max_history_items=max_history,
    )


@dataclass(frozen=True)
class RankerMix:
    """How ranker examples are drawn."""

    serving_share: float = 0.5
    """Share of T3 examples on the served templates (variant 0), the rest on the paraphrases."""
    pointwise_share: float = 0.15
    """Share of T0 (yes/no) examples."""
    hard_share: float = 0.4
    """Share of examples whose negatives come from the retriever (the rest are uniform random)."""
    candidates: tuple[int, ...] = (10, 10, 10, 20)
    """Candidate list sizes, drawn uniformly (10 as in protocols 1-2, 20 as the served pipeline ranks)."""


def ranker_example(
    data: TrainingData, sample: Case, rng: random.Random, mix: RankerMix, hard: HardNegatives | None,
    noun: str = prompts.DEFAULT_ITEM_NOUN, max_history: int = prompts.DEFAULT_MAX_HISTORY_ITEMS,
) -> RankerExample:
    ids = list(data.catalog.items)
    pointwise = rng.random() < mix.pointwise_share
    if pointwise:
        pool = [t for t in prompts.TRAINING_TEMPLATES if t.task == "T0"]
    elif rng.random() < mix.serving_share:
        pool = [t for t in prompts.SERVING_TEMPLATES if t.intention == "I0" and t.preference != "P0"]
    else:
        pool = [t for t in prompts.TRAINING_TEMPLATES if t.task == "T3" and t.preference != "P0"]
    template = rng.choice(pool)
    size = 2 if pointwise else rng.choice(mix.candidates)
    negatives: list[str] = []
    if hard is not None and rng.random() < mix.hard_share:
        nearest = hard.nearest(sample.history, sample.seen)
        negatives = rng.sample(nearest, min(len(nearest), size - 1))
    if len(negatives) < size - 1:
        negatives += random_negatives(ids, set(sample.seen) | set(negatives), size - 1 - len(negatives), rng)
    if pointwise:
        positive = rng.random() < 0.5
        item = sample.target if positive else negatives[0]
        prompt = render_for(data, sample, template, [item], rng, noun, max_history)
        return RankerExample(prompt, int(positive), 2, "T0", template.template_id)
    candidates, answer = candidate_list(sample.target, negatives, rng)
    prompt = render_for(data, sample, template, candidates, rng, noun, max_history)
    return RankerExample(prompt, answer, len(candidates), "T3", template.template_id)


def validation_ranker_examples(
    data: TrainingData, count: int, seed: int = 0, noun: str = prompts.DEFAULT_ITEM_NOUN,
    max_history: int = prompts.DEFAULT_MAX_HISTORY_ITEMS,
) -> list[RankerExample]:
    """Protocol-1-style validation: target + 9 random unseen items on the served templates P1-I0 and P2-I0
    (alternating; P2 with the teacher's preference), seeded per user."""
    ids = list(data.catalog.items)
    out = []
    for n, sample in enumerate(validation_samples(data, count)):
        # Not the evaluation's per-user key (tools.eval.protocols.random_candidates): other negatives than the
        # user's protocol-1 test list.
        rng = random.Random(f"validation:{seed}:{sample.user_id}")
        candidates, answer = candidate_list(sample.target, random_negatives(ids, set(sample.seen), 9, rng), rng)
        template = prompts.TEMPLATES_BY_ID["P1-I0-T3-0" if n % 2 == 0 else "P2-I0-T3-0"]
        prompt = render_for(data, sample, template, candidates, rng, noun, max_history)
        out.append(RankerExample(prompt, answer, len(candidates), "T3", template.template_id))
    return out


@dataclass(frozen=True)
class RetrievalPair:
    """T2 matching: the text the retriever encodes for a request -> the next item's text."""

    query: str
    item: str
    history: tuple[str, ...]
    target: str


def retrieval_pair(
    data: TrainingData, sample: Case, rng: random.Random, intention_share: float = 0.3,
    max_history: int = prompts.DEFAULT_MAX_HISTORY_ITEMS,
) -> RetrievalPair:
    """The served retrieval text (``prompts.retrieval_text``) of a history, with a teacher intention
    (vague or specific) in ``intention_share`` of the pairs, and the target's ``item_text``."""
    target = data.catalog[sample.target]
    query = ""
    if rng.random() < intention_share:
        query = teacher.vague_intention(target, rng) if rng.random() < 0.5 else teacher.specific_intention(target)
    recent = [data.catalog[i] for i in sample.history[-max_history:]]
    return RetrievalPair(prompts.retrieval_text(query, recent, max_history), item_text(target), sample.history,
                         sample.target)


@dataclass(frozen=True)
class PreferenceExample:
    """P2 target: the preference prompt the generator is served and the teacher's statement."""

    prompt: str
    target: str


def preference_example(
    data: TrainingData, sample: Case, noun: str = prompts.DEFAULT_ITEM_NOUN,
    max_history: int = prompts.DEFAULT_MAX_HISTORY_ITEMS,
) -> PreferenceExample:
    recent_ids = sample.history[-max_history:]
    recent = [data.catalog[i] for i in recent_ids]
    return PreferenceExample(
        prompts.render_preference_prompt(recent, noun, max_history),
        teacher.explicit_preference(data.rated(recent_ids, sample.user_id)),
    )
