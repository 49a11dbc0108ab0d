"""Reading requests in the instruction service: the ``request_reader`` on Triton labels the words, the catalog
grounds them (``services/core/reading.py``), and repeated requests are answered from a bounded cache.

Why here: InstructRec's first step is an instruction generation model turning the user's request into the
instruction the rest follows; this service writes the instructions, so it owns their reading too. The cache is
keyed by the request's words (lower case) and the reader version, so a new version never serves old readings.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace

import numpy as np

from services.common.errors import InvalidArgument, Unavailable
from services.core.lexicon import Lexicon, TitleMatcher
from services.core.reading import WORD_LABELS, Reading, decode_spans, read, reading_key, split_words
from services.core.validation import Limits

log = logging.getLogger(__name__)

# (text, time left) -> ([W, labels] probabilities, model version)
TagFn = Callable[[str, float | None], Awaitable[tuple[np.ndarray, str]]]


class RequestReader:
    """Reads a request into a :class:`services.core.reading.Reading`."""

    def __init__(self, tag: TagFn, lexicon: Lexicon, titles: TitleMatcher, limits: Limits, *,
                 cache_size: int = 10_000) -> None:
        self._tag = tag
        self._lexicon = lexicon
        self._titles = titles
        self._limits = limits
        self._cache: OrderedDict[tuple[str, str], Reading] = OrderedDict()
        self._cache_size = cache_size
        self._version = ""

    def reground(self, lexicon: Lexicon, titles: TitleMatcher) -> None:
        """Ground later readings in a grown catalog; readings cached before are dropped (they could not name the
        new items)."""
        self._lexicon, self._titles = lexicon, titles
        self._cache.clear()

    def validate(self, query: str) -> None:
        """Raises InvalidArgument naming the field."""
        self._limits.check_query(query)
        if not query.strip():
            raise InvalidArgument("query: must not be empty")

    async def read(self, query: str, time_left_s: float | None) -> tuple[Reading, bool]:
        """The reading of ``query`` and whether it came from the cache.

        Raises:
            Unavailable / DeadlineExceeded: the reader model could not answer.
        """
        self.validate(query)
        key = reading_key(query)
        cached = self._cache.get((key, self._version))
        if cached is not None:
            self._cache.move_to_end((key, self._version))
            return cached, True
        words = split_words(query)
        started = time.perf_counter()
        probabilities, version = await self._tag(query, time_left_s)
        probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1, len(WORD_LABELS))
        if probabilities.shape[0] < len(words):
            raise Unavailable(f"request_reader: {probabilities.shape[0]} word rows for {len(words)} words "
                              f"(a reader whose word split differs from this service's)")
        probabilities = probabilities[:len(words)]
        spans = decode_spans(words, probabilities.argmax(axis=1).tolist(), probabilities.max(axis=1).tolist())
        reading = replace(read(query, words, spans, self._lexicon, self._titles), reader_version=version)
        log.debug("read a request", extra={"ms": round((time.perf_counter() - started) * 1e3, 1),
                                           "filters": len(reading.filters)})
        self._version = version
        if self._cache_size:
            self._cache[(key, version)] = reading
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return reading, False
