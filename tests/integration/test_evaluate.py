"""`instructrec evaluate` against the live services (tiny models) and the in-process baselines."""

from __future__ import annotations

import pytest

from tools.data import prepare_custom
from tools.eval.evaluate import EvalConfig, evaluate, write_report
from tools.eval.hard_negatives import SOURCE as HARD_NEGATIVE_SOURCE

pytestmark = pytest.mark.triton


async def test_three_protocols_through_the_served_system_and_baselines(stack, dataset, tiny_sequence_model, tmp_path):
    # The synthetic interactions become a leave-one-out split of their own; the served calls pass the
    # history explicitly, so the stack's interaction store plays no part.
    split_dir = prepare_custom(dataset / "items.jsonl", dataset / "train.csv", tmp_path / "split")
    config = EvalConfig(
        data_dir=split_dir, gateway_addr=stack.addr("gateway"), retrieval_addr=stack.addr("retrieval"),
        served_name="tiny", max_users=6, sequence_model=tiny_sequence_model,
    )
    report = await evaluate(config)
    results = report["results"]
    assert report["users"] == 6 and set(results) == {"1", "2", "3"}
    for protocol in ("1", "2"):
        assert set(results[protocol]) == {"random", "popularity", "SASRec", "tiny"}
        for metrics in results[protocol].values():
            assert metrics["users"] == 6 and 0 <= metrics["HR@1"] <= metrics["HR@3"] <= metrics["HR@5"] <= 1
            assert metrics["NDCG@3"] <= metrics["HR@3"]
    assert set(results["3"]) == {"popularity", "SASRec", "tiny", "tiny: retriever only"}
    retriever = results["3"]["tiny: retriever only"]
    assert 0 <= retriever["HR@10"] <= retriever["Recall@20"] <= 1

    # Protocol 2's lists are stored; a system added later ranks exactly those (no retrieval service needed).
    lists = report["protocol2_lists"]
    # The hard negatives come from the base MiniLM, which the served stack does not use.
    assert lists["retriever"] == HARD_NEGATIVE_SOURCE and len(lists["lists"]) == 6
    again = await evaluate(EvalConfig(
        data_dir=split_dir, gateway_addr=stack.addr("gateway"), retrieval_addr=None, served_name="tiny again",
        protocols=(2,), max_users=6, baselines=False, hard_negative_lists=lists["lists"]))
    assert again["results"]["2"]["tiny again"] == results["2"]["tiny"]
    assert "protocol2_lists" not in again
    with pytest.raises(ValueError, match="no list for users"):
        await evaluate(EvalConfig(data_dir=split_dir, gateway_addr=stack.addr("gateway"), protocols=(2,),
                                  max_users=6, baselines=False,
                                  hard_negative_lists=dict(list(lists["lists"].items())[:3])))

    path = write_report(report, tmp_path / "report", "instructrec evaluate --max-users 6")
    text = path.read_text()
    assert "## Protocol 1" in text and "| tiny |" in text and "Recall@20" in text
    assert "9 hard negatives from base all-MiniLM-L6-v2" in text
    assert (tmp_path / "report" / "protocol1_hr.png").stat().st_size > 1000
