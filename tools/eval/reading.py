"""How well a reader reads requests: exact match of the whole reading and F1 of its parts, per construct.

Two readings are compared in a canonical form, so that equivalent ways of writing one reading agree: wanted
values become clauses ("all of [A, B]" is the clauses {A} and {B}; "any of [A, B]" the clause {A, B}), excluded
values a set, wanted ranges on one attribute their intersection, excluded ranges a set, references a set of
item ids. The parts (for F1) are those clauses, excluded values, ranges and references.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.catalog import Catalog
from services.core.filters import ALL, RANGE
from services.core.lexicon import TitleMatcher
from services.core.reading import Reading, split_words
from tools.core.reading_examples import Example, Vocabulary

HANDWRITTEN = Path(__file__).resolve().parents[2] / "docs" / "evaluation" / "reading-handwritten.jsonl"

Part = tuple


def reading_dict(reading: Reading) -> dict:
    """A served reading in the schema of the hand-written set (constraints and reference item ids)."""
    constraints = []
    for read in reading.filters:
        f = read.filter
        if f.kind == RANGE:
            constraints.append({"attribute": f.attribute, "min": f.min, "max": f.max, "exclude": f.exclude})
        else:
            constraints.append({"attribute": f.attribute, "values": sorted(f.values), "match": f.match,
                                "exclude": f.exclude})
    return {"constraints": constraints, "references": sorted({r.item_id for r in reading.references})}


def canonical(reading: dict) -> frozenset[Part]:
    """The parts of a reading (see the module docstring)."""
    parts: set[Part] = set()
    bounds: dict[str, list[float | None]] = {}
    for c in reading.get("constraints", []):
        attribute = c["attribute"]
        if "values" in c:
            values = sorted(c["values"])
            if c.get("exclude"):
                parts.update(("exclude", attribute, v) for v in values)
            elif c.get("match") == ALL:
                parts.update(("want", attribute, (v,)) for v in values)
            else:
                parts.add(("want", attribute, tuple(values)))
            continue
        lo, hi = _number(c.get("min")), _number(c.get("max"))
        if c.get("exclude"):
            parts.add(("exclude range", attribute, lo, hi))
            continue
        entry = bounds.setdefault(attribute, [None, None])
        entry[0] = lo if entry[0] is None else entry[0] if lo is None else max(entry[0], lo)
        entry[1] = hi if entry[1] is None else entry[1] if hi is None else min(entry[1], hi)
    parts.update(("range", a, lo, hi) for a, (lo, hi) in bounds.items())
    parts.update(("reference", str(r)) for r in reading.get("references", []))
    return frozenset(parts)


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def handwritten_cases(path: Path = HANDWRITTEN) -> list[Example]:
    """The hand-written requests as examples without word labels (their id is their one family)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(r["request"], tuple(w.text for w in split_words(r["request"])), (),
                    tuple(r.get("constructs", ())), (r["id"],), r["reading"]) for r in rows]


def score(cases: Sequence[Example], predicted: Sequence[dict]) -> dict:
    """Exact match and part F1 overall and per construct; the misread cases listed (for the report)."""
    rows = []
    for n, (case, reading) in enumerate(zip(cases, predicted)):
        gold, got = canonical(case.reading), canonical(reading)
        rows.append({"id": case.families[0] if case.families else str(n), "constructs": case.constructs,
                     "exact": gold == got, "gold": gold, "got": got})
    out = {"overall": _summary(rows)}
    for construct in sorted({c for case in cases for c in case.constructs}):
        out[construct] = _summary([r for r in rows if construct in r["constructs"]])
    out["misread"] = [{"id": r["id"], "request": c.text, "missing": sorted(map(str, r["gold"] - r["got"])),
                       "extra": sorted(map(str, r["got"] - r["gold"]))}
                      for r, c in zip(rows, cases) if not r["exact"]]
    return out


def _summary(rows: Iterable[dict]) -> dict:
    rows = list(rows)
    tp = sum(len(r["gold"] & r["got"]) for r in rows)
    fp = sum(len(r["got"] - r["gold"]) for r in rows)
    fn = sum(len(r["gold"] - r["got"]) for r in rows)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"requests": len(rows), "exact_match": sum(r["exact"] for r in rows) / max(1, len(rows)),
            "part_precision": precision, "part_recall": recall, "part_f1": f1}


ReadMany = Callable[[Sequence[str]], list[Reading]]


def understood_reading(understood: Sequence, catalog) -> dict:
    """Today's reading (the intent heads' one most likely value per attribute, a soft preference) in the schema:
    a wanted value, or for a numeric attribute read in buckets, the bucket's decade."""
    constraints = []
    for u in understood:
        if u.value.isdigit():
            constraints.append({"attribute": u.attribute, "min": float(u.value), "max": float(u.value) + 9,
                                "exclude": False})
        else:
            constraints.append({"attribute": u.attribute, "values": [u.value], "match": "any", "exclude": False})
    return {"constraints": constraints, "references": []}


def evaluate_readers(readers: dict[str, Callable[[Sequence[str]], list[dict]]], banks: dict[str, Sequence[Example]]
                     ) -> dict:
    """Every reader on every bank: ``{reader: {bank: score(...)}}``."""
    return {name: {bank: score(cases, read_many([c.text for c in cases])) for bank, cases in banks.items()}
            for name, read_many in readers.items()}


def write_reading_report(results: dict, out: Path, command: str, meta: dict) -> Path:
    """``OUT.json`` (everything) and ``OUT.md`` (exact match and part F1 per reader, bank and construct)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, **meta, "results": results}, indent=1,
                                                   default=str) + "\n")
    lines = ["# Reading requests: exact match and part F1 per construct", "",
             f"Command: `{command}`", "", *(f"- {k}: {v}" for k, v in meta.items()), ""]
    for reader, banks in results.items():
        lines += [f"## {reader}", ""]
        for bank, scored in banks.items():
            lines += [f"### {bank}", "", "| construct | requests | exact match | part F1 |", "|---|---|---|---|"]
            for construct, s in scored.items():
                if construct == "misread":
                    continue
                lines.append(f"| {construct} | {s['requests']} | {s['exact_match']:.3f} | {s['part_f1']:.3f} |")
            misread = scored.get("misread", [])[:15]
            if misread:
                lines += ["", f"First misread requests ({len(scored['misread'])} in all):", ""]
                lines += [f"- `{m['request']}`: missing {m['missing']}, extra {m['extra']}" for m in misread]
            lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return out.with_suffix(".md")


FIFTH_BANK = "fifth held-out bank (written blind; 0.898 blind, before the dismissals its misses showed were listed)"
"""The fifth bank's name in reports (it says the bank was measured blind first)."""
SIXTH_BANK = "sixth held-out bank (written blind, after the alternatives and list rules)"
"""The sixth bank's name in reports."""
SEVENTH_BANK = "seventh held-out bank (written blind, before the composed-frames tagger was measured)"
"""The seventh bank's name in reports."""


@dataclass(frozen=True)
class ReadingSetup:
    """What every reader is measured on: the data set's vocabulary, catalog and title matcher, and the four
    banks (the two held-out banks, the hand-written set, a fresh training-bank draw)."""

    vocabulary: Vocabulary
    catalog: Catalog
    titles: TitleMatcher
    banks: dict[str, list[Example]]

    @classmethod
    def of(cls, data_dir: Path, generated: int, seed: int) -> ReadingSetup:
        from collections import Counter

        from services.core.catalog import read_interactions
        from tools.core.reading_examples import Renderer, generate, load_vocabulary
        from tools.eval.reading_bank import EVALUATION_BANK, SECOND_EVALUATION_BANK
        from tools.eval.reading_bank_blind import THIRD_EVALUATION_BANK
        from tools.eval.reading_bank_fifth import FIFTH_EVALUATION_BANK
        from tools.eval.reading_bank_fourth import FOURTH_EVALUATION_BANK
        from tools.eval.reading_bank_seventh import SEVENTH_EVALUATION_BANK
        from tools.eval.reading_bank_sixth import SIXTH_EVALUATION_BANK
        from tools.train.reader_examples import TRAINING_BANK

        vocabulary = load_vocabulary(data_dir)
        catalog = Catalog.load(Path(data_dir) / "items.jsonl")
        popularity = Counter(r.item_id for r in read_interactions(Path(data_dir) / "train.csv"))
        banks = {
            "held-out bank (new wording and value combinations)": generate(
                Renderer(vocabulary, EVALUATION_BANK, "eval"), generated, seed),
            "second held-out bank (written before the widened bank's tagger was measured)": generate(
                Renderer(vocabulary, SECOND_EVALUATION_BANK, "eval"), generated, seed),
            "third held-out bank (written blind, before the direction rule was measured on it)": generate(
                Renderer(vocabulary, THIRD_EVALUATION_BANK, "eval"), generated, seed),
            "fourth held-out bank (written blind, before the rejection rule was measured on it)": generate(
                Renderer(vocabulary, FOURTH_EVALUATION_BANK, "eval"), generated, seed),
            FIFTH_BANK: generate(
                Renderer(vocabulary, FIFTH_EVALUATION_BANK, "eval"), generated, seed),
            SIXTH_BANK: generate(
                Renderer(vocabulary, SIXTH_EVALUATION_BANK, "eval"), generated, seed),
            SEVENTH_BANK: generate(
                Renderer(vocabulary, SEVENTH_EVALUATION_BANK, "eval"), generated, seed),
            "hand-written set": handwritten_cases(),
            "training bank (in distribution, fresh draw)": generate(
                Renderer(vocabulary, TRAINING_BANK, "train"), generated, seed + 777),
        }
        return cls(vocabulary, catalog, TitleMatcher(catalog, popularity), banks)


ABLATIONS = ("directions", "rejections")
"""Reading rules ``--without`` can switch off, to measure what each adds (``services/core/directions.py``,
``services/core/rejections.py``)."""


def ablate(rules: Iterable[str]) -> None:
    """Switch reading rules off in this process (an ablation for measurement; serving always runs them all)."""
    import services.core.reading as reading

    for rule in rules:
        if rule == "directions":
            reading.directed_roles = lambda words, spans: (list(spans), {})
        elif rule == "rejections":
            reading.rejected_roles = lambda words, spans, directed=(): (list(spans), set())
            reading.unsupported_exclusions = lambda words, spans: list(spans)
        else:
            raise ValueError(f"unknown rule {rule!r}: one of {ABLATIONS}")


def paired(results: dict, banks: dict[str, Sequence[Example]], earlier: dict) -> dict:
    """Per reader and bank measured in both: the exact-match difference against ``earlier`` (an earlier report's
    results on the same draws) with its 95 % paired-bootstrap interval."""
    import numpy as np

    from tools.core.metrics import bootstrap

    out: dict = {}
    for reader, by_bank in results.items():
        for bank, scored in by_bank.items():
            before = earlier.get(reader, {}).get(bank)
            if before is None:
                continue
            texts = [c.text for c in banks[bank]]
            now_wrong, before_wrong = ({m["request"] for m in s["misread"]} for s in (scored, before))
            now, then = (np.array([t not in wrong for t in texts], dtype=float) for wrong in (now_wrong, before_wrong))
            out.setdefault(reader, {})[bank] = {k: round(v, 4) for k, v in bootstrap(now, then).items()}
    return out


def main(reader: Path = Path("var/train/request_reader/adapter"), data_dir: Path = Path("var/data/movielens-100k"),
         out: Path = Path("docs/evaluation/reading"), generated: int = 1000, seed: int = 0,
         intent_heads: bool = True, without: str = "", paired_with: list[Path] | None = None) -> None:
    """Measure the request reader (in this process) and today's intent heads on the held-out banks, the
    training bank (in distribution, for reference) and the hand-written set. ``without``: reading rules to switch
    off, comma-separated (:data:`ABLATIONS`); ``paired_with``: earlier reports' JSON on the same draws, to
    compare with (exact-match differences with paired-bootstrap intervals; the option may be repeated)."""
    import shlex
    import sys
    import time

    import torch

    from tools.core.machine import machine
    from tools.core.request_reader import InProcessReader

    ablate([r for r in without.split(",") if r])
    started = time.time()
    setup = ReadingSetup.of(data_dir, generated, seed)
    tagger = InProcessReader(reader, setup.vocabulary.lexicon, setup.titles, torch.device("cpu"))
    readers: dict[str, Callable[[Sequence[str]], list[dict]]] = {
        "token tagger (MiniLM + LoRA)": lambda texts: [reading_dict(r) for r in tagger.read_many(texts)]}
    if intent_heads:
        readers["today: intent heads (one value per attribute)"] = _intent_heads_reader(data_dir, setup.catalog)
    results = evaluate_readers(readers, setup.banks)
    command = " ".join(["python -m tools.eval.reading", *map(shlex.quote, sys.argv[1:])])
    meta = {"reader": str(reader), "generated_per_bank": generated, "seed": seed, "rules_off": without or "none",
            "seconds": round(time.time() - started, 1), "machine": machine()}
    if paired_with:
        meta["paired_with"] = [{"report": str(path), "exact_match_difference": paired(
            results, setup.banks, json.loads(Path(path).read_text())["results"])} for path in paired_with]
    print(write_reading_report(results, out, command, meta))


def _intent_heads_reader(data_dir: Path, catalog) -> Callable[[Sequence[str]], list[dict]]:
    """The served intent heads on each request, through the committed text encoder, in this process."""
    import torch

    from services.core.contracts import INTENT_MIN_CONFIDENCE, TEXT_ENCODER
    from services.core.intent import IntentModel
    from services.core.modeltext import mean_pooled_encoder
    from tools.core.text_encoder import encode, load_encoder

    adapter = Path(__file__).resolve().parents[1] / "train" / "adapters" / TEXT_ENCODER
    model, tokenizer = load_encoder(adapter, torch.device("cpu"))
    pooled = mean_pooled_encoder(model)
    heads = IntentModel.load(Path("var/index") / Path(data_dir).name)
    if heads is None:
        raise FileNotFoundError("no intent heads beside the text index: run `instructrec run` (or build-index)")

    def read_many(texts: Sequence[str]) -> list[dict]:
        with torch.no_grad():
            vectors = encode(pooled, tokenizer, list(texts), torch.device("cpu")).numpy()
        return [understood_reading(heads.understand(v, INTENT_MIN_CONFIDENCE), catalog) for v in vectors]

    return read_many


if __name__ == "__main__":
    import typer

    typer.run(main)
