"""Stored histories for the gateway's unit tests (the stores themselves: tests/unit/services/common)."""

from __future__ import annotations

from services.common.interaction_store import StoreError


class Histories:
    """``Recommender``'s history source over a dict; ``failing`` makes every read fail like a lost store."""

    def __init__(self, histories: dict[str, list[str]], failing: bool = False) -> None:
        self.histories = histories
        self.failing = failing

    async def history(self, user_id: str) -> list[str] | None:
        if self.failing:
            raise StoreError("sqlite:/gone: disk I/O error")
        seq = self.histories.get(user_id)
        return list(seq) if seq is not None else None
