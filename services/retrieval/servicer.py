"""RetrievalService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, retrieval_service_pb2, retrieval_service_pb2_grpc

from services.common.filters_proto import filter_from_proto
from services.retrieval.retriever import Retriever


class RetrievalServicer(retrieval_service_pb2_grpc.RetrievalServiceServicer):
    """Returns candidates from the sequence and text indexes, fused."""

    def __init__(self, retriever: Retriever) -> None:
        self._retriever = retriever

    async def RetrieveCandidates(
        self, request: retrieval_service_pb2.RetrieveCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_service_pb2.RetrieveCandidatesResponse:
        result = await self._retriever.retrieve(
            list(request.history_item_ids),
            request.query,
            list(request.exclude_item_ids),
            request.num_candidates,
            context.time_remaining(),
            list(request.candidate_item_ids),
            [filter_from_proto(f) for f in request.filters],
        )
        return retrieval_service_pb2.RetrieveCandidatesResponse(
            candidates=[common_pb2.ScoredItem(item_id=i, score=s) for i, s in result.candidates],
            model_versions=[common_pb2.ModelVersion(model_name=n, version=v) for n, v in result.model_versions],
            strategy=result.strategy,
            understood_intent=[common_pb2.UnderstoodIntent(attribute=u.attribute, value=u.value,
                                                           probability=u.probability) for u in result.understood],
        )
