"""``request_budget``: the RPC's remaining time (or a default) as a ``Budget``."""

from __future__ import annotations

import pytest

from services.common.deadlines import request_budget
from services.common.errors import DeadlineExceeded


class _Context:
    """The one ``grpc.aio.ServicerContext`` method ``request_budget`` reads."""

    def __init__(self, remaining_s: float | None) -> None:
        self._remaining_s = remaining_s

    def time_remaining(self) -> float | None:
        return self._remaining_s


def test_the_budget_is_the_callers_time_remaining() -> None:
    budget = request_budget(_Context(2.5), default_s=30.0)
    assert 2.4 < budget.left_s() <= 2.5
    assert budget.hop("ranking", 10.0) <= 2.5
    assert budget.hop("ranking", 1.0) == 1.0


def test_without_a_caller_deadline_the_default_applies() -> None:
    assert 29.9 < request_budget(_Context(None), default_s=30.0).left_s() <= 30.0


def test_without_a_caller_deadline_or_default_there_is_no_deadline() -> None:
    budget = request_budget(_Context(None))
    assert budget.left_s() is None and budget.hop("ranking", 4.0) == 4.0


def test_a_caller_deadline_already_passed_is_no_time() -> None:
    with pytest.raises(DeadlineExceeded):
        request_budget(_Context(0.0), default_s=30.0).hop("ranking", 10.0)
