"""Server bootstrap shared by all services: interceptors, health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import signal
import time
from typing import Protocol

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import tracing
from services.common.admission import Admission, AdmissionInterceptor, AdmissionSettings
from services.common.errors import InvalidArgument, ServiceError, Unauthenticated, status_code
from services.common.metrics import RPC_LATENCY, RPC_REQUESTS, start_metrics_server
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
"""Health service name that is SERVING while the process runs (for Kubernetes liveness probes)."""


class Service(Protocol):
    """What a service gives the bootstrap."""

    name: str
    """Short name for logs and metrics, e.g. ``ranking``."""
    full_names: tuple[str, ...]
    """Fully qualified gRPC service names, e.g. ``instructrec.v1.RankingService``."""

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the servicer(s)."""

    async def start(self) -> None:
        """Open clients and load assets (called before the port is bound)."""

    async def is_ready(self) -> bool:
        """Whether the service can serve right now (models ready, index loaded, ...)."""

    async def close(self) -> None:
        """Close clients."""


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain exceptions into status codes and records per-RPC metrics and logs.

    ``ServiceError`` subclasses keep their code and message; anything else becomes INTERNAL with a generic
    message and a logged traceback, so no internals leak to callers.
    """

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        service = self._service

        async def unary_unary(request, context: grpc.aio.ServicerContext):
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except ServiceError as exc:
                code = status_code(exc)
                log.info("rpc failed", extra={"method": method, "code": code.name, "error": str(exc)})
                await context.abort(code, str(exc))
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"method": method})
                await context.abort(code, "internal error")
            finally:
                RPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)
                RPC_REQUESTS.labels(service, method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata with an accepted token (health checks are exempt).

    It sits inside ``ErrorInterceptor``, so refusals are counted and logged like any other status.
    """

    EXEMPT_PREFIX = "/grpc.health.v1.Health/"

    def __init__(self, tokens: frozenset[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)

    def _accepted(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                value = value if isinstance(value, str) else value.decode(errors="replace")
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer":
                    # compare_digest against every token: the time taken does not reveal which one nearly matched.
                    return any([hmac.compare_digest(token.strip().encode(), t) for t in self._tokens])
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler_call_details.method.startswith(self.EXEMPT_PREFIX)
            or self._accepted(handler_call_details.invocation_metadata)
        ):
            return handler

        async def deny(request, context):
            raise Unauthenticated("missing or invalid bearer token in the 'authorization' metadata")

        if handler.unary_unary is None:

            async def deny_stream(request_or_iterator, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

            factory = {
                "unary_stream": grpc.unary_stream_rpc_method_handler,
                "stream_unary": grpc.stream_unary_rpc_method_handler,
                "stream_stream": grpc.stream_stream_rpc_method_handler,
            }
            kind = next(k for k in factory if getattr(handler, k) is not None)
            return factory[kind](deny_stream, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


class MalformedRequest:
    """Stands in for a request whose bytes are not a valid message of the method's request type.

    grpc's own deserializer raises before any interceptor runs (the caller gets UNKNOWN and the log a
    traceback); :class:`RequestParsingInterceptor` swaps in one that returns this instead, so the handler can
    answer INVALID_ARGUMENT like any other bad request.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _unknown_field_numbers(message: Message) -> list[int]:
    """Field numbers the message's type does not declare (or declares with another wire type), nested too."""
    numbers = [field.field_number for field in unknown_fields.UnknownFieldSet(message)]
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            values = value.values() if descriptor.message_type.fields_by_name["value"].message_type else ()
        else:
            values = (value,) if isinstance(value, Message) else value  # singular, else a repeated container
        for item in values:
            numbers += _unknown_field_numbers(item)
    return sorted(set(numbers))


def tolerant_deserializer(deserializer, *, reject_unknown_fields: bool):
    """Wrap a generated ``FromString``: bytes that do not parse become a :class:`MalformedRequest`.

    Args:
        deserializer: The handler's request deserializer (None for raw-bytes methods: returned as is).
        reject_unknown_fields: Also refuse messages with fields the request type does not declare. Protobuf
            keeps such fields silently, so a message of another type (a client built from other protos, or
            calling the wrong method) often parses without error and would be answered as if it were empty.
    """
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    type_name = descriptor.full_name if descriptor is not None else "request message"
    prefix = f"request body is not a valid {type_name}"

    def deserialize(data: bytes):
        try:
            message = deserializer(data)
        except Exception:  # DecodeError from upb; anything the parser raises means the same: not this type
            return MalformedRequest(f"{prefix}: the bytes do not parse as one")
        if reject_unknown_fields and isinstance(message, Message):
            unknown = _unknown_field_numbers(message)
            if unknown:
                shown = ", ".join(str(n) for n in unknown[:10])
                return MalformedRequest(
                    f"{prefix}: it has field number(s) {shown} that {type_name} does not declare with that wire "
                    "type (a client built from other protos, or a message meant for another method?)"
                )
        return message

    return deserialize


class RequestParsingInterceptor(grpc.aio.ServerInterceptor):
    """Answers INVALID_ARGUMENT, naming the request type, for request bytes that are not a valid request.

    It is the innermost interceptor: on unary RPCs it raises ``InvalidArgument``, which ``ErrorInterceptor``
    maps, counts and logs like any other bad request, and a call refused by ``TokenAuthInterceptor`` is
    refused for its token first. Streaming RPCs (health ``Watch``, reflection) are aborted here directly.

    Unknown fields are refused on methods whose name starts with one of ``strict_prefixes`` (our own
    services, all built from this repository's protos); standard services (health, reflection) keep
    protobuf's leniency, so newer standard clients keep working.
    """

    def __init__(self, strict_prefixes: tuple[str, ...] = ("/instructrec.",)) -> None:
        self._strict_prefixes = strict_prefixes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        full_method = handler_call_details.method
        deserializer = tolerant_deserializer(
            handler.request_deserializer, reject_unknown_fields=full_method.startswith(self._strict_prefixes)
        )
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                if isinstance(request, MalformedRequest):
                    raise InvalidArgument(request.reason)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, serializer)

        async def reject(context, request: MalformedRequest) -> None:
            log.info("rpc failed", extra={"method": full_method.rsplit("/", 1)[-1], "code": "INVALID_ARGUMENT",
                                          "error": request.reason})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)

        if handler.unary_stream is not None:
            stream = _checked_unary_stream(handler.unary_stream, reject)
            return handler if stream is None else grpc.unary_stream_rpc_method_handler(stream, deserializer, serializer)

        async def checked(request_iterator, context):
            async for request in request_iterator:
                if isinstance(request, MalformedRequest):
                    await reject(context, request)
                yield request

        if handler.stream_unary is not None:
            behaviour, factory = _with_requests(handler.stream_unary, checked), grpc.stream_unary_rpc_method_handler
        else:
            behaviour, factory = _with_requests(handler.stream_stream, checked), grpc.stream_stream_rpc_method_handler
        return handler if behaviour is None else factory(behaviour, deserializer, serializer)


def _checked_unary_stream(inner, reject):
    """A unary-stream behaviour that rejects a malformed request first (None: ``inner`` is neither an async
    generator nor a coroutine function, left as it is)."""
    if inspect.isasyncgenfunction(inner):

        async def generate(request, context):
            if isinstance(request, MalformedRequest):
                await reject(context, request)
            async for response in inner(request, context):
                yield response

        return generate
    if inspect.iscoroutinefunction(inner):

        async def write(request, context):
            if isinstance(request, MalformedRequest):
                await reject(context, request)
            return await inner(request, context)

        return write
    return None


def _with_requests(inner, checked):
    """A client-streaming behaviour that reads its requests through ``checked`` (None: not an async one)."""
    if inspect.isasyncgenfunction(inner):

        async def generate(request_iterator, context):
            async for response in inner(checked(request_iterator, context), context):
                yield response

        return generate
    if inspect.iscoroutinefunction(inner):

        async def call(request_iterator, context):
            return await inner(checked(request_iterator, context), context)

        return call
    return None


class ServiceRunner:
    """Runs one service: binds it, keeps its health status current, and stops it gracefully."""

    def __init__(self, settings: ServiceSettings, service: Service) -> None:
        self.settings = settings
        self.service = service
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.health_server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.health_port: int | None = None
        self.metrics_port: int | None = None
        self._health_task: asyncio.Task | None = None
        self._serving: bool | None = None

    async def start(self) -> int:
        """Start the service and return the bound gRPC port."""
        await self.service.start()
        # The trace span (when tracing is on) opens first, so it covers refusals and errors too.
        interceptors: list[grpc.aio.ServerInterceptor] = [*tracing.server_interceptors(),
                                                          ErrorInterceptor(self.service.name)]
        tokens = self.settings.accepted_tokens()
        if tokens:
            interceptors.append(TokenAuthInterceptor(tokens))
        s = self.settings
        admission = Admission(AdmissionSettings(s.admission_max_inflight, s.admission_max_waiting,
                                                s.admission_max_queue_wait_s))
        interceptors.append(AdmissionInterceptor(self.service.name, admission))
        interceptors.append(RequestParsingInterceptor())
        options = []
        if self.settings.max_connection_age_s > 0:
            age_ms = max(1, int(self.settings.max_connection_age_s * 1000))
            # Calls in flight on a connection being retired may finish for up to 2 minutes (longer than any
            # hop's deadline); new calls go to the new connection at once.
            options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", 120_000)]
        server = grpc.aio.server(interceptors=interceptors, maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
                                 options=options)
        self.service.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*self.service.full_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )
        address = f"{self.settings.host}:{self.settings.port}"
        tls = self.settings.tls
        if tls.enabled:
            client_ca = tls.client_ca()
            credentials = grpc.ssl_server_credentials(
                [tls.key_pair()], root_certificates=client_ca, require_client_auth=client_ca is not None
            )
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self.server = server
        if self.settings.health_port is not None:
            # Health only, no API: safe to leave in plaintext next to a TLS-only main port.
            self.health_server = grpc.aio.server(
                interceptors=[ErrorInterceptor(self.service.name), RequestParsingInterceptor()]
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{self.settings.host}:{self.settings.health_port}")
            await self.health_server.start()
        self.metrics_port = start_metrics_server(self.settings.metrics_port, self.settings.metrics_host)
        # Liveness is "the process answers", not "the dependencies are up": restarting a pod cannot fix Triton.
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._update_health()
        self._health_task = asyncio.create_task(self._health_loop())
        log.info(
            "serving",
            extra={"port": self.port, "metrics_port": self.metrics_port, "tls": tls.enabled, "auth": bool(tokens)},
        )
        return self.port

    async def _update_health(self) -> None:
        serving = await self.service.is_ready()
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service.full_names):
            await self.health.set(name, status)
        if serving != self._serving:
            log.info("health changed", extra={"serving": serving})
            self._serving = serving

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_poll_interval_s)
            try:
                await self._update_health()
            except Exception:
                log.exception("health check failed")

    async def stop(self) -> None:
        """Health -> NOT_SERVING, let in-flight RPCs finish within the grace period, close clients."""
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        if self.server:
            await self.server.stop(self.settings.shutdown_grace_s)
        if self.health_server:
            await self.health_server.stop(0)
        await self.service.close()
        log.info("stopped")


async def serve(settings: ServiceSettings, service: Service) -> None:
    """Run a service until SIGTERM/SIGINT, then shut it down gracefully."""
    tracing.configure(service.name)
    runner = ServiceRunner(settings, service)
    await runner.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
    await runner.stop()
    tracing.shutdown()
