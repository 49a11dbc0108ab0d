"""Run the ranking service: ``python -m services.ranking``."""

import asyncio

from services.common.log import configure_logging
from services.common.server import serve
from services.ranking.service import RankingApp
from services.ranking.settings import RankingSettings

settings = RankingSettings()
configure_logging("ranking", settings.log_level, settings.log_format)
asyncio.run(serve(settings, RankingApp(settings)))
