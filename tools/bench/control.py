"""Triton during a bench run: statistics snapshots and reversible config overrides over its gRPC API.

Overrides go through Triton's model-control API (``load_model(name, config=...)``); unload + load serves the
model from its config.pbtxt again, which is how :meth:`TritonControl.restore` undoes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from services.common.settings import TritonSettings
from services.common.triton_clients import triton_client
from services.core.contracts import MODEL_NAMES, TRITON_CONTRACTS
from tools.bench.stats import ModelCounters

# --set keys that are config fields rather than model parameters.
CONFIG_KEYS = ("max_queue_delay_us", "preferred_batch_size", "max_batch_size", "instance_count")


class TritonControl:
    """Statistics snapshots and reversible config overrides over Triton's gRPC API.

    Args:
        settings: How to reach Triton (address, TLS).
    """

    def __init__(self, settings: TritonSettings) -> None:
        self._client = triton_client(settings)
        # Model control (the config overrides) carries the key when Triton restricts it.
        self._control = settings.model_control_headers() or None
        self.overridden: set[str] = set()

    async def close(self) -> None:
        await self._client.close()

    async def config(self, model: str) -> dict[str, Any]:
        return (await self._client.get_model_config(model, as_json=True))["config"]

    async def version(self, model: str) -> str:
        stats = await self._client.get_inference_statistics(model, as_json=True)
        return str(stats["model_stats"][0]["version"])

    async def snapshot(self, models: Sequence[str]) -> dict[str, ModelCounters]:
        return {m: ModelCounters.from_json(await self._client.get_inference_statistics(m, as_json=True))
                for m in models}

    async def infer_text(self, model: str, text: str) -> None:
        """One batch-1 inference of ``model``'s text input (what the services send)."""
        import numpy as np
        import tritonclient.grpc.aio as aioclient

        tensor = aioclient.InferInput(TRITON_CONTRACTS[model].input_name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
        await self._client.infer(model, [tensor], client_timeout=60)

    async def override(self, model: str, config: dict[str, Any]) -> None:
        """Serve ``model`` with ``config`` (Triton reloads it; the override lasts until :meth:`restore`)."""
        await self._client.load_model(model, config=json.dumps(config), headers=self._control)
        self.overridden.add(model)
        await self.wait_ready(model)

    async def restore(self) -> None:
        """Serve every overridden model from its config.pbtxt again (unload + load drops an override)."""
        for model in sorted(self.overridden):
            await self._client.unload_model(model, unload_dependents=False, headers=self._control)
            await self._wait_unloaded(model)
            await self._client.load_model(model, headers=self._control)
            await self.wait_ready(model)
            self.overridden.discard(model)

    async def _wait_unloaded(self, model: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            index = await self._client.get_model_repository_index(as_json=True, headers=self._control)
            states = [m.get("state") for m in index.get("models", []) if m.get("name") == model]
            if not states or all(s != "READY" and s != "UNLOADING" for s in states):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{model} did not unload within {timeout_s:.0f} s")

    async def wait_ready(self, model: str, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self._client.is_model_ready(model):
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{model} was not ready within {timeout_s:.0f} s")


def without_dynamic_batching(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the dynamic batcher removed: Triton then executes every request on its own."""
    return {k: v for k, v in config.items() if k != "dynamic_batching"}


def on_gpu(config: dict[str, Any], device_id: int = 0) -> dict[str, Any]:
    """The config with its instances on GPU ``device_id`` (``KIND_GPU``), same count as before."""
    count = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    return {**config, "instance_group": [{"count": count, "kind": "KIND_GPU", "gpus": [device_id]}]}


def is_gpu_config(config: dict[str, Any]) -> bool:
    """Whether every instance group of the config runs on a GPU."""
    groups = config.get("instance_group", [])
    return bool(groups) and all(g.get("kind") == "KIND_GPU" for g in groups)


def parse_settings(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["ranker:num_threads=1", "ranker:max_queue_delay_us=0"]`` -> ``{"ranker": {...}}``.

    Raises:
        ValueError: not ``MODEL:KEY=VALUE``, or an unknown model.
    """
    settings: dict[str, dict[str, str]] = {}
    for value in values:
        model, _, rest = value.partition(":")
        key, eq, setting = rest.partition("=")
        if model not in MODEL_NAMES or not key or not eq:
            raise ValueError(f"--set takes MODEL:KEY=VALUE with MODEL one of {', '.join(MODEL_NAMES)}; got {value!r}")
        settings.setdefault(model, {})[key.strip()] = setting.strip()
    return settings


def apply_settings(config: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    """The config with ``settings`` applied: ``CONFIG_KEYS`` to their config fields, any other key as a
    ``parameters`` string value (what the model.py adapters read: num_threads, rows_per_run, ...)."""
    config = json.loads(json.dumps(config))
    for key, value in settings.items():
        if key == "max_queue_delay_us":
            config.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = str(int(value))
        elif key == "preferred_batch_size":
            sizes = [int(v) for v in value.replace("/", " ").split()]
            config.setdefault("dynamic_batching", {})["preferred_batch_size"] = sizes
        elif key == "max_batch_size":
            config["max_batch_size"] = int(value)
        elif key == "instance_count":
            for group in config.get("instance_group", []) or [{}]:
                group["count"] = int(value)
        else:
            config.setdefault("parameters", {})[key] = {"string_value": value}
    return config
