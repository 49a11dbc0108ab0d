"""Records say how they were made: the command line quoted so it can be pasted back, the CPU's speed flags."""

from __future__ import annotations

import shlex
import sys

from tools.cli import common as cli
from tools.core import machine


def test_the_recorded_command_line_quotes_arguments_with_spaces(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["instructrec", "evaluate", "--name", "served stack, tuned", "--max-users", "5"])
    line = cli.invocation("instructrec evaluate")
    assert line == "instructrec evaluate --name 'served stack, tuned' --max-users 5"
    assert shlex.split(line)[3] == "served stack, tuned"


def test_cpu_flags_keep_only_the_speed_flags(monkeypatch, tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8 sha_ni\n")
    real = machine.Path

    monkeypatch.setattr(machine, "Path", lambda p: info if p == "/proc/cpuinfo" else real(p))
    assert machine.cpu_flags() == ["amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f"]
