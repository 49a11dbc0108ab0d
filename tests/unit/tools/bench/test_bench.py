"""Pure logic of `instructrec bench`: percentiles, Triton statistics deltas, ratios, the request mix, configs."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from services.core.contracts import FUSE_RETRIEVAL_SCORES
from services.gateway.settings import GatewaySettings
from tools.bench.config import BenchConfig
from tools.bench.control import (
    apply_settings,
    is_gpu_config,
    on_gpu,
    parse_settings,
    without_dynamic_batching,
)
from tools.bench.report import derive_results
from tools.bench.stats import (
    CallRecord,
    ModelCounters,
    RequestMix,
    batching_ratios,
    best_point,
    jsonable,
    model_delta,
    overhead_ratios,
    parse_int_list,
    parse_mix,
    percentile,
    point_summary,
    ratio,
    summarize,
)


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], list(range(1, 11)), list(np.linspace(0, 1, 37) ** 2)])
@pytest.mark.parametrize("q", [0, 1, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(values, q) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan_and_q_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_count_mean_percentiles_and_max() -> None:
    s = summarize([10.0, 20.0, 30.0, 40.0])
    assert s["count"] == 4 and s["mean_ms"] == 25.0 and s["p50_ms"] == 25.0 and s["max_ms"] == 40.0
    assert s["p99_ms"] == pytest.approx(39.7)
    assert math.isnan(summarize([])["p50_ms"])


def _stats(inference: int, executions: int, queue_ns: int, batches: dict[int, tuple[int, int]], fail: int = 0) -> dict:
    """A ``get_inference_statistics(as_json=True)`` answer (values as strings, as Triton sends them)."""
    return {"model_stats": [{
        "name": "ranker", "version": "1",
        "inference_count": str(inference), "execution_count": str(executions),
        "inference_stats": {"success": {"count": str(inference), "ns": "1"},
                            "fail": {"count": str(fail)} if fail else {},
                            "queue": {"count": str(inference), "ns": str(queue_ns)},
                            "compute_infer": {"count": str(inference), "ns": "999"}},
        "batch_stats": [{"batch_size": str(size), "compute_infer": {"count": str(n), "ns": str(ns)}}
                        for size, (n, ns) in batches.items()],
    }]}


def test_model_delta_gives_mean_batch_size_queue_and_compute_per_execution() -> None:
    before = ModelCounters.from_json(_stats(10, 10, 10_000_000, {1: (10, 1_000_000_000)}))
    # 30 more requests in 6 executions: 4 of size 1, 1 of size 8, 1 of size 18; 30 ms more queue in all.
    after = ModelCounters.from_json(_stats(40, 16, 40_000_000, {1: (14, 1_400_000_000), 8: (1, 800_000_000),
                                                               18: (1, 1_800_000_000)}))
    d = model_delta(before, after)
    assert d["requests"] == 30 and d["executions"] == 6
    assert d["mean_batch_size"] == pytest.approx(5.0)
    assert d["max_batch_size"] == 18
    assert d["batch_size_executions"] == {"1": 4, "8": 1, "18": 1}
    assert d["queue_ms_mean"] == pytest.approx(1.0)  # 30 ms over 30 requests
    assert d["compute_ms_per_execution"] == pytest.approx((3_000_000_000 / 6) / 1e6)
    assert d["compute_ms_per_request"] == pytest.approx(100.0)


def test_model_delta_leaves_response_cache_hits_out_of_batch_size_and_compute() -> None:
    before = ModelCounters.from_json(_stats(0, 0, 0, {}))
    # 12 requests: 4 answered from Triton's response cache (not in inference_count), 8 run in 2 batches of 4.
    after_stats = _stats(8, 2, 0, {4: (2, 80_000_000)})
    after_stats["model_stats"][0]["inference_stats"]["cache_hit"] = {"count": "4", "ns": "4000"}
    d = model_delta(before, ModelCounters.from_json(after_stats))
    assert d["requests"] == 8 and d["cache_hits"] == 4 and d["executions"] == 2
    assert d["mean_batch_size"] == pytest.approx(4.0)
    assert d["compute_ms_per_request"] == pytest.approx(10.0)  # 80 ms over the 8 executed requests


def test_model_delta_after_a_reload_uses_the_new_counters_alone() -> None:
    before = ModelCounters.from_json(_stats(100, 50, 0, {1: (50, 5)}))
    after = ModelCounters.from_json(_stats(8, 2, 8_000_000, {4: (2, 10)}))
    d = model_delta(before, after)
    assert d["requests"] == 8 and d["executions"] == 2 and d["mean_batch_size"] == 4.0


def test_model_delta_without_traffic_is_nan_not_a_division_error() -> None:
    counters = ModelCounters.from_json(_stats(5, 5, 5, {1: (5, 5)}))
    d = model_delta(counters, counters)
    assert d["requests"] == 0 and math.isnan(d["mean_batch_size"]) and math.isnan(d["queue_ms_mean"])


def test_ratios() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))
    on = [{"concurrency": 1, "ranked_rps": 1.0}, {"concurrency": 16, "ranked_rps": 3.0}]
    off = [{"concurrency": 1, "ranked_rps": 1.0}, {"concurrency": 16, "ranked_rps": 2.0}]
    assert batching_ratios(on, off) == {"1": 1.0, "16": 1.5}
    assert best_point(on)["concurrency"] == 16
    r = overhead_ratios([110.0, 120.0, 130.0], [100.0, 100.0, 100.0])
    assert r["mean"] == pytest.approx(1.2) and r["p50"] == pytest.approx(1.2)


def test_point_summary_separates_errors_and_degraded_answers() -> None:
    records = [
        CallRecord("known", 0.0, 100.0, stages_ms={"retrieval": 10.0, "ranking": 80.0}),
        CallRecord("known+query", 0.1, 300.0, stages_ms={"retrieval": 20.0, "ranking": 250.0}),
        CallRecord("anonymous", 0.2, 50.0, degraded=True, stages_ms={"retrieval": 30.0}),
        CallRecord("known", 0.3, 5.0, code="RESOURCE_EXHAUSTED"),
        CallRecord("known", 0.3, 9.0, code="RESOURCE_EXHAUSTED"),
    ]
    s = point_summary(records, elapsed_s=2.0)
    assert s["requests"] == 5 and s["ok"] == 3 and s["degraded"] == 1
    assert s["errors_by_code"] == {"RESOURCE_EXHAUSTED": 2}
    assert s["throughput_rps"] == 1.5 and s["ranked_rps"] == 1.0
    assert s["latency"]["count"] == 3 and s["ranked_latency"]["max_ms"] == 300.0
    assert s["stages"]["retrieval"]["count"] == 3 and s["stages"]["ranking"]["mean_ms"] == 165.0
    assert set(s["by_kind"]) == {"known", "known+query", "anonymous"}


def test_parse_mix_normalises_and_rejects_nonsense() -> None:
    assert parse_mix("known=3,anonymous=1") == {"known": 0.75, "anonymous": 0.25, "candidates": 0.0}
    for bad in ("nobody=1", "known=-1", "known=x", "known=0", ""):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_parse_int_list() -> None:
    assert parse_int_list("1, 4,16,4") == [1, 4, 16]
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(ValueError):
            parse_int_list(bad)


def test_request_mix_follows_the_weights_and_is_reproducible() -> None:
    items = [str(i) for i in range(1, 201)]
    popularity = {str(i): 1000.0 if i <= 10 else 1.0 for i in range(1, 201)}
    weights = parse_mix("known=0.5,anonymous=0.2,candidates=0.3")
    mix = RequestMix(weights, ["u1", "u2", "u3"], items, popularity=popularity, query_share=0.5, seed=3)
    specs = mix.take(2000)
    kinds = Counter(s.kind for s in specs)
    assert abs(kinds["known"] / 2000 - 0.5) < 0.05 and abs(kinds["anonymous"] / 2000 - 0.2) < 0.05
    assert abs(sum(bool(s.query) for s in specs) / 2000 - 0.5) < 0.05
    for s in specs:
        if s.kind == "known":
            assert s.user_id in {"u1", "u2", "u3"} and not s.history_item_ids and not s.candidate_item_ids
        elif s.kind == "anonymous":
            assert not s.user_id and 5 <= len(s.history_item_ids) <= 15
            assert len(set(s.history_item_ids)) == len(s.history_item_ids)
        else:
            assert s.user_id and len(s.candidate_item_ids) == 20 == len(set(s.candidate_item_ids))
    # Popular items dominate anonymous histories, as in real traffic.
    drawn = Counter(i for s in specs for i in s.history_item_ids)
    assert sum(drawn[str(i)] for i in range(1, 11)) > sum(drawn.values()) / 3
    again = RequestMix(weights, ["u1", "u2", "u3"], items, popularity=popularity, query_share=0.5, seed=3).take(50)
    assert again == specs[:50]
    assert specs[0].label in {"known", "known+query", "anonymous", "anonymous+query", "candidates", "candidates+query"}


def test_request_mix_needs_known_users_for_known_kinds() -> None:
    with pytest.raises(ValueError):
        RequestMix(parse_mix("known=1"), [], [str(i) for i in range(30)])
    only_anonymous = RequestMix(parse_mix("anonymous=1"), [], [str(i) for i in range(30)], seed=1)
    assert {s.kind for s in only_anonymous.take(20)} == {"anonymous"}


def test_config_overrides_for_batching_off_and_gpu() -> None:
    config = {"name": "ranker", "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "5000"},
              "instance_group": [{"name": "ranker_0", "count": 2, "kind": "KIND_CPU"}]}
    off = without_dynamic_batching(config)
    assert "dynamic_batching" not in off and off["max_batch_size"] == 8 and "dynamic_batching" in config
    gpu = on_gpu(config)
    assert gpu["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}]
    assert is_gpu_config(gpu) and not is_gpu_config(config)


def test_derive_results_states_each_acceptance_check() -> None:
    point = {"concurrency": 16, "ranked_rps": 3.0}
    report = {
        "sweeps": {"on": [{"concurrency": 1, "ranked_rps": 1.0}, point],
                   "off": [{"concurrency": 1, "ranked_rps": 1.0}, {"concurrency": 16, "ranked_rps": 1.5}]},
        "overhead": {"requests": [{"latency_ms": 105.0, "model_only": {"total_ms": 100.0, "run_ms": 99.0}},
                                  {"latency_ms": 110.0, "model_only": {"total_ms": 100.0, "run_ms": 99.0}},
                                  {"latency_ms": 500.0}]},  # not replayed: left out of the ratio
        "model_only": {"throughput": [{"throughput_rps": 2.0}, {"throughput_rps": 4.0}]},
        "no_ranker_path": {"latency": {"p50_ms": 20.0, "count": 50}},
    }
    results = derive_results(report)
    assert results["overhead_ratio"]["mean"] == pytest.approx(1.075) and results["overhead_ms_mean"] == 7.5
    assert results["throughput_ratio"] == pytest.approx(0.75) and results["served_best_concurrency"] == 16
    assert results["batching_ratio"] == {"1": 1.0, "16": 2.0}
    acceptance = results["acceptance"]
    assert acceptance["served_c1_within_10pct_of_model_only"]["pass"] is True
    assert acceptance["batching_on_off_at_c16_at_least_1_5x"]["pass"] is True
    assert acceptance["no_ranker_path_p50_under_15ms"]["pass"] is False


def test_jsonable_makes_strict_json() -> None:
    value = {"a": math.nan, "b": [1.0, math.inf, (2, 3)], "c": CallRecord("known", 0.0, 1.0)}
    text = json.dumps(jsonable(value), allow_nan=False)
    assert json.loads(text)["a"] is None and json.loads(text)["c"]["label"] == "known"


def test_settings_override_parameters_and_batching_fields() -> None:
    settings = parse_settings(["ranker:rows_per_run=1", "ranker:max_queue_delay_us=0", "text_encoder:num_threads=2",
                               "ranker:preferred_batch_size=4/8", "ranker:instance_count=2"])
    assert settings["text_encoder"] == {"num_threads": "2"}
    config = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "5000"},
              "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
              "parameters": {"num_threads": {"string_value": "2"}}}
    new = apply_settings(config, settings["ranker"])
    assert new["parameters"] == {"num_threads": {"string_value": "2"}, "rows_per_run": {"string_value": "1"}}
    assert new["dynamic_batching"] == {"max_queue_delay_microseconds": "0", "preferred_batch_size": [4, 8]}
    assert new["instance_group"][0]["count"] == 2
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "5000"  # the original is untouched
    for bad in (["ranker"], ["nomodel:x=1"], ["ranker:x"]):
        with pytest.raises(ValueError):
            parse_settings(bad)


def test_request_mix_item_seed_changes_the_items_but_not_the_request_shapes() -> None:
    items = [str(i) for i in range(1, 301)]
    weights = parse_mix("known=0.4,anonymous=0.4,candidates=0.2")
    a = RequestMix(weights, ["u1", "u2"], items, seed=5, item_seed=1).take(200)
    b = RequestMix(weights, ["u1", "u2"], items, seed=5, item_seed=2).take(200)
    shape = [(s.kind, s.user_id, s.query, len(s.history_item_ids), len(s.candidate_item_ids)) for s in a]
    assert shape == [(s.kind, s.user_id, s.query, len(s.history_item_ids), len(s.candidate_item_ids)) for s in b]
    anonymous = [(x.history_item_ids, y.history_item_ids) for x, y in zip(a, b) if x.kind == "anonymous"]
    assert anonymous and all(x != y for x, y in anonymous)


def test_agreement_of_two_score_matrices() -> None:
    from tools.bench.models import agreement

    reference = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    candidate = np.array([[3.0, 1.0, 2.0, 0.0], [3.5, 1.0, 2.0, 3.0]])  # same top-1, then a different top-1
    result = agreement(reference, candidate, k=2)
    assert result == {"top1_agreement": 0.5, "top2_overlap": 0.5, "max_abs_diff": 3.5}


def test_the_bench_assumes_the_gateways_fusion_default() -> None:
    # The bench cannot import the gateway's settings (tools see services through core and common only), so both
    # default to the one constant; a gateway run with GATEWAY_FUSE_RETRIEVAL_SCORES=false needs the bench's flag.
    assert BenchConfig().fuse_retrieval_scores is FUSE_RETRIEVAL_SCORES
    assert GatewaySettings.model_fields["fuse_retrieval_scores"].default is FUSE_RETRIEVAL_SCORES
