"""The repository as a whole: the lock that serialises exports into it, and the listing of what it holds."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.export.parity import FP32
from tools.export.versions import METADATA_FILE, has_weights, is_placeholder, version_dirs

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def repository_lock(repository: Path) -> Iterator[None]:
    """Hold an exclusive lock on the repository so two exports never pick the same version or prune each other.

    The lock is ``flock`` on the repository folder itself (no lock file in it). On volumes whose file system
    does not support ``flock`` the export goes on unlocked, with a warning.

    Raises:
        RuntimeError: If another export into this repository holds the lock.
    """
    import fcntl

    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    fd = os.open(repository, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another export into {repository} is in progress") from None
        except OSError as exc:
            logger.warning("no lock on %s (%s); make sure only one export runs at a time", repository, exc)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _exported_row(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / METADATA_FILE).read_text())
    return {
        "state": "exported",
        "exported_at": meta.get("exported_at"),
        "source": meta.get("source_checkpoint"),
        "precision": meta.get("precision", FP32),
        "max_abs_diff": meta.get("parity", {}).get("max_abs_diff"),
        "size_mb": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1),
    }


def repository_versions(repository: Path) -> list[dict[str, Any]]:
    """What the repository holds: one row per model version folder, with its ``metadata.json`` summary."""
    rows: list[dict[str, Any]] = []
    repository = Path(repository)
    if not repository.is_dir():
        return rows
    names = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    for name in names:
        for version, folder in sorted(version_dirs(repository / name).items()):
            row: dict[str, Any] = {"model": name, "version": version}
            if has_weights(folder):
                row.update(_exported_row(folder))
            else:
                row["state"] = "placeholder" if is_placeholder(folder) else "unfinished"
            rows.append(row)
    return rows
