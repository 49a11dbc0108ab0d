"""Training examples: training part of the split only, served templates, answers that point at the target."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from services.core import prompts
from services.core.catalog import Catalog, Interaction, Item, write_interactions
from tools.data import split_leave_one_out
from tools.eval.evaluate import merge_reports
from tools.train.common import lr_lambda
from tools.train.examples import (
    HardNegatives,
    RankerMix,
    draw_samples,
    load_training_data,
    preference_example,
    ranker_example,
    retrieval_pair,
    validation_ranker_examples,
    validation_samples,
)
from tools.train.retriever import info_nce

GENRES = ("Comedy", "Drama", "Action", "Horror")


@pytest.fixture
def data(tmp_path: Path):
    catalog = Catalog({str(i): Item(str(i), f"Film {i}", 1950 + i % 50, (GENRES[i % 4],)) for i in range(1, 61)})
    catalog.save(tmp_path / "items.jsonl")
    rng = random.Random(3)
    rows = [Interaction(str(u), str(item), float(t), float(rng.randint(1, 5)))
            for u in range(1, 9) for t, item in enumerate(rng.sample(range(1, 61), 12))]
    for name, part in zip(("train", "valid", "test"), split_leave_one_out(rows)):
        write_interactions(tmp_path / f"{name}.csv", part)
    return load_training_data(tmp_path)


def test_training_samples_never_touch_the_validation_or_test_items(data):
    held_out = {(c.user_id, c.target) for c in data.split.valid_cases + data.split.test_cases}
    for sample in draw_samples(data, 300, random.Random(0)):
        sequence = data.split.train[sample.user_id]
        assert (sample.user_id, sample.target) not in held_out
        cut = len(sample.history)
        assert list(sample.history) == sequence[:cut] and sample.target == sequence[cut]


def test_ranker_examples_answer_with_the_target_label(data):
    rng = random.Random(1)
    hard = HardNegatives(list(data.catalog.items), np.random.default_rng(0).normal(size=(60, 8)))
    for sample in draw_samples(data, 60, rng):
        example = ranker_example(data, sample, rng, RankerMix(), hard)
        target = data.catalog[sample.target].display_title()
        if example.task == "T3":
            line = f"{prompts.LABELS[example.answer]}. {target}"
            assert line in example.prompt and example.num_choices in (10, 20)
            # no candidate the user has already seen in the training part, other than the target
            titles = [ln.split(". ", 1)[1] for ln in example.prompt.splitlines() if ln[:3].rstrip(".").isalpha()
                      and ". " in ln and ln[0] in prompts.LABELS and ln[1] == "."]
            seen = {prompts.candidate_text(data.catalog[i]) for i in sample.seen} - {
                prompts.candidate_text(data.catalog[sample.target])}
            assert not seen & set(titles)
        else:
            assert example.num_choices == 2 and (target in example.prompt) == (example.answer == 1)
        assert example.template_id in prompts.TEMPLATES_BY_ID


def test_validation_examples_use_the_served_templates_on_validation_targets(data):
    examples = validation_ranker_examples(data, 0)
    assert len(examples) == len(data.split.valid_cases)
    assert {e.template_id for e in examples} == {"P1-I0-T3-0", "P2-I0-T3-0"}
    for example, case in zip(examples, data.split.valid_cases):
        assert f"{prompts.LABELS[example.answer]}. {data.catalog[case.target].display_title()}" in example.prompt


def test_retrieval_pairs_are_the_served_retrieval_text_and_the_item_text(data):
    rng = random.Random(2)
    sample = draw_samples(data, 1, rng)[0]
    pair = retrieval_pair(data, sample, random.Random(5), intention_share=0.0)
    recent = [data.catalog[i] for i in sample.history[-10:]]
    assert pair.query == prompts.retrieval_text("", recent)
    assert pair.item.startswith(data.catalog[sample.target].display_title())


def test_preference_examples_pair_the_served_prompt_with_the_teacher_statement(data):
    sample = draw_samples(data, 1, random.Random(4))[0]
    example = preference_example(data, sample)
    recent = [data.catalog[i] for i in sample.history[-10:]]
    assert example.prompt == prompts.render_preference_prompt(recent)
    assert example.target.startswith(("Enjoys", "Tends", "Has no"))


def test_info_nce_ignores_duplicate_targets_as_negatives():
    # two requests with the same target (rows 0 and 1): each other's item must not count as a negative
    e = torch.eye(8)
    queries = torch.stack([e[0], e[0], e[2], e[3]])
    items = torch.stack([e[0], e[0], e[2], e[3]])
    assert info_nce(queries, items, ["a", "a", "b", "c"], 0.05).item() < 1e-3
    assert info_nce(queries, items, ["a", "x", "b", "c"], 0.05).item() > 0.3  # unmasked: a wrong negative


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    f = lr_lambda(warmup=10, total=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(110) == pytest.approx(0.1) and f(60) == pytest.approx(0.55)


def test_merging_reports_keeps_both_served_systems_and_refuses_other_users():
    first = {"users": 5, "data_dir": "d", "seed": 0, "seconds": 1,
             "results": {"1": {"random": {"HR@1": 0.1}, "zero-shot": {"HR@1": 0.2}}}, "commands": ["a"],
             "sasrec": {"best_valid_HR@10": 0.1}}
    second = {"users": 5, "data_dir": "d", "seed": 0, "seconds": 2,
              "results": {"1": {"tuned": {"HR@1": 0.4}}}, "commands": ["b"], "sasrec": None}
    merged = merge_reports(first, second)
    assert set(merged["results"]["1"]) == {"random", "zero-shot", "tuned"} and merged["commands"] == ["a", "b"]
    assert merged["sasrec"] == first["sasrec"]  # a run without baselines keeps the earlier SASRec record
    # The first run's protocol-2 lists stay the report's reference.
    lists = {"retriever": "zero-shot", "lists": {"u1": ["1", "2"]}}
    assert merge_reports({**first, "protocol2_lists": lists}, second)["protocol2_lists"] == lists
    # An earlier protocol 2 without stored lists: an appended run's own lists are not the report's.
    with_p2 = {**first, "results": {**first["results"], "2": {"random": {"HR@1": 0.1}}}}
    assert "protocol2_lists" not in merge_reports(with_p2, {**second, "protocol2_lists": lists})
    with pytest.raises(ValueError, match="users differs"):
        merge_reports(first, {**second, "users": 6})


def test_validation_never_looks_at_the_test_item_nor_reuses_the_test_negatives(data):
    from tools.eval.protocols import random_candidates

    samples = validation_samples(data, 0)
    tests = {c.user_id: c for c in data.split.test_cases}
    for sample in samples:
        assert sample.seen == frozenset(sample.history) | {sample.target}
    cases = [tests[s.user_id] for s in samples]
    examples = validation_ranker_examples(data, 0)
    for sample, example, test_list in zip(samples, examples, random_candidates(data.split, cases, seed=0)):
        target = tests[sample.user_id].target
        test_negatives = {prompts.candidate_text(data.catalog[i]) for i in test_list if i != target}
        assert not all(f". {text}" in example.prompt for text in test_negatives), sample.user_id
