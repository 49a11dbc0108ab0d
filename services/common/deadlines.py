"""The caller's deadline of an RPC as a :class:`~services.core.deadlines.Budget`."""

from __future__ import annotations

import grpc

from services.core.deadlines import Budget


def request_budget(context: grpc.aio.ServicerContext, default_s: float | None = None) -> Budget:
    """The budget of this RPC: the caller's time remaining, else ``default_s`` (None: no deadline)."""
    remaining = context.time_remaining()
    return Budget(default_s if remaining is None else remaining)
