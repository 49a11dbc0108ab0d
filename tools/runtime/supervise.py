"""Keep the local stack's processes running: restart one that exits, with backoff, until it fails too often.

`instructrec run` hands Triton and the four services to a :class:`Supervisor`. A thread per process watches it,
so a slow restart (Triton loading its models) never delays another one. A process that exits is logged (its
name, pid, exit code or signal, the time, how long it had run), started again after an exponential backoff,
and logged again once it serves. The others keep serving meanwhile (degraded where they need it). A process that
fails ``RestartPolicy.max_crashes`` times within ``RestartPolicy.window_s`` seconds is given up on: the supervisor
says so and stops the whole stack, and :meth:`Supervisor.run` returns 1. Otherwise only
:meth:`Supervisor.request_stop` (Ctrl-C, SIGTERM) ends it.

Example::

    supervisor = Supervisor([triton, ranking, gateway], RestartPolicy())
    signal.signal(signal.SIGTERM, lambda *_: supervisor.request_stop())
    exit_code = supervisor.run()   # blocks; stops every process (last first) before it returns
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("instructrec.supervise")


class Supervised(Protocol):
    """One process the supervisor keeps running."""

    name: str
    """Short name for the log, e.g. ``triton`` or ``ranking``."""

    @property
    def pid(self) -> int | None:
        """The current process's id (None before the first launch)."""

    def launch(self) -> None:
        """Start the process with its settings; return at once."""

    def wait_serving(self, timeout_s: float) -> None:
        """Block until the process serves.

        Raises:
            Exception: It exited first, or ``timeout_s`` passed.
        """

    def returncode(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal); None while it runs."""

    def terminate(self) -> None:
        """Stop the process gracefully (then forcibly) if it runs, and reap it."""


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a process that exited, and when to give up on it."""

    initial_backoff_s: float = 1.0
    """Wait before the first restart; each further failure within ``window_s`` doubles it."""
    max_backoff_s: float = 30.0
    """Upper bound of the wait before a restart."""
    max_crashes: int = 5
    """Failures (exits, or restarts that did not serve in time) within ``window_s`` after which the process is not
    restarted again and the stack stops: a process that keeps dying needs a person, not more restarts."""
    window_s: float = 300.0
    """The sliding window, in seconds, in which ``max_crashes`` failures give up on a process."""
    serve_timeout_s: float = 300.0
    """How long a restarted process may take to serve again (Triton loads its models); longer is a failure."""

    def backoff_s(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th recent failure (1, 2, ...)."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, failures - 1))


def describe_exit(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL`` (a negative code is the signal)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


class Supervisor:
    """Watches processes that are already serving and restarts those that exit (see the module docstring).

    Args:
        processes: In start order; they are stopped in reverse order.
        policy: Backoff and give-up limits.
        poll_interval_s: How often each process's exit status is checked.
    """

    def __init__(self, processes: Sequence[Supervised], policy: RestartPolicy = RestartPolicy(),
                 poll_interval_s: float = 0.25) -> None:
        self.processes = list(processes)
        self.policy = policy
        self.poll_interval_s = poll_interval_s
        self.gave_up: list[str] = []
        """Names of the processes given up on."""
        self._stop_requested = False
        self._stopping = threading.Event()
        # Held while a watcher launches a process, so that stopping never misses one launched at that moment.
        self._launching = {p.name: threading.Lock() for p in self.processes}
        self._up_since = {p.name: time.monotonic() for p in self.processes}

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop everything; safe to call from a signal handler (it only sets a flag)."""
        self._stop_requested = True

    def run(self) -> int:
        """Supervise until :meth:`request_stop` or a process is given up on, then stop every process.

        Returns:
            0 after a requested stop, 1 after giving up on a process.
        """
        watchers = [threading.Thread(target=self._watch, args=(p,), name=f"supervise-{p.name}", daemon=True)
                    for p in self.processes]
        for watcher in watchers:
            watcher.start()
        # The main thread only sleeps here, so that signal handlers run promptly and never wait on a lock.
        while not self._stop_requested and not self._stopping.is_set():
            time.sleep(self.poll_interval_s)
        self.stop_all()
        for watcher in watchers:
            watcher.join(timeout=5.0)
        return 1 if self.gave_up else 0

    def stop_all(self) -> None:
        """Stop supervising and stop every process, the last started first."""
        self._stopping.set()
        for process in reversed(self.processes):
            with self._launching[process.name]:
                process.terminate()

    def _watch(self, process: Supervised) -> None:
        failures: list[float] = []
        while True:
            code = self._wait_for_exit(process)
            if code is None:
                return
            failure = f"{describe_exit(code)} after {time.monotonic() - self._up_since[process.name]:.0f} s up"
            down_since = time.monotonic()
            while failure is not None:
                now = time.monotonic()
                failures = [t for t in failures if now - t < self.policy.window_s] + [now]
                log.error("%s (pid %s) %s, at %s", process.name, process.pid, failure, time.strftime("%H:%M:%S"))
                if len(failures) >= self.policy.max_crashes:
                    log.critical("%s failed %d times within %.0f s: not restarting it again; stopping the stack",
                                 process.name, len(failures), self.policy.window_s)
                    self.gave_up.append(process.name)
                    self._stopping.set()
                    return
                delay = self.policy.backoff_s(len(failures))
                log.warning("restarting %s in %.1f s (failure %d within %.0f s; at %d it is given up on)",
                            process.name, delay, len(failures), self.policy.window_s, self.policy.max_crashes)
                if self._stopping.wait(delay):
                    return
                failure = self._restart(process)
                if failure is None and not self._stopping.is_set():
                    log.info("%s is back (pid %s): serving again %.1f s after it went down", process.name,
                             process.pid, time.monotonic() - down_since)

    def _wait_for_exit(self, process: Supervised) -> int | None:
        """The exit code once the process exits by itself; None once stopping."""
        while not self._stopping.wait(self.poll_interval_s):
            code = process.returncode()
            if code is not None:
                # stop_all sets the event before it terminates anything: an exit seen now is not ours.
                return None if self._stopping.is_set() else code
        return None

    def _restart(self, process: Supervised) -> str | None:
        """Launch the process again and wait until it serves; what went wrong, or None (also when stopping)."""
        with self._launching[process.name]:
            if self._stopping.is_set():
                return None
            try:
                process.launch()
            except Exception as exc:  # noqa: BLE001 - a failed launch is one more failure to count
                return f"could not be started again: {exc}"
            self._up_since[process.name] = time.monotonic()
        try:
            process.wait_serving(self.policy.serve_timeout_s)
        except Exception as exc:  # noqa: BLE001 - it exited, or did not serve in time: one more failure
            if self._stopping.is_set():
                return None
            with self._launching[process.name]:
                process.terminate()
            return f"did not come back: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return None
