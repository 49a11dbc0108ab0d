"""Which SASRec configuration fits a data set with long histories (issue #30, MovieLens latest-small).

Trains one configuration of the served sequence model on a split with ``tools.train.sequential.run`` (the
same trainer `instructrec bootstrap` uses: early stopping on validation, a time budget, resumable) and
writes the run to ``OUT/<name>``; the record holds validation and test full-ranking metrics of the chosen
epoch. Nothing here is served: a configuration that wins goes into the bootstrap's rule, with its figures.

    python -m tools.lab.sequence_sweep --data-dir var/datasets/ml-latest-small/data --name d02 \\
        --set dropout=0.2 --set attn_dropout=0.2 --threads 1 --max-minutes 35
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path

import typer

from tools.core.sequence_model import SequentialConfig

app = typer.Typer(add_completion=False)


def parse_overrides(pairs: list[str]) -> dict:
    """``["dropout=0.2", "max_len=100"]`` -> typed overrides of :class:`SequentialConfig`; unknown keys refused."""
    types = {f.name: f.type for f in fields(SequentialConfig)}
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
        out[key] = float(value) if types[key] in (float, "float") else int(value)
    return out


@app.command()
def main(data_dir: Path = typer.Option(..., help="A split written by prepare-data / bootstrap."),
         name: str = typer.Option(..., help="Run name: OUT/<name>."),
         out: Path = typer.Option(Path("var/lab/sequence-sweep")),
         set_: list[str] = typer.Option([], "--set", help="KEY=VALUE overrides of SequentialConfig."),
         threads: int = typer.Option(1), max_minutes: float = typer.Option(35.0),
         resume: bool = typer.Option(True)) -> None:
    from tools.train.sequential import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = replace(SequentialConfig(), threads=threads, **parse_overrides(set_))
    record = run(data_dir, out / name, config, resume=resume, max_minutes=max_minutes)
    summary = {"name": name, "config": record["config"], "best_epoch": record["best_epoch"],
               "epochs": len(record["epochs"]), "seconds": record["seconds"],
               "valid_NDCG@10": record["best_valid_NDCG@10"], "test": record["test_full_ranking"]}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    app()
