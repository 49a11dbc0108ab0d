"""Requests with their word labels and expected readings, rendered from clause templates (no teacher LLM).

A request is a few clauses, each a template of one construct with slots: ``{w}``/``{w2}`` wanted values,
``{x}``/``{x2}`` excluded values, ``{t}`` a quantity (its role, e.g. "before", is the clause's), ``{r}``/``{r2}``
titles. The vocabulary comes from the catalog and its synonyms (:class:`Vocabulary`): value names, their plurals
and synonyms, decades, years and era words for a year-like attribute, numbers and prices for the others, and
titles. Rendering records which words each slot filled, so every word gets its label (``services/core/reading.py``
``WORD_LABELS``) and the request its expected reading, in the schema of the hand-written set
(``docs/evaluation/reading-handwritten.jsonl``).

The training families live in ``tools/train/reader_examples.py`` and the evaluation bank's in
``tools/eval/reading_bank.py``; they share this machinery, never a clause, and the value combinations of a
request with two or more values go to one side only (:func:`combination_split`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.core.catalog import Catalog, read_interactions
from services.core.lexicon import OLD_YEARS, RECENT_YEARS, Lexicon, NumericAttribute, normalise
from services.core.reading import ALT, GE, GT, IN, LE, LT, NOT, NOTIN, REF, WANT, WORD_LABELS, split_words

LABEL_ID = {name: n for n, name in enumerate(WORD_LABELS)}
CONSTRUCTS = ("plain", "conjunction", "disjunction", "negation", "bounds", "references", "mood")
_TENS_WORDS = {20: "twenties", 30: "thirties", 40: "forties", 50: "fifties", 60: "sixties", 70: "seventies",
               80: "eighties", 90: "nineties"}
_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
         90: "ninety"}
_TEENS = {19: "nineteen", 20: "twenty"}


@dataclass(frozen=True)
class Clause:
    """One template of one construct. ``role``: what ``{t}`` is (IN, NOTIN, LT, LE, GT, GE)."""

    construct: str
    text: str
    role: str = ""

    @property
    def family(self) -> str:
        return f"{self.construct}:{self.text}"


@dataclass(frozen=True)
class Bank:
    """The clauses, fillers and mood phrases one side (training or evaluation) renders requests from."""

    clauses: tuple[Clause, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    joiners: tuple[str, ...]
    moods: tuple[str, ...]
    breaks: tuple[str, ...] = ()
    """Joiners after an excluding clause (empty: any joiner): a list word there would carry the exclusion on."""


@dataclass(frozen=True)
class Example:
    """A request, its words' labels and its expected reading."""

    text: str
    words: tuple[str, ...]
    labels: tuple[int, ...]
    constructs: tuple[str, ...]
    families: tuple[str, ...]
    reading: dict = field(hash=False)


@dataclass(frozen=True)
class Quantity:
    """A quantity's words and the interval [low, high] they name (None: open)."""

    text: str
    low: float | None
    high: float | None
    era: bool = False


class Vocabulary:
    """The words a request can use for the catalog: values, quantities and titles."""

    def __init__(self, catalog: Catalog, synonyms: Mapping[str, Sequence[str]] | None = None,
                 popularity: Mapping[str, int] | None = None, titles: int = 400) -> None:
        self.lexicon = Lexicon(catalog, synonyms)
        self.forms: dict[tuple[str, ...], list[str]] = {}
        """Sorted (attribute=value, ...) -> the phrases that name exactly those values."""
        for form, pairs in self.lexicon.surface_forms().items():
            key = tuple(sorted(f"{a}={v}" for a, v in pairs))
            self.forms.setdefault(key, []).append(form)
        for attribute, values in self.lexicon.values.items():
            for value in values:
                key = (f"{attribute}={value}",)
                self.forms.setdefault(key, [])
                self.forms[key] += [v for v in _display_forms(value) if v not in self.forms[key]]
        # One order whatever the process's string hashing (the lexicon's forms come from sets): the same seed
        # renders the same requests in every run, so two readers are always measured on the same requests.
        self.forms = {key: sorted(dict.fromkeys(forms)) for key, forms in sorted(self.forms.items())}
        self.single_values = sorted(k for k in self.forms if len(k) == 1)
        self.multi_values = sorted(k for k in self.forms if len(k) > 1)
        self.numeric = dict(self.lexicon.numeric)
        ranked = sorted(catalog, key=lambda i: -(popularity or {}).get(i.item_id, 0))
        by_form: dict[str, list[str]] = {}
        for item in catalog:
            by_form.setdefault(normalise(_natural_title(item.title)), []).append(item.item_id)
        # Among the most popular items, those whose title no other item has; when none is (a catalog of repeated
        # titles, such as the synthetic shops), the most popular items with a title of their own further down.
        def own_title(item) -> bool:
            return len(by_form[normalise(_natural_title(item.title))]) == 1 and len(item.title) > 2

        chosen = [item for item in ranked[:titles] if own_title(item)] or [i for i in ranked if own_title(i)][:titles]
        self.titles = [(item.item_id, _natural_title(item.title)) for item in chosen]

    def value_phrase(self, rng: random.Random, key: tuple[str, ...]) -> str:
        return rng.choice(self.forms[key])

    def quantity(self, rng: random.Random, attribute: NumericAttribute, role: str,
                 like: Quantity | None = None, digits: bool = False) -> Quantity:
        """A quantity of ``attribute`` that suits the role (eras only where an interval is meant; the same kind,
        decade or year, as ``like`` when given)."""
        if not attribute.year_like:
            value = rng.choice([round(attribute.low + (attribute.high - attribute.low) * f) for f in
                                (0.2, 0.35, 0.5, 0.65, 0.8)])
            text = rng.choice([f"{value}", f"${value}", f"{value} dollars", f"{value} bucks"])
            return Quantity(text, float(value), float(value))
        newest, oldest = int(attribute.high), int(attribute.low)
        kinds = ["decade", "decade", "year", "year_words"] + (["era"] if role in (IN, NOTIN) and like is None else [])
        kind = rng.choice(kinds)
        if like is not None:
            kind = "decade" if like.high is not None and like.low is not None and like.high > like.low else "year"
        if digits and kind not in ("decade", "year"):  # glued to a prefix ("pre-1950"): written in digits
            kind = "year"
        if kind == "era":
            if rng.random() < 0.5:
                return Quantity(rng.choice(["recent", "new", "newer", "latest", "modern"]),
                                float(newest - RECENT_YEARS + 1), None, era=True)
            return Quantity(rng.choice(["old", "older", "classic", "vintage", "oldies"]), None,
                            float(newest - OLD_YEARS), era=True)
        if kind == "decade":
            decade = rng.choice(range((oldest // 10 + 1) * 10, newest // 10 * 10 + 1, 10))
            short = decade % 100
            forms = [f"{short}s", f"'{short}s", f"{decade}s"]
            text = rng.choice(forms if digits else [*forms, f"the {short}s", f"the {decade}s",
                                                     f"the {_TENS_WORDS.get(short, f'{short}s')}"])
            return Quantity(text, float(decade), float(decade + 9))
        year = rng.randint(oldest + 3, newest)
        if kind == "year_words" and year // 100 in _TEENS and year % 100 >= 20:
            tens, unit = (year % 100) // 10 * 10, year % 10
            spoken = f"{_TEENS[year // 100]} {_TENS[tens]}" + (f" {_UNITS[unit]}" if unit else "")
            return Quantity(spoken, float(year), float(year))
        return Quantity(str(year), float(year), float(year))


def _display_forms(value: str) -> list[str]:
    """How people type a value name: lower case, and a plural for nouns that take one."""
    base = value.lower()
    out = [base]
    if " " not in base and "-" not in base and "'" not in base:
        for suffix, plural in (("y", "ies"), ("a", "as"), ("er", "ers"), ("rn", "rns"), ("al", "als")):
            if base.endswith(suffix):
                out.append(base[: -len(suffix)] + plural if suffix == "y" else base + plural[len(suffix):])
    if "-" in base:
        out.append(base.replace("-", " "))
    return out


def _natural_title(title: str) -> str:
    """"Godfather, The" -> "The Godfather" (as people say it)."""
    m = re.match(r"^(.*), (The|A|An)$", title.strip())
    return f"{m.group(2)} {m.group(1)}" if m else title.strip()


def combination_split(values: Sequence[str]) -> str:
    """"train" or "eval" for a request's set of (role, value) pairs with two or more values: a fifth of the
    combinations are held out for evaluation; a single value goes either way."""
    if len(set(values)) < 2:
        return "any"
    digest = hashlib.sha256("|".join(sorted(set(values))).encode()).digest()
    return "eval" if digest[0] % 5 == 0 else "train"


def typo(rng: random.Random, word: str) -> str:
    """One slip of the keyboard in a word of four or more letters: a swap, a dropped or a doubled letter."""
    if len(word) < 4 or not word.isalpha():
        return word
    n = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:n] + word[n + 1] + word[n] + word[n + 2:]
    if kind == 1:
        return word[:n] + word[n + 1:]
    return word[:n] + word[n] + word[n:]


class Renderer:
    """Renders requests from one bank over one vocabulary."""

    def __init__(self, vocabulary: Vocabulary, bank: Bank, side: str, typo_rate: float = 0.15) -> None:
        self.vocabulary = vocabulary
        self.bank = bank
        self.side = side
        self.typo_rate = typo_rate
        self.by_construct: dict[str, list[Clause]] = {}
        for clause in bank.clauses:
            self.by_construct.setdefault(clause.construct, []).append(clause)
        quantities = list(vocabulary.numeric.values())
        self.year_attribute = next((a for a in quantities if a.year_like), None)
        self.number_attributes = [a for a in quantities if not a.year_like]

    def sample(self, rng: random.Random, max_tries: int = 50) -> Example:
        """One request: one to three clauses of different constructs (or a mood phrase alone)."""
        for _ in range(max_tries):
            if rng.random() < 0.04:
                return self._render(rng, [], mood=rng.choice(self.bank.moods))
            constructs = [c for c in self.by_construct if c != "bounds" or self.vocabulary.numeric]
            k = rng.choices((1, 2, 3), weights=(0.45, 0.4, 0.15))[0]
            chosen = rng.sample(constructs, min(k, len(constructs)))
            example = self._render(rng, [rng.choice(self.by_construct[c]) for c in chosen])
            if example is not None:
                return example
        raise RuntimeError("could not render a request within the value-combination split")

    def _render(self, rng: random.Random, clauses: Sequence[Clause], mood: str = "") -> Example | None:
        parts: list[tuple[str, str]] = []  # (text, label role or "")
        reading: dict = {"constraints": [], "references": []}
        roles_values: list[str] = []
        used: set[tuple[str, ...]] = set()
        prefix = rng.choice(self.bank.prefixes)
        parts.append((prefix, ""))
        if mood:
            parts.append((mood, ""))
        for n, clause in enumerate(clauses):
            if n:
                after_exclusion = self.bank.breaks and clauses[n - 1].construct == "negation"
                parts.append((rng.choice(self.bank.breaks if after_exclusion else self.bank.joiners), ""))
            if not self._fill(rng, clause, parts, reading, roles_values, used):
                return None
        parts.append((rng.choice(self.bank.suffixes), ""))
        if combination_split(roles_values) not in ("any", self.side):
            return None
        if rng.random() < 0.3:  # a request typed with a capital first letter
            parts = [(piece[:1].upper() + piece[1:], role) if n == _first_nonempty(parts) else (piece, role)
                     for n, (piece, role) in enumerate(parts)]
        text, words, labels = _assemble(parts)
        return Example(text, tuple(words), tuple(labels), tuple(sorted({c.construct for c in clauses} or {"mood"})),
                       tuple(c.family for c in clauses), reading)

    def _value(self, rng: random.Random, used: set, *, single: bool = False) -> tuple[str, ...]:
        pool = self.vocabulary.single_values if single or rng.random() < 0.9 else self.vocabulary.multi_values
        pool = [k for k in pool if not used & {k}] or pool
        key = rng.choice(pool)
        used.add(key)
        return key

    def _fill(self, rng: random.Random, clause: Clause, parts: list, reading: dict, roles_values: list[str],
              used: set) -> bool:
        """Append the clause's words; add its constraints to ``reading``."""
        v = self.vocabulary
        slots: dict[str, tuple[str, str]] = {}  # slot -> (text, role)
        wanted: list[tuple[str, ...]] = []
        excluded: list[tuple[str, ...]] = []
        quantities: list[tuple[NumericAttribute, str, Quantity]] = []
        roles = clause.role.split("/")
        for slot in re.findall(r"\{(\w+)\}", clause.text):
            if slot in ("w", "w2", "w3"):
                key = self._value(rng, used, single=clause.construct == "disjunction")
                wanted.append(key)
                role = ALT if clause.construct == "disjunction" else WANT
                slots[slot] = (self._maybe_typo(rng, v.value_phrase(rng, key)), role)
            elif slot in ("x", "x2", "x3"):
                key = self._value(rng, used, single=True)
                excluded.append(key)
                slots[slot] = (self._maybe_typo(rng, v.value_phrase(rng, key)), NOT)
            elif slot in ("t", "t2"):
                role = roles[len(quantities)]
                attribute = quantities[0][0] if quantities else self._quantity_attribute(rng, clause)
                if attribute is None:
                    return False
                quantity = v.quantity(rng, attribute, role, like=quantities[0][2] if quantities else None,
                                      digits=f"-{{{slot}}}" in clause.text)
                if quantities and not _ordered(quantities[0][2], quantity):
                    return False
                slots[slot] = (quantity.text, role)
                quantities.append((attribute, role, quantity))
            elif slot in ("r", "r2"):
                if not v.titles:
                    return False  # no title names one item only: no reference can be written
                item_id, title = rng.choice(v.titles)
                if item_id in reading["references"]:
                    return False
                reading["references"] = sorted({*reading["references"], item_id})
                if rng.random() < 0.3:  # people type titles in lower case, often without the article
                    title = re.sub(r"^(the|a|an) ", "", title.lower()) if rng.random() < 0.5 else title.lower()
                slots[slot] = (self._maybe_typo(rng, title), REF)
        if quantities:
            reading["constraints"].append(_quantity_constraint(quantities))
        if wanted:
            values = sorted({pair for key in wanted for pair in key})
            match = "any" if clause.construct == "disjunction" else "all"
            reading["constraints"] += _value_constraints(values, match=match if len(values) > 1 else "any",
                                                         exclude=False)
            roles_values += [f"+{p}" for p in values]
        if excluded:
            values = sorted({pair for key in excluded for pair in key})
            reading["constraints"] += _value_constraints(values, match="any", exclude=True)
            roles_values += [f"-{p}" for p in values]
        for piece in re.split(r"(\{\w+\})", clause.text):
            m = re.fullmatch(r"\{(\w+)\}", piece)
            parts.append(slots[m.group(1)] if m else (piece, ""))
        return True

    def _quantity_attribute(self, rng: random.Random, clause: Clause) -> NumericAttribute | None:
        options = ([self.year_attribute] if self.year_attribute else []) + self.number_attributes
        return rng.choice(options) if options else None

    def _maybe_typo(self, rng: random.Random, phrase: str) -> str:
        if rng.random() >= self.typo_rate:
            return phrase
        words = phrase.split(" ")
        n = rng.randrange(len(words))
        words[n] = typo(rng, words[n])
        return " ".join(words)


def _value_constraints(pairs: Sequence[str], *, match: str, exclude: bool) -> list[dict]:
    by_attribute: dict[str, list[str]] = {}
    for pair in pairs:
        attribute, _, value = pair.partition("=")
        by_attribute.setdefault(attribute, []).append(value)
    return [{"attribute": a, "values": sorted(vs), "match": match if len(vs) > 1 else "any", "exclude": exclude}
            for a, vs in by_attribute.items()]


def _ordered(first: Quantity, second: Quantity) -> bool:
    """Whether two quantities of a range clause ("between 1970 and 1980") come in increasing order."""
    return first.low is not None and second.low is not None and first.low < second.low


def _quantity_constraint(quantities: Sequence[tuple[NumericAttribute, str, Quantity]]) -> dict:
    """One quantity's range; two wanted intervals ("the fifties or sixties", "between 1970 and 1980"): their
    span; two bounds ("after 1980 and before 1990"): the range both allow."""
    ranges = [_range_constraint(a, role, q) for a, role, q in quantities]
    if len(ranges) == 1:
        return ranges[0]
    lows, highs = [r["min"] for r in ranges], [r["max"] for r in ranges]
    if all(role == IN for _, role, _ in quantities):
        lo = None if None in lows else min(lows)
        hi = None if None in highs else max(highs)
    else:
        lo = max((x for x in lows if x is not None), default=None)
        hi = min((x for x in highs if x is not None), default=None)
    return {**ranges[0], "min": lo, "max": hi}


def _range_constraint(attribute: NumericAttribute, role: str, q: Quantity) -> dict:
    """The expected range of a role on a quantity (the convention ``services/core/reading.py`` documents)."""
    step = 1.0 if attribute.integers else 0.0
    lo, hi = q.low, q.high
    bounds = {IN: (lo, hi), NOTIN: (lo, hi), LT: (None, (lo if lo is not None else hi) - step),
              LE: (None, hi), GT: ((hi if hi is not None else lo) + step, None), GE: (lo, None)}[role]
    return {"attribute": attribute.name, "min": bounds[0], "max": bounds[1], "exclude": role == NOTIN}


def _first_nonempty(parts: Sequence[tuple[str, str]]) -> int:
    return next((n for n, (piece, _) in enumerate(parts) if piece.strip()), 0)


def _assemble(parts: Sequence[tuple[str, str]]) -> tuple[str, list[str], list[int]]:
    """Join the parts into the request (one space between words, none before punctuation) and label every word
    by the slot it falls in: ``B-<role>`` for a slot's first word, ``I-<role>`` for the rest, ``O`` outside."""
    text = ""
    marked: list[tuple[int, int, str]] = []
    for piece, role in parts:
        stripped = piece.strip()
        if not stripped:
            continue
        glued = text.endswith("-") and stripped[0].isdigit()  # "pre-1950"
        if text and not text.endswith(" ") and not glued and stripped[0] not in ",.!?;:":
            text += " "
        if stripped[0] in ",.!?;:" and text.endswith(" "):
            text = text[:-1]
        start = len(text)
        text += stripped
        if role:
            marked.append((start, len(text), role))
        if piece != piece.rstrip():
            text += " "
    text = text.strip()
    words = split_words(text)
    labels = []
    for n, word in enumerate(words):
        span = next(((s, role) for s, e, role in marked if s <= word.start < e), None)
        if span is None:
            labels.append(LABEL_ID["O"])
            continue
        start, role = span
        first = n == 0 or not (start <= words[n - 1].start)
        labels.append(LABEL_ID[f"{'B' if first else 'I'}-{role}"])
    return text, [w.text for w in words], labels


def load_vocabulary(data_dir: Path) -> Vocabulary:
    """The catalog's vocabulary with its synonyms file (if any) and training popularity (for the titles)."""
    catalog = Catalog.load(Path(data_dir) / "items.jsonl")
    synonyms_path = Path(data_dir) / "synonyms.json"
    synonyms = json.loads(synonyms_path.read_text()) if synonyms_path.is_file() else None
    popularity = Counter(r.item_id for r in read_interactions(Path(data_dir) / "train.csv"))
    return Vocabulary(catalog, synonyms, popularity)


def generate(renderer: Renderer, count: int, seed: int) -> list[Example]:
    """``count`` requests, seeded, without two identical texts."""
    rng = random.Random(f"reading:{renderer.side}:{seed}")
    out, seen = [], set()
    while len(out) < count:
        example = renderer.sample(rng)
        if example.text.lower() not in seen:
            seen.add(example.text.lower())
            out.append(example)
    return out

