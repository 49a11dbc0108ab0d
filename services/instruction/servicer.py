"""InstructionService: proto <-> domain adapter."""

from __future__ import annotations

import grpc
from instructrec.v1 import common_pb2, instruction_service_pb2, instruction_service_pb2_grpc

from services.common.errors import Unavailable
from services.common.reading_proto import reading_from_proto, reading_to_proto
from services.instruction.instruction import InstructionWriter
from services.instruction.reader import RequestReader

_SOURCES = {
    "none": instruction_service_pb2.PREFERENCE_SOURCE_NONE,
    "implicit": instruction_service_pb2.PREFERENCE_SOURCE_IMPLICIT,
    "explicit": instruction_service_pb2.PREFERENCE_SOURCE_EXPLICIT,
}


class InstructionServicer(instruction_service_pb2_grpc.InstructionServiceServicer):
    """Writes re-ranking instructions."""

    def __init__(self, writer: InstructionWriter, generator_name: str, reader: RequestReader | None = None,
                 reader_name: str = "") -> None:
        self._writer = writer
        self._generator_name = generator_name
        self._reader = reader
        self._reader_name = reader_name

    async def ReadQuery(
        self, request: instruction_service_pb2.ReadQueryRequest, context: grpc.aio.ServicerContext
    ) -> instruction_service_pb2.ReadQueryResponse:
        if self._reader is None:
            raise Unavailable("reading requests is off (INSTRUCTION_READ_QUERIES=false)")
        reading, cached = await self._reader.read(request.query, context.time_remaining())
        versions = [] if cached or not reading.reader_version else [
            common_pb2.ModelVersion(model_name=self._reader_name, version=reading.reader_version)]
        return instruction_service_pb2.ReadQueryResponse(reading=reading_to_proto(reading, cached=cached),
                                                         model_versions=versions)

    async def GenerateInstruction(
        self, request: instruction_service_pb2.GenerateInstructionRequest, context: grpc.aio.ServicerContext
    ) -> instruction_service_pb2.GenerateInstructionResponse:
        reading = reading_from_proto(request.reading).describe() if request.HasField("reading") else ""
        instruction = await self._writer.write(
            list(request.history_item_ids), request.query, list(request.candidate_item_ids), context.time_remaining(),
            reading=reading,
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
