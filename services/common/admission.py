"""Admission control: a bounded waiting room in front of a service, shedding by expected wait.

At most ``max_inflight`` RPCs are served at once; the rest wait in arrival order. A new RPC is refused at once
with RESOURCE_EXHAUSTED, before any work, when the wait it can expect would outlast what it can use:

    expected wait = (RPCs waiting ahead + 1) / max_inflight x service time

with *service time* a moving average of the RPCs served here (time from admission to the end). It is refused
when that wait exceeds ``max_queue_wait_s`` (the latency the service promises not to exceed by queueing), or
exceeds the caller's remaining deadline less one service time (it would time out in the queue or right after),
or when ``max_waiting`` RPCs already wait. An admitted RPC that waits past that same limit (the estimate was low)
is refused when it is reached, again before any work. So past capacity callers learn it in
milliseconds instead of at their deadline, and what is admitted is served at the latency it was admitted for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import grpc

from services.common.errors import ResourceExhausted
from services.common.metrics import ADMISSION_INFLIGHT, ADMISSION_SERVICE_TIME, ADMISSION_WAITING, SHED

SHED_QUEUE_FULL = "queue_full"
SHED_EXPECTED_WAIT = "expected_wait"
SHED_WAITED_TOO_LONG = "waited_too_long"


@dataclass(frozen=True)
class AdmissionSettings:
    max_inflight: int
    max_waiting: int
    max_queue_wait_s: float
    initial_service_time_s: float = 0.05
    smoothing: float = 0.1  # weight of the newest observation in the moving average


class Shed(ResourceExhausted):
    """Refused by admission control (RESOURCE_EXHAUSTED), with the reason for metrics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Admission:
    """The waiting room of one service (one event loop)."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self._s = settings
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.service_time_s = settings.initial_service_time_s

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def expected_wait_s(self) -> float:
        """The wait a new RPC can expect now (0 when a slot is free)."""
        if self._inflight < self._s.max_inflight and not self._waiters:
            return 0.0
        return (len(self._waiters) + 1) / self._s.max_inflight * self.service_time_s

    async def acquire(self, time_remaining_s: float | None) -> float:
        """Wait for a slot; returns when this RPC may run (the caller must :meth:`release`).

        Raises:
            Shed: the expected or actual wait would outlast what the RPC can use.
        """
        wait = self.expected_wait_s()
        if wait == 0.0:
            self._inflight += 1
            return time.monotonic()
        if len(self._waiters) >= self._s.max_waiting:
            raise Shed(f"overloaded: {len(self._waiters)} requests already wait; retry later", SHED_QUEUE_FULL)
        limit = self._s.max_queue_wait_s
        if time_remaining_s is not None:
            limit = min(limit, time_remaining_s - self.service_time_s)
        if wait > limit:
            raise Shed(f"overloaded: about {wait:.2f} s of queue ahead, more than the {max(limit, 0):.2f} s this "
                       f"request can wait; retry later", SHED_EXPECTED_WAIT)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # Never longer than the limit it was admitted against: an estimate that was low is found out then.
            await asyncio.wait_for(asyncio.shield(waiter), timeout=limit)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return time.monotonic()  # the slot came with the timeout: keep it
            waiter.cancel()
            raise Shed(f"overloaded: waited {limit:.2f} s for a slot; retry later", SHED_WAITED_TOO_LONG) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(None)  # cancelled while the slot was handed over: pass it on
            else:
                waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return time.monotonic()

    def release(self, started: float | None) -> None:
        """End an admitted RPC (``started`` as :meth:`acquire` returned; None: not measured) and hand its slot on."""
        if started is not None:
            elapsed = time.monotonic() - started
            self.service_time_s += self._s.smoothing * (elapsed - self.service_time_s)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter: inflight stays
                return
        self._inflight -= 1


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Puts this service's own unary RPCs (``/instructrec.``) through :class:`Admission`; health and reflection
    pass. It sits inside ``ErrorInterceptor`` (a shed RPC is counted and logged as RESOURCE_EXHAUSTED) and
    after authentication (an unauthenticated caller takes no place in the queue)."""

    def __init__(self, service: str, admission: Admission, prefixes: tuple[str, ...] = ("/instructrec.",)) -> None:
        self._service = service
        self._admission = admission
        self._prefixes = prefixes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not handler_call_details.method.startswith(self._prefixes):
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method.rsplit("/", 1)[-1]
        admission, service = self._admission, self._service

        async def unary_unary(request, context):
            try:
                started = await admission.acquire(context.time_remaining())
            except Shed as exc:
                SHED.labels(service, method, exc.reason).inc()
                raise
            finally:
                _export(service, admission)
            try:
                return await inner(request, context)
            finally:
                admission.release(started)
                _export(service, admission)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _export(service: str, admission: Admission) -> None:
    ADMISSION_INFLIGHT.labels(service).set(admission.inflight)
    ADMISSION_WAITING.labels(service).set(admission.waiting)
    ADMISSION_SERVICE_TIME.labels(service).set(admission.service_time_s)
