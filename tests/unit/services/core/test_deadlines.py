"""``Budget``: per-hop timeouts drawn from the caller's deadline, on a fake clock."""

from __future__ import annotations

import pytest

from services.core.deadlines import Budget
from services.core.errors import DeadlineExceeded


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_hop_gets_the_smaller_of_the_time_left_and_its_own_limit() -> None:
    clock = _Clock()
    budget = Budget(2.0, clock=clock)
    assert budget.hop("retrieval", 5.0) == pytest.approx(2.0)
    assert budget.hop("retrieval", 0.5) == 0.5
    clock.now += 1.5
    assert budget.left_s() == pytest.approx(0.5)
    assert budget.hop("ranking", 5.0) == pytest.approx(0.5)


def test_a_hop_keeps_the_reserve_back_for_what_follows() -> None:
    budget = Budget(2.0, clock=_Clock())
    assert budget.hop("instruction", 5.0, reserve_s=0.5) == pytest.approx(1.5)
    assert budget.hop("instruction", 1.0, reserve_s=0.5) == 1.0
    with pytest.raises(DeadlineExceeded, match="before instruction"):
        budget.hop("instruction", 5.0, reserve_s=2.0)


def test_no_time_left_raises_before_the_call_is_made() -> None:
    clock = _Clock()
    budget = Budget(1.0, clock=clock)
    clock.now += 1.0
    with pytest.raises(DeadlineExceeded, match="deadline exceeded before ranking"):
        budget.hop("ranking", 5.0)
    clock.now += 1.0
    assert budget.left_s() == pytest.approx(-1.0)
    with pytest.raises(DeadlineExceeded):
        Budget(0.0005).hop("model ranker", 5.0)  # under a millisecond is no time
    with pytest.raises(DeadlineExceeded):
        Budget(-3.0).hop("model ranker", 5.0)


def test_without_a_deadline_every_hop_gets_its_own_limit() -> None:
    budget = Budget(None)
    assert budget.left_s() is None
    assert budget.hop("retrieval", 7.0) == 7.0
    assert budget.hop("retrieval", 7.0, reserve_s=100.0) == 7.0
    assert budget.wait_s(3.0) == 3.0


def test_wait_s_is_bounded_by_the_time_left_and_never_negative_or_raising() -> None:
    clock = _Clock()
    budget = Budget(2.0, clock=clock)
    assert budget.wait_s(0.5) == 0.5
    assert budget.wait_s(10.0) == pytest.approx(2.0)
    clock.now += 5.0
    assert budget.wait_s(10.0) == 0.0
