"""Index build against a real Triton serving the tiny text encoder (fixtures in tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient

from services.core.catalog import Catalog, Interaction, Item, item_text, write_interactions
from services.core.index import ItemIndex
from tools.index import TEXT_ENCODER_MODEL, build_index_async, encode_texts
from tools.runtime.triton_server import TritonServer

pytestmark = pytest.mark.triton

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Western")


def _dataset(tmp_path: Path, n: int = 96) -> tuple[Path, Path, Catalog]:
    catalog = Catalog({
        str(i): Item(str(i), f"Film number {i}", 1950 + i % 50, (GENRES[i % 8], GENRES[(i * 3) % 8]))
        for i in range(n)
    })
    catalog.save(tmp_path / "items.jsonl")
    write_interactions(tmp_path / "train.csv", [Interaction(f"u{j}", str(j % 5), j) for j in range(20)])
    return tmp_path / "items.jsonl", tmp_path / "train.csv", catalog


def _batch_sizes(stats: dict) -> dict[int, int]:
    (model,) = stats["model_stats"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}


async def test_build_index_with_real_triton(tmp_path: Path, triton_server: TritonServer) -> None:
    addr = triton_server.grpc_addr
    cat_path, train_path, catalog = _dataset(tmp_path)
    client = grpcclient.InferenceServerClient(addr)
    try:
        before = _batch_sizes(await client.get_inference_statistics(TEXT_ENCODER_MODEL, as_json=True))
        out = await build_index_async(cat_path, train_path, tmp_path / "index", addr, batch_concurrency=32,
                                      progress=False)
        after = _batch_sizes(await client.get_inference_statistics(TEXT_ENCODER_MODEL, as_json=True))
        metadata = await client.get_model_metadata(TEXT_ENCODER_MODEL, as_json=True)
        probe_ids = ["0", "41", "95"]
        probes, version = await encode_texts(client, [item_text(catalog[i]) for i in probe_ids], progress=False)
    finally:
        await client.close()

    idx = ItemIndex.load(out)
    assert idx.item_ids == tuple(catalog.items)
    assert idx.dim == probes.shape[1]
    # The version recorded is the one Triton served (and lists in its metadata).
    assert idx.text_encoder_version == version
    assert version in metadata["versions"]
    vectors = idx.vectors_for(list(catalog.items))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Each item's own text finds the item itself first: rows and ids are aligned.
    for item_id, probe in zip(probe_ids, probes):
        np.testing.assert_allclose(idx.vectors_for([item_id])[0], probe, atol=1e-5)
        assert idx.search(probe, 1)[0][0] == item_id
    assert idx.popular(1) == [("0", 4.0)]
    # Concurrent single-item requests were merged by Triton's dynamic batcher.
    new = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in new.items()) >= len(catalog)
    assert max(size for size, count in new.items() if count > 0) > 1
