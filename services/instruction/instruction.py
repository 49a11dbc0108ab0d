"""Writing InstructRec instructions (no gRPC or Triton here)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument, ServiceError
from services.common.metrics import CACHE_EVENTS
from services.core import prompts
from services.core.catalog import Catalog, Item
from services.core.deadlines import Budget
from services.core.validation import Limits, require_known_items

log = logging.getLogger(__name__)

# Writes a statement for a preference prompt; returns (statement, model version).
GenerateFn = Callable[[str, float], Awaitable[tuple[str, str]]]


@dataclass(frozen=True)
class Instruction:
    """A written instruction and how it was made."""

    text: str
    template_id: str
    preference_source: str  # "none" | "implicit" | "explicit"
    preference_statement: str = ""
    preference_cached: bool = False
    generator_version: str = ""
    query_truncated: bool = False  # the query was cut to fit the ranker's prompt budget


def fit_query(query: str, max_bytes: int) -> tuple[str, bool]:
    """The query as an instruction carries it: stripped and, past ``max_bytes`` UTF-8 bytes, cut at a word boundary.

    The budget is in bytes because the ranker's tokenizer is byte-level BPE: every token covers at least one
    byte, so ``max_bytes`` bounds the query's tokens whatever the characters (a character can be four tokens).
    A first word longer than the budget is cut inside it, on a character boundary.

    Returns:
        ``(query, truncated)``.
    """
    text = query.strip()
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    head = data[:max_bytes].decode("utf-8", errors="ignore")  # drops a character split by the cut
    if not text[len(head)].isspace():  # the cut falls inside a word: go back to the last whitespace
        boundary = next((i for i in range(len(head) - 1, 0, -1) if head[i].isspace()), 0)
        if boundary > 0:
            head = head[:boundary]
    return head.rstrip(), True


def tidy_statement(text: str) -> str:
    """One line, cut after the last complete sentence (generation stops at a token budget, often mid-sentence)."""
    text = " ".join(text.split())
    end = max(text.rfind("."), text.rfind("!"), text.rfind("?"))
    return text[: end + 1] if end > 0 else text


class PreferenceCache:
    """LRU of preference statements keyed by the exact recent history they were written from."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._data: OrderedDict[tuple[str, ...], tuple[str, str]] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> tuple[str, str] | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        CACHE_EVENTS.labels("instruction", "preference", "hit" if value else "miss").inc()
        return value

    def put(self, key: tuple[str, ...], value: tuple[str, str]) -> None:
        if self._max_size == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max_size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class InstructionWriter:
    """Builds the re-ranking instruction from preference, intention and the lettered candidates."""

    def __init__(
        self,
        catalog: Catalog,
        generate: GenerateFn | None,
        *,
        cache_size: int,
        preference_wait_s: float,
        generation_timeout_s: float,
        recent_history_items: int,
        item_noun: str,
        limits: Limits,
        prompt_query_max_bytes: int,
    ) -> None:
        self._catalog = catalog
        self._generate = generate
        self._cache = PreferenceCache(cache_size)
        self._inflight: dict[tuple[str, ...], asyncio.Task] = {}
        self._wait_s = preference_wait_s
        self._generation_timeout_s = generation_timeout_s
        self._max_history = recent_history_items
        self._noun = item_noun
        self._limits = limits
        self._query_max_bytes = prompt_query_max_bytes

    def validate(self, history_ids: Sequence[str], query: str, candidate_ids: Sequence[str]) -> None:
        """Raises InvalidArgument naming the field when the request cannot be written as an instruction."""
        self._limits.check_query(query)
        self._limits.check_ids("history_item_ids", history_ids)
        if not candidate_ids:
            raise InvalidArgument("candidate_item_ids: at least one candidate is required")
        self._limits.check_ids("candidate_item_ids", candidate_ids, prompts.MAX_CANDIDATES)
        self._limits.check_distinct("candidate_item_ids", candidate_ids)

    async def write(
        self, history_ids: Sequence[str], query: str, candidate_ids: Sequence[str], timeout_s: float | None = None
    ) -> Instruction:
        """Write the instruction.

        Args:
            history_ids: The user's items, oldest first.
            query: Free-text intention (may be empty); cut to ``prompt_query_max_bytes`` at a word boundary.
            candidate_ids: Candidates in label order.
            timeout_s: Time left for this call; bounds the wait for a new preference statement.
        """
        self.validate(history_ids, query, candidate_ids)
        history = require_known_items(self._catalog, "history_item_ids", history_ids)
        candidates = require_known_items(self._catalog, "candidate_item_ids", candidate_ids)
        statement, cached, version = "", False, ""
        if history and self._generate is not None:
            statement, cached, version = await self._preference(history, timeout_s)
        query, truncated = fit_query(query, self._query_max_bytes)
        template = prompts.select_template(bool(history), bool(statement), bool(query))
        text = prompts.render_instruction(
            template,
            history=history,
            candidates=candidates,
            query=query,
            preference=statement,
            noun=self._noun,
            max_history_items=self._max_history,
        )
        source = "explicit" if statement else ("implicit" if history else "none")
        return Instruction(text, template.template_id, source, statement, cached, version, truncated)

    async def _preference(self, history: list[Item], timeout_s: float | None) -> tuple[str, bool, str]:
        """The cached statement, or wait (bounded) for a new one; ("", False, "") when none is available."""
        recent = history[-self._max_history:]
        key = tuple(i.item_id for i in recent)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0], True, hit[1]
        task = self._inflight.get(key)
        if task is None:
            prompt = prompts.render_preference_prompt(recent, self._noun, self._max_history)
            task = asyncio.create_task(self._fill(key, prompt))
            self._inflight[key] = task
        wait = Budget(timeout_s).wait_s(self._wait_s)
        try:
            # shield: a request that stops waiting does not cancel the generation that fills the cache.
            statement, version = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            log.info("preference statement not ready in time; serving implicit preference")
            return "", False, ""
        return statement, False, version

    async def _fill(self, key: tuple[str, ...], prompt: str) -> tuple[str, str]:
        try:
            statement, version = await self._generate(prompt, self._generation_timeout_s)
        except ServiceError as exc:
            log.warning("preference generation failed", extra={"error": str(exc)})
            return "", ""
        else:
            statement = tidy_statement(statement)
            if statement:
                self._cache.put(key, (statement, version))
            return statement, version
        finally:
            self._inflight.pop(key, None)
