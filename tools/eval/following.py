"""Protocols 6 and 7: does the served stack follow the request?

6, following: each hand-written request (``docs/evaluation/reading-handwritten.jsonl``) is sent for ``users``
test users (a seeded sample per request; 0 = all); the share of the 10 returned items that meet the request's
hard constraints (precision@10), next to the same users without the request, and every returned item that
breaks a stated exclusion is counted.

7, personalised compositional requests: for each test user a request is built from their next item (a value it
has, a frequent value it lacks, a bound it meets: "a comedy from the 90s, but no drama"); full-ranking HR@10 and
NDCG@10 of the served stack, the exact reading sent as ``filters`` (the ceiling of reading), and in this process
filter + popularity and filter + the served sequence model, with paired bootstrap intervals.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import numpy as np

from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter
from tools.core.metrics import bootstrap, ndcg, paired_method_name
from tools.core.split import Split
from tools.eval.reading import handwritten_cases

K = 10
# Phrasings of protocol 7's requests (one per user, seeded): a value the next item has, a frequent value it lacks,
# a decade it is from.
_COMPOSITIONAL = ("a {want} from the {decade}, but no {exclude}", "{want} films from the {decade}, nothing {exclude}",
                  "something {want}, made in the {decade}, without {exclude}")


def constraint_filters(reading: dict) -> list[AttributeFilter]:
    """The hard constraints of an expected reading as filters."""
    out = []
    for c in reading.get("constraints", []):
        if "values" in c:
            make = AttributeFilter.all_of if c.get("match") == "all" else AttributeFilter.any_of
            out.append(make(c["attribute"], c["values"], exclude=bool(c.get("exclude"))))
        else:
            out.append(AttributeFilter.between(c["attribute"], c.get("min"), c.get("max"),
                                               exclude=bool(c.get("exclude"))))
    return out


def meets(item: Item, filters: Sequence[AttributeFilter]) -> bool:
    return all(f.allows(item) for f in filters)


async def following(split: Split, served, users: int, seed: int, concurrency: int) -> dict:
    """Protocol 6 (see the module docstring)."""
    from tools.eval.evaluate import _gather_bounded

    catalog = split.catalog
    cases = [c for c in handwritten_cases() if c.reading.get("constraints")]
    rows = []
    for case in cases:
        rng = random.Random(f"{seed}:{case.families[0]}")
        sample = split.test_cases if not users or users >= len(split.test_cases) else rng.sample(split.test_cases,
                                                                                             users)
        rows += [(case, user) for user in sample]
    with_request = await _gather_bounded([served.recommend_with(u.history, c.text, K) for c, u in rows],
                                         concurrency, "protocol 6")
    without = await _gather_bounded([served.recommend_with(u.history, "", K) for c, u in rows], concurrency,
                                    "protocol 6, no request")
    per_request: dict[str, dict] = {}
    for (case, _), got, plain in zip(rows, with_request, without):
        filters = constraint_filters(case.reading)
        exclusions = [f for f in filters if f.exclude]
        entry = per_request.setdefault(case.families[0], {"request": case.text, "constructs": case.constructs,
                                                 "with": [], "without": [], "broken_exclusions": 0, "empty": 0})
        if not got:
            entry["empty"] += 1
        entry["with"].append(float(np.mean([meets(catalog[i], filters) for i in got])) if got else 0.0)
        entry["without"].append(float(np.mean([meets(catalog[i], filters) for i in plain])) if plain else 0.0)
        entry["broken_exclusions"] += sum(not meets(catalog[i], exclusions) for i in got)
    summary = []
    for request_id, e in per_request.items():
        summary.append({"id": request_id, "request": e["request"], "constructs": list(e["constructs"]),
                        "precision@10": float(np.mean(e["with"])), "without request": float(np.mean(e["without"])),
                        "broken exclusions": e["broken_exclusions"], "empty answers": e["empty"],
                        "users": len(e["with"])})
    return {
        "requests": len(summary), "users_per_request": users or len(split.test_cases),
        "mean precision@10": float(np.mean([s["precision@10"] for s in summary])),
        "mean without request": float(np.mean([s["without request"] for s in summary])),
        "requests below their no-request figure": sum(s["precision@10"] < s["without request"] for s in summary),
        "returned items breaking a stated exclusion": sum(s["broken exclusions"] for s in summary),
        "per request": summary,
    }


def compositional_request(catalog: Catalog, popularity: Counter, target: Item, rng: random.Random
                          ) -> tuple[str, dict] | None:
    """A request the user's next item meets (its reading too), or None when the item has no genre or year."""
    if not target.genres or target.year is None:
        return None
    genre_counts = Counter(g for item in catalog for g in item.genres)
    lacking = [g for g, _ in genre_counts.most_common() if g not in target.genres]
    if not lacking:
        return None
    want, exclude = rng.choice(list(target.genres)), lacking[0]
    decade = target.year // 10 * 10
    text = rng.choice(_COMPOSITIONAL).format(want=want.lower(), exclude=exclude.lower(), decade=f"{decade % 100}s")
    reading = {"constraints": [
        {"attribute": "genres", "values": [want], "match": "any", "exclude": False},
        {"attribute": "genres", "values": [exclude], "match": "any", "exclude": True},
        {"attribute": "year", "min": decade, "max": decade + 9, "exclude": False}], "references": []}
    return text, reading


async def compositional(split: Split, served, sequence_scores, seed: int, concurrency: int,
                        max_users: int | None = None, paired: Sequence[dict] = ()) -> dict:
    """Protocol 7 (see the module docstring). ``paired``: earlier ``following.json`` reports of other served
    systems (e.g. reading off) on the same users and seed; their per-user figures join as methods."""
    from tools.eval.evaluate import _gather_bounded

    catalog = split.catalog
    rows = []
    for case in split.test_cases[:max_users] if max_users else split.test_cases:
        built = compositional_request(catalog, split.popularity, catalog[case.target],
                                      random.Random(f"{seed}:{case.user_id}"))
        if built is not None:
            rows.append((case, *built))
    served_tops = await _gather_bounded([served.recommend_with(c.history, text, K) for c, text, _ in rows],
                                        concurrency, "protocol 7")
    ceiling_tops = await _gather_bounded([served.recommend_filtered(c.history, constraint_filters(r), K)
                                          for c, _, r in rows], concurrency, "protocol 7, exact reading")
    methods: dict[str, list[float]] = {"served": [], "exact reading as filters (ceiling)": [],
                                       "filter + popularity": [], "filter + sequence model": []}
    hits: dict[str, list[float]] = {m: [] for m in methods}
    popular = [i for i, _ in split.popularity.most_common()]
    for (case, _, reading), top, ceiling in zip(rows, served_tops, ceiling_tops):
        filters = constraint_filters(reading)
        seen = set(case.history)
        allowed = [i for i in popular if i not in seen and meets(catalog[i], filters)]
        scores = sequence_scores(case.history)
        by_sequence = sorted((i for i in catalog.items if i not in seen and meets(catalog[i], filters)),
                             key=lambda i: -scores.get(i, -np.inf))
        for name, order in (("served", top), ("exact reading as filters (ceiling)", ceiling),
                            ("filter + popularity", allowed[:K]), ("filter + sequence model", by_sequence[:K])):
            rank = order.index(case.target) if case.target in order[:K] else None
            methods[name].append(ndcg(rank, K))
            hits[name].append(1.0 if rank is not None else 0.0)
    users = [case.user_id for case, _, _ in rows]
    for report in paired:
        earlier = report["7"]["per_user"]
        position = {u: n for n, u in enumerate(earlier["users"])}
        if any(u not in position for u in users):
            raise ValueError(f"the paired report of {report['system']!r} evaluated other users: same data and seed "
                             f"and a superset of the users needed")
        name = paired_method_name(report["system"], methods)  # never in place of this run's "served"
        methods[name] = [earlier["served_ndcg"][position[u]] for u in users]
        hits[name] = [earlier["served_hit"][position[u]] for u in users]
    out = {"users": len(rows), "methods": {m: {"NDCG@10": float(np.mean(v)), "HR@10": float(np.mean(hits[m]))}
                                           for m, v in methods.items()},
           "per_user": {"users": users, "served_ndcg": methods["served"], "served_hit": hits["served"]}}
    served_ndcg = np.array(methods["served"])
    out["served_minus"] = {m: bootstrap(served_ndcg, np.array(v), seed) for m, v in methods.items() if m != "served"}
    out["served / ceiling"] = out["methods"]["served"]["NDCG@10"] / max(
        out["methods"]["exact reading as filters (ceiling)"]["NDCG@10"], 1e-12)
    out["examples"] = [text for _, text, _ in rows[:5]]
    return out


def following_lines(report: dict) -> list[str]:
    """Markdown for protocols 6 and 7."""
    lines = []
    f = report.get("6")
    if f:
        lines += ["## Protocol 6: following hand-written requests", "",
                  f"{f['requests']} requests with hard constraints, {f['users_per_request']} test users each.", "",
                  "| | value |", "|---|---|",
                  f"| mean precision@10 | {f['mean precision@10']:.3f} |",
                  f"| mean precision@10 of the same users without the request | {f['mean without request']:.3f} |",
                  f"| requests below their no-request figure | {f['requests below their no-request figure']} |",
                  f"| returned items breaking a stated exclusion | "
                  f"{f['returned items breaking a stated exclusion']} |", "",
                  "Lowest 15 requests:", "", "| request | precision@10 | without |", "|---|---|---|"]
        for row in sorted(f["per request"], key=lambda r: r["precision@10"])[:15]:
            lines.append(f"| {row['request']} | {row['precision@10']:.2f} | {row['without request']:.2f} |")
        lines.append("")
    c = report.get("7")
    if c:
        lines += ["## Protocol 7: personalised compositional requests", "",
                  f"{c['users']} test users, e.g. " + "; ".join(f'"{e}"' for e in c["examples"][:3]), "",
                  "| method | HR@10 | NDCG@10 | served minus it (NDCG@10, 95 % CI) |", "|---|---|---|---|"]
        for name, m in c["methods"].items():
            diff = c["served_minus"].get(name)
            cell = f"{diff['diff']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]" if diff else ""
            lines.append(f"| {name} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {cell} |")
        lines += ["", f"Served / ceiling NDCG@10: {c['served / ceiling']:.3f}", ""]
    return lines

