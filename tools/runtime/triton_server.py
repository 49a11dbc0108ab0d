"""Run a real Triton Inference Server locally from the ``nvidia-pytriton`` wheel (CPU, python backend).

The wheel bundles Triton 2.51 with the python backend but no stub next to it. ``prepare_backend_dir``
copies the backend and the stub for this interpreter into a folder of our own; ``TritonServer`` launches
the binary with explicit model control and the environment the stub needs:

* ``PATH`` with this interpreter's ``bin`` first: the stub finds its Python environment through
  ``python3`` on ``PATH`` (``PYTHONPATH`` is ignored), otherwise models silently import another
  environment's packages.
* ``LD_LIBRARY_PATH`` with the interpreter's libpython folder (so the stub loads the same libpython) and
  the wheel's bundled libraries (copies lose their ``$ORIGIN`` RPATH).

Example::

    with TritonServer(Path("model_repository"), models=["text_encoder"]) as server:
        server.wait_ready(60)
        client = triton_sync_client(TritonSettings(grpc_addr=server.grpc_addr))  # services.common.triton_clients
"""

from __future__ import annotations

import contextlib
import filecmp
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from services.common import tracing
from services.common.settings import MODEL_CONTROL_HEADER

logger = logging.getLogger(__name__)

DEFAULT_BACKEND_DIR = Path("var/triton/backends")
MODEL_CONTROL_PROTOCOL = "model-repository"
"""The Triton protocol (gRPC) and API (HTTP) that a model-control key restricts: load, unload, repository index."""


class TritonServerError(RuntimeError):
    """Triton could not be started or did not become ready."""


# Triton's response cache (models with ``response_cache { enable: true }``: the text encoder). 64 MiB holds
# about 40,000 cached embeddings of 384 floats.
DEFAULT_RESPONSE_CACHE_BYTES = 64 * 1024 * 1024


def pytriton_root() -> Path:
    """The ``tritonserver`` folder inside the installed ``nvidia-pytriton`` wheel."""
    import pytriton

    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonServerError(f"no tritonserver binary under {root}; is nvidia-pytriton installed?")
    return root


def _bundled_libs() -> Path:
    return pytriton_root().parents[1] / "nvidia_pytriton.libs"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (Triton does not accept port 0)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now. Every socket stays bound until all are chosen: ports
    picked one at a time can repeat (the OS may hand out a just-released port again)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
                 for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _copy_if_changed(source: Path, dest: Path) -> None:
    if dest.is_file() and filecmp.cmp(source, dest, shallow=False):
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, dest)  # atomic: a concurrently starting server never sees half a file


def prepare_backend_dir(backend_dir: Path = DEFAULT_BACKEND_DIR) -> Path:
    """Lay out ``<backend_dir>/python/`` with the python backend and the stub for this interpreter.

    Idempotent: files are copied only when missing or different.

    Args:
        backend_dir: Folder to pass as ``--backend-directory``.

    Returns:
        ``backend_dir``.
    """
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    python_dir = Path(backend_dir) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        _copy_if_changed(source, python_dir / source.name)
    return Path(backend_dir)


class TritonServer:
    """One ``tritonserver`` process serving a model repository on CPU with explicit model control.

    Args:
        model_repository: Folder with ``<model>/config.pbtxt`` and version folders.
        models: Models to load at start (``--load-model``).
        http_port: HTTP port; ``None`` picks a free one.
        grpc_port: gRPC port; ``None`` picks a free one.
        metrics_port: Metrics port; ``None`` picks a free one.
        backend_dir: Where the python backend and stub are laid out.
        log_file: File for the server's stdout and stderr; ``None`` inherits this process's.
        log_verbose: ``--log-verbose`` level (1 halves throughput; keep 0 outside debugging).
        extra_args: More ``tritonserver`` flags.
        response_cache_bytes: Size of Triton's local response cache (``--cache-config``); 0 turns it off.
        host: Address the server binds (all three endpoints) and the endpoint properties use.
        model_control_key: Restrict the model-repository API (load, unload, repository index) over gRPC and
            HTTP to callers that send this key in the ``model_control_header`` header; None leaves it open.
            Triton takes the key only as a flag value, so it shows in the process's command line.
        model_control_header: Header that carries the key.
    """

    def __init__(
        self,
        model_repository: Path,
        models: Sequence[str] = (),
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        backend_dir: Path = DEFAULT_BACKEND_DIR,
        log_file: Path | None = None,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        response_cache_bytes: int = DEFAULT_RESPONSE_CACHE_BYTES,
        model_control_key: str | None = None,
        model_control_header: str = MODEL_CONTROL_HEADER,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models)
        spare = iter(free_ports(3))
        self.http_port = http_port or next(spare)
        self.grpc_port = grpc_port or next(spare)
        self.metrics_port = metrics_port or next(spare)
        self.backend_dir = Path(backend_dir).resolve()
        self.log_file = Path(log_file) if log_file else None
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.host = host
        self.response_cache_bytes = response_cache_bytes
        self.model_control_key = model_control_key
        self.model_control_header = model_control_header
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def grpc_addr(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` takes it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` takes it."""
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The server's process id while started."""
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        args = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            "--disable-auto-complete-config",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=5",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=4194304",
            "--metrics-config=summary_latencies=true",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.model_control_key:
            restriction = f"{MODEL_CONTROL_PROTOCOL}:{self.model_control_header}={self.model_control_key}"
            args += [f"--grpc-restricted-protocol={restriction}", f"--http-restricted-api={restriction}"]
        if self.response_cache_bytes > 0:
            # Triton's local (in-memory) response cache, used by models whose config enables it.
            args += [f"--cache-directory={pytriton_root() / 'caches'}",
                     f"--cache-config=local,size={self.response_cache_bytes}"]
        args += tracing.triton_trace_args(os.environ.get(tracing.TRITON_TRACES_URL_VARIABLE))
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment: see the module docstring for why PATH and LD_LIBRARY_PATH matter."""
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")]).rstrip(os.pathsep)
        libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(_bundled_libs())]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.pop("PYTHONPATH", None)  # ignored by the stub anyway; keep the two environments identical
        return env

    def start(self) -> TritonServer:
        """Lay out the backend and launch the server (returns at once; see :meth:`wait_ready`)."""
        if self._process is not None:
            raise TritonServerError("already started")
        prepare_backend_dir(self.backend_dir)
        stdout: Any = None
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_file, "ab")
            stdout = self._log_handle
        logger.info("starting Triton (grpc %s, http %s) on %s", self.grpc_port, self.http_port,
                    self.model_repository)
        self._process = subprocess.Popen(
            self.command(), env=self.environment(), stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    def is_running(self) -> bool:
        """Whether the server process is alive (started and not exited)."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the started process has exited (negative: killed by that signal); None while it
        runs or when not started."""
        process = self._process  # read once: stop() may clear it meanwhile (another thread)
        return process.poll() if process is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log file (empty when the log goes to this process's output)."""
        if not self.log_file or not self.log_file.is_file():
            return ""
        if self._log_handle:
            self._log_handle.flush()
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def is_ready(self) -> bool:
        """Whether ``/v2/health/ready`` answers 200 (all requested models loaded)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the server is ready.

        Raises:
            TritonServerError: If the process exits first (with the log tail) or ``timeout_s`` passes.
        """
        if self._process is None:
            raise TritonServerError("not started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise TritonServerError(f"tritonserver exited with code {code}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.1)
        raise TritonServerError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (in-flight requests complete), then SIGKILL.

        Returns:
            The exit code, or ``None`` if it was not running.
        """
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
                    process.kill()
                    process.wait()
            code = process.returncode
            if code is not None and code < 0:
                # Killed, not shut down: its python-backend stubs (same session) would outlive it for a while,
                # holding memory and shared-memory regions a restarted server needs.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
