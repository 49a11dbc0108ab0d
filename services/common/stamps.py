"""What tells a polling watcher that a file was rewritten or swapped in."""

from __future__ import annotations

from pathlib import Path


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's inode, modification time and size (all change when it is rewritten or swapped in by a
    rename); None when it is missing."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
