"""`instructrec run`: prepare everything once, then run Triton and the four services in the foreground.

Start order: Triton (and its four models) -> the item indexes (text and sequence, built once from the served
versions) -> ranking, retrieval, instruction -> gateway. Once the gateway serves, a supervisor
(tools/runtime/supervise.py) restarts any process that exits: Triton with its models and version pins again (the
indexes hold the same versions, so nothing is rebuilt), a service with the same environment. Ctrl-C or SIGTERM stops
the services first (each drains its in-flight RPCs) and Triton last; a process that keeps failing stops the stack
with exit 1.

Everything listens on loopback unless the environment says otherwise (``<SERVICE>_HOST``,
``<SERVICE>_METRICS_HOST``). Triton's model-repository API (load, unload, index) takes a key generated at start (or
``INSTRUCTREC_TRITON__MODEL_CONTROL_KEY``), given to the services that repair crashed models and written to
``<workspace>/triton/model-control.key`` (mode 0600) for ``instructrec export --push`` while the stack runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from services.common.grpc_client import is_serving
from services.common.server import LIVENESS_SERVICE
from services.common.settings import MODEL_CONTROL_HEADER, ROOT
from services.core.contracts import SEQUENCE_ENCODER, TEXT_ENCODER
from tools.core.channels import open_tool_channel
from tools.runtime.assets import BASE, ensure_indexes, pin_versions, prepare, served_versions
from tools.runtime.config import MODELS, SERVICES, StackConfig
from tools.runtime.supervise import Supervisor
from tools.runtime.triton_server import TritonServer
from tools.train.fusion import read_fusion, stale_fusion

log = logging.getLogger("instructrec.run")

REPAIRING_SERVICES = ("ranking", "retrieval", "instruction")
LOOPBACK = "127.0.0.1"


def _reach(service: str, env: Mapping[str, str], port: int | str) -> str:
    """host:port at which this machine reaches a service that binds ``<SERVICE>_HOST`` (default loopback)."""
    host = env.get(service.upper() + "_HOST", LOOPBACK)
    return f"{LOOPBACK if host in ('', '0.0.0.0', '::', '[::]') else host}:{port}"


def service_env(config: StackConfig, service: str, model_control_key: str | None = None) -> dict[str, str]:
    """Environment for one service process: the settings' own env var names.

    The service binds loopback (gRPC and metrics) unless the environment sets ``<SERVICE>_HOST`` or
    ``<SERVICE>_METRICS_HOST``; ``model_control_key`` goes to the services that repair models.
    """
    prefix = service.upper() + "_"
    env = dict(os.environ)
    env[prefix + "PORT"] = str(config.ports[service])
    env[prefix + "METRICS_PORT"] = str(config.metrics_ports[service])
    env.setdefault(prefix + "HOST", LOOPBACK)
    env.setdefault(prefix + "METRICS_HOST", LOOPBACK)
    env.setdefault(prefix + "LOG_FORMAT", config.log_format)
    if service == "gateway":
        env.update({
            "GATEWAY_CATALOG_PATH": str(config.data_dir / "items.jsonl"),
            "GATEWAY_INTERACTIONS_PATH": str(config.data_dir / "train.csv"),
            "GATEWAY_INTERACTION_STORE": env.get("GATEWAY_INTERACTION_STORE") or str(config.interaction_store),
            **{f"GATEWAY_{s.upper()}_ADDR": _reach(s, os.environ, config.ports[s]) for s in SERVICES if s != "gateway"},
        })
    else:
        env[prefix + "TRITON__GRPC_ADDR"] = f"{LOOPBACK}:{config.triton_grpc_port}"
    if service in REPAIRING_SERVICES and model_control_key is not None:
        env[prefix + "TRITON__MODEL_CONTROL_KEY"] = model_control_key
    if service in ("instruction", "retrieval"):
        env[prefix + "CATALOG_PATH"] = str(config.data_dir / "items.jsonl")
    if service == "instruction":
        env.setdefault("INSTRUCTION_PREFERENCE_STORE_PATH", str(config.preference_store))
    if service == "retrieval":
        env["RETRIEVAL_INDEX_DIR"] = str(config.index_dir)
        if config.dataset is not None:  # the weights fitted for this data set, nothing else
            env["RETRIEVAL_FUSION_PATH"] = str(config.dataset.fusion_path)
        env.setdefault("RETRIEVAL_SEQUENCE_INDEX_DIR", str(config.sequence_index_dir))  # a missing one: text only
    if service == "ranking":
        # The fusion weight fitted for the served model set (the settings default is the tuned one's).
        weight = read_fusion(config.models)
        if weight is not None and "RANKING_LM_WEIGHT" not in env:
            env["RANKING_LM_WEIGHT"] = str(weight)
            stale = stale_fusion(config.models)
            if stale:
                log.warning("the fusion weight of the %s models was fitted on other weights of %s: rerun "
                            "`instructrec fit-fusion --models %s --write`", config.models, ", ".join(stale),
                            config.models)
    return env


def serving_at(addr: str, service: str = "") -> bool:
    """Whether the peer's health service reports ``service`` ("": overall) SERVING; False when it does not answer."""
    async def check() -> bool:
        async with open_tool_channel(addr) as channel:
            return await is_serving(channel, service)

    return asyncio.run(check())


def _accepts_connections(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def health_addr(service: str, env: dict[str, str]) -> str | None:
    """Where a plaintext health check reaches the service: its gRPC port, or with TLS on (set through the
    environment) its plaintext health-only port; None for TLS without one (then only the open port is checked)."""
    prefix = service.upper() + "_"
    if env.get(prefix + "TLS__ENABLED", "").lower() not in ("1", "true", "yes", "on"):
        return _reach(service, env, env[prefix + "PORT"])
    return _reach(service, env, env[prefix + "HEALTH_PORT"]) if env.get(prefix + "HEALTH_PORT") else None


class TritonProcess:
    """Triton under supervision: a restart loads its models again and then runs ``after_ready`` (the version pins).

    Args:
        server: The server (its ports, repository, key stay the same across restarts).
        after_ready: Called each time the server is ready, before it counts as serving.
    """

    name = "triton"

    def __init__(self, server: TritonServer, after_ready: Callable[[], None] = lambda: None) -> None:
        self.server = server
        self._after_ready = after_ready

    @property
    def pid(self) -> int | None:
        return self.server.pid

    def launch(self) -> None:
        if self.server.returncode is not None:
            self.server.stop()  # reaps the dead one (and kills the backend processes a SIGKILL left behind)
        self.server.start()

    def wait_serving(self, timeout_s: float) -> None:
        self.server.wait_ready(timeout_s=timeout_s)
        self._after_ready()

    def returncode(self) -> int | None:
        return self.server.returncode

    def terminate(self) -> None:
        self.server.stop()


class PreferenceFill:
    """The preference precompute job (``python -m services.instruction.precompute``, what
    ``instructrec precompute-preferences`` runs) in the background once the stack serves: one run, not restarted.

    Its output goes to ``<workspace>/logs/preference-fill.log``; when it ends, one line says what it wrote.
    """

    def __init__(self, config: StackConfig, triton_grpc_addr: str, env: Mapping[str, str]) -> None:
        self._config = config
        self._addr = triton_grpc_addr
        self._env = dict(env)
        self._process: subprocess.Popen | None = None
        self.log_path = config.workspace / "logs" / "preference-fill.log"
        self.report_path = config.workspace / "preferences" / f"{config.data_dir.name}-fill.json"

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "services.instruction.precompute", "--triton", self._addr,
                   "--interactions", str(self._config.data_dir / "train.csv"),
                   "--store", str(self._config.preference_store), "--report", str(self.report_path)]
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(command, env=self._env, stdout=out, stderr=subprocess.STDOUT,
                                             cwd=ROOT)
        log.info("writing the known users' preference statements in the background (pid %s, log %s); until a "
                 "user's is written their requests get the implicit instruction", self._process.pid, self.log_path)
        threading.Thread(target=self._report_when_done, name="preference-fill", daemon=True).start()

    def _report_when_done(self) -> None:
        code = self._process.wait()
        if code == 0 and self.report_path.is_file():
            r = json.loads(self.report_path.read_text(encoding="utf-8"))
            log.info("preference statements written: %s new (%s already stored, %s failed) in %.0f s (%.2f/s)",
                     r["written"], r["already_stored"], r["failed"], r["seconds"], r["statements_per_second"])
        elif code > 0:
            log.warning("preference fill exited with %s (see %s); misses are still written on demand",
                        code, self.log_path)

    def terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


class ServiceProcess:
    """One service (``python -m services.<name>``) under supervision, started again with the same environment.

    Args:
        name: ``gateway``, ``instruction``, ``retrieval`` or ``ranking``.
        env: Its whole environment (:func:`service_env`).
        stop_timeout_s: How long SIGTERM may take (it drains in-flight RPCs) before SIGKILL.
    """

    def __init__(self, name: str, env: dict[str, str], stop_timeout_s: float = 15.0) -> None:
        self.name = name
        self.env = env
        self.addr = _reach(name, env, env[name.upper() + "_PORT"])
        self.health_addr = health_addr(name, env)
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def launch(self) -> None:
        # Its own session: a Ctrl-C in the terminal reaches only the supervisor, which stops the services in
        # order (and never mistakes their exit for a crash).
        self._process = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_serving(self, timeout_s: float, service: str = LIVENESS_SERVICE) -> None:
        """Block until its health service reports ``service`` SERVING (default: the process answers; "": it
        can serve, its dependencies included).

        Raises:
            RuntimeError: It exited first.
            TimeoutError: ``timeout_s`` passed.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.health_addr is None and _accepts_connections(self.addr):
                return
            if self.health_addr and serving_at(self.health_addr, service):
                return
            code = self.returncode()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with code {code} before serving")
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} on {self.addr} did not report SERVING within {timeout_s:.0f} s")

    def returncode(self) -> int | None:
        process = self._process  # read once: terminate() may clear it meanwhile (another thread)
        return process.poll() if process is not None else None

    def terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


KEY_FILE = Path("triton") / "model-control.key"
"""Where (under the workspace) `run` leaves the model-control key for the tools while the stack runs."""


def model_control_key() -> tuple[str, str]:
    """(key, header) for the stack's Triton: ``INSTRUCTREC_TRITON__MODEL_CONTROL_KEY`` (and ``..._HEADER``) when set,
    else a fresh random key with the default header."""
    from services.common.triton_clients import ToolTritonSettings

    configured = ToolTritonSettings().triton
    if configured.model_control_key is not None:
        return configured.model_control_key.get_secret_value(), configured.model_control_header
    return secrets.token_urlsafe(32), MODEL_CONTROL_HEADER


def _write_key_file(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # readable by this user only
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")


def run(config: StackConfig, ready_timeout_s: float = 300.0) -> int:
    """Prepare, then :func:`serve`. Returns the exit code."""
    prepare(config)
    return serve(config, ready_timeout_s)


def serve(config: StackConfig, ready_timeout_s: float = 300.0) -> int:
    """Start Triton and the four services from what :func:`prepare` made, and supervise them.

    Returns:
        0 when stopped by SIGINT/SIGTERM; 1 when a process kept failing (see ``config.restart_policy``).
    """
    t0 = time.perf_counter()
    versions = served_versions(config.model_repository, config.models)
    # The encoders' policy keeps two versions loaded (for pushes); here exactly the served one is.
    pinned = versions if config.models == BASE else {name: versions[name] for name in (TEXT_ENCODER, SEQUENCE_ENCODER)}
    key, header = model_control_key()
    server = TritonServer(
        config.model_repository,
        models=MODELS,
        http_port=config.triton_http_port,
        grpc_port=config.triton_grpc_port,
        metrics_port=config.triton_metrics_port,
        backend_dir=config.workspace / "triton" / "backends",
        model_control_key=key,
        model_control_header=header,
    )

    def after_ready() -> None:
        pin_versions(server.grpc_addr, pinned, model_control_key=key)
        log.info("Triton ready (pid %s, gRPC %s): serving %s models, versions %s", server.pid, server.grpc_addr,
                 config.models, versions)

    triton = TritonProcess(server, after_ready)
    services = []
    for name in SERVICES:
        env = service_env(config, name, model_control_key=key)
        if header != MODEL_CONTROL_HEADER and name in REPAIRING_SERVICES:
            env[f"{name.upper()}_TRITON__MODEL_CONTROL_HEADER"] = header
        services.append(ServiceProcess(name, env))
    supervisor = Supervisor([triton, *services], config.restart_policy)
    starting = True

    def _on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        supervisor.request_stop()
        if starting:
            raise KeyboardInterrupt  # interrupts the start-up; the finally block stops what was started

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    key_file = config.workspace / KEY_FILE
    launched: list[TritonProcess | ServiceProcess | PreferenceFill] = []
    try:
        _write_key_file(key_file, key)
        launched.append(triton)
        triton.launch()
        triton.wait_serving(ready_timeout_s)
        ensure_indexes(config, server.grpc_addr, versions)
        for service in services:
            launched.append(service)
            service.launch()
        gateway = services[-1]
        for service in services:
            service.wait_serving(ready_timeout_s)
        if gateway.health_addr is not None:
            gateway.wait_serving(ready_timeout_s, service="")  # its peers too
        log.info(
            "ready in %.1f s: Recommend on %s (try `instructrec recommend --user 196 --query \"a funny movie for "
            "tonight\"`); model-control key in %s; Ctrl-C stops", time.perf_counter() - t0, gateway.addr, key_file,
        )
        if config.fill_preferences:
            fill = PreferenceFill(config, server.grpc_addr, service_env(config, "instruction"))
            launched.append(fill)  # stopped first
            fill.launch()
        starting = False
        code = supervisor.run()
        if code:
            log.error("stopped because %s kept failing (see above)", ", ".join(supervisor.gave_up))
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        starting = False  # a second Ctrl-C must not interrupt the clean-up
        for process in reversed(launched):
            process.terminate()
        key_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
