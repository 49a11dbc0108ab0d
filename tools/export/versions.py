"""Version folders of the model repository: numbering, staging and atomic installation, pruning, removal.

Every export goes to a new version folder (the highest existing one plus one, unless given), built in a
hidden sibling folder and renamed into place, so Triton never sees a half-written version; ``metadata.json``
is written last and marks a version as finished. The committed ``<model>/1/`` folders hold only the
python-backend adapter until the first export fills them (a placeholder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

METADATA_FILE = "metadata.json"
ADAPTER_FILE = "model.py"
# One source for what the three adapters share; each export copies it beside model.py (model_repository/).
ADAPTER_HELPER_FILE = "triton_adapter.py"
COMMITTED_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
STAGING_PREFIX = ".export-"
TRASH_PREFIX = ".removed-"
_PLACEHOLDER_ENTRIES = (ADAPTER_FILE, ADAPTER_HELPER_FILE, "__pycache__")


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """The numbered version folders of one model folder, by version (hidden staging folders excluded)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def is_placeholder(version_dir: Path) -> bool:
    """A version folder holding at most the adapter (e.g. the committed ``1/model.py``): free to fill."""
    return all(p.name in _PLACEHOLDER_ENTRIES for p in version_dir.iterdir())


def has_weights(version_dir: Path) -> bool:
    """Whether a version folder holds a finished export (``metadata.json`` is written last)."""
    return (version_dir / METADATA_FILE).is_file()


def latest_version(repository: Path, name: str) -> int | None:
    """The highest version of ``name`` holding a finished export, or ``None``."""
    done = [v for v, p in version_dirs(Path(repository) / name).items() if has_weights(p)]
    return max(done) if done else None


def next_version(repository: Path, name: str) -> int:
    """The version an export without an explicit version writes.

    That is the highest existing version folder plus one, or that folder itself when it is an empty
    placeholder (only ``model.py``).
    """
    dirs = version_dirs(Path(repository) / name)
    if not dirs:
        return 1
    highest = max(dirs)
    return highest if is_placeholder(dirs[highest]) else highest + 1


def resolve_target(repository: Path, name: str, version: int | None) -> Path:
    """The version folder an export writes: ``version``, or the next one when ``None``.

    Raises:
        ValueError: If ``version`` is below 1.
        FileExistsError: If the folder already holds an export (versions are never overwritten).
    """
    version = next_version(repository, name) if version is None else version
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    target = Path(repository) / name / str(version)
    if target.exists() and not is_placeholder(target):
        raise FileExistsError(f"{target} already holds an export; versions are never overwritten")
    return target


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A hidden sibling folder of ``target`` to build in; moved into place on success, removed on error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leading dot and a non-numeric name: Triton never takes it for a version folder.
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    # mkdtemp makes it 0700; Triton (another user in a pod sharing the volume) must be able to read it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        _install(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    # Filling a placeholder folder (the committed 1/model.py): move file by file, metadata.json last, so
    # that the folder reads as finished only when it is.
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != METADATA_FILE] + [METADATA_FILE]:
        if (tmp / name).exists():
            os.replace(tmp / name, target / name)


def _adapter_sources(name: str) -> tuple[Path, Path]:
    return COMMITTED_REPOSITORY / name / "1" / ADAPTER_FILE, COMMITTED_REPOSITORY / ADAPTER_HELPER_FILE


def copy_adapter(name: str, *, staging_dir: Path, target: Path) -> None:
    """Copy the committed adapter of ``name`` and the shared helper into a version being built.

    ``model.py`` is not copied onto itself when the target is the committed folder; the helper always is,
    so a committed folder's copy is refreshed by each export into it.
    """
    for source in _adapter_sources(name):
        existing = target / source.name
        if existing.exists() and existing.resolve() == source.resolve():
            continue  # writing into the committed folder itself
        shutil.copy2(source, staging_dir / source.name)


def is_adapter_source(version_dir: Path) -> bool:
    """Whether this folder's ``model.py`` is the committed adapter every export copies (never delete it)."""
    adapter = version_dir / ADAPTER_FILE
    source = COMMITTED_REPOSITORY / version_dir.parent.name / "1" / ADAPTER_FILE
    return adapter.is_file() and source.is_file() and adapter.resolve() == source.resolve()


def refresh_adapter_helper(repository: Path, name: str) -> bool:
    """Give the committed folder's finished export the current shared helper (its ``model.py`` is live).

    The other version folders keep the copies they were exported with.

    Returns:
        Whether the helper was (re)written.
    """
    folder = Path(repository) / name / "1"
    helper = COMMITTED_REPOSITORY / ADAPTER_HELPER_FILE
    copy = folder / ADAPTER_HELPER_FILE
    if not (is_adapter_source(folder) and has_weights(folder)):
        return False
    if copy.is_file() and copy.read_bytes() == helper.read_bytes():
        return False
    tmp = folder / f".{ADAPTER_HELPER_FILE}.tmp"
    shutil.copy2(helper, tmp)
    os.replace(tmp, copy)
    return True


def remove_version(repository: Path, name: str, version: int) -> bool:
    """Remove a version folder so that no reader ever sees it half-deleted.

    The folder is first renamed to a hidden name (which Triton ignores), then deleted. The committed
    ``1/model.py`` adapter is kept (the folder becomes an empty placeholder again).

    Returns:
        Whether there was a folder to remove.
    """
    folder = Path(repository) / name / str(version)
    if not folder.is_dir():
        return False
    if is_adapter_source(folder):
        for entry in folder.iterdir():
            if entry.name != ADAPTER_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return True
    trash = folder.with_name(f"{TRASH_PREFIX}{version}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def prune_versions(repository: Path, name: str, keep: int) -> list[int]:
    """Remove all but the ``keep`` highest finished versions of ``name``.

    Unfinished folders (no ``metadata.json``) below the newest kept version are removed as well;
    placeholders (only the adapter) are left alone.

    Args:
        repository: The model repository folder.
        name: Model name.
        keep: How many finished versions to keep (>= 1).

    Returns:
        The removed versions, ascending.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    dirs = version_dirs(Path(repository) / name)
    finished = sorted((v for v, p in dirs.items() if has_weights(p)), reverse=True)
    kept = set(finished[:keep])
    oldest_kept = min(kept) if kept else 0
    removed = []
    for version, folder in sorted(dirs.items()):
        if version in kept or version > oldest_kept or is_placeholder(folder):
            continue
        if remove_version(repository, name, version):
            removed.append(version)
    return removed


def remove_stale_staging(repository: Path, name: str) -> list[str]:
    """Delete hidden staging / removal folders left by an export or removal that was killed midway.

    Call only while holding :func:`tools.export.repository.repository_lock`, so no export in progress loses
    its folder.
    """
    model_dir = Path(repository) / name
    if not model_dir.is_dir():
        return []
    stale = [p for p in model_dir.iterdir()
             if p.is_dir() and p.name.startswith((STAGING_PREFIX, TRASH_PREFIX))]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return sorted(p.name for p in stale)
