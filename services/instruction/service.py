"""Wiring of the instruction service: catalog, preference store and generator, servicer and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging

import grpc
from instructrec.v1 import instruction_service_pb2, instruction_service_pb2_grpc

from services.common.catalog_follower import CatalogFollower
from services.common.triton import TritonModel
from services.core.catalog import Catalog, item_counts
from services.core.contracts import PROMPT_INPUT, TEXT_INPUT, TEXT_OUTPUT, WORD_LABEL_PROBS_OUTPUT
from services.core.lexicon import Lexicon, TitleMatcher
from services.core.statements import clean_statement, complete_sentences
from services.core.validation import Limits
from services.instruction.instruction import InstructionWriter
from services.instruction.preferences import FinishFn, GenerateFn, Preferences, newer_version
from services.instruction.reader import RequestReader, TagFn
from services.instruction.servicer import InstructionServicer
from services.instruction.settings import InstructionSettings
from services.instruction.store import PreferenceStore, StoreError

log = logging.getLogger(__name__)


def generator_fn(model: TritonModel) -> GenerateFn:
    """The preference generator as the statement path calls it: prompt -> (raw text, version that wrote it)."""

    async def generate(prompt: str, timeout_s: float) -> tuple[str, str]:
        out = await model.infer_text(prompt, timeout_s)
        return out.array.reshape(-1)[0].decode("utf-8", errors="replace"), out.model_version

    return generate


def tagger_fn(model: TritonModel) -> TagFn:
    """The request reader as the reading path calls it: text -> (word role probabilities, version)."""

    async def tag(text: str, timeout_s: float | None):
        out = await model.infer_text(text, timeout_s)
        return out.array, out.model_version

    return tag


def grounding(settings: InstructionSettings, catalog: Catalog) -> tuple[Lexicon, TitleMatcher]:
    """What readings are grounded in: the catalog's values with the synonyms, and its titles with the popularity,
    of the data set the catalog comes from."""
    folder = settings.catalog_path.parent
    synonyms_path = folder / "synonyms.json"
    synonyms = json.loads(synonyms_path.read_text(encoding="utf-8")) if synonyms_path.is_file() else None
    popularity: dict[str, int] = {}
    if (folder / "train.csv").is_file():
        popularity = item_counts(folder / "train.csv")
    return Lexicon(catalog, synonyms), TitleMatcher(catalog, popularity)


def request_reader(settings: InstructionSettings, catalog: Catalog, model: TritonModel) -> RequestReader:
    """The reader over the catalog (:func:`grounding`)."""
    return RequestReader(tagger_fn(model), *grounding(settings, catalog), Limits.of(settings),
                         cache_size=settings.reading_cache_size)


def statement_finisher(catalog: Catalog) -> FinishFn:
    """Raw generator text -> the statement served: one line of complete sentences with every self-contradiction
    removed (a value both liked and disliked; ``services.core.statements``); "" when nothing coherent is left."""
    vocabulary = sorted({genre for item in catalog.items.values() for genre in item.genres})

    def finish(raw: str) -> str:
        return clean_statement(complete_sentences(raw), vocabulary) or ""

    return finish


async def served_generator_version(model: TritonModel) -> str:
    """The newest version of the generator Triton serves ("" when it cannot say): the one a request reads."""
    return functools.reduce(newer_version, await model.ready_versions(), "")


class InstructionApp:
    """Ready when the catalog is loaded and (if explicit preference is on) the generator is ready."""

    name = "instruction"
    full_names = (instruction_service_pb2.DESCRIPTOR.services_by_name["InstructionService"].full_name,)

    def __init__(self, settings: InstructionSettings) -> None:
        self.settings = settings
        self.generator: TritonModel | None = None
        self.store: PreferenceStore | None = None
        self.preferences: Preferences | None = None
        self.writer: InstructionWriter | None = None
        self._version_task: asyncio.Task | None = None
        self.reader_model: TritonModel | None = None
        self.reader: RequestReader | None = None
        self.catalog_follower: CatalogFollower | None = None

    async def start(self) -> None:
        s = self.settings
        catalog = Catalog.load(s.catalog_path)
        if s.read_queries:
            self.reader_model = TritonModel(s.triton, s.reader_model_name, TEXT_INPUT, WORD_LABEL_PROBS_OUTPUT)
            self.reader = request_reader(s, catalog, self.reader_model)
        if s.explicit_preference:
            self.generator = TritonModel(s.triton, s.model_name, PROMPT_INPUT, TEXT_OUTPUT)
            self.store = self._open_store()
            self.preferences = Preferences(
                generator_fn(self.generator), self.store, finish=statement_finisher(catalog),
                cache_size=s.preference_cache_size, queue_size=s.preference_queue_size, workers=s.preference_workers,
                wait_s=s.preference_wait_s, generation_timeout_s=s.triton.timeout_s,
            )
            await self._refresh_version()
            self._version_task = asyncio.get_running_loop().create_task(self._poll_version())

        # Items added to the catalog file are named in instructions and readings without a restart.
        self.catalog_follower = CatalogFollower(s.catalog_path, catalog, s.catalog_poll_s)
        if self.reader is not None:
            reader = self.reader
            self.catalog_follower.add_listener(lambda added: reader.reground(*grounding(s, catalog)))
        self.catalog_follower.start()
        self.writer = InstructionWriter(
            catalog,
            self.preferences,
            recent_history_items=s.recent_history_items,
            item_noun=s.item_noun,
            limits=Limits.of(s),
            prompt_query_max_bytes=s.prompt_query_max_bytes,
        )

    def add_to_server(self, server: grpc.aio.Server) -> None:
        instruction_service_pb2_grpc.add_InstructionServiceServicer_to_server(
            InstructionServicer(self.writer, self.settings.model_name, self.reader, self.settings.reader_model_name),
            server
        )

    def _open_store(self, quiet: bool = False) -> PreferenceStore | None:
        path = self.settings.preference_store_path
        if path is None:
            return None
        try:
            store = PreferenceStore(path, readonly=self.settings.preference_store_readonly)
        except StoreError as exc:
            # Serving goes on without it: misses are generated into memory, requests get implicit preference.
            if not quiet:
                log.error("preference store unavailable; statements kept in memory only", extra={"error": str(exc)})
            return None
        log.info("preference store open", extra={"path": str(path), "statements": store.counts()})
        return store

    async def _refresh_version(self) -> None:
        self.preferences.set_version(await served_generator_version(self.generator))

    async def _poll_version(self) -> None:
        """Every ``generator_version_poll_s``: the served generator version, and a replaced read-only store."""
        while True:
            await asyncio.sleep(self.settings.generator_version_poll_s)
            await self._refresh_version()
            self._refresh_store()

    def _refresh_store(self) -> None:
        if self.settings.preference_store_path is None or not self.settings.preference_store_readonly:
            return
        if self.store is None:  # not there at start (the first CronJob run had not finished): try again
            self.store = self._open_store(quiet=True)
            self.preferences.use_store(self.store)
            return
        try:
            if self.store.refresh():
                log.info("preference store reopened (a new snapshot)", extra={"statements": self.store.counts()})
        except StoreError as exc:
            log.error("new preference store snapshot refused; the previous one keeps serving",
                      extra={"error": str(exc)})

    async def is_ready(self) -> bool:
        return self.generator is None or await self.generator.is_ready()

    async def close(self) -> None:
        if self.catalog_follower is not None:
            await self.catalog_follower.close()
        if self._version_task is not None:
            self._version_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._version_task
        if self.preferences is not None:
            await self.preferences.close()
        if self.generator is not None:
            await self.generator.close()
        if self.reader_model is not None:
            await self.reader_model.close()
        if self.store is not None:
            self.store.close()
