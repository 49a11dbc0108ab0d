"""The services' hop to Triton over mutual TLS (Triton started with --grpc-use-ssl-mutual)."""

from __future__ import annotations

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.certs import make_certs
from tests.integration.conftest import TRITON_MODELS, StartTriton
from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def tls_triton(tiny_model_repository, tmp_path_factory, start_triton: StartTriton):
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    extra_args = [
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={certs.server_cert}",
        f"--grpc-server-key={certs.server_key}",
        f"--grpc-root-cert={certs.ca}",
    ]
    with start_triton(tiny_model_repository, TRITON_MODELS, name="triton-tls", extra_args=extra_args) as server:
        yield server, certs


async def test_services_reach_triton_over_mutual_tls_and_plaintext_is_refused(tls_triton, dataset, index_dir):
    server, certs = tls_triton
    tls = {"enabled": True, "ca_path": certs.ca, "cert_path": certs.client_cert, "key_path": certs.client_key}
    overrides = {name: {"triton": {"tls": tls}} for name in ("ranking", "retrieval", "instruction")}
    async with running_stack(server.grpc_addr, dataset, index_dir, service_overrides=overrides) as s, \
            grpc.aio.insecure_channel(s.addr("gateway")) as ch:
        r = await recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(
            recommend_service_pb2.RecommendRequest(user_id="4", query="something fun to watch tonight"), timeout=60
        )
    assert len(r.items) == 10 and not r.degraded
    assert {v.model_name for v in r.model_versions} == set(TRITON_MODELS)
    plaintext = triton_grpc.InferenceServerClient(server.grpc_addr)
    with pytest.raises(InferenceServerException):
        plaintext.is_model_ready("ranker", client_timeout=5)
