"""Run the instruction service: ``python -m services.instruction``."""

import asyncio

from services.common.log import configure_logging
from services.common.server import serve
from services.instruction.service import InstructionApp
from services.instruction.settings import InstructionSettings

settings = InstructionSettings()
configure_logging("instruction", settings.log_level, settings.log_format)
asyncio.run(serve(settings, InstructionApp(settings)))
