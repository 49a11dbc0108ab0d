"""The served training bank of the request reader keeps every evaluation bank held out, and its clauses are
what the grammar says: each frame of one polarity, every slot labelled."""

from __future__ import annotations

from tools.train.reader_examples import TRAINING_BANK
from tools.train.reader_frames import composed_clauses, served_bank


def evaluation_clause_texts() -> set[str]:
    from tools.eval import (
        reading_bank,
        reading_bank_blind,
        reading_bank_fifth,
        reading_bank_fourth,
        reading_bank_seventh,
        reading_bank_sixth,
    )

    banks = (reading_bank.EVALUATION_BANK, reading_bank.SECOND_EVALUATION_BANK,
             reading_bank_blind.THIRD_EVALUATION_BANK, reading_bank_fourth.FOURTH_EVALUATION_BANK,
             reading_bank_fifth.FIFTH_EVALUATION_BANK, reading_bank_sixth.SIXTH_EVALUATION_BANK,
             reading_bank_seventh.SEVENTH_EVALUATION_BANK)
    return {c.text for bank in banks for c in bank.clauses}


def test_the_served_bank_shares_no_clause_with_any_evaluation_bank() -> None:
    held_out = evaluation_clause_texts()
    assert len(held_out) > 400
    bank = served_bank()
    assert not {c.text for c in bank.clauses} & held_out
    assert {c.construct for c in bank.clauses} == {c.construct for c in TRAINING_BANK.clauses}


def test_refusals_exclude_and_wishes_want() -> None:
    clauses = composed_clauses()
    negation = [c for c in clauses if c.construct == "negation"]
    assert len(negation) > 300 and all("{x}" in c.text for c in negation)
    assert all("{x}" not in c.text for c in clauses if c.construct != "negation")
    assert {c.text for c in clauses} >= {"{x} leave me cold", "i can't stomach {x}", "i wouldn't say no to {w}"}


def test_two_thirds_of_each_constructs_draws_are_served_clauses() -> None:
    bank = served_bank()
    for construct in ("negation", "plain", "references"):
        served = sum(c in TRAINING_BANK.clauses for c in bank.clauses if c.construct == construct)
        total = sum(c.construct == construct for c in bank.clauses)
        assert 0.6 <= served / total <= 0.8, (construct, served, total)



def test_the_bank_is_the_same_in_every_process() -> None:
    """The clauses come in one order whatever the string hashing, so a seed draws the same requests in any run."""
    import subprocess
    import sys

    digest = ("import hashlib; from tools.train.reader_frames import served_bank; "
              "print(hashlib.sha256('|'.join(c.text for c in served_bank().clauses).encode()).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", digest], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert len(runs) == 1 and len(next(iter(runs))) == 65
