"""InstructionService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, instruction_service_pb2, instruction_service_pb2_grpc

from services.instruction.instruction import InstructionWriter

_SOURCES = {
    "none": instruction_service_pb2.PREFERENCE_SOURCE_NONE,
    "implicit": instruction_service_pb2.PREFERENCE_SOURCE_IMPLICIT,
    "explicit": instruction_service_pb2.PREFERENCE_SOURCE_EXPLICIT,
}


class InstructionServicer(instruction_service_pb2_grpc.InstructionServiceServicer):
    """Writes re-ranking instructions."""

    def __init__(self, writer: InstructionWriter, generator_name: str) -> None:
        self._writer = writer
        self._generator_name = generator_name

    async def GenerateInstruction(
        self, request: instruction_service_pb2.GenerateInstructionRequest, context: grpc.aio.ServicerContext
    ) -> instruction_service_pb2.GenerateInstructionResponse:
        instruction = await self._writer.write(
            list(request.history_item_ids), request.query, list(request.candidate_item_ids), context.time_remaining()
        )
        versions = (
            [common_pb2.ModelVersion(model_name=self._generator_name, version=instruction.generator_version)]
            if instruction.generator_version
            else []
        )
        return instruction_service_pb2.GenerateInstructionResponse(
            instruction=instruction.text,
            template_id=instruction.template_id,
            preference_source=_SOURCES[instruction.preference_source],
            preference_statement=instruction.preference_statement,
            preference_cached=instruction.preference_cached,
            model_versions=versions,
            query_truncated=instruction.query_truncated,
            preference_pending=instruction.preference_pending,
        )
