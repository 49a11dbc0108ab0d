"""Wiring of the instruction service: catalog, preference generator client, servicer and readiness."""

from __future__ import annotations

import grpc
from instructrec.v1 import instruction_service_pb2, instruction_service_pb2_grpc

from services.common.triton import TritonModel
from services.core.catalog import Catalog
from services.core.contracts import PROMPT_INPUT, TEXT_OUTPUT
from services.core.validation import Limits
from services.instruction.instruction import InstructionWriter
from services.instruction.servicer import InstructionServicer
from services.instruction.settings import InstructionSettings


class InstructionApp:
    """Ready when the catalog is loaded and (if explicit preference is on) the generator is ready."""

    name = "instruction"
    full_names = (instruction_service_pb2.DESCRIPTOR.services_by_name["InstructionService"].full_name,)

    def __init__(self, settings: InstructionSettings) -> None:
        self.settings = settings
        self.generator: TritonModel | None = None
        self.writer: InstructionWriter | None = None

    async def start(self) -> None:
        s = self.settings
        catalog = Catalog.load(s.catalog_path)
        generate = None
        if s.explicit_preference:
            self.generator = TritonModel(s.triton, s.model_name, PROMPT_INPUT, TEXT_OUTPUT)

            async def generate(prompt: str, timeout_s: float) -> tuple[str, str]:
                out = await self.generator.infer_text(prompt, timeout_s)
                return out.array.reshape(-1)[0].decode("utf-8", errors="replace"), out.model_version

        self.writer = InstructionWriter(
            catalog,
            generate,
            cache_size=s.preference_cache_size,
            preference_wait_s=s.preference_wait_s,
            generation_timeout_s=s.triton.timeout_s,
            recent_history_items=s.recent_history_items,
            item_noun=s.item_noun,
            limits=Limits.of(s),
            prompt_query_max_bytes=s.prompt_query_max_bytes,
        )

    def add_to_server(self, server: grpc.aio.Server) -> None:
        instruction_service_pb2_grpc.add_InstructionServiceServicer_to_server(
            InstructionServicer(self.writer, self.settings.model_name), server
        )

    async def is_ready(self) -> bool:
        return self.generator is None or await self.generator.is_ready()

    async def close(self) -> None:
        if self.generator is not None:
            await self.generator.close()
