"""Traces across the services and into Triton: one Recommend is one trace, from the gateway through retrieval to
the Triton calls, and a Triton started with OpenTelemetry tracing continues it with its own spans (exported
over OTLP/HTTP to a real receiver here)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing
from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


def _ids_as_base64(body: bytes) -> str:
    """OTLP JSON writes trace and span ids as hex; protobuf's JSON parser wants bytes as base64."""
    def fix(node):
        if isinstance(node, dict):
            return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId")
                        and isinstance(v, str) and v else fix(v)) for k, v in node.items()}
        return [fix(v) for v in node] if isinstance(node, list) else node

    return json.dumps(fix(json.loads(body)))


class _Receiver(BaseHTTPRequestHandler):
    spans: list[tuple[str, str, str]] = []  # (trace id hex, span name, service name)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "json" in self.headers.get("Content-Type", ""):  # OTLP/HTTP JSON: ids as hex strings
            request = json_format.Parse(_ids_as_base64(body), ExportTraceServiceRequest(), ignore_unknown_fields=True)
        else:
            request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    _Receiver.spans.append((span.trace_id.hex(), span.name, service))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def otlp_http_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.spans = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


async def test_one_recommend_is_one_trace_through_the_services_and_triton(
        tiny_model_repository: Path, start_triton, dataset: Path, index_dir: Path, otlp_http_receiver: str) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure("instructrec-test", exporter=exporter)
    try:
        with start_triton(tiny_model_repository, name="triton-traced",
                          extra_args=tracing.triton_trace_args(otlp_http_receiver)) as triton:
            async with running_stack(triton.grpc_addr, dataset, index_dir) as stack:
                async with grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
                    stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
                    response = await stub.Recommend(recommend_service_pb2.RecommendRequest(
                        user_id="1", query="something light and funny", num_items=3), timeout=30)
                    assert response.items
            # Triton exports in batches; its shutdown (leaving the block) flushes them.
    finally:
        tracing.reset()
    spans = exporter.get_finished_spans()
    recommend = [s for s in spans if s.name.endswith("RecommendService/Recommend") and s.kind.name == "SERVER"]
    assert len(recommend) == 1
    trace_id = recommend[0].context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert any(n.endswith("RetrievalService/RetrieveCandidates") for n in names), names
    assert any("InstructionService/" in n for n in names), names
    triton_calls = [s for s in in_trace if s.name == "triton.infer"]
    assert {s.attributes["triton.model"] for s in triton_calls} >= {"text_encoder"}
    assert all(s.attributes.get("triton.version") for s in triton_calls)
    # Every span of the request hangs under the gateway's server span.
    by_id = {s.context.span_id: s for s in in_trace}
    for span in in_trace:
        root = span
        while root.parent is not None and root.parent.span_id in by_id:
            root = by_id[root.parent.span_id]
        assert root is recommend[0], span.name
    # Triton continued the same trace with its own spans.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(t == f"{trace_id:032x}" for t, _, _ in _Receiver.spans):
        time.sleep(0.2)
    joined = [(name, service) for t, name, service in _Receiver.spans if t == f"{trace_id:032x}"]
    assert joined and {service for _, service in joined} == {"triton"}, _Receiver.spans[:5]


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not tracing.configure("gateway")
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    with tracing.model_call("text_encoder", "1") as (headers, span):
        assert headers is None and span is None
    assert tracing.triton_trace_args(None) == []
    assert tracing.endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "http://collector:4317"
