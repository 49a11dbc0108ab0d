"""The `instructrec` command line: one module per command group, every command registered here by name.

``stack`` (prepare, run, precompute-preferences), ``data`` (prepare-data, build-index), ``models`` (export,
models), ``recommend``, ``evaluate`` (evaluate, evaluate-statements), ``train`` (train, fit-fusion) and the
benchmarks of ``tools/bench``. Heavy imports happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import typer

from tools.bench.cli import bench_command, scale_command, serving_command
from tools.cli import data, evaluate, models, recommend, stack, train

app = typer.Typer(help="InstructRec serving suite: run the stack, call it, and build its assets.",
                  no_args_is_help=True, add_completion=False)

for group in (stack, data, models, recommend, evaluate, train):
    for name, command in group.COMMANDS.items():
        app.command(name)(command)
app.command("bench")(bench_command)
app.command("bench-serving")(serving_command)
app.command("bench-scale")(scale_command)
