"""Domain exceptions and their gRPC status codes: the only place where errors become statuses."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base of the errors a servicer may raise; ``code`` is the status the caller receives."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    """The request is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    """A referenced entity does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ServiceError):
    """A dependency (Triton, a downstream service, the index) cannot serve right now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    """The caller's deadline (or a hop's share of it) ran out."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ServiceError):
    """The caller presented no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServiceError):
    """The service or a dependency is over capacity."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


_FROM_STATUS: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(stage: str, err: grpc.aio.AioRpcError) -> ServiceError:
    """Turn a downstream service's status into a domain error, naming the stage that failed.

    INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED keep their code; everything
    else (UNAVAILABLE, INTERNAL, UNKNOWN, ...) becomes UNAVAILABLE, because for our caller the stage is down.
    """
    cls = _FROM_STATUS.get(err.code(), Unavailable)
    return cls(f"{stage}: {err.details() or err.code().name}")
