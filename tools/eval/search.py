"""Protocols 4 and 5: the system given an intention, the one input a sequential model cannot use.

4, personalized search: the test user's history and an intention about the test item; 5, search: the
intention alone (an anonymous caller). Intentions are vague (I1) or specific (I2), from the evaluation bank
(``tools/eval/intentions.py``). Two measurements each: full ranking through ``Recommend`` (HR@10, NDCG@10)
and the target + 19 random unseen items, ``draws`` lists per user (HR@1, NDCG@5, averaged over the draws).
Baselines rank the same candidates and can use the intention: the string filter ordered by popularity, the
same filter ordered by the sequence model (protocol 4), and popularity / the sequence model alone.
Differences against the served system are given with a paired bootstrap over users (95 % interval).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import numpy as np

from tools.core import teacher
from tools.core.metrics import bootstrap, ndcg, paired_method_name
from tools.core.split import Case, Split
from tools.eval.intentions import SPECIFIC, VAGUE, StringFilter, intention

DRAWS = 3
NEGATIVES = 19
WORDINGS = ("evaluation", "training", "literal")


def _rank(order: Sequence[str], target: str) -> int | None:
    return order.index(target) if target in order else None


def _join_paired(rows: list[dict], report: dict, protocol: str, kind: str, users: list[str]) -> None:
    """Add an earlier served system's stored ranks to ``rows`` (aligned by user) as one more method (named by
    :func:`tools.core.metrics.paired_method_name`: never in place of this run's own)."""
    name = paired_method_name(report["system"], rows[0]["full"] if rows else ())
    try:
        ranks = report[protocol][kind]["ranks"]
    except KeyError as exc:
        raise ValueError(f"the paired report of {name!r} has no per-user ranks for protocol {protocol} {kind}; "
                         f"rerun it with this version of the evaluation") from exc
    # Lists and intentions are seeded per user, so a run on fewer users (--max-users) pairs with theirs.
    position = {user: n for n, user in enumerate(ranks["users"])}
    missing = [u for u in users if u not in position]
    if missing:
        raise ValueError(f"the paired report of {name!r} evaluated other users ({len(missing)} of these are not "
                         f"in it, e.g. {missing[0]!r}): same data and seed, and a superset of the users, needed")
    for row, user in zip(rows, users):
        row["full"][name] = ranks["full"][position[user]]
        row["sampled"][name] = ranks["sampled"][position[user]]


class SearchEvaluation:
    """Runs protocols 4 and 5 for one served system against the in-process baselines."""

    def __init__(self, split: Split, served, sequence_scores: Callable[[Sequence[str]], dict[str, float]], *,
                 seed: int, concurrency: int, name: str, paired: Sequence[dict] = (),
                 wording: str = "evaluation") -> None:
        """
        Args:
            paired: Earlier ``search.json`` reports of other served systems (e.g. an ablation) on the same users
                and seed: their stored per-user ranks join the tables as methods, with paired differences.
            wording: "evaluation" (the evaluation-only bank), "training" (as training words them,
                ``tools/core/teacher.py``, for validation runs) or "literal" (vague intentions name the genre they
                paraphrase: the ceiling of a perfect intention reader; see ``intentions.intention``).
        """
        if wording not in WORDINGS:
            raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")
        self.split, self.served, self.sequence_scores = split, served, sequence_scores
        self.seed, self.concurrency, self.name = seed, concurrency, name
        self.paired = list(paired)
        self.wording = wording
        self.filter = StringFilter(split.catalog)
        self.items = list(split.catalog.items)
        self.popularity = {i: float(split.popularity.get(i, 0)) for i in self.items}

    def _query(self, case: Case, kind: str) -> str:
        item = self.split.catalog[case.target]
        rng = random.Random(f"{self.seed}:{case.user_id}:{kind}")
        if self.wording == "training":
            return teacher.vague_intention(item, rng) if kind == VAGUE else teacher.specific_request(item, rng)
        return intention(item, kind, rng, literal=self.wording == "literal")

    def _lists(self, case: Case) -> list[list[str]]:
        rng = random.Random(f"search:{self.seed}:{case.user_id}")
        pool = [i for i in self.items if i not in case.seen]
        lists = []
        for _ in range(DRAWS):
            candidates = [case.target, *rng.sample(pool, NEGATIVES)]
            rng.shuffle(candidates)
            lists.append(candidates)
        return lists

    def _baselines(self, query: str, ids: Sequence[str], seq: dict[str, float] | None) -> dict[str, list[str]]:
        """Baseline orders of ``ids``; ``seq``: the sequence model's scores of the case (None: no history)."""
        pop = [self.popularity[i] for i in ids]
        out = {"popularity": [i for _, _, i in sorted((-p, n, i) for n, (i, p) in enumerate(zip(ids, pop)))],
               "filter + popularity": self.filter.order(query, ids, pop)}
        if seq is not None:
            scores = [seq.get(i, -np.inf) for i in ids]
            out["sequence model"] = [i for _, _, i in sorted((-s, n, i) for n, (i, s) in enumerate(zip(ids, scores)))]
            out["filter + sequence model"] = self.filter.order(query, ids, scores)
        return out

    async def _one(self, case: Case, kind: str, personalized: bool) -> dict:
        query = self._query(case, kind)
        history = case.history if personalized else ()
        unseen = [i for i in self.items if i not in set(history)]
        seq = self.sequence_scores(case.history) if personalized else None  # once per case and intention
        full = {self.name: _rank(await self.served.recommend_with(history, query, 10), case.target)}
        for method, order in self._baselines(query, unseen, seq).items():
            full[method] = _rank(order[:10], case.target)
        lists = self._lists(case)
        sampled: dict[str, list[int]] = {}
        singled = 0
        for candidates in lists:
            served_order = await self.served.rerank_with(history, query, candidates)
            sampled.setdefault(self.name, []).append(served_order.index(case.target))
            for method, order in self._baselines(query, candidates, seq).items():
                sampled.setdefault(method, []).append(order.index(case.target))
            singled += self.filter.singles_out(query, case.target, candidates)
        return {"full": full, "sampled": sampled, "singled_out": singled / len(lists)}

    async def run(self, cases: Sequence[Case], *, personalized: bool, progress=None) -> dict:
        out: dict[str, dict] = {}
        protocol = "4" if personalized else "5"
        users = [c.user_id for c in cases]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def bounded(case: Case, kind: str) -> dict:
            async with semaphore:
                result = await self._one(case, kind, personalized)
                if progress:
                    progress()
                return result

        for kind in (SPECIFIC, VAGUE):
            rows = await asyncio.gather(*(bounded(c, kind) for c in cases))
            for report in self.paired:
                _join_paired(rows, report, protocol, kind, users)
            out[kind] = self._summarize(rows)
            out[kind]["ranks"] = {"users": users, "full": [r["full"][self.name] for r in rows],
                                  "sampled": [r["sampled"][self.name] for r in rows]}
        return out

    def _summarize(self, rows: list[dict]) -> dict:
        methods = list(rows[0]["full"])
        per_user = {}
        for m in methods:
            full = [r["full"][m] for r in rows]
            sampled = [r["sampled"][m] for r in rows]
            per_user[m] = {
                "HR@10": np.array([float(x is not None and x < 10) for x in full]),
                "NDCG@10": np.array([ndcg(x, 10) for x in full]),
                "HR@1": np.array([np.mean([float(x == 0) for x in s]) for s in sampled]),
                "NDCG@5": np.array([np.mean([ndcg(x, 5) for x in s]) for s in sampled]),
            }
        table = {m: {k: float(v.mean()) for k, v in metrics.items()} | {"users": len(rows)}
                 for m, metrics in per_user.items()}
        served = per_user[self.name]
        differences = {m: {k: bootstrap(served[k], per_user[m][k], self.seed) for k in ("NDCG@10", "HR@1")}
                       for m in methods if m != self.name}
        return {"methods": table, "served_minus": differences,
                "query_singles_out_target": float(np.mean([r["singled_out"] for r in rows]))}
