"""Writing InstructRec instructions (no gRPC or Triton here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.core import prompts
from services.core.catalog import Catalog
from services.core.validation import Limits, require_known_items
from services.instruction.preferences import Preferences, preference_request

# The reading stated after the query has its own share of the ranker's prompt budget (bytes).
READING_MAX_BYTES = 200


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
    preference_pending: bool = False  # no statement written yet for this history: queued, instruction implicit


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


class InstructionWriter:
    """Builds the re-ranking instruction from preference, intention and the lettered candidates."""

    def __init__(
        self,
        catalog: Catalog,
        preferences: Preferences | None,
        *,
        recent_history_items: int,
        item_noun: str,
        limits: Limits,
        prompt_query_max_bytes: int,
    ) -> None:
        self._catalog = catalog
        self._preferences = preferences
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
        self, history_ids: Sequence[str], query: str, candidate_ids: Sequence[str], timeout_s: float | None = None,
        reading: str = "",
    ) -> Instruction:
        """Write the instruction.

        Args:
            history_ids: The user's items, oldest first.
            query: Free-text intention (may be empty); cut to ``prompt_query_max_bytes`` at a word boundary.
            candidate_ids: Candidates in label order.
            timeout_s: Time left for this call; bounds the wait for a new preference statement (when the
                preferences wait at all: by default a statement not yet written is queued, not waited for).
            reading: How the query was read (``Reading.describe()``), stated after it; "" states the query alone.
        """
        self.validate(history_ids, query, candidate_ids)
        history = require_known_items(self._catalog, "history_item_ids", history_ids)
        candidates = require_known_items(self._catalog, "candidate_item_ids", candidate_ids)
        statement, cached, version, pending = "", False, "", False
        if history and self._preferences is not None:
            request = preference_request(history, max_items=self._max_history, noun=self._noun)
            found = await self._preferences.statement(request, timeout_s)
            statement, cached, version, pending = found.statement, found.cached, found.generator_version, found.pending
        query, truncated = fit_query(query, self._query_max_bytes)
        reading, _ = fit_query(reading, READING_MAX_BYTES)
        template = prompts.select_template(bool(history), bool(statement), bool(query))
        text = prompts.render_instruction(
            template,
            history=history,
            candidates=candidates,
            query=query,
            preference=statement,
            noun=self._noun,
            max_history_items=self._max_history,
            reading=reading,
        )
        source = "explicit" if statement else ("implicit" if history else "none")
        return Instruction(text, template.template_id, source, statement, cached, version, truncated, pending)
