"""InstructRec instruction templates: the single source imported by the instruction service and by training.

An instruction combines the user's *preference* (P1 implicit: recent history as titles; P2 explicit: a
preference statement written by the preference generator), *intention* (I0 none; the caller's free-text
query otherwise) and the *task form* (T3 re-ranking: pick one of lettered candidates). The ranker reads the
logit of each candidate's label (" A", " B", ...) right after ``RANKER_ANSWER_PREFIX``.

Any change to the text here changes what the ranker was trained on: retrain or bump the template ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.core.catalog import Item
from services.core.contracts import (  # noqa: F401  (LABELS, MAX_CANDIDATES re-exported)
    LABELS,
    MAX_CANDIDATES,
    RANKER_ANSWER_PREFIX,
    RECENT_HISTORY_ITEMS,
)

DEFAULT_ITEM_NOUN = "movie"
DEFAULT_MAX_HISTORY_ITEMS = RECENT_HISTORY_ITEMS


def label_token_text(label: str) -> str:
    """The text of a label as the ranker emits it after the answer prefix (leading space)."""
    return " " + label


@dataclass(frozen=True)
class InstructionTemplate:
    """One instruction template, named after the paper's notation (P*, I*, T*) plus a variant number."""

    template_id: str
    preference: str  # "P0" none, "P1" implicit, "P2" explicit (+ implicit)
    intention: str  # "I0" none, "I1" vague, "I2" specific (free text in serving)
    task: str  # "T0" pointwise yes/no, "T2" matching (describe the next item), "T3" re-ranking
    text: str


# Serving templates for re-ranking (T3). Training adds paraphrases; these are the ones served.
_T3 = "Candidates:\n{candidates}\nAnswer with the letter of the one {noun} the user should get next."

TEMPLATES: tuple[InstructionTemplate, ...] = (
    InstructionTemplate(
        "P0-I0-T3-0", "P0", "I0", "T3",
        "Recommend one {noun} that most people would enjoy.\n" + _T3,
    ),
    InstructionTemplate(
        "P0-I1-T3-0", "P0", "I1", "T3",
        'The user is looking for: "{query}".\nWhich {noun} fits that request best?\n' + _T3,
    ),
    InstructionTemplate(
        "P1-I0-T3-0", "P1", "I0", "T3",
        "The user has recently watched these {nouns}, oldest first: {history}.\n"
        "Which {noun} would the user enjoy most next?\n" + _T3,
    ),
    InstructionTemplate(
        "P1-I1-T3-0", "P1", "I1", "T3",
        "The user has recently watched these {nouns}, oldest first: {history}.\n"
        'Now the user is looking for: "{query}".\n'
        "Which {noun} matches both the user's taste and this request best?\n" + _T3,
    ),
    InstructionTemplate(
        "P2-I0-T3-0", "P2", "I0", "T3",
        "The user has recently watched these {nouns}, oldest first: {history}.\n"
        "About the user's taste: {preference}\n"
        "Which {noun} would the user enjoy most next?\n" + _T3,
    ),
    InstructionTemplate(
        "P2-I1-T3-0", "P2", "I1", "T3",
        "The user has recently watched these {nouns}, oldest first: {history}.\n"
        "About the user's taste: {preference}\n"
        'Now the user is looking for: "{query}".\n'
        "Which {noun} matches both the user's taste and this request best?\n" + _T3,
    ),
)
SERVING_TEMPLATES = TEMPLATES

# Training paraphrases: varied wording of each part, combined per (preference, intention, task). The serving
# templates above are variant 0 of T3 and stay byte-identical; these add variants 1.. and the T0/T2 forms.
_PREFERENCE_PARTS = {
    "P0": ("",),
    "P1": (
        "Recently watched, oldest first: {history}.",
        "Here is what the user watched lately, in order: {history}.",
        "The user's last {nouns} (oldest first) were: {history}.",
    ),
    "P2": (
        "The user describes their taste like this: {preference}\nTheir latest {nouns}: {history}.",
        "Viewing history, oldest first: {history}.\nPreference summary: {preference}",
        "What the user likes: {preference}\nWhat they watched last, oldest first: {history}.",
    ),
}
_INTENTION_PARTS = {
    "I0": ("",),
    "I1": ('The user says: "{query}".', 'Right now the user wants "{query}".', 'Request: "{query}".'),
    "I2": ("The user asks for {query}.", "Specifically, the user wants {query}.", "Looking for: {query}."),
}
_TASK_PARTS = {
    "T3": (
        "Pick the candidate the user is most likely to choose next.\n" + _T3,
        "Candidates:\n{candidates}\nWhich one should we recommend? Answer with its letter.",
        "Rank the options below for this user and give the letter of the best one.\n" + _T3,
    ),
    "T0": (
        "Candidate {noun}: {candidate}.\nWill the user enjoy this {noun} next? Answer yes or no.",
        "Should we recommend {candidate} to this user now? Answer yes or no.",
        "Is {candidate} a good next {noun} for this user? Reply yes or no.",
    ),
    "T2": (
        "Describe the {noun} the user will watch next: its title, year and genres.",
        "Name the next {noun} this user will choose, with its year and genres.",
    ),
}
_COMBINATIONS = (
    ("P0", "I1"), ("P0", "I2"),
    ("P1", "I0"), ("P1", "I1"), ("P1", "I2"),
    ("P2", "I0"), ("P2", "I1"), ("P2", "I2"),
)
_VARIANTS_PER_TASK = {"T3": 2, "T0": 2, "T2": 1}


def _training_templates() -> tuple[InstructionTemplate, ...]:
    out = []
    for preference, intention in _COMBINATIONS:
        for task, count in _VARIANTS_PER_TASK.items():
            first = 1 if task == "T3" else 0  # T3 variant 0 is the serving template
            for variant in range(first, first + count):
                parts = (
                    _PREFERENCE_PARTS[preference][variant % len(_PREFERENCE_PARTS[preference])],
                    _INTENTION_PARTS[intention][variant % len(_INTENTION_PARTS[intention])],
                    _TASK_PARTS[task][variant % len(_TASK_PARTS[task])],
                )
                text = "\n".join(p for p in parts if p)
                out.append(InstructionTemplate(f"{preference}-{intention}-{task}-{variant}", preference, intention,
                                               task, text))
    return tuple(out)


TRAINING_TEMPLATES: tuple[InstructionTemplate, ...] = SERVING_TEMPLATES + _training_templates()
TEMPLATES_BY_ID = {t.template_id: t for t in TRAINING_TEMPLATES}

PREFERENCE_PROMPT = (
    "Here are the {nouns} a user watched recently, oldest first:\n{history_lines}\n"
    "In one or two sentences, describe this user's taste in {nouns}: the genres, eras and moods they like. "
    "Do not list titles."
)


def _plural(noun: str) -> str:
    return noun + "s"


def format_history(items: Sequence[Item], max_items: int = DEFAULT_MAX_HISTORY_ITEMS) -> str:
    """The most recent ``max_items`` titles, oldest first, separated by semicolons."""
    recent = list(items)[-max_items:] if max_items > 0 else []
    return "; ".join(i.display_title() for i in recent)


def candidate_text(item: Item) -> str:
    """How a candidate reads in the lettered list: ``Fargo (1996) [Crime, Drama, Thriller]`` (the genres,
    when known, let the ranker match candidates with the preference statement and the intention)."""
    return item.display_title() + (f" [{', '.join(item.genres)}]" if item.genres else "")


def format_candidates(items: Sequence[Item]) -> str:
    """Lettered candidate lines ``A. Title (year) [genres]``; at most ``MAX_CANDIDATES``."""
    if len(items) > MAX_CANDIDATES:
        raise ValueError(f"at most {MAX_CANDIDATES} candidates can be labelled, got {len(items)}")
    return "\n".join(f"{label}. {candidate_text(item)}" for label, item in zip(LABELS, items))


def select_template(has_history: bool, has_preference: bool, has_query: bool) -> InstructionTemplate:
    """The serving template for what is known about the request."""
    preference = ("P2" if has_preference else "P1") if has_history else "P0"
    intention = "I1" if has_query else "I0"
    return TEMPLATES_BY_ID[f"{preference}-{intention}-T3-0"]


def render_instruction(
    template: InstructionTemplate,
    *,
    history: Sequence[Item],
    candidates: Sequence[Item],
    query: str = "",
    preference: str = "",
    noun: str = DEFAULT_ITEM_NOUN,
    max_history_items: int = DEFAULT_MAX_HISTORY_ITEMS,
    candidate: Item | None = None,
    reading: str = "",
) -> str:
    """Fill a template: the exact text the model reads (before its chat template).

    ``candidates`` fill T3's lettered list; ``candidate`` is T0's single item; T2 uses neither. ``reading``: how
    the query was read (``Reading.describe()``), stated right after the quoted query so the instruction says
    what the rest of the system follows; "" (training, and requests without a reading) leaves the text as is.
    """
    text = template.text.format(
        noun=noun,
        nouns=_plural(noun),
        history=format_history(history, max_history_items),
        query=query.strip(),
        preference=preference.strip(),
        candidates=format_candidates(candidates) if candidates else "",
        candidate=candidate_text(candidate) if candidate is not None else "",
    )
    quoted = f'"{query.strip()}"'
    return text.replace(quoted, f"{quoted} (read as: {reading})", 1) if reading and query.strip() else text


def render_preference_prompt(
    history: Sequence[Item], noun: str = DEFAULT_ITEM_NOUN, max_history_items: int = DEFAULT_MAX_HISTORY_ITEMS
) -> str:
    """The user-turn prompt that asks the preference generator for an explicit preference statement."""
    recent = list(history)[-max_history_items:]
    lines = "\n".join(f"- {i.display_title()}" + (f" [{', '.join(i.genres)}]" if i.genres else "") for i in recent)
    return PREFERENCE_PROMPT.format(nouns=_plural(noun), history_lines=lines)


def retrieval_text(query: str, history: Sequence[Item], max_history_items: int = DEFAULT_MAX_HISTORY_ITEMS) -> str:
    """The text the retriever encodes for a request: the intention first, then the recent history."""
    parts = []
    if query.strip():
        parts.append(query.strip())
    if history:
        parts.append("Recently watched: " + format_history(history, max_history_items))
    return ". ".join(parts)
