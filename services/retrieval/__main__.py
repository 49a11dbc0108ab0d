"""Run the retrieval service: ``python -m services.retrieval``."""

import asyncio

from services.common.log import configure_logging
from services.common.server import serve
from services.retrieval.service import RetrievalApp
from services.retrieval.settings import RetrievalSettings

settings = RetrievalSettings()
configure_logging("retrieval", settings.log_level, settings.log_format)
asyncio.run(serve(settings, RetrievalApp(settings)))
