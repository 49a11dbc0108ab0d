"""RankingService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
import numpy as np
from instructrec.v1 import common_pb2, ranking_service_pb2, ranking_service_pb2_grpc

from services.common.deadlines import hop_timeout
from services.common.triton import TritonModel
from services.core.validation import Limits
from services.ranking.ranking import rank_from_label_logits, validate_rank_request
from services.ranking.settings import RankingSettings


class RankingServicer(ranking_service_pb2_grpc.RankingServiceServicer):
    """Scores an instruction's lettered candidates with the ranker on Triton."""

    def __init__(self, settings: RankingSettings, ranker: TritonModel) -> None:
        self._settings = settings
        self._ranker = ranker
        self._limits = Limits.of(settings)

    async def RankCandidates(
        self, request: ranking_service_pb2.RankCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> ranking_service_pb2.RankCandidatesResponse:
        candidates = list(request.candidate_item_ids)
        scores = list(request.retrieval_scores)
        validate_rank_request(request.instruction, candidates, self._settings.max_instruction_chars, self._limits,
                              scores)
        if scores and self._settings.lm_weight == 0:
            # The LM's weight is 0: the fused order is the retrieval order, so the ranker is not called.
            ranked = rank_from_label_logits(candidates, np.zeros(len(candidates)), scores, 0.0,
                                            self._settings.retrieval_temperature)
            return ranking_service_pb2.RankCandidatesResponse(
                ranked_items=[common_pb2.ScoredItem(item_id=i, score=s) for i, s in ranked])
        out = await self._ranker.infer_text(
            request.instruction, hop_timeout(context, self._settings.triton.timeout_s, "ranker")
        )
        ranked = rank_from_label_logits(candidates, out.array, scores or None, self._settings.lm_weight,
                                        self._settings.retrieval_temperature)
        return ranking_service_pb2.RankCandidatesResponse(
            ranked_items=[common_pb2.ScoredItem(item_id=i, score=s) for i, s in ranked],
            model_versions=[common_pb2.ModelVersion(model_name=self._ranker.model_name, version=out.model_version)],
        )
