"""Wiring of the ranking service: its Triton client, servicer and readiness."""

from __future__ import annotations

import grpc
import numpy as np
from instructrec.v1 import ranking_service_pb2, ranking_service_pb2_grpc

from services.common.triton import TritonModel
from services.core.contracts import CANDIDATE_SCORES_OUTPUT, PROMPT_INPUT
from services.core.validation import Limits
from services.ranking.ranking import CandidateRanker
from services.ranking.servicer import RankingServicer
from services.ranking.settings import RankingSettings


class RankingApp:
    """Ready when the ranker model is ready on Triton."""

    name = "ranking"
    full_names = (ranking_service_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name,)

    def __init__(self, settings: RankingSettings) -> None:
        self.settings = settings
        self.ranker: TritonModel | None = None

    async def start(self) -> None:
        self.ranker = TritonModel(self.settings.triton, self.settings.model_name, PROMPT_INPUT, CANDIDATE_SCORES_OUTPUT)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        s = self.settings
        ranker = self.ranker

        async def score(instruction: str, timeout_s: float) -> tuple[np.ndarray, str]:
            out = await ranker.infer_text(instruction, timeout_s)
            return out.array, out.model_version

        candidate_ranker = CandidateRanker(
            score, lm_weight=s.lm_weight, retrieval_temperature=s.retrieval_temperature,
            score_timeout_s=s.triton.timeout_s, max_instruction_chars=s.max_instruction_chars, limits=Limits.of(s),
        )
        ranking_service_pb2_grpc.add_RankingServiceServicer_to_server(
            RankingServicer(candidate_ranker, ranker.model_name), server
        )

    async def is_ready(self) -> bool:
        return await self.ranker.is_ready()

    async def close(self) -> None:
        await self.ranker.close()
