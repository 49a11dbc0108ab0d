"""Wiring of the ranking service: its Triton client, servicer and readiness."""

from __future__ import annotations

import grpc
from instructrec.v1 import ranking_service_pb2, ranking_service_pb2_grpc

from services.common.triton import TritonModel
from services.ranking.servicer import RankingServicer
from services.ranking.settings import RankingSettings


class RankingService:
    """Ready when the ranker model is ready on Triton."""

    name = "ranking"
    full_names = (ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name,)

    def __init__(self, settings: RankingSettings) -> None:
        self.settings = settings
        self.ranker: TritonModel | None = None

    async def start(self) -> None:
        self.ranker = TritonModel(self.settings.triton, self.settings.model_name, "prompt", "candidate_scores")

    def add_to_server(self, server: grpc.aio.Server) -> None:
        ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(
            RankingServicer(self.settings, self.ranker), server
        )

    async def is_ready(self) -> bool:
        return await self.ranker.is_ready()

    async def close(self) -> None:
        await self.ranker.close()
