"""Session fixtures shared by the integration tests: a tiny model repository, a real Triton serving it, and
``start_triton``, the one factory every test that needs a Triton of its own starts it with.

The models are random-initialised copies of the served architectures (BERT encoder, Llama LM) with the real
tokenizers, exported by the same code as the real models (``tools/export``), so the tests exercise the
whole path (export, ``config.pbtxt``, ``model.py``, Triton's dynamic batcher) in seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from services.core.catalog import Catalog
from services.core.contracts import REQUEST_READER, SEQUENCE_ENCODER, SERVED_MODELS
from tools import export
from tools.core.adapters import PUBLISHED_ADAPTERS
from tools.core.base_models import smollm2_tokenizer_dir
from tools.runtime.triton_server import TritonServer
from tools.tiny_models import build_tiny_encoder, build_tiny_lm, build_tiny_sequence_model

ROOT = Path(__file__).resolve().parents[2]
TRITON_MODELS = SERVED_MODELS
BACKEND_DIR = ROOT / "var" / "triton" / "backends"
TRITON_READY_TIMEOUT_S = 180.0
StartTriton = Callable[..., AbstractContextManager[TritonServer]]

# A longer batching window than the defaults: on a loaded 2-core CI machine it makes executions with
# several requests reliable, at no cost to the tests' run time.
_TEST_QUEUE_DELAY_US = 20_000


@pytest.fixture(scope="session")
def tiny_model_repository(tmp_path_factory: pytest.TempPathFactory, dataset: Path, tiny_sequence_model: Path) -> Path:
    """A model repository with version 1 of the five models, four of them exported from tiny random models.

    ``text_encoder`` outputs 32-d embeddings; ``ranker`` and ``preference_generator`` use SmolLM2's real
    tokenizer and chat template; ``sequence_encoder`` knows the items of ``dataset``; ``request_reader`` is the
    real one; all use the committed ``model.py`` adapters.
    """
    base = tmp_path_factory.mktemp("tiny_models")
    encoder = build_tiny_encoder(base / "encoder")
    lm = build_tiny_lm(base / "lm", smollm2_tokenizer_dir(ROOT / "var"))
    repository = base / "model_repository"
    export.export_text_encoder(encoder, repository, 1, max_queue_delay_us=_TEST_QUEUE_DELAY_US)
    export.export_ranker(lm, repository, 1, max_queue_delay_us=_TEST_QUEUE_DELAY_US)
    export.export_preference_generator(lm, repository, 1, max_new_tokens=8)
    export.export_model(SEQUENCE_ENCODER, tiny_sequence_model, repository, version=1,
                        max_queue_delay_us=_TEST_QUEUE_DELAY_US)
    # The real reader (the committed adapter merged into MiniLM): a random tagger reads nothing, and reading is
    # what the reading tests check; it is small enough to export in seconds.
    export.export_model(REQUEST_READER, PUBLISHED_ADAPTERS / REQUEST_READER, repository, version=1,
                        max_queue_delay_us=_TEST_QUEUE_DELAY_US)
    return repository


@pytest.fixture(scope="session")
def tiny_sequence_model(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A tiny random SASRec checkpoint (``tools/core/sequence_model.py`` format) over the items of ``dataset``."""
    return build_tiny_sequence_model(tmp_path_factory.mktemp("sequence") / "model",
                                     list(Catalog.load(dataset / "items.jsonl").items))


@pytest.fixture(scope="session")
def start_triton(tmp_path_factory: pytest.TempPathFactory) -> StartTriton:
    """The one way the tests start a real Triton (from the nvidia-pytriton wheel) on free ports.

    ``start_triton(repository, models, name=..., ready_timeout_s=..., **options)`` is a context manager: it
    starts ``TritonServer(repository, models, backend_dir=BACKEND_DIR, log_file=<new tmp folder named
    name>/tritonserver.log, **options)``, waits until it is ready and yields it; on leaving it stops the server
    (also when it never became ready). ``options`` are ``TritonServer``'s other keywords (``extra_args``,
    ``model_control_key``, ports...).
    """

    @contextlib.contextmanager
    def start(repository: Path, models: Sequence[str] = TRITON_MODELS, *, name: str = "triton",
              ready_timeout_s: float = TRITON_READY_TIMEOUT_S, **options: Any) -> Iterator[TritonServer]:
        log_file = tmp_path_factory.mktemp(name) / "tritonserver.log"
        server = TritonServer(repository, models, backend_dir=BACKEND_DIR, log_file=log_file, **options)
        server.start()
        try:
            server.wait_ready(timeout_s=ready_timeout_s)
            yield server
        finally:
            server.stop()

    return start


@pytest.fixture(scope="session")
def triton_server(tiny_model_repository: Path, start_triton: StartTriton) -> Iterator[TritonServer]:
    """The session's shared Triton serving ``tiny_model_repository``."""
    with start_triton(tiny_model_repository) as server:
        yield server


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalog and training interactions in the documented formats."""
    from tests.integration.stack_helpers import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def index_dir(dataset: Path, triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The text index of ``dataset``, built through the tiny ``text_encoder`` on Triton, and beside it
    (``<index_dir>-sequence``, where the test stack's retrieval looks) the tiny sequence model's index."""
    import asyncio

    from tests.integration.stack_helpers import sequence_index_of
    from tools.index import build_index, build_sequence_index_async

    out = build_index(dataset / "items.jsonl", dataset / "train.csv", tmp_path_factory.mktemp("index"),
                      triton_server.grpc_addr, progress=False)
    asyncio.run(build_sequence_index_async(dataset / "items.jsonl", dataset / "train.csv", sequence_index_of(out),
                                           triton_server.grpc_addr, triton_server.model_repository))
    return out


@pytest.fixture(scope="session")
async def stack(triton_server: TritonServer, dataset: Path, index_dir: Path):
    """The four services in this process on free ports, against ``triton_server``."""
    from tests.integration.stack_helpers import running_stack

    async with running_stack(triton_server.grpc_addr, dataset, index_dir) as s:
        yield s


@pytest.fixture(scope="session")
async def gateway(stack):
    """A RecommendService stub on the shared stack's gateway."""
    import grpc
    from instructrec.v1 import recommend_service_pb2_grpc

    async with grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
        yield recommend_service_pb2_grpc.RecommendServiceStub(channel)
