"""Push a new model version to running Triton servers, with a canary inference and automatic rollback.

A push assumes Triton runs with ``--model-control-mode=explicit`` over the model repository the version was
exported into, and the model's ``config.pbtxt`` has ``version_policy { latest { num_versions: N } }``:

1. Every target is checked to be reachable before anything is loaded anywhere.
2. Each target in turn is asked to ``load_model``. Triton loads the new version while the previous one
   keeps serving, then retires the previous one (no downtime). A version that fails to load leaves the
   previous one serving.
3. The push waits until the new version is READY, then runs a canary inference against that version
   explicitly: the fixed input recorded in the version's ``metadata.json`` by the export, whose output must
   have the expected shape, be finite and match what the export computed within the parity tolerance (the
   ``text`` of ``preference_generator`` must decode).
4. Any failure (unreachable target, load error, not ready in time, canary) rolls everything back: the new
   version folder is removed (renamed aside first, so nobody sees it half-deleted), ``config.pbtxt`` is
   restored if the export changed it, and every target already asked to load is asked again, so it serves
   the previous version. :class:`PushError` then says what failed where and what each target serves now.
5. Only after every target succeeded are versions beyond the last ``keep`` removed from the repository.

The swap itself fails no request: Triton keeps the old version until the new one is loaded. With
``latest 1`` the new version takes traffic as soon as it is loaded, so the canary runs on a version that
already serves: a version that loads but answers wrongly is served until the rollback has reloaded the
previous one (about one canary plus one load). A version that fails to load never serves.

Several targets are several Triton replicas that share one repository (in Kubernetes a ReadWriteMany
volume mounted by every Triton pod, the pods listed by a headless service): the export writes the version
folder once, then each replica is asked to load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tools import export
from tools.export.canary import CanaryError, canary_spec, check_canary

logger = logging.getLogger(__name__)

DEFAULT_LOAD_TIMEOUT_S = 600.0
DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_CANARY_TIMEOUT_S = 60.0


class PushError(RuntimeError):
    """A push failed. The message says where and why, and what the rollback did.

    Attributes:
        rolled_back: Whether every rollback step succeeded (the previous state is back).
    """

    def __init__(self, message: str, rolled_back: bool) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


class _StepError(RuntimeError):
    """One step of a push failed on one target."""

    def __init__(self, addr: str, step: str, reason: str) -> None:
        super().__init__(f"{step} on {addr}: {reason}")
        self.addr = addr


def parse_target(value: str) -> str:
    """Validate a ``HOST:PORT`` Triton gRPC address.

    Raises:
        ValueError: If it is not ``HOST:PORT``.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a push target must be HOST:PORT of Triton's gRPC endpoint, got {value!r}")
    return value.strip()


class Target(Protocol):
    """The calls a push makes on one Triton."""

    addr: str

    def check(self) -> None: ...
    def load(self, name: str, timeout_s: float) -> None: ...
    def is_ready(self, name: str, version: str) -> bool: ...
    def served_versions(self, name: str) -> list[str]: ...
    def infer_text(self, name: str, version: str, input_name: str, text: str, output_name: str,
                   timeout_s: float) -> np.ndarray: ...
    def close(self) -> None: ...


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:500]


class ModelControlRefused(PermissionError):
    """Triton refused a model-repository call (load, unload, index): the model-control key is missing or wrong."""


def _refused_hint(exc: Exception) -> Exception:
    """A clearer error for Triton's "This protocol is restricted" answer; other errors as they are."""
    if "restricted" not in _message(exc):
        return exc
    return ModelControlRefused(
        f"{_message(exc)}: set INSTRUCTREC_TRITON__MODEL_CONTROL_KEY to Triton's model-control key (under "
        "`instructrec run`: the file triton/model-control.key in its workspace; in Kubernetes: the Secret "
        "triton-model-control)")


class TritonTarget:
    """One Triton reached over gRPC (``tritonclient.grpc``), TLS from ``INSTRUCTREC_TRITON__TLS__*``; the load and
    index calls carry the model-control key of ``INSTRUCTREC_TRITON__MODEL_CONTROL_KEY`` (Triton restricts its
    model-repository API to holders of it)."""

    def __init__(self, addr: str) -> None:
        from services.common.triton_clients import tool_triton_settings, triton_sync_client

        self.addr = addr
        settings = tool_triton_settings(addr)
        self._client = triton_sync_client(settings)
        self._control_headers = settings.model_control_headers() or None

    def check(self) -> None:
        """Raise unless the server answers and is live."""
        if not self._client.is_server_live(client_timeout=5.0):
            raise RuntimeError("server is not live")

    def load(self, name: str, timeout_s: float) -> None:
        """``load_model``: (re)load ``name`` from the repository; returns once Triton has finished."""
        try:
            self._client.load_model(name, headers=self._control_headers, client_timeout=timeout_s)
        except Exception as exc:
            raise _refused_hint(exc) from exc

    def is_ready(self, name: str, version: str) -> bool:
        """Whether that version of the model is READY."""
        return bool(self._client.is_model_ready(name, version, client_timeout=5.0))

    def served_versions(self, name: str) -> list[str]:
        """The versions of ``name`` Triton serves (empty when none or on error)."""
        try:
            metadata = self._client.get_model_metadata(name, client_timeout=5.0, as_json=True)
        except Exception:  # noqa: BLE001 - "serves nothing" is the answer when it cannot say
            return []
        return sorted(metadata.get("versions", []), key=int)

    def infer_text(
        self, name: str, version: str, input_name: str, text: str | list[str], output_name: str, timeout_s: float
    ) -> np.ndarray:
        """One batch-1 inference against one version: a text ``[1, 1]``, or a list of strings ``[1, n]`` (an
        item history); returns the output with its batch axis."""
        import tritonclient.grpc as triton_grpc

        values = [text] if isinstance(text, str) else list(text)
        tensor = triton_grpc.InferInput(input_name, [1, len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array([[v.encode("utf-8") for v in values]], dtype=np.object_))
        result = self._client.infer(
            name, [tensor], model_version=version, outputs=[triton_grpc.InferRequestedOutput(output_name)],
            client_timeout=timeout_s,
        )
        served = result.get_response().model_version
        if served != version:
            raise CanaryError(f"asked version {version}, answered by version {served}")
        return result.as_numpy(output_name)

    def repository_index(self) -> list[dict[str, Any]]:
        """Triton's repository index: one row per model version it knows (name, version, state, reason)."""
        try:
            index = self._client.get_model_repository_index(headers=self._control_headers, as_json=True,
                                                            client_timeout=5.0)
        except Exception as exc:
            raise _refused_hint(exc) from exc
        return list(index.get("models", []))

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()


@dataclass(frozen=True)
class ConfigSnapshot:
    """``config.pbtxt`` as it was before an export, to put back on rollback."""

    path: Path
    text: str | None  # None: there was none

    @classmethod
    def take(cls, repository: Path, name: str) -> ConfigSnapshot:
        path = Path(repository) / name / "config.pbtxt"
        return cls(path, path.read_text() if path.is_file() else None)

    def restore(self) -> bool:
        """Put the file back as it was; returns whether anything changed."""
        current = self.path.read_text() if self.path.is_file() else None
        if current == self.text:
            return False
        if self.text is None:
            self.path.unlink()
            return True
        tmp = self.path.with_name(f".{self.path.name}.restore.tmp")
        tmp.write_text(self.text)
        os.replace(tmp, self.path)
        return True


@dataclass
class TargetReport:
    """How one target took the new version."""

    addr: str
    load_s: float
    canary_ms: float
    canary: dict[str, Any]
    serving: list[str]


@dataclass
class PushReport:
    """A successful push."""

    model: str
    version: int
    targets: list[TargetReport] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)


def _push_one(
    target: Target, name: str, version: int, spec: dict[str, Any], load_timeout_s: float, ready_timeout_s: float,
    canary_timeout_s: float,
) -> TargetReport:
    started = time.perf_counter()
    try:
        target.load(name, load_timeout_s)
    except Exception as exc:  # noqa: BLE001 - reported with the target and step
        raise _StepError(target.addr, "load_model", _message(exc)) from exc
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            if target.is_ready(name, str(version)):
                break
        except Exception as exc:  # noqa: BLE001 - reported with the target and step
            raise _StepError(target.addr, "readiness", _message(exc)) from exc
        if time.monotonic() > deadline:
            raise _StepError(target.addr, "readiness", f"version {version} not READY after {ready_timeout_s:.0f} s")
        time.sleep(0.1)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        output = target.infer_text(name, str(version), spec["input_name"], spec["input"], spec["output_name"],
                                   canary_timeout_s)
        figures = check_canary(name, spec, output)
    except Exception as exc:  # noqa: BLE001 - reported with the target and step
        raise _StepError(target.addr, "canary inference", _message(exc)) from exc
    canary_ms = (time.perf_counter() - started) * 1000
    serving = target.served_versions(name)
    if str(version) not in serving:
        raise _StepError(target.addr, "serving check", f"Triton serves versions {serving}, not {version}")
    logger.info("%s serves %s version %s (load %.2f s, canary %.0f ms)", target.addr, name, version, load_s,
                canary_ms)
    return TargetReport(target.addr, round(load_s, 3), round(canary_ms, 1), figures, serving)


def _rollback(
    repository: Path, name: str, version: int, snapshot: ConfigSnapshot | None, touched: Sequence[Target],
    load_timeout_s: float,
) -> tuple[list[str], bool]:
    notes: list[str] = []
    complete = True
    try:
        if export.remove_version(repository, name, version):
            notes.append(f"removed {Path(repository) / name / str(version)}")
    except OSError as exc:
        complete = False
        notes.append(f"could NOT remove {Path(repository) / name / str(version)}: {exc}")
    if snapshot is not None:
        try:
            if snapshot.restore():
                notes.append("restored config.pbtxt")
        except OSError as exc:
            complete = False
            notes.append(f"could NOT restore {snapshot.path}: {exc}")
    for target in touched:
        try:
            target.load(name, load_timeout_s)
            serving = target.served_versions(name)
            notes.append(f"{target.addr} serves version {', '.join(serving) or 'none'}")
        except Exception as exc:  # noqa: BLE001 - every target gets its reload attempt
            complete = False
            notes.append(f"{target.addr}: reload FAILED ({_message(exc)}); check this server by hand")
    return notes, complete


def push_version(
    repository: Path,
    name: str,
    version: int,
    targets: Sequence[str],
    *,
    config_snapshot: ConfigSnapshot | None = None,
    keep: int = 0,
    load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    canary_timeout_s: float = DEFAULT_CANARY_TIMEOUT_S,
    connect: Callable[[str], Target] = TritonTarget,
) -> PushReport:
    """Make every target serve ``version`` of ``name``, or roll back everywhere.

    Args:
        repository: The model repository the targets serve (shared by all of them).
        name: Model name.
        version: The exported version to push (its folder must hold ``metadata.json``).
        targets: Triton gRPC addresses (``HOST:PORT``).
        config_snapshot: ``config.pbtxt`` as it was before the export, restored on rollback.
        keep: After success, keep only the last ``keep`` finished versions in the repository (0 keeps all).
        load_timeout_s: Longest ``load_model`` call.
        ready_timeout_s: Longest wait for the version to be READY after ``load_model`` returned.
        canary_timeout_s: Deadline of the canary inference.
        connect: Builds a :class:`Target` from an address (tests pass fakes).

    Returns:
        What each target reported, and the versions pruned.

    Raises:
        PushError: If any step failed on any target (after rolling back).
    """
    version_dir = Path(repository) / name / str(version)
    if not export.has_weights(version_dir):
        raise PushError(f"{version_dir} holds no finished export (no {export.METADATA_FILE}); nothing pushed",
                        rolled_back=True)
    spec = canary_spec(version_dir, name)
    connected: list[Target] = []
    touched: list[Target] = []
    report = PushReport(name, version)
    try:
        for addr in targets:
            try:
                connected.append(connect(addr))
                connected[-1].check()
            except Exception as exc:  # noqa: BLE001 - unreachable before anything was loaded
                raise _StepError(addr, "connection", _message(exc)) from exc
        for target in connected:
            touched.append(target)
            report.targets.append(
                _push_one(target, name, version, spec, load_timeout_s, ready_timeout_s, canary_timeout_s)
            )
    except BaseException as exc:
        notes, complete = _rollback(repository, name, version, config_snapshot, touched, load_timeout_s)
        if not isinstance(exc, Exception):  # Ctrl-C: the rollback is done, let the interrupt through
            raise
        where = exc.addr if isinstance(exc, _StepError) else "?"
        status = "rolled back" if complete else "ROLLBACK INCOMPLETE"
        logger.error("push of %s version %s failed on %s: %s; %s", name, version, where, exc, status)
        raise PushError(
            f"push of {name} version {version} failed at {exc}. {status}: {'; '.join(notes) or 'nothing to undo'}.",
            rolled_back=complete,
        ) from exc
    finally:
        for target in connected:
            with contextlib.suppress(Exception):
                target.close()
    if keep:
        report.pruned = export.prune_versions(repository, name, keep)
        if report.pruned:
            logger.info("removed %s versions %s (keeping the last %d)", name, report.pruned, keep)
    return report


def publish(
    name: str,
    checkpoint: Path,
    repository: Path,
    targets: Sequence[str] = (),
    *,
    keep: int = 0,
    base: Path | None = None,
    workspace: Path = Path("var"),
    precision: str = export.FP32,
    tolerance: float | None = None,
    load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    connect: Callable[[str], Target] = TritonTarget,
    **config_overrides: Any,
) -> tuple[Path, PushReport | None]:
    """Export a checkpoint into the next version and, given targets, push it (``instructrec export``).

    The repository is locked for the whole export and push. Without targets nothing is
    loaded and nothing pruned (a Triton in poll mode, or the next restart, picks the version up).

    Args:
        name: Model name.
        checkpoint: Hugging Face folder or LoRA adapter folder.
        repository: The model repository.
        targets: Triton gRPC addresses to push to.
        keep: After a successful push keep only the last ``keep`` versions (0 keeps all).
        base: Base model of a LoRA adapter.
        workspace: Where the default base model lives.
        precision: ``fp32`` or ``int8``.
        tolerance: Parity bound overriding the precision's default.
        load_timeout_s: Longest ``load_model`` call per target.
        ready_timeout_s: Longest wait for READY per target.
        connect: Builds a target from an address (tests pass fakes).
        **config_overrides: ``config.pbtxt`` settings, see :func:`tools.export.export_model`.

    Returns:
        The new version folder and the push report (``None`` without targets).

    Raises:
        ParityError, ValueError, FileNotFoundError: The export was refused; nothing was written.
        PushError: The push failed and was rolled back.
    """
    targets = [parse_target(t) for t in targets]
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    export.parity_policy(name, precision, tolerance)  # refuse a precision the model cannot take up front
    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    served = export.serving_options(repository, name, **config_overrides).get("num_versions", 1)
    if keep and keep < served:
        raise ValueError(f"keep={keep} would delete versions that Triton serves (version policy: latest {served})")
    with export.repository_lock(repository):
        stale = export.remove_stale_staging(repository, name)
        if stale:
            logger.warning("removed leftovers of an interrupted export: %s", ", ".join(stale))
        snapshot = ConfigSnapshot.take(repository, name)
        try:
            version_dir = export.export_model(
                name, checkpoint, repository, base=base, workspace=workspace, precision=precision,
                tolerance=tolerance, **config_overrides,
            )
        except BaseException:
            snapshot.restore()
            raise
        if not targets:
            return version_dir, None
        report = push_version(
            repository, name, int(version_dir.name), targets, config_snapshot=snapshot, keep=keep,
            load_timeout_s=load_timeout_s, ready_timeout_s=ready_timeout_s, connect=connect,
        )
    return version_dir, report


def served_models(addr: str) -> list[dict[str, Any]]:
    """What one Triton serves: its repository index rows (``name``, ``version``, ``state``, ``reason``).

    Raises:
        Exception: tritonclient's error when the server cannot be reached.
    """
    target = TritonTarget(parse_target(addr))
    try:
        return target.repository_index()
    finally:
        target.close()
