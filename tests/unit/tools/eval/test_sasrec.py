import random

from tools.eval.metrics import rank_of
from tools.eval.sasrec import SASRecConfig, SASRecRecommender


def test_sasrec_learns_a_deterministic_successor_pattern():
    # Every user walks the same cycle of 40 items from a random start: the next item is always the successor.
    items = [str(i) for i in range(40)]
    rng = random.Random(0)
    sequences = []
    for _ in range(200):
        start = rng.randrange(40)
        sequences.append([items[(start + t) % 40] for t in range(rng.randrange(6, 15))])
    train = [s[:-1] for s in sequences]
    valid = [(s[:-1], s[-1]) for s in sequences[:20]]
    model = SASRecRecommender(items, SASRecConfig(max_len=10, hidden=32, epochs=40, patience=40, dropout=0.0))
    record = model.fit(train, valid)
    assert record["best_valid_HR@10"] > 0.9
    history = ["3", "4", "5"]
    candidates = ["6", "0", "9", "2", "30", "17"]
    assert rank_of(model.score(history, candidates), 0) == 0
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"]
