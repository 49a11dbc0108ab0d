"""One long-lived async Triton client per model (built by ``triton_clients.triton_client``), with text-in
helpers, error mapping and stub repair."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from services.common import tracing
from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.settings import TritonSettings
from services.common.triton_clients import triton_client
from services.core.deadlines import Budget

log = logging.getLogger(__name__)

# Triton keeps reporting the model READY after its python-backend process died; only unload + load revives it.
_CRASHED_STUB_MARKERS = ("Stub process", "stub process", "Failed to process the request(s)")


@dataclass(frozen=True)
class InferOutput:
    """One request's output tensor and the model version that produced it."""

    array: np.ndarray
    model_version: str


class TritonModel:
    """Calls one Triton model whose single input is text, one request (batch 1) per call.

    Triton's dynamic batcher merges concurrent calls into one execution, so callers simply issue their
    requests concurrently. Each call carries the caller's remaining time twice: as the gRPC deadline
    (``client_timeout``) and as Triton's request ``timeout``, so a request whose caller gave up is dropped
    from Triton's queue instead of being computed for nobody.
    """

    def __init__(self, settings: TritonSettings, model_name: str, input_name: str, output_name: str) -> None:
        self.model_name = model_name
        self._settings = settings
        self._input_name = input_name
        self._output_name = output_name
        self._client = triton_client(settings)
        self._broken_since: float | None = None
        self._last_repair = 0.0
        self._repair_task: asyncio.Task | None = None

    async def is_ready(self, model_version: str = "") -> bool:
        """Whether Triton reports the model (that version, if given) ready and it has not been seen failing
        with a crashed stub."""
        if self._broken_since is not None:
            return False
        try:
            return bool(await self._client.is_model_ready(self.model_name, model_version, client_timeout=2.0))
        except Exception:  # noqa: BLE001 - any failure to ask means "not ready"
            return False

    async def ready_versions(self) -> list[str]:
        """The versions of the model Triton reports (its metadata lists the ready ones); [] when it cannot say."""
        try:
            metadata = await self._client.get_model_metadata(self.model_name, client_timeout=2.0)
        except Exception:  # noqa: BLE001 - any failure to ask means "none known"
            return []
        return list(metadata.versions)

    async def infer_text(self, text: str, timeout_s: float | None = None, *, model_version: str = "") -> InferOutput:
        """Run the model on one text (a ``[1, 1]`` string tensor).

        Args:
            text: The model's text input.
            timeout_s: Time left for the call; capped by the configured ``timeout_s``.
            model_version: Ask for this version ("": the one Triton's version policy picks).

        Returns:
            The output tensor without the batch dimension, and the model version Triton used.

        Raises:
            DeadlineExceeded: the timeout passed.
            InvalidArgument: the model rejected this input.
            Unavailable: Triton or the model (version) cannot serve.
        """
        return await self.infer_strings([text], timeout_s, model_version=model_version, shape=(1, 1))

    async def infer_strings(self, values: Sequence[str], timeout_s: float | None = None, *, model_version: str = "",
                            shape: tuple[int, int] | None = None) -> InferOutput:
        """Run the model on one request of strings: ``[1, len(values)]`` (one sequence, e.g. an item history).

        Same contract as :meth:`infer_text`.
        """
        timeout = Budget(timeout_s).hop(f"model {self.model_name}", self._settings.timeout_s)
        shape = shape or (1, len(values))
        tensor = InferInput(self._input_name, list(shape), "BYTES")
        tensor.set_data_from_numpy(np.array([v.encode("utf-8") for v in values], dtype=np.object_).reshape(shape))
        with tracing.model_call(self.model_name, model_version) as (headers, span):
            try:
                result = await self._client.infer(
                    self.model_name,
                    [tensor],
                    model_version=model_version,
                    outputs=[InferRequestedOutput(self._output_name)],
                    client_timeout=timeout,
                    timeout=int(timeout * 1_000_000),
                    headers=headers,
                )
            except InferenceServerException as exc:
                raise self._map_error(exc) from exc
            if span is not None:
                span.set_attribute("triton.version", result.get_response().model_version)
        self._broken_since = None
        array = result.as_numpy(self._output_name)
        if array is None or array.shape[0] != 1:
            raise Unavailable(f"model {self.model_name} returned no {self._output_name!r} output")
        return InferOutput(array[0], result.get_response().model_version)

    def _map_error(self, exc: InferenceServerException) -> Exception:
        status = (exc.status() or "").upper()
        message = exc.message() or str(exc)
        if "DEADLINE" in status or "Deadline Exceeded" in message or "timeout" in message.lower():
            return DeadlineExceeded(f"model {self.model_name}: deadline exceeded")
        if "INVALID_ARG" in status:
            return InvalidArgument(f"model {self.model_name} rejected the input: {message}")
        if any(marker in message for marker in _CRASHED_STUB_MARKERS):
            self._on_crashed_stub(message)
        log.warning("triton call failed", extra={"model": self.model_name, "status": status, "error": message})
        return Unavailable(f"model {self.model_name} unavailable: {message}")

    def _on_crashed_stub(self, message: str) -> None:
        if self._broken_since is None:
            self._broken_since = time.monotonic()
            log.error("model backend process crashed", extra={"model": self.model_name, "error": message})
        due = time.monotonic() - self._last_repair >= self._settings.repair_interval_s
        if self._settings.repair_crashed_stub and due and (self._repair_task is None or self._repair_task.done()):
            self._last_repair = time.monotonic()
            self._repair_task = asyncio.get_running_loop().create_task(self._repair())

    async def _repair(self) -> None:
        """Unload and load the model so Triton starts a new backend process."""
        log.warning("repairing model: unload + load", extra={"model": self.model_name})
        # Triton restricts its model-repository API to holders of the model-control key (when one is set).
        headers = self._settings.model_control_headers()
        key = {"headers": headers} if headers else {}
        try:
            await self._client.unload_model(self.model_name, client_timeout=30.0, **key)
            await self._client.load_model(self.model_name, client_timeout=120.0, **key)
        except InferenceServerException as exc:
            log.error("model repair failed", extra={"model": self.model_name, "error": exc.message() or str(exc)})
            return
        self._broken_since = None
        log.info("model repaired", extra={"model": self.model_name})

    async def close(self) -> None:
        """Close the gRPC channel to Triton."""
        if self._repair_task is not None and not self._repair_task.done():
            self._repair_task.cancel()
        await self._client.close()
