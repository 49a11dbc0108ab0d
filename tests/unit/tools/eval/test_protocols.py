from services.core.catalog import Catalog, Interaction, Item, write_interactions
from tools.core.split import load_split
from tools.eval.protocols import popularity_scorer, random_candidates, rank_cases


def _write(tmp_path):
    Catalog({str(i): Item(str(i), f"M{i}") for i in range(1, 31)}).save(tmp_path / "items.jsonl")
    train = [Interaction("u1", "1", 1), Interaction("u1", "2", 2), Interaction("u2", "1", 1),
             Interaction("u2", "3", 2), Interaction("u3", "1", 1)]
    write_interactions(tmp_path / "train.csv", train)
    write_interactions(tmp_path / "valid.csv", [Interaction("u1", "4", 3), Interaction("u2", "5", 3)])
    write_interactions(tmp_path / "test.csv", [Interaction("u1", "6", 4), Interaction("u2", "7", 4),
                                               Interaction("u3", "8", 4)])


def test_test_history_includes_the_validation_item_and_negatives_are_unseen(tmp_path):
    _write(tmp_path)
    split = load_split(tmp_path)
    u1 = next(c for c in split.test_cases if c.user_id == "u1")
    assert u1.history == ("1", "2", "4") and u1.target == "6"
    assert [c.user_id for c in split.valid_cases] == ["u1", "u2"]
    candidates = random_candidates(split, split.test_cases)
    assert all(len(c) == 10 and len(set(c)) == 10 for c in candidates)
    for case, cands in zip(split.test_cases, candidates):
        assert case.target in cands and not (set(cands) - {case.target}) & case.seen
    assert candidates == random_candidates(split, split.test_cases)  # seeded: the same every run


def test_popularity_ranks_by_training_counts(tmp_path):
    _write(tmp_path)
    split = load_split(tmp_path)
    case = split.test_cases[0]
    ranks = rank_cases([case], [[case.target, "1", "2"]], popularity_scorer(split))
    assert ranks == [2]  # item 1 (3 interactions) and item 2 (1) beat a target never seen in training
