"""Run the gateway: ``python -m services.gateway``."""

import asyncio

from services.common.log import configure_logging
from services.common.server import serve
from services.gateway.service import GatewayApp
from services.gateway.settings import GatewaySettings

settings = GatewaySettings()
configure_logging("gateway", settings.log_level, settings.log_format)
asyncio.run(serve(settings, GatewayApp(settings)))
