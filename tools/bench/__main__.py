"""``python -m tools.bench``: the same command as ``instructrec bench``."""

from tools.bench.cli import app

app()
