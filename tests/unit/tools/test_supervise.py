"""The supervisor with fake processes: restarts with backoff, gives up after N failures in M seconds, stops cleanly."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from tools.runtime.supervise import RestartPolicy, Supervisor, describe_exit

FAST = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.04, max_crashes=4, window_s=60.0, serve_timeout_s=1.0)


class FakeProcess:
    """A process that 'runs' until told to exit; ``exits_after_launch`` makes every launch die at once."""

    def __init__(self, name: str, *, exits_after_launch: int | None = None, serves: bool = True) -> None:
        self.name = name
        self.launches = 0
        self.terminated = 0
        self.exits_after_launch = exits_after_launch
        self.serves = serves
        self._code: int | None = None
        self._running = False
        self.events: list[str] = []

    @property
    def pid(self) -> int | None:
        return 1000 + self.launches if self.launches else None

    def launch(self) -> None:
        self.launches += 1
        self._running, self._code = True, None
        self.events.append("launch")

    def wait_serving(self, timeout_s: float) -> None:
        if not self.serves:
            raise TimeoutError(f"{self.name} did not serve within {timeout_s} s")
        if self.exits_after_launch is not None:
            self.crash(self.exits_after_launch)

    def returncode(self) -> int | None:
        return self._code

    def crash(self, code: int) -> None:
        self._running, self._code = False, code

    def terminate(self) -> None:
        self.terminated += 1
        self.events.append("terminate")
        if self._running:
            self._running, self._code = False, -15


def _run_in_thread(supervisor: Supervisor) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", supervisor.run()), daemon=True)
    thread.start()
    return thread, result


def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=5.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_exit_descriptions_name_the_code_or_the_signal() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"


def test_a_process_that_dies_is_restarted_and_the_others_keep_running(caplog) -> None:
    caplog.set_level(logging.INFO, logger="instructrec.supervise")
    triton, gateway = FakeProcess("triton"), FakeProcess("gateway")
    for process in (triton, gateway):
        process.launch()
    supervisor = Supervisor([triton, gateway], FAST, poll_interval_s=0.005)
    thread, result = _run_in_thread(supervisor)
    triton.crash(-9)
    _until(lambda: triton.launches == 2 and "triton is back" in caplog.text)
    triton.crash(3)
    _until(lambda: triton.launches == 3 and caplog.text.count("triton is back") == 2)
    assert gateway.launches == 1 and gateway.terminated == 0  # untouched while triton restarted
    supervisor.request_stop()
    thread.join(5)
    assert result["code"] == 0 and not supervisor.gave_up
    assert "triton (pid 1001) was killed by SIGKILL" in caplog.text
    assert "triton (pid 1002) exited with code 3" in caplog.text
    assert gateway.events[-1] == "terminate" and triton.events[-1] == "terminate"


def test_it_gives_up_after_max_crashes_within_the_window_and_stops_the_stack(caplog) -> None:
    crashing = FakeProcess("ranking", exits_after_launch=1)
    steady = FakeProcess("triton")
    for process in (steady, crashing):
        process.launch()
    crashing.crash(1)
    supervisor = Supervisor([steady, crashing], FAST, poll_interval_s=0.005)
    thread, result = _run_in_thread(supervisor)
    thread.join(5)
    assert not thread.is_alive() and result["code"] == 1
    assert supervisor.gave_up == ["ranking"]
    # The first failure was the original process; each restart died too: 4 failures, 3 restarts.
    assert crashing.launches == 1 + (FAST.max_crashes - 1)
    assert "ranking failed 4 times within 60 s: not restarting it again; stopping the stack" in caplog.text
    assert steady.terminated == 1 and crashing.terminated >= 1  # the whole stack stopped


def test_failures_outside_the_window_do_not_count() -> None:
    policy = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.01, max_crashes=2, window_s=0.05)
    process = FakeProcess("gateway")
    process.launch()
    supervisor = Supervisor([process], policy, poll_interval_s=0.005)
    thread, result = _run_in_thread(supervisor)
    for launches in (2, 3, 4):
        time.sleep(0.08)  # longer than the window: the previous failure no longer counts
        process.crash(1)
        _until(lambda launches=launches: process.launches == launches)
    supervisor.request_stop()
    thread.join(5)
    assert result["code"] == 0 and not supervisor.gave_up


def test_a_restart_that_never_serves_counts_as_a_failure(caplog) -> None:
    process = FakeProcess("retrieval", serves=False)
    process.launch()
    process.crash(-9)
    supervisor = Supervisor([process], FAST, poll_interval_s=0.005)
    thread, result = _run_in_thread(supervisor)
    thread.join(5)
    assert result["code"] == 1 and supervisor.gave_up == ["retrieval"]
    assert "did not come back: retrieval did not serve within 1.0 s" in caplog.text


@pytest.mark.parametrize("stop_during", ["watching", "backoff"])
def test_a_requested_stop_is_never_taken_for_a_crash(stop_during: str, caplog) -> None:
    policy = RestartPolicy(initial_backoff_s=10.0, max_crashes=3)
    process = FakeProcess("instruction")
    process.launch()
    supervisor = Supervisor([process], policy, poll_interval_s=0.005)
    thread, result = _run_in_thread(supervisor)
    if stop_during == "backoff":
        process.crash(1)
        _until(lambda: "restarting instruction in 10.0 s" in caplog.text)
    supervisor.request_stop()
    thread.join(5)
    assert not thread.is_alive() and result["code"] == 0
    assert process.launches == 1  # not restarted after the stop
    assert caplog.text.count("instruction (pid") == (1 if stop_during == "backoff" else 0)
