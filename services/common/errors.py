"""Domain exceptions (``services/core/errors``) and their gRPC status codes: the only place where errors
become statuses."""

from __future__ import annotations

import grpc

from services.core.errors import (  # noqa: F401  (re-exported: the services raise them from here)
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)


def status_code(exc: ServiceError) -> grpc.StatusCode:
    """The gRPC status a domain exception stands for."""
    return grpc.StatusCode[exc.status]


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
