"""Wiring of the gateway: catalog, interaction store, downstream channels, servicer and readiness."""

from __future__ import annotations

import logging

import grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.core.catalog import Catalog, InteractionStore
from services.core.filters import CatalogAttributes
from services.gateway.clients import GrpcStages
from services.gateway.recommender import Recommender
from services.gateway.rules_watcher import RulesWatcher
from services.gateway.servicer import RecommendServicer
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class GatewayApp:
    """Ready when retrieval and instruction are SERVING (ranking down only degrades answers)."""

    name = "gateway"
    full_names = (recommend_service_pb2.DESCRIPTOR.services_by_name["RecommendService"].full_name,)

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.stages: GrpcStages | None = None
        self.recommender: Recommender | None = None
        self.rules: RulesWatcher | None = None

    async def start(self) -> None:
        catalog = Catalog.load(self.settings.catalog_path)
        store = InteractionStore.load(self.settings.interactions_path)
        log.info("loaded data", extra={"items": len(catalog), "users": len(store)})
        attributes = CatalogAttributes(catalog)
        s = self.settings
        self.rules = RulesWatcher(s.rules_path, attributes, s.filter_limits(), s.rules_poll_s)
        self.rules.load()  # a broken rules file at start-up is an error: no request is served without its rules
        self.stages = GrpcStages(s)
        self.recommender = Recommender(s, catalog, store, self.stages, rules=self.rules, attributes=attributes)
        self.rules.start()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        recommend_service_pb2_grpc.add_RecommendServiceServicer_to_server(RecommendServicer(self.recommender), server)

    async def is_ready(self) -> bool:
        return await self.stages.serving("retrieval") and await self.stages.serving("instruction")

    async def close(self) -> None:
        if self.rules is not None:
            await self.rules.close()
        await self.stages.close()
