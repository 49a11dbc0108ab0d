"""`instructrec prepare-data` and `build-index`: a data set and the retrieval indexes."""

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
) -> None:
    """Write the retrieval indexes from the served models: the text index (every catalog item embedded by
    text_encoder through Triton) and the sequence index (the item vectors of the sequence_encoder version
    Triton serves). The retrieval service picks rebuilt indexes up by itself."""
    import asyncio

    from tools.index import build_index, build_sequence_index_async

    setup_logging()
    path = build_index(data_dir / "items.jsonl", data_dir / "train.csv", out_dir, triton)
    console.print(f"text index written to {path}")
    if str(sequence_out_dir):
        path = asyncio.run(build_sequence_index_async(data_dir / "items.jsonl", data_dir / "train.csv",
                                                      sequence_out_dir, triton, repository))
        console.print(f"sequence index written to {path}")


COMMANDS = {"prepare-data": prepare_data, "build-index": build_index_cmd}
"""The group's commands by their name on the command line."""
