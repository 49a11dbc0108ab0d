"""RecommendService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, recommend_service_pb2, recommend_service_pb2_grpc

from services.common.filters_proto import filter_from_proto
from services.common.reading_proto import reading_to_proto
from services.gateway.convert import applied_filter_to_proto, diversity_from_proto, removal_to_proto
from services.gateway.interactions import InteractionLog, Submitted
from services.gateway.recommender import Recommender, RecommendQuery


class RecommendServicer(recommend_service_pb2_grpc.RecommendServiceServicer):
    """The public Recommend and RecordInteractions RPCs."""

    def __init__(self, recommender: Recommender, interactions: InteractionLog) -> None:
        self._recommender = recommender
        self._interactions = interactions

    async def RecordInteractions(
        self, request: recommend_service_pb2.RecordInteractionsRequest, context: grpc.aio.ServicerContext
    ) -> recommend_service_pb2.RecordInteractionsResponse:
        batch = [
            Submitted(
                user_id=i.user_id, item_id=i.item_id, event_id=i.event_id,
                event_time=i.event_time.seconds + i.event_time.nanos / 1e9 if i.HasField("event_time") else None,
                event_type=i.event_type, value=i.value if i.HasField("value") else None,
            )
            for i in request.interactions
        ]
        done = await self._interactions.record(batch)
        return recommend_service_pb2.RecordInteractionsResponse(recorded=done.recorded, duplicates=done.duplicates)

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
            filters=[filter_from_proto(f) for f in request.filters],
            diversity=diversity_from_proto(request),
            caller_id=request.caller_id,
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
            applied_filters=[applied_filter_to_proto(f) for f in r.applied_filters],
            rules_version=r.rules_version,
            applied_rules=r.applied_rules,
            removed_items=[removal_to_proto(x) for x in r.removed],
            fewer_items=r.fewer_items,
            understood_intent=[common_pb2.UnderstoodIntent(attribute=a, value=v, probability=p)
                               for a, v, p in r.understood_intent],
            reading=reading_to_proto(r.reading) if r.reading is not None else None,
            relaxed_constraints=r.relaxed_constraints,
        )
