"""``python -m tools.cli``: the `instructrec` command line."""

from tools.cli import app

app()
