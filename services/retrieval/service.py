"""Wiring of the retrieval service: the two indexes, catalog, model clients, servicer, readiness, reloads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
from instructrec.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc

from services.common.catalog_follower import CatalogFollower
from services.common.stamps import file_stamp
from services.common.triton import TritonModel
from services.core.catalog import Catalog
from services.core.contracts import EMBEDDING_OUTPUT, HISTORY_INPUT, TEXT_INPUT, USER_VECTOR_OUTPUT
from services.core.index import META_FILE, IndexFormatError, ItemIndex
from services.core.intent import IntentFormatError, IntentModel
from services.core.validation import Limits
from services.retrieval.retriever import Retriever, Snapshot
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)


def _stamp(directory: Path) -> tuple[int, int, int] | None:
    """What changes when an index folder is rebuilt (the build swaps the folder in): its metadata file's stamp."""
    return file_stamp(directory / META_FILE)


class RetrievalApp:
    """Ready when the text index is loaded and Triton serves the model versions its indexes were built with."""

    name = "retrieval"
    full_names = (retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,)

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self.encoder: TritonModel | None = None
        self.sequence: TritonModel | None = None
        self.retriever: Retriever | None = None
        self._stamps: tuple = ()
        self._watch_task: asyncio.Task | None = None
        self.catalog_follower: CatalogFollower | None = None

    def _load_snapshot(self) -> Snapshot:
        s = self.settings
        text = ItemIndex.load(s.index_dir)
        sequence = None
        if (s.sequence_index_dir / META_FILE).exists():
            try:
                sequence = ItemIndex.load(s.sequence_index_dir)
            except IndexFormatError as exc:
                log.error("sequence index unreadable; serving text retrieval", extra={"error": str(exc)})
        else:
            log.warning("no sequence index; serving text retrieval", extra={"dir": str(s.sequence_index_dir)})
        intent = None
        try:
            intent = IntentModel.load(s.index_dir)
        except IntentFormatError as exc:
            log.error("intent model unreadable; queries are not read for attributes", extra={"error": str(exc)})
        if intent is not None and intent.encoder_version != text.model_version:
            log.error("intent model was trained against another text_encoder version than the index; not used",
                      extra={"intent": intent.encoder_version, "index": text.model_version})
            intent = None
        elif intent is None:
            log.warning("no intent model beside the text index; queries are not read for attributes",
                        extra={"dir": str(s.index_dir)})
        return Snapshot(text, sequence, intent)

    async def start(self) -> None:
        s = self.settings
        self._stamps = (_stamp(s.index_dir), _stamp(s.sequence_index_dir))
        snapshot = self._load_snapshot()
        catalog = Catalog.load(s.catalog_path)
        self.catalog_follower = CatalogFollower(s.catalog_path, catalog, s.catalog_poll_s)
        self.encoder = TritonModel(s.triton, s.model_name, TEXT_INPUT, EMBEDDING_OUTPUT)
        self.sequence = TritonModel(s.triton, s.sequence_model_name, HISTORY_INPUT, USER_VECTOR_OUTPUT)
        encoder, sequence = self.encoder, self.sequence

        async def encode_text(text: str, timeout_s: float, version: str) -> tuple[np.ndarray, str]:
            out = await encoder.infer_text(text, timeout_s, model_version=version)
            return out.array.astype(np.float32), out.model_version

        async def encode_history(item_ids: Sequence[str], timeout_s: float, version: str) -> tuple[np.ndarray, str]:
            out = await sequence.infer_strings(list(item_ids), timeout_s, model_version=version)
            return out.array.astype(np.float32), out.model_version

        self.retriever = Retriever(
            snapshot,
            catalog,
            encode_text=encode_text,
            encode_history=encode_history,
            fusion=s.fusion(),
            history_weight=s.history_weight,
            recent_history_items=s.recent_history_items,
            sequence_history_items=s.sequence_history_items,
            source_candidates=s.source_candidates,
            text_timeout_s=s.triton.timeout_s,
            sequence_timeout_s=s.triton.timeout_s,
            default_k=s.default_num_candidates,
            max_k=s.max_num_candidates,
            limits=Limits.of(s),
            filter_limits=s.filter_limits(),
            exact_filter_max_items=s.exact_filter_max_items,
            filter_overfetch=s.filter_overfetch,
            intent_weight=s.intent_weight,
            intent_min_confidence=s.intent_min_confidence,
        )
        self.catalog_follower.add_listener(lambda added: self.retriever.catalog_grew())
        self.catalog_follower.start()
        if s.index_poll_s > 0:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.index_poll_s)
            try:
                await self.reload_if_rebuilt()
            except Exception:  # noqa: BLE001 - a failed reload keeps the current pair serving
                log.exception("index reload failed; the current indexes keep serving")

    async def reload_if_rebuilt(self) -> bool:
        """Serve a rebuilt index pair once Triton serves the versions it was built with; True if switched."""
        s = self.settings
        stamps = (_stamp(s.index_dir), _stamp(s.sequence_index_dir))
        if stamps == self._stamps:
            return False
        snapshot = self._load_snapshot()
        if not await self._versions_served(snapshot):
            return False  # checked again at the next poll
        if not self._catalog_has(snapshot):
            return False  # an index with added items waits for the catalog that names them
        self.retriever.install(snapshot)
        self._stamps = stamps
        log.info("serving rebuilt indexes", extra={
            "text_encoder_version": snapshot.text.model_version,
            "sequence_encoder_version": snapshot.sequence.model_version if snapshot.sequence else ""})
        return True

    def _catalog_has(self, snapshot: Snapshot) -> bool:
        """Whether the catalog names every item of the snapshot's indexes (read the catalog file again first)."""
        catalog = self.retriever.catalog
        missing = [i for i in snapshot.text.item_ids if i not in catalog]
        if missing:
            self.catalog_follower.check()
            missing = [i for i in missing if i not in catalog]
        if missing:
            log.info("waiting for the catalog to name the rebuilt index's items",
                     extra={"missing": len(missing), "example": missing[0]})
        return not missing

    async def _versions_served(self, snapshot: Snapshot) -> bool:
        if not await self.encoder.is_ready(snapshot.text.model_version):
            log.info("waiting for Triton to serve the index's text_encoder version",
                     extra={"version": snapshot.text.model_version})
            return False
        if snapshot.sequence is not None and not await self.sequence.is_ready(snapshot.sequence.model_version):
            log.info("waiting for Triton to serve the index's sequence_encoder version",
                     extra={"version": snapshot.sequence.model_version})
            return False
        return True

    def add_to_server(self, server: grpc.aio.Server) -> None:
        retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(RetrievalServicer(self.retriever), server)

    async def is_ready(self) -> bool:
        # The text side is what every request can fall back to; without the sequence model, retrieval degrades.
        return await self.encoder.is_ready(self.retriever.snapshot.text.model_version)

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self.catalog_follower is not None:
            await self.catalog_follower.close()
        await self.encoder.close()
        await self.sequence.close()
