"""`instructrec add-items`: new items served without a restart.

The new items are validated like any catalog, appended to the data set's catalog file, embedded by the text encoder
version the text index was built with (through Triton, as ``build-index`` does) and added to the text index, which is
written whole and swapped atomically. The running services follow both files: every service adds the new items to
its catalog (``services/common/catalog_follower.py``), and retrieval installs the grown index once its catalog names
every indexed item. The new items have no sequence vector (the sequence model has never seen them): they are reached
through text, filters and the request's words until the next ``instructrec retrain`` (cold start, by design).

The catalog is written first, the index second: a service may briefly know an item it cannot retrieve yet, never
retrieve an item it does not know.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.triton_clients import tool_triton_settings, triton_client
from services.core.catalog import Catalog, DataFormatError, item_text
from services.core.contracts import TEXT_ENCODER
from services.core.index import INDEX_FILE, META_FILE, ItemIndex, write_item_index
from tools.core.files import atomic_output_dir
from tools.index import IndexBuildError, encode_texts


@dataclass(frozen=True)
class Added:
    item_ids: tuple[str, ...]
    catalog_items: int
    index_items: int
    text_encoder_version: str


def new_items(catalog: Catalog, path: Path) -> Catalog:
    """The items of ``path``, validated as a catalog, none of them already in ``catalog``.

    Raises:
        DataFormatError: the file is malformed, empty, or names items the catalog has.
    """
    new = Catalog.load(path)
    if not len(new):
        raise DataFormatError(f"{path} has no items")
    known = [i for i in new.items if i in catalog]
    if known:
        raise DataFormatError(f"{path}: {len(known)} item ids are already in the catalog (only additions are "
                              f"served without a restart), e.g. {known[:5]}")
    return new


async def add_items_async(data_dir: Path, items_path: Path, index_dir: Path, triton_grpc_addr: str, *,
                          timeout_s: float = 60.0, concurrency: int = 32, progress: bool = True) -> Added:
    """Append ``items_path``'s items to ``data_dir/items.jsonl`` and their text vectors to ``index_dir``.

    Raises:
        DataFormatError: the new items are malformed or already known.
        IndexBuildError: Triton does not serve the index's text encoder version.
    """
    catalog_path = Path(data_dir) / "items.jsonl"
    catalog = Catalog.load(catalog_path)
    new = new_items(catalog, items_path)
    index = ItemIndex.load(index_dir)
    client = triton_client(tool_triton_settings(triton_grpc_addr))
    try:
        if not await client.is_model_ready(index.model_name, index.model_version, client_timeout=timeout_s):
            raise IndexBuildError(f"Triton at {triton_grpc_addr} does not serve {index.model_name} version "
                                  f"{index.model_version}, the one {index_dir} was built with")
        vectors, version = await encode_texts(client, [item_text(item) for item in new],
                                              model_name=index.model_name or TEXT_ENCODER,
                                              model_version=index.model_version, concurrency=concurrency,
                                              timeout_s=timeout_s, progress=progress)
    finally:
        await client.close()
    if version != index.model_version:
        raise IndexBuildError(f"{index.model_name} answered version {version}, the index holds {index.model_version}")
    _append_catalog(catalog_path, new)
    ids = list(index.item_ids)
    with atomic_output_dir(Path(index_dir)) as tmp:
        write_item_index(tmp, ids + list(new.items), np.vstack([index.vectors_for(ids), vectors]),
                         model_version=version, model_name=index.model_name, metric=index.metric,
                         popularity=[*index.popularity, *([0] * len(new))], index_type=index.ann_info.type)
        for other in Path(index_dir).iterdir():  # the intent heads and anything else built with the index
            if other.name not in (INDEX_FILE, META_FILE) and other.is_file():
                shutil.copy2(other, tmp / other.name)
    return Added(tuple(new.items), len(catalog) + len(new), len(ids) + len(new), version)


def _append_catalog(path: Path, new: Catalog) -> None:
    """The catalog file with ``new``'s items after its own lines, replaced atomically and made durable."""
    tmp = path.with_name(path.name + ".tmp")
    old = path.read_bytes()
    with open(tmp, "wb") as f:
        f.write(old if not old or old.endswith(b"\n") else old + b"\n")
        for item in new:
            f.write((json.dumps(item.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_items(data_dir: Path, items_path: Path, index_dir: Path, triton_grpc_addr: str, **options) -> Added:
    """:func:`add_items_async` run to completion."""
    return asyncio.run(add_items_async(data_dir, items_path, index_dir, triton_grpc_addr, **options))
