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

from services.core.filters import ALL, RANGE
from services.core.reading import Reading

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


@dataclass(frozen=True)
class Case:
    """One request with its expected reading and the constructs it exercises."""

    id: str
    request: str
    constructs: tuple[str, ...]
    reading: dict


def handwritten_cases(path: Path = HANDWRITTEN) -> list[Case]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Case(r["id"], r["request"], tuple(r.get("constructs", ())), r["reading"]) for r in rows]


def score(cases: Sequence[Case], predicted: Sequence[dict]) -> dict:
    """Exact match and part F1 overall and per construct; the misread cases listed (for the report)."""
    rows = []
    for case, reading in zip(cases, predicted):
        gold, got = canonical(case.reading), canonical(reading)
        rows.append({"id": case.id, "constructs": case.constructs, "exact": gold == got, "gold": gold, "got": got})
    out = {"overall": _summary(rows)}
    for construct in sorted({c for case in cases for c in case.constructs}):
        out[construct] = _summary([r for r in rows if construct in r["constructs"]])
    out["misread"] = [{"id": r["id"], "request": c.request, "missing": sorted(map(str, r["gold"] - r["got"])),
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
