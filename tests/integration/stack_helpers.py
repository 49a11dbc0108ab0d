"""Starting the four services in-process on free ports against a Triton server (shared by integration tests)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
from instructrec.v1 import (
    instruction_service_pb2_grpc,
    ranking_service_pb2_grpc,
    recommend_service_pb2_grpc,
    retrieval_service_pb2_grpc,
)

from services.common.server import ServiceRunner
from services.core.catalog import Catalog, Interaction, Item, write_interactions
from services.gateway.service import GatewayApp
from services.gateway.settings import GatewaySettings
from services.instruction.service import InstructionApp
from services.instruction.settings import InstructionSettings
from services.ranking.service import RankingApp
from services.ranking.settings import RankingSettings
from services.retrieval.service import RetrievalApp
from services.retrieval.settings import RetrievalSettings

GENRES = ("Comedy", "Drama", "Action", "Romance", "Horror", "Animation", "Thriller", "Documentary")


def write_synthetic_dataset(folder: Path, num_items: int = 80, num_users: int = 12, seed: int = 7) -> Path:
    """A small catalog and training interactions in the documented formats."""
    rng = random.Random(seed)
    catalog = Catalog({
        str(i): Item(str(i), f"Film number {i}", 1960 + (i * 7) % 60, tuple(rng.sample(GENRES, 2)))
        for i in range(1, num_items + 1)
    })
    catalog.save(folder / "items.jsonl")
    rows = []
    for u in range(1, num_users + 1):
        for t, item in enumerate(rng.sample(range(1, num_items + 1), 8 + u % 5)):
            rows.append(Interaction(str(u), str(item), float(1_000 + t), 4.0))
    write_interactions(folder / "train.csv", rows)
    return folder


def sequence_index_of(index_dir: Path) -> Path:
    """Where the test stacks keep the sequence index beside a text index (absent: text retrieval only)."""
    return index_dir.with_name(index_dir.name + "-sequence")


STUBS: dict[str, Any] = {
    "gateway": recommend_service_pb2_grpc.RecommendServiceStub,
    "instruction": instruction_service_pb2_grpc.InstructionServiceStub,
    "retrieval": retrieval_service_pb2_grpc.RetrievalServiceStub,
    "ranking": ranking_service_pb2_grpc.RankingServiceStub,
}
"""The gRPC stub class of each service's public API, by service name."""


@dataclass
class Stack:
    """Addresses of the running services and their runners."""

    runners: dict[str, ServiceRunner]

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.runners[name].port}"

    @contextlib.asynccontextmanager
    async def stub(self, name: str) -> AsyncIterator[Any]:
        """A stub of service ``name``'s API on a plaintext channel, closed on leaving."""
        async with grpc.aio.insecure_channel(self.addr(name)) as channel:
            yield STUBS[name](channel)


def service_settings(
    name: str, triton_grpc_addr: str, data_dir: Path, index_dir: Path, peers: dict[str, int], overrides: dict
):
    """Settings of one service for a test stack on loopback (``overrides`` win, nested dicts merged)."""
    # Admission control is sized for the tests' bursts (Triton batching tests send dozens at once on a loaded
    # machine); test_load_shedding.py sets it tight on purpose.
    common = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "health_poll_interval_s": 0.5, "shutdown_grace_s": 1.0,
              "admission_max_inflight": 64, "admission_max_queue_wait_s": 30.0}
    triton = {"grpc_addr": triton_grpc_addr, **overrides.pop("triton", {})}
    catalog = data_dir / "items.jsonl"
    if name == "ranking":
        # The served weight is 0 (the ranker is not called); the test stacks weight the LM so that the ranker
        # path (Triton, label logits, fusion) is exercised. A test can still pass its own lm_weight.
        return RankingSettings(**{**common, "triton": triton, "lm_weight": 0.2, **overrides})
    if name == "retrieval":
        return RetrievalSettings(**{**common, "triton": triton, "catalog_path": catalog, "index_dir": index_dir,
                                    "sequence_index_dir": sequence_index_of(index_dir), **overrides})
    if name == "instruction":
        # Test stacks keep statements in memory and wait for them (so a first request is explicit); the
        # store and the no-wait serving path have their own tests (test_preference_store.py).
        return InstructionSettings(**{**common, "triton": triton, "catalog_path": catalog,
                                      "preference_store_path": None, "preference_wait_s": 60.0, **overrides})
    return GatewaySettings(**{
        **common,
        "catalog_path": catalog,
        "interactions_path": data_dir / "train.csv",
        # Each stack records into its own store, seeded from the data set: no test sees another's interactions.
        "interaction_store": str(Path(tempfile.mkdtemp(prefix="interactions-")) / "interactions.sqlite3"),
        **{f"{peer}_addr": f"127.0.0.1:{port}" for peer, port in peers.items()},
        **overrides,
    })


SERVICE_CLASSES = {
    "ranking": RankingApp,
    "retrieval": RetrievalApp,
    "instruction": InstructionApp,
    "gateway": GatewayApp,
}


@contextlib.asynccontextmanager
async def running_stack(
    triton_grpc_addr: str,
    data_dir: Path,
    index_dir: Path,
    service_overrides: dict[str, dict] | None = None,
    **gateway_overrides,
):
    """Start ranking, retrieval, instruction and gateway in this process on port 0; stop them afterwards.

    Args:
        service_overrides: Settings fields per service name, e.g. ``{"ranking": {"tls": {...}}}``.
        gateway_overrides: Shorthand for the gateway's overrides.
    """
    overrides = {k: dict(v) for k, v in (service_overrides or {}).items()}
    overrides.setdefault("gateway", {}).update(gateway_overrides)
    runners: dict[str, ServiceRunner] = {}
    try:
        for name, cls in SERVICE_CLASSES.items():
            peers = {peer: runner.port for peer, runner in runners.items()}
            settings = service_settings(name, triton_grpc_addr, data_dir, index_dir, peers, overrides.get(name, {}))
            runners[name] = ServiceRunner(settings, cls(settings))
            await runners[name].start()
        yield Stack(runners)
    finally:
        for runner in reversed(runners.values()):
            await runner.stop()


def stub_pid(triton, model: str) -> int:
    """The pid of ``model``'s python-backend process under a running Triton (to kill it in fault tests)."""
    import psutil

    for child in psutil.Process(triton.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(f"/{model}/" in part for part in child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no backend process for {model}")


class BackgroundCallers:
    """``callers`` concurrent tasks running :meth:`_caller` from entering (``async with``) until leaving.

    Subclasses implement ``_caller(n)`` as a loop that runs while :meth:`running` and record what they see.
    """

    def __init__(self, callers: int) -> None:
        self.callers = callers
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def running(self) -> bool:
        return not self._stop.is_set()

    async def _caller(self, n: int) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._tasks = [asyncio.create_task(self._caller(n)) for n in range(self.callers)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
