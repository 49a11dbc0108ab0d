"""The faithfulness report: teacher statements for the served history, comparisons, contradictions before/after."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from services.core.catalog import Catalog, Interaction, Item, write_interactions
from tools.core.split import Case
from tools.data import prepare_custom
from tools.eval.faithfulness import FaithfulnessConfig, compare, rescore_report, run_faithfulness, sample_cases

GENRES = ("Comedy", "Drama", "Horror", "Sci-Fi")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(3)
    catalog = Catalog({str(i): Item(str(i), f"Film {i}", 1970 + 10 * (i % 3), (GENRES[i % 4],))
                       for i in range(1, 41)})
    catalog.save(folder / "items.jsonl")
    rows = []
    for u in range(1, 7):
        # Genres in turn, so any 10 recent items hold each genre; comedy always rated 5, horror always 1: the
        # teacher likes comedy and dislikes horror for every user.
        by_genre = [rng.sample([i for i in range(1, 41) if i % 4 == g], 4) for g in range(4)]
        for t in range(14):
            item = by_genre[t % 4][t // 4]
            genre = catalog[str(item)].genres[0]
            rows.append(Interaction(str(u), str(item), float(t), {"Comedy": 5.0, "Horror": 1.0}.get(genre, 3.0)))
    write_interactions(folder / "train.csv", rows)
    return prepare_custom(folder / "items.jsonl", folder / "train.csv", tmp_path_factory.mktemp("split"))


def test_compare_counts_values_over_users() -> None:
    got = ["Enjoys comedy and drama films, mostly from the 1990s. Tends to rate horror low.", "Enjoys drama films."]
    want = ["Enjoys comedy films, mostly from the 1990s. Tends to rate sci-fi low.", "Enjoys drama films."]
    c = compare(got, want, GENRES)
    assert c["likes"]["precision"]["value"] == pytest.approx(2 / 3)  # comedy, drama, drama vs comedy, drama
    assert c["likes"]["recall"]["value"] == 1.0
    assert c["dislikes"]["precision"]["value"] == 0.0 and c["dislikes"]["recall"]["value"] == 0.0
    assert c["decades"]["same_set"]["value"] == 1.0 and c["exact_match"]["value"] == 0.5


def test_a_sample_is_seeded_and_keeps_the_order() -> None:
    cases = [Case(str(n), (), "1", frozenset()) for n in range(50)]
    a, b = sample_cases(cases, 10, seed=1), sample_cases(cases, 10, seed=1)
    assert a == b and len(a) == 10 and a == sorted(a, key=lambda c: int(c.user_id))
    assert sample_cases(cases, None, 0) == cases


def test_the_report_measures_the_generator_against_the_teacher_and_cleaning(split_dir: Path, tmp_path: Path) -> None:
    prompts_seen: list[str] = []

    def generate(texts: list[str]) -> list[str]:
        prompts_seen.extend(texts)
        # Every other statement contradicts itself; generation budgets cut the last sentence short.
        return ["Enjoys comedy and horror films. Tends to rate horror low. Enjoys" if n % 2 else
                "Enjoys comedy films. Tends to rate horror low." for n in range(len(texts))]

    report = run_faithfulness(FaithfulnessConfig(data_dir=split_dir, out_dir=tmp_path, batch_size=4), generate)
    assert report["users"] == report["population"] == 6 and not report["sampled"]
    assert len(prompts_seen) == 6 and all("Do not list titles" in p for p in prompts_seen)
    assert all(s["teacher"].startswith("Enjoys comedy") and "horror" in s["teacher"] for s in report["statements"])
    c = report["contradictions"]
    assert c["before_cleaning"]["value"] == 0.5 and c["after_cleaning"]["value"] == 0.0
    assert c["teacher"]["value"] == 0.0
    # Cleaning drops the dislike that contradicts a like; that dislike was right, so dislike recall falls.
    assert report["generated_vs_teacher"]["dislikes"]["recall"]["value"] == 1.0
    assert report["cleaned_vs_teacher"]["dislikes"]["recall"]["value"] == 0.5
    assert report["blind_teacher_vs_teacher"]["dislikes"]["stated"]["value"] == 0.0
    saved = json.loads((tmp_path / "faithfulness.json").read_text())
    assert saved["contradictions"] == c
    assert "| generated statements | 0.500" in (tmp_path / "faithfulness.md").read_text()

    again = rescore_report(tmp_path / "faithfulness.json", split_dir, tmp_path / "again")
    assert again["contradictions"] == c and (tmp_path / "again" / "faithfulness.md").is_file()
