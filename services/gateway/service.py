"""Wiring of the gateway: catalog, interaction store, downstream channels, servicer and readiness."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.common.catalog_follower import CatalogFollower
from services.common.interaction_store import InteractionStore, StoreError, open_store, seed_once
from services.core.catalog import Catalog
from services.core.filters import CatalogAttributes
from services.gateway.clients import GrpcStages
from services.gateway.interactions import InteractionLog
from services.gateway.recommender import Recommender
from services.gateway.rules_watcher import RulesWatcher
from services.gateway.servicer import RecommendServicer
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class GatewayApp:
    """Ready when retrieval and instruction are SERVING and the interaction store answers (ranking down only
    degrades answers)."""

    name = "gateway"
    full_names = (recommend_service_pb2.DESCRIPTOR.services_by_name["RecommendService"].full_name,)

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.stages: GrpcStages | None = None
        self.recommender: Recommender | None = None
        self.rules: RulesWatcher | None = None
        self.store: InteractionStore | None = None
        self.interactions: InteractionLog | None = None
        self.catalog_follower: CatalogFollower | None = None

    async def start(self) -> None:
        s = self.settings
        catalog = Catalog.load(s.catalog_path)
        self.store = await _open_store(s)
        seeded = await seed_once(self.store, s.interactions_path)
        log.info("loaded data", extra={"items": len(catalog), "store": self.store.description,
                                       "seeded_interactions": seeded})
        self.interactions = InteractionLog(s, catalog, self.store)
        attributes = CatalogAttributes(catalog)
        self.rules = RulesWatcher(s.rules_path, attributes, s.filter_limits(), s.rules_poll_s)
        self.rules.load()  # a broken rules file at start-up is an error: no request is served without its rules
        self.stages = GrpcStages(s)
        self.recommender = Recommender(s, catalog, self.interactions, self.stages, rules=self.rules,
                                       attributes=attributes)
        self.rules.start()
        # Items added to the catalog file are recorded and recommended without a restart.
        self.catalog_follower = CatalogFollower(s.catalog_path, catalog, s.catalog_poll_s,
                                                [lambda added: attributes.refresh()])
        self.catalog_follower.start()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = RecommendServicer(self.recommender, self.interactions)
        recommend_service_pb2_grpc.add_RecommendServiceServicer_to_server(servicer, server)

    async def is_ready(self) -> bool:
        try:
            await self.store.check()
        except StoreError as exc:
            log.warning("interaction store unreachable", extra={"error": str(exc)})
            return False
        return await self.stages.serving("retrieval") and await self.stages.serving("instruction")

    async def close(self) -> None:
        if self.catalog_follower is not None:
            await self.catalog_follower.close()
        if self.rules is not None:
            await self.rules.close()
        if self.stages is not None:
            await self.stages.close()
        if self.store is not None:
            await self.store.close()


async def _open_store(s: GatewaySettings) -> InteractionStore:
    """The interaction store, opened; a store not reachable yet is retried for ``store_start_wait_s``."""
    deadline = time.monotonic() + s.store_start_wait_s
    delay = 0.5
    while True:
        store = open_store(s.interaction_store_target())
        try:
            await store.open()
            return store
        except StoreError as exc:
            await store.close()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("interaction store not reachable yet; retrying", extra={"error": str(exc), "in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
