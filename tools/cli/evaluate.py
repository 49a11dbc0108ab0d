"""`instructrec evaluate` and `evaluate-statements` (``tools/eval``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import (
    console,
    invocation,
    setup_logging,
)


def evaluate(
    data_dir: Annotated[Path, typer.Option(
        help="Split written by `prepare` / `prepare-data`, or a `bootstrap` workspace (its split, and its sequence "
             "model as the SASRec baseline).")] = Path("var/data/movielens-100k"),
    gateway: Annotated[str, typer.Option(help="Gateway host:port of the served system ('' skips it).")] = (
        "localhost:50051"
    ),
    retrieval: Annotated[str, typer.Option(help="Retrieval service host:port ('' skips protocols 2-3).")] = (
        "localhost:50053"
    ),
    name: Annotated[str, typer.Option(help="Label of the served system in the report.")] = "served",
    protocols: Annotated[str, typer.Option(
        help="Comma-separated protocols to run: 1, 2, 3 (no intention), 4 (history + intention), 5 (intention "
             "only; both write search.md), 6 (hand-written requests followed: precision@10), 7 (personalised "
             "compositional requests; 6-7 write following.md).")] = "1,2,3",
    max_users: Annotated[int, typer.Option(help="Evaluate the first N test users (0 = all).")] = 0,
    following_users: Annotated[int, typer.Option(
        help="Protocol 6: test users per hand-written request, a seeded sample (0 = all 943).")] = 25,
    out_dir: Annotated[Path, typer.Option(help="Where report.md, the PNGs and results.json go.")] = Path(
        "docs/evaluation"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the negatives.")] = 0,
    append: Annotated[bool, typer.Option(
        help="Add this served system to OUT_DIR's existing report (same users and seed), e.g. the zero-shot "
             "models next to the tuned ones; the baselines are not recomputed (they are in the report) and "
             "protocol 2 ranks the report's stored lists.")] = False,
    validation: Annotated[bool, typer.Option(
        help="Validation users instead of test users, intentions in the training bank's wording (for choosing "
             "settings such as RETRIEVAL_INTENT_WEIGHT without the test users).")] = False,
    literal_intentions: Annotated[bool, typer.Option(
        help="Protocols 4-5: vague intentions name the genre they paraphrase ('looking for comedy'): the served "
             "stack with a perfect intention reader, the ceiling of any better reader.")] = False,
    paired_with: Annotated[list[Path] | None, typer.Option(
        help="Protocols 4-5: an earlier search.json of another served system (an ablation) on the same users and "
             "seed, added to the tables with paired differences; repeatable.")] = None,
) -> None:
    """Evaluate the served system and the baselines (random, popularity, SASRec) on the three protocols."""
    from tools.core.sequence_model import PUBLISHED_DIR
    from tools.core.workspace import DatasetWorkspace, is_workspace
    from tools.eval.evaluate import EvalConfig, write_report
    from tools.eval.evaluate import evaluate as run_evaluation
    from tools.train.sequential import MODEL_DIR

    setup_logging()
    sequence_model = PUBLISHED_DIR
    if is_workspace(data_dir):  # the workspace's own split and sequence model
        ws = DatasetWorkspace.at(data_dir)
        data_dir, sequence_model = ws.data_dir, ws.sequence_run / MODEL_DIR
    previous = out_dir / "results.json"
    lists = None
    if append and previous.is_file():
        lists = (json.loads(previous.read_text()).get("protocol2_lists") or {}).get("lists")
    config = EvalConfig(
        data_dir=data_dir, gateway_addr=gateway or None, retrieval_addr=retrieval or None, served_name=name,
        protocols=tuple(int(p) for p in protocols.split(",") if p.strip()), max_users=max_users or None,
        seed=seed, baselines=not append, hard_negative_lists=lists,
        paired_with=tuple(paired_with or ()), validation=validation, literal_intentions=literal_intentions,
        following_users=following_users, sequence_model=sequence_model,
    )
    report = asyncio.run(run_evaluation(config))
    path = write_report(report, out_dir, invocation("instructrec evaluate"), append=append)
    console.print(f"report written to {path}")


def evaluate_statements_cmd(
    data_dir: Annotated[Path, typer.Option(help="Split written by `prepare` / `prepare-data`.")] = Path(
        "var/data/movielens-100k"),
    max_users: Annotated[int, typer.Option(help="A seeded random sample of N test users (0 = all 943; about "
                                                "2.6 s per statement on 2 cores).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    out_dir: Annotated[Path, typer.Option(help="Where faithfulness.md and faithfulness.json go.")] = Path(
        "docs/evaluation"),
) -> None:
    """Faithfulness of the served preference generator's statements to the teacher (genre precision/recall of
    likes and dislikes, decades, contradictions before and after cleaning); runs the exported version in this
    process, no stack needed."""
    from tools.eval.faithfulness import FaithfulnessConfig, run_faithfulness

    setup_logging()
    run_faithfulness(FaithfulnessConfig(data_dir=data_dir, out_dir=out_dir, max_users=max_users or None, seed=seed))
    console.print(f"report written to {out_dir / 'faithfulness.md'}")


COMMANDS = {"evaluate": evaluate, "evaluate-statements": evaluate_statements_cmd}
"""The group's commands by their name on the command line."""
