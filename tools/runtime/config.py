"""Where the local stack keeps things and which ports it uses (`instructrec run` and `prepare`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.common.settings import ROOT
from services.core.contracts import SERVED_MODELS
from services.gateway.settings import GatewaySettings
from services.instruction.settings import InstructionSettings
from services.ranking.settings import RankingSettings
from services.retrieval.settings import RetrievalSettings
from tools.core.workspace import DatasetWorkspace
from tools.runtime.supervise import RestartPolicy

MODELS = SERVED_MODELS
SERVICES = ("ranking", "retrieval", "instruction", "gateway")
SETTINGS = {
    "gateway": GatewaySettings,
    "instruction": InstructionSettings,
    "retrieval": RetrievalSettings,
    "ranking": RankingSettings,
}
# Four processes on one machine cannot share one metrics port; in Kubernetes each pod uses its own.
DEFAULT_METRICS_PORTS = {"gateway": 9091, "instruction": 9092, "retrieval": 9093, "ranking": 9094}


def _ports_from_settings() -> dict[str, int]:
    """gRPC ports as each service's settings say (their defaults, or the environment's overrides)."""
    return {name: cls().port for name, cls in SETTINGS.items()}


def _metrics_ports_from_settings() -> dict[str, int]:
    return {name: cls().metrics_port or DEFAULT_METRICS_PORTS[name] for name, cls in SETTINGS.items()}


@dataclass
class StackConfig:
    """Where things live and which ports the local stack uses."""

    workspace: Path = ROOT / "var"
    model_repository: Path = ROOT / "model_repository"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    ports: dict[str, int] = field(default_factory=_ports_from_settings)
    metrics_ports: dict[str, int] = field(default_factory=_metrics_ports_from_settings)
    log_format: str = "text"
    custom_data_dir: Path | None = None
    """A data set prepared with `instructrec prepare-data`; None serves MovieLens-100K."""
    dataset: DatasetWorkspace | None = None
    """A data set workspace made by `instructrec bootstrap` (its split, models, indexes, fitted weights and
    stores); see :meth:`for_dataset`."""
    models: str = "tuned"
    """``tuned``: export the committed instruction-tuned adapters (tools/train/adapters) and serve the latest
    version of each model; ``base``: serve the versions exported from the base models."""
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    """When a process that exited is restarted, and after how many failures the stack gives up."""

    @classmethod
    def for_dataset(cls, root: Path, **options) -> StackConfig:
        """The stack serving a bootstrapped workspace: its own model repository, indexes, weights and stores."""
        ws = DatasetWorkspace.at(root)
        return cls(dataset=ws, model_repository=ws.model_repository, custom_data_dir=ws.data_dir, **options)

    @property
    def data_dir(self) -> Path:
        return self.custom_data_dir or self.workspace / "data" / "movielens-100k"

    @property
    def index_dir(self) -> Path:
        return self.dataset.index_dir if self.dataset else self.workspace / "index" / self.data_dir.name

    @property
    def sequence_index_dir(self) -> Path:
        if self.dataset:
            return self.dataset.sequence_index_dir
        return self.workspace / "index-sequence" / self.data_dir.name

    @property
    def preference_store(self) -> Path:
        if self.dataset:
            return self.dataset.preference_store
        return self.workspace / "preferences" / f"{self.data_dir.name}.sqlite"

    @property
    def interaction_store(self) -> Path:
        """The gateways' interaction store (SQLite, WAL), seeded from the data set's ``train.csv``."""
        if self.dataset:
            return self.dataset.interaction_store
        return self.workspace / "interactions" / f"{self.data_dir.name}.sqlite3"

    fill_preferences: bool = True
    """After "ready", write the known users' missing preference statements in the background
    (``instructrec precompute-preferences``); until then their requests get the implicit instruction."""
