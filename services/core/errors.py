"""Domain exceptions. Each names the gRPC status it stands for; ``services/common/errors`` does the mapping.

They carry the status as a name (not a ``grpc.StatusCode``) so that this package stays free of grpc.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors the domain may raise; ``status`` is the name of the status the caller receives."""

    status: str = "INTERNAL"


class InvalidArgument(ServiceError):
    """The request is malformed; the message names the field."""

    status = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    """A referenced entity does not exist."""

    status = "NOT_FOUND"


class Unavailable(ServiceError):
    """A dependency (Triton, a downstream service, the index) cannot serve right now; retrying may help."""

    status = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    """The caller's deadline (or a hop's share of it) ran out."""

    status = "DEADLINE_EXCEEDED"


class Unauthenticated(ServiceError):
    """The caller presented no valid credentials."""

    status = "UNAUTHENTICATED"


class ResourceExhausted(ServiceError):
    """The service or a dependency is over capacity."""

    status = "RESOURCE_EXHAUSTED"
