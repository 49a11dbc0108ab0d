"""`instructrec evaluate`: the three protocols over the same split the suite serves, against baselines.

1. InstructRec's protocol: the target + 9 random unseen items; HR@1/3/5, NDCG@3/5.
2. Hard negatives: the target + the retriever's top 9 unseen items (the lists of the report's first run are
   stored and reused by systems added with ``--append``, so every row ranks the same lists).
3. Full ranking: the served pipeline's top 10 (HR@10, NDCG@10) and the retriever's Recall@20.

The served system is measured through the live services (gateway with ``candidate_item_ids`` for protocols
1 and 2, a plain ``Recommend`` for 3; the retrieval service for the hard negatives and Recall@20), so what is
evaluated is exactly what is deployed. Baselines run in this process on exactly the same candidates:
random, popularity and the served sequence model (SASRec, ``tools/core/sequence_model.py``) alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from instructrec.v1 import (
    recommend_service_pb2,
    recommend_service_pb2_grpc,
    retrieval_service_pb2,
    retrieval_service_pb2_grpc,
)
from tqdm import tqdm

from services.common.filters_proto import filter_to_proto
from tools.core.channels import PLAINTEXT, ClientCredentials, open_tool_channel
from tools.core.machine import repo_path
from tools.core.metrics import rank_of, summarize
from tools.core.sequence_model import PUBLISHED_DIR, SequenceScorer
from tools.core.split import Case, Split, load_split
from tools.eval.hard_negatives import SOURCE as HARD_NEGATIVE_SOURCE
from tools.eval.hard_negatives import hard_negative_lists
from tools.eval.protocols import popularity_scorer, random_candidates, random_scorer

log = logging.getLogger(__name__)

PROTOCOL_KS = {1: (1, 3, 5), 2: (1, 3, 5), 3: (10,)}


@dataclass
class EvalConfig:
    """What to evaluate and where the served system is."""

    data_dir: Path
    gateway_addr: str | None = None
    retrieval_addr: str | None = None
    served_name: str = "served"
    protocols: tuple[int, ...] = (1, 2, 3)
    max_users: int | None = None
    seed: int = 0
    concurrency: int = 8
    sequence_model: Path = PUBLISHED_DIR
    """The sequence model scored alone as the "SASRec" baseline (and in protocols 4-5): the served checkpoint."""
    baselines: bool = True
    """Compute random, popularity and SASRec; off when adding a served system to a report that has them
    (they depend only on the split, the seed and the users, not on what is served)."""
    hard_negative_lists: dict[str, list[str]] | None = None
    """Protocol 2's candidate lists per user (``report["protocol2_lists"]["lists"]`` of an earlier run): reused
    so that every system in one report ranks the same lists. ``None`` retrieves them from the served
    retriever."""
    validation: bool = False
    """Evaluate validation users (history before their validation item) instead of test users, with protocols
    4-5's intentions in the training bank's wording: for choosing settings (the intent weight) without touching
    the test users or the evaluation wording."""
    literal_intentions: bool = False
    """Protocols 4-5: vague intentions name the genre they paraphrase (``intentions.intention(literal=True)``),
    the ceiling of a perfect intention reader; specific ones are unchanged."""
    following_users: int = 25
    """Protocol 6: test users per hand-written request (a seeded sample; 0 = all)."""
    paired_with: tuple[Path, ...] = ()
    """Earlier ``search.json`` reports whose served system joins protocols 4-5 as a paired method."""

    def __post_init__(self) -> None:
        if self.validation and self.literal_intentions:
            raise ValueError("--validation words intentions as training does; it cannot be combined with "
                             "--literal-intentions")

    @property
    def wording(self) -> str:
        """How protocols 4-5 word their intentions (``search.WORDINGS``)."""
        return "training" if self.validation else "literal" if self.literal_intentions else "evaluation"


async def _gather_bounded(coros, concurrency: int, desc: str) -> list:
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(coros), desc=desc, leave=False)

    async def one(coro):
        async with semaphore:
            try:
                return await coro
            finally:
                bar.update()

    try:
        return await asyncio.gather(*(one(c) for c in coros))
    finally:
        bar.close()


class ServedSystem:
    """The live services, as the evaluation calls them."""

    def __init__(self, gateway_addr: str | None, retrieval_addr: str | None,
                 credentials: ClientCredentials = PLAINTEXT) -> None:
        self._gateway = open_tool_channel(gateway_addr, credentials) if gateway_addr else None
        self._retrieval = open_tool_channel(retrieval_addr, credentials) if retrieval_addr else None

    async def rerank(self, case: Case, candidates: Sequence[str]) -> list[str]:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(self._gateway)
        r = await stub.Recommend(
            recommend_service_pb2.RecommendRequest(
                history_item_ids=case.history, candidate_item_ids=candidates, num_items=len(candidates)
            ),
            timeout=300,
        )
        return [i.item_id for i in r.items]

    async def recommend(self, case: Case, k: int) -> list[str]:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(self._gateway)
        r = await stub.Recommend(
            recommend_service_pb2.RecommendRequest(history_item_ids=case.history, num_items=k), timeout=300
        )
        return [i.item_id for i in r.items]

    async def recommend_with(self, history: Sequence[str], query: str, k: int) -> list[str]:
        """Full ranking for a history (may be empty: an anonymous caller) and an intention."""
        stub = recommend_service_pb2_grpc.RecommendServiceStub(self._gateway)
        r = await stub.Recommend(recommend_service_pb2.RecommendRequest(
            history_item_ids=history, query=query, num_items=k), timeout=300)
        return [i.item_id for i in r.items]

    async def rerank_with(self, history: Sequence[str], query: str, candidates: Sequence[str]) -> list[str]:
        """The caller's candidates ranked for a history (may be empty) and an intention."""
        stub = recommend_service_pb2_grpc.RecommendServiceStub(self._gateway)
        r = await stub.Recommend(recommend_service_pb2.RecommendRequest(
            history_item_ids=history, query=query, candidate_item_ids=candidates, num_items=len(candidates)),
            timeout=300)
        return [i.item_id for i in r.items]

    async def recommend_filtered(self, history: Sequence[str], filters, k: int) -> list[str]:
        """Full ranking for a history under ``filters`` (no query): what the exact reading of a request gives."""
        stub = recommend_service_pb2_grpc.RecommendServiceStub(self._gateway)
        r = await stub.Recommend(recommend_service_pb2.RecommendRequest(
            history_item_ids=history, filters=[filter_to_proto(f) for f in filters], num_items=k), timeout=300)
        return [i.item_id for i in r.items]

    async def retrieve(self, case: Case, k: int, exclude: Sequence[str] = ()) -> list[str]:
        stub = retrieval_service_pb2_grpc.RetrievalServiceStub(self._retrieval)
        r = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(
                history_item_ids=case.history, exclude_item_ids=exclude, num_candidates=k
            ),
            timeout=60,
        )
        return [c.item_id for c in r.candidates]

    async def close(self) -> None:
        for channel in (self._gateway, self._retrieval):
            if channel is not None:
                await channel.close()


def _rank_in_order(order: Sequence[str], target: str) -> int | None:
    return order.index(target) if target in order else None


def _baseline_ranks(split: Split, cases, candidates, sasrec) -> dict[str, list[int]]:
    if sasrec is None:
        return {}
    scorers = {"random": random_scorer(0), "popularity": popularity_scorer(split), "SASRec": sasrec.score}
    return {
        name: [rank_of(list(scorer(c.history, cands)), list(cands).index(c.target))
               for c, cands in zip(cases, candidates)]
        for name, scorer in scorers.items()
    }


def _full_ranking_baselines(split: Split, cases, sasrec, k: int) -> dict[str, list[int | None]]:
    if sasrec is None:
        return {}
    ids = list(split.catalog.items)
    popular = [i for i, _ in split.popularity.most_common()]
    out: dict[str, list[int | None]] = {"popularity": [], "SASRec": []}
    for case in cases:
        seen = set(case.history)
        top = [i for i in popular if i not in seen][:k]
        out["popularity"].append(_rank_in_order(top, case.target))
        scores = sasrec.score(case.history, ids)
        ranked = [i for _, i in sorted(zip(scores, ids), reverse=True) if i not in seen][:k]
        out["SASRec"].append(_rank_in_order(ranked, case.target))
    return out


async def _rerank_protocol(protocol: int, split: Split, cases: Sequence[Case], candidates: Sequence[Sequence[str]],
                           sasrec: SequenceScorer | None, served: ServedSystem, config: EvalConfig) -> dict:
    """Protocols 1 and 2: the baselines and the served system (``candidate_item_ids``) rank each case's list."""
    ranks = _baseline_ranks(split, cases, candidates, sasrec)
    if config.gateway_addr:
        orders = await _gather_bounded([served.rerank(c, cands) for c, cands in zip(cases, candidates)],
                                       config.concurrency, f"protocol {protocol}")
        ranks[config.served_name] = [o.index(c.target) for c, o in zip(cases, orders)]
    return {m: summarize(r, PROTOCOL_KS[protocol]) for m, r in ranks.items()}


async def evaluate(config: EvalConfig) -> dict:
    """Run the protocols; returns {protocol: {method: metrics}} plus a record of the run."""
    started = time.time()
    split = load_split(config.data_dir)
    pool = split.valid_cases if config.validation else split.test_cases
    cases = pool[: config.max_users] if config.max_users else pool
    sasrec, record = None, None
    if config.baselines and {1, 2, 3} & set(config.protocols):  # protocols 4-5 have their own baselines
        sasrec = SequenceScorer(config.sequence_model)
        record = {"model": repo_path(config.sequence_model)}
    served = ServedSystem(config.gateway_addr, config.retrieval_addr)
    results: dict[str, dict] = {}
    protocol2_lists: dict | None = None
    search_results: dict | None = None
    following_results: dict | None = None
    try:
        if 1 in config.protocols:
            candidates = random_candidates(split, cases, seed=config.seed)
            results["1"] = await _rerank_protocol(1, split, cases, candidates, sasrec, served, config)
        if 2 in config.protocols:
            if config.hard_negative_lists is not None:
                candidates = _reuse_lists(config.hard_negative_lists, cases)
            else:
                candidates = hard_negative_lists(split, cases, seed=config.seed)
                protocol2_lists = {"retriever": HARD_NEGATIVE_SOURCE,
                                   "lists": {c.user_id: list(cands) for c, cands in zip(cases, candidates)}}
            results["2"] = await _rerank_protocol(2, split, cases, candidates, sasrec, served, config)
        if 3 in config.protocols and config.gateway_addr and config.retrieval_addr:
            ranks = _full_ranking_baselines(split, cases, sasrec, 10)
            tops = await _gather_bounded([served.recommend(c, 10) for c in cases], config.concurrency, "protocol 3")
            ranks[config.served_name] = [_rank_in_order(t, c.target) for c, t in zip(cases, tops)]
            pools = await _gather_bounded([served.retrieve(c, 20) for c in cases], config.concurrency, "recall")
            # The retrieval order alone (no ranker) shows what the ranking stage adds on top of it.
            ranks[f"{config.served_name}: retriever only"] = [_rank_in_order(p[:10], c.target)
                                                              for c, p in zip(cases, pools)]
            results["3"] = {m: summarize(r, PROTOCOL_KS[3]) for m, r in ranks.items()}
            results["3"][f"{config.served_name}: retriever only"]["Recall@20"] = (
                sum(c.target in p for c, p in zip(cases, pools)) / len(cases))
        if config.gateway_addr and ({4, 5} & set(config.protocols)):
            search_results = await _search(split, cases, served, config)
        if config.gateway_addr and ({6, 7} & set(config.protocols)):
            following_results = await _following(split, served, config)
    finally:
        await served.close()
    out = {
        "results": results,
        "users": len(cases),
        "cases": "validation" if config.validation else "test",
        "data_dir": str(config.data_dir),
        "seed": config.seed,
        "sasrec": record,
        "seconds": round(time.time() - started, 1),
    }
    if protocol2_lists is not None:
        out["protocol2_lists"] = protocol2_lists
    if search_results is not None:
        out["search"] = {"system": config.served_name, **search_results}
    if following_results is not None:
        out["following"] = {"system": config.served_name, **following_results}
    return out


async def _following(split: Split, served: ServedSystem, config: EvalConfig) -> dict:
    """Protocols 6 (following hand-written requests) and 7 (personalised compositional requests)."""
    from tools.eval.following import compositional, following

    out: dict = {}
    if 6 in config.protocols:
        out["6"] = await following(split, served, config.following_users, config.seed, config.concurrency)
    if 7 in config.protocols:
        paired = [r for r in (json.loads(Path(p).read_text()) for p in config.paired_with) if "7" in r]
        out["7"] = await compositional(split, served, SequenceScorer(config.sequence_model).catalog_scores,
                                       config.seed, config.concurrency, config.max_users, paired)
    return out


async def _search(split: Split, cases: Sequence[Case], served: ServedSystem, config: EvalConfig) -> dict:
    """Protocols 4 (personalized search) and 5 (search), with the committed sequence model as a baseline."""
    from tools.eval.search import SearchEvaluation

    sequence_scores = SequenceScorer(config.sequence_model).catalog_scores
    paired = [json.loads(Path(p).read_text()) for p in config.paired_with]
    evaluation = SearchEvaluation(split, served, sequence_scores, seed=config.seed, concurrency=config.concurrency,
                                  name=config.served_name, paired=paired, wording=config.wording)
    out = {}
    for protocol, personalized in (("4", True), ("5", False)):
        if int(protocol) in config.protocols:
            bar = tqdm(total=2 * len(cases), desc=f"protocol {protocol}", leave=False)
            out[protocol] = await evaluation.run(cases, personalized=personalized, progress=bar.update)
            bar.close()
    return out


def _reuse_lists(lists: dict[str, list[str]], cases: Sequence[Case]) -> list[list[str]]:
    """The stored protocol-2 list of each case; each must hold the case's target."""
    missing = [c.user_id for c in cases if c.user_id not in lists]
    if missing:
        raise ValueError(f"the stored protocol-2 lists have no list for users {missing[:5]} "
                         f"({len(missing)} in all): evaluate with the same data, users and seed")
    wrong = [c.user_id for c in cases if c.target not in lists[c.user_id]]
    if wrong:
        raise ValueError(f"stored protocol-2 lists of users {wrong[:5]} do not hold their test item")
    return [list(lists[c.user_id]) for c in cases]


def _cases(report: dict) -> str:
    if report.get("cases") == "validation":
        return "validation users (intentions in the training bank's wording)"
    return "test users"


def merge_reports(previous: dict, report: dict) -> dict:
    """Add ``report``'s served system to an earlier report of the same split, seed and users.

    The baselines are recomputed by every run on the same cases and candidates, so they agree; the merged
    report keeps every served system measured (e.g. the zero-shot and the tuned models) side by side.

    Raises:
        ValueError: the two runs evaluated different users, data or seeds.
    """
    if previous.get("cases", "test") != report.get("cases", "test"):
        raise ValueError("cannot merge: one report is of validation users, the other of test users")
    for key in ("users", "data_dir", "seed"):
        if previous.get(key) != report.get(key):
            raise ValueError(f"cannot merge: {key} differs ({previous.get(key)!r} vs {report.get(key)!r})")
    merged = dict(report)
    if merged.get("sasrec") is None:
        merged["sasrec"] = previous.get("sasrec")
    results = {p: dict(methods) for p, methods in previous.get("results", {}).items()}
    for protocol, methods in report["results"].items():
        results.setdefault(protocol, {}).update(methods)
    merged["results"] = results
    # The reference lists stay those of the first run; a report whose protocol 2 predates stored lists has
    # none (an appended run's own lists do not describe the rows already there).
    if previous.get("protocol2_lists"):
        merged["protocol2_lists"] = previous["protocol2_lists"]
    elif "2" in previous.get("results", {}):
        merged.pop("protocol2_lists", None)
    merged["commands"] = [*previous.get("commands", []), *report.get("commands", [])]
    merged["seconds"] = round(previous.get("seconds", 0) + report.get("seconds", 0), 1)
    return merged


SEARCH_TITLES = {"4": "Protocol 4: personalized search (history + intention)",
                 "5": "Protocol 5: search (intention only, anonymous caller)"}
# The wording (evaluation bank, or the training bank for --validation) is stated once, in the report's header.
KIND_TITLES = {"I2": "specific intention (one genre + decade)",
               "I1": "vague intention (paraphrases a string filter cannot match)"}


def search_lines(search: dict) -> list[str]:
    """Markdown of protocols 4 and 5: the metrics per method and the served system's paired differences."""
    lines = [f"Served system: {search['system']}. Full ranking through Recommend (HR@10, NDCG@10) and the target + 19 "
             "random unseen items, 3 lists per user (HR@1, NDCG@5). Differences: served minus baseline, mean over "
             "users with the 95 % paired-bootstrap interval.", ""]
    for protocol, kinds in search.items():
        if protocol not in SEARCH_TITLES:
            continue
        lines += [f"## {SEARCH_TITLES[protocol]}", ""]
        for kind, result in kinds.items():
            lines += [f"### {KIND_TITLES[kind]}", "",
                      f"The query alone (string filter) singles out the target in "
                      f"{result['query_singles_out_target']:.1%} of the 1+19 lists.", "",
                      "| method | HR@10 | NDCG@10 | HR@1 (1+19) | NDCG@5 (1+19) |", "|---|---|---|---|---|"]
            for method, m in result["methods"].items():
                values = " | ".join(f"{m[k]:.4f}" for k in ("HR@10", "NDCG@10", "HR@1", "NDCG@5"))
                lines.append(f"| {method} | {values} |")
            lines += ["", "| served minus | NDCG@10 (95 % CI) | HR@1 (95 % CI) |", "|---|---|---|"]
            for method, d in result["served_minus"].items():
                cells = [f"{d[k]['diff']:+.4f} [{d[k]['ci_low']:+.4f}, {d[k]['ci_high']:+.4f}] "
                         f"({d[k]['relative']:+.0%})" for k in ("NDCG@10", "HR@1")]
                lines.append(f"| {method} | {cells[0]} | {cells[1]} |")
            lines.append("")
    return lines


def write_report(report: dict, out_dir: Path, command: str, append: bool = False) -> Path:
    """Markdown tables per protocol, a PNG of HR@k per method, and the raw JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "commands": [*report.get("commands", []), command]}
    if append and (out_dir / "results.json").is_file():
        report = merge_reports(json.loads((out_dir / "results.json").read_text()), report)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    titles = {"1": "Protocol 1: target + 9 random negatives", "2": "Protocol 2: target + 9 hard negatives",
              "3": "Protocol 3: full ranking (retrieve 20 -> rank)"}
    lines = ["# Evaluation report", "", "Commands:", "", *[f"    {c}" for c in report["commands"]], "",
             f"{report['users']} {_cases(report)}; seed {report['seed']}; {report['seconds']} s.", ""]
    for protocol, methods in report["results"].items():
        lines += [f"## {titles[protocol]}", ""]
        if protocol == "2" and report.get("protocol2_lists"):
            lines += [f"Every row ranks the same lists: the target and 9 hard negatives from "
                      f"{report['protocol2_lists']['retriever']} (stored in results.json).", ""]
        metrics = sorted({k for m in methods.values() for k in m if k != "users"})
        lines.append("| method | " + " | ".join(metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for method, values in methods.items():
            lines.append(f"| {method} | " + " | ".join(f"{values[k]:.4f}" if k in values else "" for k in metrics)
                         + " |")
        lines.append("")
        hr = {m: v for m, v in methods.items() if any(k.startswith("HR@") for k in v)}
        if hr:
            fig, ax = plt.subplots(figsize=(6, 4))
            for method, values in hr.items():
                ks = sorted(int(k[3:]) for k in values if k.startswith("HR@"))
                ax.plot(ks, [values[f"HR@{k}"] for k in ks], marker="o", label=method)
            ax.set_xlabel("k")
            ax.set_ylabel("HR@k")
            ax.set_title(titles[protocol])
            ax.legend()
            fig.tight_layout()
            fig.savefig(out_dir / f"protocol{protocol}_hr.png", dpi=120)
            plt.close(fig)
            lines += [f"![HR@k, protocol {protocol}](protocol{protocol}_hr.png)", ""]
    if report.get("search"):
        # Protocols 4-5 get their own page (and JSON): they are run for one served system at a time.
        (out_dir / "search.json").write_text(json.dumps(report["search"], indent=2) + "\n")
        (out_dir / "search.md").write_text("\n".join(["# Evaluation with intentions", "", "Command:", "",
                                                      f"    {command}", "",
                                                      f"{report['users']} {_cases(report)}; seed {report['seed']}.",
                                                      "",
                                                      *search_lines(report["search"])]))
        lines += ["Protocols 4-5 (with intentions): [search.md](search.md).", ""]
    if report.get("following"):
        from tools.eval.following import following_lines

        (out_dir / "following.json").write_text(json.dumps(report["following"], indent=2) + "\n")
        (out_dir / "following.md").write_text("\n".join(["# Following requests", "", "Command:", "",
                                                         f"    {command}", "", *following_lines(report["following"])]))
        lines += ["Protocols 6-7 (following requests): [following.md](following.md).", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
