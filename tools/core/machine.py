"""Facts about the machine a figure was measured on, recorded with every timing (machines differ: some have
AVX-512, VNNI and AMX, some AVX2 only, and ONNX Runtime's and torch's speed follow those flags)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from services.common.settings import ROOT

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")
"""Prefixes of the /proc/cpuinfo flags (as ``lscpu`` shows them) that change speed here."""


def cpu_flags() -> list[str]:
    """This CPU's flags that start with one of :data:`SPEED_FLAGS`, sorted; [] where /proc/cpuinfo is unreadable."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted({f for f in line.split(":", 1)[1].split() if f.startswith(SPEED_FLAGS)})
    return []


def machine() -> dict[str, Any]:
    """Where a run or a timing happened: platform, CPUs, CPU flags, torch and its threads."""
    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_flags": cpu_flags(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def repo_path(path: Path) -> str:
    """``path`` relative to the repository when inside it, so committed records hold no machine paths."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
