"""Writing a folder so that readers never see it half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``out_dir`` when the block exits without error.

    The temporary folder is a sibling of ``out_dir`` (same file system, so the rename is atomic). An
    existing ``out_dir`` is moved aside first and deleted only after the new one is in place, so readers
    see the old folder, briefly none, or the new one, never a half-written one. On error the temporary
    folder is removed and ``out_dir`` is untouched.

    Args:
        out_dir: The folder to (re)create.

    Yields:
        The temporary folder to write into.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    # mkdtemp creates 0700; the result should get the permissions an ordinary mkdir would give.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / out_dir.name)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
