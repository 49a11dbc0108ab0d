"""RankingService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, ranking_service_pb2, ranking_service_pb2_grpc

from services.common.deadlines import request_budget
from services.ranking.ranking import CandidateRanker


class RankingServicer(ranking_service_pb2_grpc.RankingServiceServicer):
    """Scores an instruction's lettered candidates with the ranker on Triton."""

    def __init__(self, ranker: CandidateRanker, model_name: str) -> None:
        self._ranker = ranker
        self._model_name = model_name

    async def RankCandidates(
        self, request: ranking_service_pb2.RankCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> ranking_service_pb2.RankCandidatesResponse:
        ranked = await self._ranker.rank(request.instruction, list(request.candidate_item_ids),
                                         list(request.retrieval_scores), request_budget(context))
        versions = ([common_pb2.ModelVersion(model_name=self._model_name, version=ranked.model_version)]
                    if ranked.model_version else [])
        return ranking_service_pb2.RankCandidatesResponse(
            ranked_items=[common_pb2.ScoredItem(item_id=i, score=s) for i, s in ranked.items],
            model_versions=versions,
        )
