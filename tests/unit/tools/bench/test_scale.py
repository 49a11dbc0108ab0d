"""bench-scale's pure parts: sizes, the half-catalog exclusion, process roles, the report's shape and ratios."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.core.catalog import Catalog
from tools.bench import scale, scale_probe, scale_report
from tools.synthetic import ShopSpec, write_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    write_shop(out, ShopSpec(items=300, users=50))
    return out


def test_sizes_parse_as_items_and_users() -> None:
    assert scale.parse_sizes("10000:100000, 500") == (scale.Size(10_000, 100_000), scale.Size(500, 500))
    assert scale.Size(10, 20).name == "shop-10-20"


def test_the_exclusion_names_frequent_values_covering_about_half_the_catalog(shop: Path) -> None:
    catalog = Catalog.load(shop / "items.jsonl")
    attribute, values = scale_probe.categorical_attribute(catalog)
    assert attribute == "category" and values == sorted(values, key=lambda v: -v[1])
    excluded, share = scale_probe.exclusion(catalog, attribute, values)
    assert 0.35 <= share <= 0.65 and excluded == tuple(v for v, _ in values[:len(excluded)])
    counted = sum(1 for item in catalog if item.attributes["category"] in excluded) / len(catalog)
    assert share == pytest.approx(counted)


def test_the_workload_gives_each_kind_its_own_users(shop: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.jsonl").write_text((shop / "items.jsonl").read_text())
    (data / "train.csv").write_text((shop / "interactions.csv").read_text())
    (data / "synonyms.json").write_text((shop / "synonyms.json").read_text())
    work = scale_probe.workload(data, requests=5)
    users = [r.user_id for kind in scale_probe.KINDS for r in work.requests[kind]]
    assert len(users) == len(set(users)) == 4 * (5 + scale_probe.WARM_UP)
    assert all(r.query for r in work.requests["query"]) and not any(r.query for r in work.requests["no_query"])
    assert {len(r.filters) for r in work.requests["filters"]} == {1}
    assert all(r.query.startswith("no ") for r in work.requests["exclude_half"])
    assert len({r.query for r in work.requests["exclude_half"]}) == len(work.requests["exclude_half"])


def test_process_roles_and_memory_of_this_process_tree() -> None:
    assert scale_probe._role(["/opt/tritonserver/bin/tritonserver", "--model-repository=x"], False) == "triton"
    assert scale_probe._role(["python", "-m", "services.retrieval"], False) == "retrieval"
    assert scale_probe._role(["python", "-m", "tools.cli", "run"], True) == "supervisor"
    assert scale_probe._role(["sleep", "1"], False) is None
    stub = ["/x/backends/python/triton_python_backend_stub", "/repo/text_encoder/2/model.py", "shm", "1"]
    assert scale_probe._role(stub, False) == "triton:text_encoder"
    memory = scale_probe.process_memory(os.getpid())
    assert memory["supervisor"]["rss_mib"] > 0 and memory["supervisor"]["peak_mib"] >= memory["supervisor"]["rss_mib"]


def _run(p50: float) -> dict:
    return {kind: {"c1": {"p50_ms": p50, "p99_ms": 2 * p50, "read_share": 1.0},
                   "c8": {"answers_per_s": 10.0}} for kind in scale_probe.KINDS}


def test_the_report_has_the_issues_shape_and_ratios(tmp_path: Path) -> None:
    report = {"command": "instructrec bench-scale", "machine": {"cpus": 2, "cpu_flags": ["avx2"]},
              "baseline_run": {"items": 1682, "kinds": _run(10.0), "memory": {}, "ready_s": 20.0},
              "sizes": [{"items": 10_000, "users": 100_000, "kinds": _run(25.0), "ready_s": 30.0,
                         "steps_s": {"indexes": 12.0},
                         "indexes": {"text": {"type": "flat", "recall_at_20": 1.0},
                                     "sequence": {"type": "hnsw", "recall_at_20": 0.97}},
                         "memory": {"retrieval": {"rss_mib": 900.0, "peak_mib": 950.0},
                                    "triton": {"rss_mib": 1500.0, "peak_mib": 1600.0}}}]}
    out = scale_report.write_report(scale_report.summarise(report), tmp_path / "scale")
    written = json.loads((tmp_path / "scale.json").read_text())
    assert written["baseline"] == {"items": 1682, "no_query_p50_ms": 10.0, "query_p50_ms": 10.0,
                                   "exclude_half_p50_ms": 10.0, "filters_p50_ms": 10.0}
    size = written["sizes"][0]
    assert {k: size[k] for k in ("items", "users", "no_query_p50_ms", "query_p50_ms", "exclude_half_p50_ms",
                                 "ready_s", "index_build_s", "recall_at_20_vs_exact")} == {
        "items": 10_000, "users": 100_000, "no_query_p50_ms": 25.0, "query_p50_ms": 25.0,
        "exclude_half_p50_ms": 25.0, "ready_s": 30.0, "index_build_s": 12.0, "recall_at_20_vs_exact": 0.97}
    assert size["max_rss_mib"] == {"retrieval": 950.0, "triton": 1600.0}
    assert size["ratio_to_baseline"] == {"no_query": 2.5, "query": 2.5, "exclude_half": 2.5}
    assert out["sizes"][0]["items"] == 10_000
    table = (tmp_path / "scale.md").read_text()
    assert "| MovieLens-100K |" in table and "| 10,000 | 100,000 |" in table and "triton 1600.0" in table
    assert (tmp_path / "scale.png").stat().st_size > 0
