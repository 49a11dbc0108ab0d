"""Per-hop deadlines derived from the caller's deadline."""

from __future__ import annotations

import grpc

from services.common.errors import DeadlineExceeded


def hop_timeout(context: grpc.aio.ServicerContext, hop_timeout_s: float, stage: str) -> float:
    """The timeout for one outbound call: ``min(caller's time remaining, hop_timeout_s)``.

    Raises:
        DeadlineExceeded: the caller's deadline has already passed, so the call is not made.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return hop_timeout_s
    if remaining <= 0.001:
        raise DeadlineExceeded(f"deadline exceeded before {stage}")
    return min(remaining, hop_timeout_s)
