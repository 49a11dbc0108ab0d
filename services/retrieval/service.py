"""Wiring of the retrieval service: index, catalog, encoder client, servicer and readiness."""

from __future__ import annotations

import logging

import grpc
import numpy as np
from instructrec.v1 import retrieval_service_pb2, retrieval_service_pb2_grpc

from services.common.triton import TritonModel
from services.core.catalog import Catalog
from services.core.index import ItemIndex
from services.core.validation import Limits
from services.retrieval.retriever import Retriever
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)


class RetrievalService:
    """Ready when the index is loaded and the text encoder is ready on Triton."""

    name = "retrieval"
    full_names = (retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,)

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self.encoder: TritonModel | None = None
        self.retriever: Retriever | None = None

    async def start(self) -> None:
        s = self.settings
        index = ItemIndex.load(s.index_dir)
        catalog = Catalog.load(s.catalog_path)
        self.encoder = TritonModel(s.triton, s.model_name, "text", "embedding")

        async def encode(text: str, timeout_s: float | None) -> tuple[np.ndarray, str]:
            out = await self.encoder.infer_text(text, timeout_s)
            if out.model_version and index.text_encoder_version and out.model_version != index.text_encoder_version:
                log.warning(
                    "index was built with another text_encoder version; rebuild it",
                    extra={"index_version": index.text_encoder_version, "served_version": out.model_version},
                )
            return out.array.astype(np.float32), out.model_version

        self.retriever = Retriever(
            index,
            catalog,
            encode,
            history_weight=s.history_weight,
            popularity_weight=s.popularity_weight,
            recent_history_items=s.recent_history_items,
            default_k=s.default_num_candidates,
            max_k=s.max_num_candidates,
            limits=Limits.of(s),
        )

    def add_to_server(self, server: grpc.aio.Server) -> None:
        retrieval_service_pb2_grpc.add_RetrievalServiceServicer_to_server(
            RetrievalServicer(self.retriever, self.settings.model_name), server
        )

    async def is_ready(self) -> bool:
        return await self.encoder.is_ready()

    async def close(self) -> None:
        await self.encoder.close()
