"""Domain exceptions <-> gRPC status codes: ``status_code`` and ``from_rpc_error``."""

from __future__ import annotations

import grpc
import pytest

from services.common import errors
from services.common.errors import from_rpc_error, status_code


def _rpc_error(code: grpc.StatusCode, details: str | None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (errors.ServiceError, grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_is_the_status_each_exception_names(
    error: type[errors.ServiceError], code: grpc.StatusCode
) -> None:
    assert status_code(error("x")) is code


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    ],
)
def test_from_rpc_error_keeps_the_callers_own_codes_and_names_the_stage(code, error) -> None:
    mapped = from_rpc_error("ranking", _rpc_error(code, "k must be positive"))
    assert type(mapped) is error
    assert str(mapped) == "ranking: k must be positive"
    assert status_code(mapped) is code  # passes through a service unchanged


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    ],
)
def test_from_rpc_error_turns_every_other_code_into_unavailable(code: grpc.StatusCode) -> None:
    mapped = from_rpc_error("retrieval", _rpc_error(code, "boom"))
    assert type(mapped) is errors.Unavailable and str(mapped) == "retrieval: boom"


def test_from_rpc_error_without_details_names_the_code() -> None:
    assert str(from_rpc_error("instruction", _rpc_error(grpc.StatusCode.INTERNAL, None))) == "instruction: INTERNAL"
    assert str(from_rpc_error("instruction", _rpc_error(grpc.StatusCode.NOT_FOUND, ""))) == "instruction: NOT_FOUND"
