"""OpenTelemetry traces across the services and into Triton (issue #31): off unless an OTLP endpoint is set.

On when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the SDK's standard
variables; sampling, headers and the like follow the SDK's other ``OTEL_*`` variables too): each service
then exports its spans over OTLP/gRPC, batched, under ``service.name`` = the service. Off, nothing is
installed: no interceptor, no span, no cost on the request path.

What is traced:

* every RPC a service serves and every RPC it makes (the gRPC instrumentation's interceptors: W3C trace
  context travels in the metadata, so gateway -> instruction / retrieval / ranking is one trace);
* every Triton call (``triton.infer``, with the model, the version asked for and the version that
  answered), whose ``traceparent`` goes to Triton in the request headers: a Triton started with
  ``--trace-config mode=opentelemetry`` (``instructrec run`` and the manifests do so when tracing is on)
  continues the trace with its own spans (queue, compute) under that call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_provider = None  # the service's TracerProvider once configured (None: tracing is off)


def endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The OTLP endpoint the environment names, or None (tracing off)."""
    env = os.environ if env is None else env
    return next((env[name] for name in ENDPOINT_VARIABLES if env.get(name)), None)


def configure(service_name: str, exporter=None) -> bool:
    """Install this process's tracer provider when an endpoint is set (or ``exporter`` is given: tests pass the
    SDK's in-memory exporter); returns whether tracing is on. Called once per process, before serving."""
    global _provider
    if exporter is None and endpoint() is None:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    # Not installed as the global provider: everything here uses ``_provider``, so tests can turn tracing on
    # and off again in one process.
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing on", extra={"endpoint": endpoint()})
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    return True


def reset() -> None:
    """Flush and turn tracing off in this process (tests that turned it on)."""
    global _provider
    shutdown()
    _provider = None


TRITON_TRACES_URL_VARIABLE = "INSTRUCTREC_TRITON_OTLP_TRACES_URL"
"""Where a Triton started by `instructrec run` sends its spans: Triton exports OTLP over HTTP only
(e.g. ``http://localhost:4318/v1/traces``); unset, Triton does not trace."""


def triton_trace_args(url: str | None) -> list[str]:
    """``tritonserver`` flags that trace every request with OpenTelemetry, continuing the caller's trace from the
    ``traceparent`` header, and export to ``url`` (OTLP/HTTP); none without a URL."""
    if not url:
        return []
    return ["--trace-config=mode=opentelemetry", "--trace-config=rate=1", "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={url}", "--trace-config=opentelemetry,resource=service.name=triton"]


def shutdown() -> None:
    """Flush the spans still batched (on shutdown)."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list:
    """The gRPC server interceptor that opens a span per served RPC (none when tracing is off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider)]


def client_interceptors() -> list:
    """The gRPC client interceptors that open a span per call and send the trace context (none when off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider))


@contextmanager
def model_call(model: str, version: str) -> Iterator[tuple[dict[str, str] | None, object]]:
    """A ``triton.infer`` client span around one Triton call: yields the headers that carry its context to
    Triton (None when tracing is off) and the span (set ``answered_version`` on it)."""
    if _provider is None:
        yield None, None
        return
    tracer = _provider.get_tracer("instructrec.triton")
    attributes = {"triton.model": model, "triton.version_asked": version or ""}
    with tracer.start_as_current_span("triton.infer", kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers, span
