"""The caller's deadline as a budget that every outbound call draws its timeout from (one rule everywhere)."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.core.errors import DeadlineExceeded

# Less time than this left is no time: the call would only fail after it was sent.
_NO_TIME_S = 0.001


class Budget:
    """Time left before a deadline, handed out as per-hop timeouts: ``min(time left - reserve, hop limit)``.

    ``Budget(None)`` has no deadline: every hop gets its own limit.
    """

    def __init__(self, remaining_s: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = None if remaining_s is None else clock() + remaining_s

    def left_s(self) -> float | None:
        """Seconds left (may be negative), or None without a deadline."""
        return None if self._deadline is None else self._deadline - self._clock()

    def hop(self, stage: str, hop_timeout_s: float, *, reserve_s: float = 0.0) -> float:
        """The timeout of the next call to ``stage``; ``reserve_s`` is kept back for what follows it.

        Raises:
            DeadlineExceeded: no time is left, so the call is not made.
        """
        left = self.left_s()
        if left is None:
            return hop_timeout_s
        left -= reserve_s
        if left <= _NO_TIME_S:
            raise DeadlineExceeded(f"deadline exceeded before {stage}")
        return min(left, hop_timeout_s)

    def wait_s(self, limit_s: float) -> float:
        """How long to wait for something optional: ``min(time left, limit_s)``, never below 0, never raising."""
        left = self.left_s()
        return limit_s if left is None else max(0.0, min(left, limit_s))
