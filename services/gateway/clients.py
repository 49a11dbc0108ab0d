"""The gateway's downstream stages over gRPC (implements recommender.Stages)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from instructrec.v1 import (
    instruction_service_pb2,
    instruction_service_pb2_grpc,
    ranking_service_pb2,
    ranking_service_pb2_grpc,
    retrieval_service_pb2,
    retrieval_service_pb2_grpc,
)

from services.common.errors import from_rpc_error
from services.common.filters_proto import filter_to_proto
from services.common.grpc_client import is_serving, open_channel
from services.common.reading_proto import reading_from_proto, reading_to_proto
from services.core.filters import AttributeFilter
from services.core.reading import Reading
from services.gateway.settings import GatewaySettings


def _versions(msg) -> list[tuple[str, str]]:
    return [(v.model_name, v.version) for v in msg.model_versions]


class GrpcStages:
    """One long-lived channel per downstream service, opened at start-up."""

    def __init__(self, settings: GatewaySettings) -> None:
        def channel(addr: str) -> grpc.aio.Channel:
            return open_channel(
                addr, settings.retry_max_attempts, settings.client_tls, settings.max_reconnect_backoff_s
            )

        self.channels = {
            "instruction": channel(settings.instruction_addr),
            "retrieval": channel(settings.retrieval_addr),
            "ranking": channel(settings.ranking_addr),
        }
        self._wait = settings.wait_for_ready
        self._instruction = instruction_service_pb2_grpc.InstructionServiceStub(self.channels["instruction"])
        self._retrieval = retrieval_service_pb2_grpc.RetrievalServiceStub(self.channels["retrieval"])
        self._ranking = ranking_service_pb2_grpc.RankingServiceStub(self.channels["ranking"])

    async def retrieve(
        self, history: Sequence[str], query: str, *, exclude: Sequence[str], k: int, timeout_s: float,
        candidates: Sequence[str] = (), filters: Sequence[AttributeFilter] = (),
    ):
        try:
            r = await self._retrieval.RetrieveCandidates(
                retrieval_service_pb2.RetrieveCandidatesRequest(
                    history_item_ids=history, query=query, exclude_item_ids=exclude, num_candidates=k,
                    candidate_item_ids=candidates, filters=[filter_to_proto(f) for f in filters],
                ),
                timeout=timeout_s,
                # Scoring caller-supplied candidates is optional (the ranker alone can order them): like
                # ranking, never wait for an unreachable peer.
                wait_for_ready=self._wait and not candidates,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error("retrieval", err) from err
        understood = [(u.attribute, u.value, u.probability) for u in r.understood_intent]
        return [(c.item_id, c.score) for c in r.candidates], _versions(r), understood

    async def read(self, query: str, *, timeout_s: float):
        try:
            r = await self._instruction.ReadQuery(instruction_service_pb2.ReadQueryRequest(query=query),
                                                  timeout=timeout_s, wait_for_ready=False)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error("instruction", err) from err
        return reading_from_proto(r.reading), _versions(r)

    async def instruct(self, history: Sequence[str], query: str, *, candidates: Sequence[str], timeout_s: float,
                       reading: Reading | None = None):
        try:
            r = await self._instruction.GenerateInstruction(
                instruction_service_pb2.GenerateInstructionRequest(
                    history_item_ids=history, query=query, candidate_item_ids=candidates,
                    reading=reading_to_proto(reading) if reading is not None else None,
                ),
                timeout=timeout_s,
                wait_for_ready=self._wait,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error("instruction", err) from err
        return r.instruction, r.template_id, _versions(r), r.query_truncated

    async def rank(
        self, instruction: str, *, candidates: Sequence[str], timeout_s: float,
        retrieval_scores: Sequence[float] = (),
    ):
        try:
            r = await self._ranking.RankCandidates(
                ranking_service_pb2.RankCandidatesRequest(
                    instruction=instruction, candidate_item_ids=candidates, retrieval_scores=retrieval_scores
                ),
                timeout=timeout_s,
                # Never wait for an unreachable ranker: the degraded answer (retrieval order) is better.
                wait_for_ready=False,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error("ranking", err) from err
        return [(c.item_id, c.score) for c in r.ranked_items], _versions(r)

    async def serving(self, name: str, attempts: int = 3) -> bool:
        """Whether a downstream service reports SERVING: any of ``attempts`` checks, which its channel's
        round_robin sends to different replicas, so one NOT_SERVING replica among several does not turn the
        gateway not ready."""
        for _ in range(attempts):
            if await is_serving(self.channels[name]):
                return True
        return False

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
