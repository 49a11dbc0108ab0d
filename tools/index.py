"""Build the retrieval indexes: the text index (every catalog item embedded by Triton's ``text_encoder``, with
the intent heads fitted on the same encoder's embeddings of the training phrase bank, ``tools/train/intent.py``)
and the sequence index (the item vectors of the ``sequence_encoder`` version Triton serves).

Items are sent as many concurrent single-item requests rather than client-side batches: Triton's dynamic
batcher then forms the batches it is configured for, exactly as it does for serving traffic, and the
build exercises the same request shape (``text`` ``[1, 1]`` BYTES) as the retrieval service.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from services.common.triton_clients import tool_triton_settings, triton_client
from services.core.ann import AUTO
from services.core.catalog import Catalog, DataFormatError, item_text, read_interactions
from services.core.contracts import (
    EMBEDDING_OUTPUT,
    SEQUENCE_ENCODER,
    SEQUENCE_ITEM_IDS_FILE,
    SEQUENCE_ITEM_VECTORS_FILE,
    TEXT_ENCODER,
    TEXT_INPUT,
)
from services.core.index import DOT, write_item_index
from tools.core.files import atomic_output_dir
from tools.train.intent import choose_l2, fit_intent_model, intent_examples

TEXT_ENCODER_MODEL = TEXT_ENCODER
log = logging.getLogger(__name__)


class IndexBuildError(RuntimeError):
    """The text encoder is not available or answered inconsistently."""


async def _encode_one(
    client: grpcclient.InferenceServerClient,
    text: str,
    *,
    model_name: str,
    model_version: str,
    timeout_s: float,
) -> tuple[np.ndarray, str]:
    text_input = grpcclient.InferInput(TEXT_INPUT, [1, 1], "BYTES")
    text_input.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    result = await client.infer(
        model_name,
        [text_input],
        model_version=model_version,
        outputs=[grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)],
        client_timeout=timeout_s,
    )
    embedding = result.as_numpy(EMBEDDING_OUTPUT)  # [1, dim]
    return embedding.reshape(-1), result.get_response().model_version


async def encode_texts(
    client: grpcclient.InferenceServerClient,
    texts: Sequence[str],
    *,
    model_name: str = TEXT_ENCODER_MODEL,
    model_version: str = "",
    concurrency: int = 32,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """Embed ``texts`` with one request each, at most ``concurrency`` in flight.

    A fixed pool of workers pulls positions from a queue, so memory stays flat for any catalog size.

    Args:
        client: An open Triton gRPC aio client.
        texts: Texts to embed.
        model_name: Triton model name.
        model_version: Version to request; "" lets Triton choose (its version policy).
        concurrency: Requests in flight; enough to fill Triton's dynamic batches.
        timeout_s: Deadline of each request.
        progress: Show a tqdm progress bar.

    Returns:
        ``([len(texts), dim] float32, model version that answered)``.

    Raises:
        IndexBuildError: a request failed, the output shape varied, or different versions answered.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), ""
    out: list[np.ndarray | None] = [None] * len(texts)
    versions: set[str] = set()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for pos in range(len(texts)):
        queue.put_nowait(pos)
    bar = tqdm(total=len(texts), desc="embedding items", unit="item", disable=not progress)

    async def worker() -> None:
        while True:
            try:
                pos = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                vector, version = await _encode_one(
                    client, texts[pos], model_name=model_name, model_version=model_version, timeout_s=timeout_s
                )
            except InferenceServerException as exc:
                raise IndexBuildError(f"{model_name} failed on text {pos} ({texts[pos][:60]!r}): {exc}") from exc
            out[pos] = vector
            versions.add(version)
            bar.update(1)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(concurrency, len(texts))):
                tg.create_task(worker())
    except* IndexBuildError as group:
        raise group.exceptions[0] from None
    finally:
        bar.close()
    if len(versions) > 1:
        # A model reload mid-build would mix two embedding spaces in one index.
        raise IndexBuildError(f"{model_name} answered with several versions {sorted(versions)}; rebuild")
    dims = {v.shape for v in out if v is not None}
    if len(dims) > 1:
        raise IndexBuildError(f"{model_name} returned embeddings of several shapes {sorted(dims)}")
    return np.stack(out).astype(np.float32), versions.pop()


def popularity_counts(catalog: Catalog, train_path: Path) -> list[int]:
    """Training interaction count per catalog item, in catalog order.

    Raises:
        DataFormatError: the training file names items the catalog lacks (mismatched files).
    """
    counts = Counter(r.item_id for r in read_interactions(train_path))
    unknown = [i for i in counts if i not in catalog]
    if unknown:
        raise DataFormatError(f"{train_path}: {len(unknown)} item ids are not in the catalog, e.g. {unknown[:5]}")
    return [counts.get(item.item_id, 0) for item in catalog]


async def build_index_async(
    catalog_path: Path,
    train_path: Path,
    out_dir: Path,
    triton_grpc_addr: str,
    *,
    batch_concurrency: int = 32,
    timeout_s: float = 60.0,
    model_name: str = TEXT_ENCODER_MODEL,
    model_version: str = "",
    progress: bool = True,
    index_type: str = AUTO,
) -> Path:
    """Embed every catalog item with Triton's text encoder and write the FAISS index atomically.

    Args:
        catalog_path: Catalog JSON Lines file.
        train_path: Training interactions CSV (for the popularity fallback counts).
        out_dir: Index folder (``items.faiss`` + ``items.json``), replaced as a whole.
        triton_grpc_addr: Triton gRPC address, ``host:port`` (TLS from ``INSTRUCTREC_TRITON__TLS__*``).
        batch_concurrency: Requests in flight; Triton's dynamic batcher forms the batches.
        timeout_s: Deadline of each request, in seconds.
        model_name: Triton model that embeds text.
        model_version: Model version to request; "" lets Triton choose. The version that answered is
            recorded either way.
        progress: Show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        IndexBuildError: Triton or the model is unavailable, or answered inconsistently.
        DataFormatError: the catalog or training file is malformed or they disagree.
    """
    catalog = Catalog.load(catalog_path)
    if not len(catalog):
        raise DataFormatError(f"{catalog_path} has no items")
    popularity = popularity_counts(catalog, train_path)
    client = triton_client(tool_triton_settings(triton_grpc_addr))
    try:
        try:
            ready = await client.is_model_ready(model_name, model_version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise IndexBuildError(f"Triton at {triton_grpc_addr} is not reachable: {exc}") from exc
        if not ready:
            raise IndexBuildError(f"model {model_name!r} (version {model_version or 'default'}) is not ready "
                                  f"on Triton at {triton_grpc_addr}")
        vectors, version = await encode_texts(
            client,
            [item_text(item) for item in catalog],
            model_name=model_name,
            model_version=model_version,
            concurrency=batch_concurrency,
            timeout_s=timeout_s,
            progress=progress,
        )
        # The intent heads read query embeddings of this same encoder version (retrieval pins it).
        examples, heads = intent_examples(catalog)
        intent_vectors, intent_version = (await encode_texts(
            client, [e.text for e in examples], model_name=model_name, model_version=version,
            concurrency=batch_concurrency, timeout_s=timeout_s, progress=False,
        )) if heads else (None, version)
    finally:
        await client.close()
    if intent_version != version:
        raise IndexBuildError(f"{model_name} answered version {intent_version} for the intent examples, "
                              f"{version} for the items")
    intent = None
    if heads:
        l2, accuracy = choose_l2(intent_vectors, examples, heads)
        log.info("intent heads: L2 %g (held-out paraphrase accuracy %s)", l2,
                 {k: round(v, 3) for k, v in accuracy.items()})
        intent = fit_intent_model(intent_vectors, examples, heads, encoder_version=version, l2=l2)
    with atomic_output_dir(out_dir) as tmp:
        info = write_item_index(tmp, [item.item_id for item in catalog], vectors, model_version=version,
                                popularity=popularity, index_type=index_type)
        log.info("text index: %d items, %s", len(catalog), info.to_json())
        if intent is not None:
            intent.save(tmp)
    return Path(out_dir)


def build_index(catalog_path: Path, train_path: Path, out_dir: Path, triton_grpc_addr: str, **options: Any) -> Path:
    """:func:`build_index_async` run to completion (``options``: its keyword arguments)."""
    return asyncio.run(build_index_async(catalog_path, train_path, out_dir, triton_grpc_addr, **options))


async def served_version(client: grpcclient.InferenceServerClient, model_name: str, timeout_s: float) -> str:
    """The newest version of ``model_name`` Triton reports ready.

    Raises:
        IndexBuildError: Triton is unreachable or serves no ready version of the model.
    """
    try:
        metadata = await client.get_model_metadata(model_name, as_json=True, client_timeout=timeout_s)
    except InferenceServerException as exc:
        raise IndexBuildError(f"model {model_name!r} is not served: {exc.message() or exc}") from exc
    versions = []
    for version in metadata.get("versions", []):
        if await client.is_model_ready(model_name, version, client_timeout=timeout_s):
            versions.append(version)
    if not versions:
        raise IndexBuildError(f"model {model_name!r} has no ready version on Triton")
    return max(versions, key=int)


async def build_sequence_index_async(
    catalog_path: Path,
    train_path: Path,
    out_dir: Path,
    triton_grpc_addr: str,
    repository: Path,
    *,
    model_name: str = SEQUENCE_ENCODER,
    model_version: str = "",
    timeout_s: float = 30.0,
    min_catalog_coverage: float = 0.5,
    index_type: str = AUTO,
) -> Path:
    """Index the item vectors of the sequence model version Triton serves (``model_version`` or the newest).

    The vectors are the ones that version's export wrote into its folder of the model repository (the item
    side of the dot product; the user side is what Triton computes for a history), so a user vector from
    version N is only ever searched against the index of version N. Items the model does not know (added to
    the catalog after training) are left out: retrieval reaches them through the text index.

    A model that knows fewer than ``min_catalog_coverage`` of the catalog's items was trained for another
    catalog (or before most of this one existed) and is refused, never indexed silently: train one on this data
    set (``instructrec bootstrap``).

    Raises:
        IndexBuildError: the model is not served, its version folder lacks the item vectors, or it does not
            cover the catalog.
    """
    import json

    catalog = Catalog.load(catalog_path)
    popularity = dict(zip((item.item_id for item in catalog), popularity_counts(catalog, train_path)))
    client = triton_client(tool_triton_settings(triton_grpc_addr))
    try:
        version = model_version or await served_version(client, model_name, timeout_s)
        if not await client.is_model_ready(model_name, version, client_timeout=timeout_s):
            raise IndexBuildError(f"model {model_name!r} version {version} is not ready on Triton")
    finally:
        await client.close()
    folder = Path(repository) / model_name / version
    try:
        vocab = json.loads((folder / SEQUENCE_ITEM_IDS_FILE).read_text())
        vectors = np.load(folder / SEQUENCE_ITEM_VECTORS_FILE)  # [len(vocab) + 1, H], row 0 padding
    except (OSError, ValueError) as exc:
        raise IndexBuildError(f"{folder} has no readable item vectors: {exc}") from exc
    if vectors.shape[0] != len(vocab) + 1:
        raise IndexBuildError(f"{folder}: {vectors.shape[0]} item vectors for {len(vocab)} item ids")
    rows = [(n, item) for n, item in enumerate(vocab, start=1) if item in catalog]
    if len(rows) < min_catalog_coverage * len(catalog):
        raise IndexBuildError(
            f"{folder}: the sequence model knows {len(rows)} of the catalog's {len(catalog)} items (and "
            f"{len(vocab) - len(rows)} items the catalog lacks): it was trained for another catalog. Train one on "
            f"this data set (`instructrec bootstrap`), or serve it without a sequence index")
    with atomic_output_dir(out_dir) as tmp:
        info = write_item_index(tmp, [item for _, item in rows], vectors[[n for n, _ in rows]],
                                model_version=version, model_name=model_name, metric=DOT,
                                popularity=[popularity[item] for _, item in rows], index_type=index_type)
        log.info("sequence index: %d items, %s", len(rows), info.to_json())
    return Path(out_dir)


def reindex(directory: Path, index_type: str = AUTO) -> Path:
    """Rebuild an index folder's FAISS structure from the vectors it stores, calling no model: after a change to how
    the structure is chosen or its recall measured (``services/core/ann.py``), without encoding the catalog again
    (a 10^6-item text index takes half an hour to encode on 2 cores). The other files (the intent heads) are kept;
    the folder is swapped in whole."""
    import shutil

    from services.core.index import INDEX_FILE, META_FILE, ItemIndex

    directory = Path(directory)
    old = ItemIndex.load(directory)
    vectors = old.vectors_for(old.item_ids)
    built_at = datetime.fromisoformat(old.built_at) if old.built_at else None
    with atomic_output_dir(directory) as tmp:
        info = write_item_index(tmp, old.item_ids, vectors, model_version=old.model_version,
                                model_name=old.model_name, metric=old.metric, popularity=old.popularity,
                                built_at=built_at, index_type=index_type)
        for path in directory.iterdir():
            if path.is_file() and path.name not in (INDEX_FILE, META_FILE):
                shutil.copy2(path, tmp / path.name)
        log.info("%s re-indexed: %d items, %s", directory, len(old.item_ids), info.to_json())
    return directory
