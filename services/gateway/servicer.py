"""RecommendService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, recommend_service_pb2, recommend_service_pb2_grpc

from services.gateway.recommender import Recommender, RecommendQuery


class RecommendServicer(recommend_service_pb2_grpc.RecommendServiceServicer):
    """The public Recommend RPC."""

    def __init__(self, recommender: Recommender) -> None:
        self._recommender = recommender

    async def Recommend(
        self, request: recommend_service_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommend_service_pb2.RecommendResponse:
        query = RecommendQuery(
            user_id=request.user_id,
            history_item_ids=list(request.history_item_ids),
            query=request.query,
            num_items=request.num_items,
            exclude_item_ids=list(request.exclude_item_ids),
            candidate_item_ids=list(request.candidate_item_ids),
        )
        r = await self._recommender.recommend(query, context.time_remaining())
        return recommend_service_pb2.RecommendResponse(
            items=[recommend_service_pb2.RecommendedItem(item_id=i, title=t, score=s) for i, t, s in r.items],
            instruction=r.instruction,
            template_id=r.template_id,
            degraded=r.degraded,
            degraded_reasons=r.degraded_reasons,
            query_truncated=r.query_truncated,
            model_versions=[common_pb2.ModelVersion(model_name=n, version=v) for n, v in r.model_versions],
            unknown_history_item_ids=r.unknown_history_item_ids,
            stage_timings=[common_pb2.StageTiming(stage=st, duration_ms=ms) for st, ms in r.stage_timings],
        )
