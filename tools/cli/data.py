"""`instructrec prepare-data`, `build-index`, `bootstrap`, `synthesize`, `add-items`: data sets and the retrieval
indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import (
    TRITON_TLS_HELP,
    console,
    setup_logging,
)


def prepare_data(
    catalog: Annotated[Path, typer.Option(help="Catalog, JSON Lines: item_id, title, year, genres.")],
    interactions: Annotated[Path, typer.Option(help="Interactions CSV: user_id,item_id,timestamp[,rating].")],
    out_dir: Annotated[Path, typer.Option(help="Where the validated, split data set is written.")] = Path(
        "var/data/custom"
    ),
    synonyms: Annotated[Path | None, typer.Option(
        help="JSON object: phrase -> [\"attribute=value\", ...], the words people use for your catalog's values "
             "(the request reader's lexicon; docs/reading.md). Checked against the catalog.")] = None,
) -> None:
    """Validate your own catalog and interactions and write the leave-one-out split (serve it with `run --data-dir`)."""
    from services.core.catalog import DataFormatError
    from tools.data import prepare_custom

    setup_logging()
    try:
        path = prepare_custom(catalog, interactions, out_dir, synonyms)
    except (DataFormatError, FileNotFoundError) as exc:
        console.print(f"[red]invalid data:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"data set written to {path}")


def build_index_cmd(
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port serving the models." + TRITON_TLS_HELP)] = (
        "localhost:8001"),
    data_dir: Annotated[Path, typer.Option(help="Folder with items.jsonl and train.csv.")] = Path(
        "var/data/movielens-100k"
    ),
    out_dir: Annotated[Path, typer.Option(help="Where the text index (items.faiss, items.json) is written.")] = Path(
        "var/index/movielens-100k"),
    sequence_out_dir: Annotated[Path, typer.Option(
        help="Where the sequence index is written ('' skips it).")] = Path("var/index-sequence/movielens-100k"),
    repository: Annotated[Path, typer.Option(
        help="Model repository holding the served sequence_encoder version's item vectors.")] = Path(
        "model_repository"),
    index_type: Annotated[str, typer.Option(
        help="FAISS structure: flat (exact), hnsw (a graph; its efSearch is tuned to recall@20 >= 0.97 against "
             "exact search at build time), or auto (hnsw from 100,000 items on).")] = "auto",
) -> None:
    """Write the retrieval indexes from the served models: the text index (every catalog item embedded by
    text_encoder through Triton) and the sequence index (the item vectors of the sequence_encoder version
    Triton serves). The retrieval service picks rebuilt indexes up by itself."""
    import asyncio

    from services.core.ann import INDEX_TYPES
    from tools.index import build_index, build_sequence_index_async

    if index_type not in INDEX_TYPES:
        raise typer.BadParameter(f"{index_type!r} is not one of {', '.join(INDEX_TYPES)}", param_hint="--index-type")
    setup_logging()
    path = build_index(data_dir / "items.jsonl", data_dir / "train.csv", out_dir, triton, index_type=index_type)
    console.print(f"text index written to {path}")
    if str(sequence_out_dir):
        path = asyncio.run(build_sequence_index_async(data_dir / "items.jsonl", data_dir / "train.csv",
                                                      sequence_out_dir, triton, repository,
                                                      index_type=index_type))
        console.print(f"sequence index written to {path}")


def bootstrap_cmd(
    catalog: Annotated[Path, typer.Option(help="Catalog, JSON Lines: item_id, title, and any attributes "
                                               "(docs/custom-data.md).")],
    interactions: Annotated[Path, typer.Option(help="Interactions CSV: user_id,item_id,timestamp[,rating].")],
    name: Annotated[str, typer.Option(help="The data set's name: its workspace is WORKSPACE/datasets/NAME.")],
    synonyms: Annotated[Path | None, typer.Option(
        help="JSON object: phrase -> [\"attribute=value\", ...] for the request reader (docs/reading.md).")] = None,
    train_minutes: Annotated[float, typer.Option(
        min=1, help="Time budget of the sequence model's training, all runs together; early stopping on "
                    "validation NDCG@10 usually ends each run sooner.")] = 45.0,
    sequence_runs: Annotated[int, typer.Option(
        min=1, help="Training runs of the sequence model (seeds 0, 1, ...); the best on validation is served.")] = 2,
    validation_users: Annotated[int, typer.Option(
        min=0, help="Validation users the retrieval weights are fitted on (0: all).")] = 1_000,
    workspace: Annotated[Path, typer.Option(help="The project's working folder.")] = Path("var"),
) -> None:
    """Your catalog and interactions to a served workspace in one command: validate and split, train the sequence
    model, export it, build both indexes and the intent heads, fit the retrieval weights, evaluate against
    popularity and the sequence model alone. Rerun to resume; serve with `run --data-dir WORKSPACE/datasets/NAME`."""
    from services.core.catalog import DataFormatError
    from tools.bootstrap import BootstrapConfig, bootstrap

    setup_logging()
    root = workspace.resolve() / "datasets" / name
    config = BootstrapConfig(catalog.resolve(), interactions.resolve(), root,
                             synonyms.resolve() if synonyms else None, train_minutes=train_minutes,
                             sequence_runs=sequence_runs,
                             validation_users=validation_users, workspace=workspace.resolve())
    try:
        manifest = bootstrap(config, say=lambda line: console.print(line, markup=False, highlight=False))
    except (DataFormatError, FileNotFoundError) as exc:
        console.print(f"[red]invalid data:[/red] {exc}")
        raise typer.Exit(2) from None
    evaluation = manifest["steps"]["evaluation"]
    for method in ("served (no query)", "sequence model alone", "popularity"):
        console.print(f"{method}: HR@10 {evaluation[method]['HR@10']:.4f}  NDCG@10 {evaluation[method]['NDCG@10']:.4f}"
                      f"  ({evaluation['users']} test users)")
    console.print(f"workspace {root}: serve it with `instructrec run --data-dir {root}`")


def add_items_cmd(
    items: Annotated[Path, typer.Argument(help="New items, JSON Lines in the catalog's format.")],
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port serving the models." + TRITON_TLS_HELP)] = (
        "localhost:8001"),
    data_dir: Annotated[Path, typer.Option(help="The served data set (its items.jsonl grows); a workspace's is "
                                                "WORKSPACE/datasets/NAME/data.")] = Path("var/data/movielens-100k"),
    index_dir: Annotated[Path, typer.Option(help="The served text index (a workspace's: .../NAME/index).")] = Path(
        "var/index/movielens-100k"),
) -> None:
    """Add new items to a served catalog without a restart: validated, appended to the catalog, embedded by the
    index's text encoder version and added to the text index; the running services pick both up within a poll
    (CATALOG_POLL_S). New items are reached through text and filters until the next retrain."""
    from services.core.catalog import DataFormatError
    from tools.catalog_add import add_items
    from tools.index import IndexBuildError

    setup_logging()
    try:
        added = add_items(data_dir, items, index_dir, triton)
    except (DataFormatError, FileNotFoundError) as exc:
        console.print(f"[red]invalid items:[/red] {exc}")
        raise typer.Exit(2) from None
    except IndexBuildError as exc:
        console.print(f"[red]cannot embed the items:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"added {len(added.item_ids)} items: catalog {added.catalog_items}, text index "
                  f"{added.index_items} (text_encoder version {added.text_encoder_version})")


def synthesize_cmd(
    out_dir: Annotated[Path, typer.Option(help="Where items.jsonl, interactions.csv and synonyms.json go.")],
    items: Annotated[int, typer.Option(min=10, help="Catalog items.")] = 500,
    users: Annotated[int, typer.Option(min=1, help="Users.")] = 1_000,
    mean_history: Annotated[float, typer.Option(min=3, help="Mean interactions per user.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed (the same seed writes the same files).")] = 0,
) -> None:
    """Write a synthetic shop catalog and interaction log (category, brand, price, colors; skewed popularity and
    history lengths; sequential habits) in the documented formats."""
    from tools.synthetic import ShopSpec, write_shop

    counts = write_shop(out_dir, ShopSpec(items=items, users=users, mean_history=mean_history, seed=seed))
    console.print(f"wrote {counts} to {out_dir}")


def reindex_cmd(
    directories: Annotated[list[Path], typer.Argument(help="Index folders (items.faiss + items.json) to rebuild.")],
    index_type: Annotated[str, typer.Option(help="FAISS structure: flat, hnsw, pq or auto (as build-index).")] = "auto",
) -> None:
    """Rebuild the FAISS structure of existing indexes from the vectors they store, calling no model (after a
    change to how the structure is chosen or measured). The retrieval service picks rebuilt indexes up by itself."""
    from services.core.ann import INDEX_TYPES
    from tools.index import reindex

    if index_type not in INDEX_TYPES:
        raise typer.BadParameter(f"{index_type!r} is not one of {', '.join(INDEX_TYPES)}", param_hint="--index-type")
    setup_logging()
    for directory in directories:
        console.print(f"re-indexed {reindex(directory, index_type)}")


COMMANDS = {"prepare-data": prepare_data, "build-index": build_index_cmd, "reindex": reindex_cmd,
            "bootstrap": bootstrap_cmd, "synthesize": synthesize_cmd, "add-items": add_items_cmd}
"""The group's commands by their name on the command line."""
