"""One long-lived async Triton client per model, with text-in helpers and error mapping."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.settings import TritonSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferOutput:
    """One request's output tensor and the model version that produced it."""

    array: np.ndarray
    model_version: str


class TritonModel:
    """Calls one Triton model whose single input is text, one request (batch 1) per call.

    Triton's dynamic batcher merges concurrent calls into one execution, so callers simply issue their
    requests concurrently.
    """

    def __init__(self, settings: TritonSettings, model_name: str, input_name: str, output_name: str) -> None:
        self.model_name = model_name
        self._settings = settings
        self._input_name = input_name
        self._output_name = output_name
        self._client = triton_aio.InferenceServerClient(url=settings.grpc_addr)

    async def is_ready(self) -> bool:
        """Whether Triton reports the model ready (False when Triton is unreachable)."""
        try:
            return bool(await self._client.is_model_ready(self.model_name, client_timeout=2.0))
        except Exception:  # noqa: BLE001 - any failure to ask means "not ready"
            return False

    async def infer_text(self, text: str, timeout_s: float | None = None) -> InferOutput:
        """Run the model on one text.

        Args:
            text: The model's text input.
            timeout_s: Client-side timeout; defaults to the configured ``timeout_s``.

        Returns:
            The output tensor without the batch dimension, and the model version Triton used.

        Raises:
            DeadlineExceeded: the timeout passed.
            InvalidArgument: the model rejected this input.
            Unavailable: Triton or the model cannot serve.
        """
        timeout = self._settings.timeout_s if timeout_s is None else min(timeout_s, self._settings.timeout_s)
        if timeout <= 0.001:
            raise DeadlineExceeded(f"model {self.model_name}: deadline exceeded before the call")
        tensor = InferInput(self._input_name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
        try:
            result = await self._client.infer(
                self.model_name,
                [tensor],
                outputs=[InferRequestedOutput(self._output_name)],
                client_timeout=timeout,
            )
        except InferenceServerException as exc:
            raise _map_error(self.model_name, exc) from exc
        array = result.as_numpy(self._output_name)
        if array is None or array.shape[0] != 1:
            raise Unavailable(f"model {self.model_name} returned no {self._output_name!r} output")
        return InferOutput(array[0], result.get_response().model_version)

    async def close(self) -> None:
        """Close the gRPC channel to Triton."""
        await self._client.close()


def _map_error(model: str, exc: InferenceServerException) -> Exception:
    status = (exc.status() or "").upper()
    message = exc.message() or str(exc)
    if "DEADLINE" in status or "Deadline Exceeded" in message:
        return DeadlineExceeded(f"model {model}: deadline exceeded")
    if "INVALID_ARG" in status:
        return InvalidArgument(f"model {model} rejected the input: {message}")
    log.warning("triton call failed", extra={"model": model, "status": status, "error": message})
    return Unavailable(f"model {model} unavailable: {message}")
