"""The wide training bank of the reader experiment keeps the held-out bank held out: no clause, filler or mood
phrase in common with the evaluation bank, and its requests ground to their expected readings."""

from __future__ import annotations

from tools.eval.reading_bank import EVALUATION_BANK, SECOND_EVALUATION_BANK
from tools.lab.reader_bank_wide import EXTRA_CLAUSES, WIDE_TRAINING_BANK
from tools.train.reader_examples import TRAINING_BANK


def test_the_wide_bank_shares_nothing_with_the_evaluation_bank() -> None:
    for part in ("prefixes", "suffixes", "joiners", "moods", "breaks"):
        for bank in (EVALUATION_BANK, SECOND_EVALUATION_BANK):
            shared = set(getattr(WIDE_TRAINING_BANK, part)) & set(getattr(bank, part)) - {""}
            assert not shared, (part, shared)
    for bank in (EVALUATION_BANK, SECOND_EVALUATION_BANK):
        assert not {c.text for c in WIDE_TRAINING_BANK.clauses} & {c.text for c in bank.clauses}
    assert not {c.text for c in EXTRA_CLAUSES} & {c.text for c in TRAINING_BANK.clauses}  # new families only


def test_the_wide_banks_requests_ground_to_their_expected_readings() -> None:
    from tests.unit.tools.core.test_reading_examples import grounding_agreement

    assert grounding_agreement(WIDE_TRAINING_BANK) >= 0.98
